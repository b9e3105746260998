"""The batch annotation job: list files → Ray Data (decode/detect tasks → model actor pool) →
atomic Parquet parts → annotated images and summary plots → ``summary.json``.

Output folder layout::

    OUT/annotations/part-<run_id>-<seq>.parquet   the dataset (schema: facepipe.annotate.schema)
    OUT/plots/<root>/<path>.jpg                   annotated copies (--plots all | sample | video)
    OUT/plots/<root>/<path>.timeline.png          each video's face tracks' emotions over time (--plots all | sample | video)
    OUT/plots/<root>/<path>.annotated.mp4         each video's sampled frames drawn (--plots video)
    OUT/summary_emotions.png, summary_faces_per_image.png, summary_status.png
    OUT/summary.json                              this run and the whole dataset in numbers
    OUT/.annotate.lock                            held while a run writes

Resources on small machines: decode/detect tasks and inference actors ask for fractional CPUs
(0.5 and 0.75 by default) so that the actor pool can never take every CPU and starve the tasks
that feed it (which would hang forever on 2 CPUs). On 2 CPUs that is one actor and two
decode/detect tasks at a time, close to the work's own split (detection ~23 ms per image, both
models ~16 ms per face on one thread). Each actor runs torch with one thread per whole CPU it
asked for (at least 1), each task runs OpenCV single-threaded, and each actor gets a GPU when
the cluster has one (and ``device`` is not ``cpu``).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import storage
from facepipe.annotate.config import LOCAL_MAX_FILES, PLOT_CHOICES, AnnotateConfig, AnnotateError
from facepipe.faces.detect import DetectorConfig, detector_config, get_detector
from facepipe.faces.track import Tracker, track_rows
from facepipe.annotate.infer import Annotator, default_model, keypoints_model_id, load_models_meta
from facepipe.annotate.listing import list_files, real_name
from facepipe.annotate.prepare import FILE_COLUMNS, SPLIT, PrepareConfig, model_crops, prepare_batch, segment_record
from facepipe.annotate.render import PLOTS_DIR, plot_path, render_batch, render_video_batch
from facepipe.annotate.schema import POSE_COLUMNS, SCHEMA_VERSION, build_schema, file_status, keypoint_columns, rows_to_table
from facepipe.annotate.state import STATE_COLUMNS, committed_parts, current_view, first_rows, read_these_parts, state_of
from facepipe.annotate.writer import OutputFull, PartWriter, atomic_write_bytes, dataset_dir, out_of_space, output_lock, remove_temporaries
from facepipe.logs import eta

__all__ = ["annotate", "AnnotateConfig", "AnnotateError", "PLOT_CHOICES", "LOCAL_MAX_FILES"]

_TIMINGS = ("t_read", "t_decode", "t_detect", "t_crop", "t_infer")


@dataclasses.dataclass
class _Run:
    """What one run has resolved before its pipeline starts, and what it counts as it goes."""

    run_id: str
    inputs: list
    output: Path | str  # a local folder, or an object-store URI (facepipe.storage)
    keypoints_model: str  # resolved model directories
    emotion_model: str
    kp_meta: dict
    em_meta: dict
    kp_id: str | None  # None: the task is not run (its columns stay empty)
    em_id: str | None
    det: DetectorConfig
    schema: pa.Schema
    prep: PrepareConfig
    log: Callable[[str], None]
    local: bool = False
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    timings: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(_TIMINGS, 0.0))
    marks: dict = dataclasses.field(default_factory=dict)


def _new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _inputs_only(entries: list, output: Path | str) -> list:
    """``entries`` without the files this job writes into OUT (when OUT lies inside an input
    folder, its parts, plots and summaries are not inputs). Listed paths lie under their resolved
    input root (symlinked folders are not entered), so a prefix test on them is exact."""
    out = storage.absolute(output)
    prefix = out + "/"

    def ours(path: str) -> bool:
        parts = path[len(prefix):].split("/")
        return parts[0] in ("plots", "annotations", "quarantine") or (len(parts) == 1 and parts[0].startswith("summary"))

    return [e for e in entries if not (e.abs_path.startswith(prefix) and ours(e.abs_path))]


def _check_output(output: Path | str) -> None:
    """One line, before any work, for an output that cannot be a folder or cannot be written (an
    object store's output: its bucket must answer; whether it takes writes, the lock finds out)."""
    if storage.is_uri(output):
        got = storage.info(output)
        if got is not None and got[0] == "file":
            raise AnnotateError(f"output exists and is an object, not a prefix: {output}")
        storage.list_tree(output, recursive=False)  # a missing bucket or missing credentials: one line now
        return
    if output.exists() and not output.is_dir():
        raise AnnotateError(f"output exists and is not a folder: {output}")
    existing = next(p for p in (output, *output.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise AnnotateError(f"output {output} lies below {existing}, which is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AnnotateError(f"output {output} cannot be written: no write permission on {existing}")


def _validate(inputs, output, keypoints_model, emotion_model, detector) -> tuple[dict, dict, DetectorConfig]:
    if not inputs:
        raise AnnotateError("no input file or folder given")
    for d in inputs:
        if storage.is_uri(d):
            continue  # a prefix exists as soon as an object lies under it: listing says (an empty prefix has no files)
        if not (Path(d).is_dir() or Path(d).is_file()):
            raise AnnotateError(f"input not found (no such file or folder): {d}")
    _check_output(output)
    try:
        kp_meta, em_meta = load_models_meta(keypoints_model, emotion_model)
        det = detector_config(detector)
        get_detector(det)  # loads its model files here: a missing cascade or package fails before any work
    except (OSError, ValueError, TypeError, KeyError, ImportError) as e:
        raise AnnotateError(str(e)) from None
    return kp_meta, em_meta, det


def _framing_note(metas: dict[str, dict], det: DetectorConfig) -> str | None:
    """A warning when a model in use (``{task: meta}``) was trained on another detector's boxes (its crops will be framed differently)."""
    for task, meta in metas.items():
        task = task.rstrip("s")
        trained = ((meta.get("framing") or {}).get("detector") or "").split(":", 1)[0]
        if trained and trained != det.name:
            return (f"annotate: note: the {task} model was trained on {trained} boxes and this run detects with {det.name}: "
                    f"its crops are framed differently from its training")
    return None


def _generated_note(metas: dict[str, dict]) -> str | None:
    """A warning when a model in use (``{task: meta}``) learned from generated faces (the demo's), not real ones."""
    which = [t.rstrip("s") for t, m in metas.items() if (m.get("data") or {}).get("generated")]
    if not which:
        return None
    return (f"annotate: note: the {' and '.join(which)} model{'s were' if len(which) > 1 else ' was'} trained on generated faces "
            "(facepipe's demo data), not real photos: expect wrong keypoints and near-random emotions on real photos. "
            "Leave --keypoints-model/--emotion-model out to use the shipped models trained on real faces.")


def annotate(
    inputs: str | os.PathLike | list[str | os.PathLike],
    output: str | os.PathLike,
    keypoints_model: str | os.PathLike | None = None,
    emotion_model: str | os.PathLike | None = None,
    config: AnnotateConfig | None = None,
    *,
    detector: str | DetectorConfig | dict | None = None,
    **overrides,
) -> dict:
    """Annotate every new or changed image under ``inputs`` into ``output``; returns the summary.

    ``config``: the run's settings (:class:`~facepipe.annotate.config.AnnotateConfig`, default
    values when None); keyword ``overrides`` replace its fields, e.g. ``annotate(d, out,
    plots="none", local=True)``. ``detector``: a detector name (``"haar"``, ``"mtcnn"``), config or
    dict (:func:`facepipe.faces.detect.detector_config`; default: Haar with its defaults).

    ``local``: run the same stages in this process instead of on Ray (True), on Ray (False), or
    choose (None): in-process for at most :data:`LOCAL_MAX_FILES` new files when no Ray cluster is
    configured (``RAY_ADDRESS``) or already running in this process. Output and guarantees are the same.

    Incremental: files already annotated with the same two models and detector settings (same
    content hash) are skipped, so a scheduled rerun only does new files, and a killed run's rerun
    finishes the rest. ``limit`` caps how many new files this run takes. Raises
    :class:`AnnotateError` for bad arguments before doing any work; a bad image never raises (it
    becomes an ``error`` row).
    """
    t_start = time.perf_counter()
    cfg = (config or AnnotateConfig()).replace(**overrides)
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    output = storage.absolute(output) if storage.is_uri(output) else Path(output)
    try:
        keypoints_model = default_model("keypoints", keypoints_model, cfg.landmarks)  # one on an object store: fetched once into a local cache
        emotion_model = default_model("emotion", emotion_model)
    except (FileNotFoundError, ValueError) as e:
        raise AnnotateError(str(e)) from None
    kp_meta, em_meta, det = _validate(inputs, output, keypoints_model, emotion_model, detector)
    from facepipe.model_dir import model_id

    log = (lambda msg: print(msg, flush=True)) if cfg.verbose else (lambda msg: None)
    used = {t: m for t, m in (("keypoints", kp_meta), ("emotion", em_meta)) if t in cfg.tasks}  # the models this run runs
    run = _Run(
        run_id=_new_run_id(), inputs=inputs, output=output,
        keypoints_model=str(Path(keypoints_model).resolve()), emotion_model=str(Path(emotion_model).resolve()),
        kp_meta=kp_meta, em_meta=em_meta, det=det,
        kp_id=keypoints_model_id(kp_meta, cfg.refine) if "keypoints" in used else None, em_id=model_id(em_meta) if "emotion" in used else None,
        schema=build_schema(kp_meta["keypoint_names"], em_meta["class_names"]),
        prep=PrepareConfig(detector=det, margin=cfg.margin, video_fps=cfg.fps, video_max_frames=cfg.max_frames,
                           video_segment_s=cfg.segment_seconds, **model_crops(used, cfg.refine)),
        log=log,
    )
    for note in (_generated_note(used), _framing_note(used, det)):
        if note:
            log(note)

    try:
        summary = _locked_run(run, cfg, inputs, output, t_start)
    except OSError as e:
        if out_of_space(e):
            raise OutputFull(f"no space left on the device of {output} (writing {getattr(e, 'filename', None) or 'the output'}): "
                             "every committed part is kept; free space and run again to finish") from None
        raise
    r = summary["run"]
    log(
        f"annotate: done in {r['seconds']:.1f} s: {r['annotated']} new files ({r['ok']} ok, {r['no_face']} no_face, {r['error']} error; "
        f"{r['faces']} faces" + (f"; {r['videos']} videos, {r['video_frames']} frames" if r["videos"] else "") + f") at {r['img_s']:.1f} files/s, {r['already_done']} already done, "
        + (f"{r['error_repeated']} failed again as before (not written again), " if r["error_repeated"] else "")
        + f"{r['parts_written']} parts; "
        f"dataset {summary['dataset']['images']} images -> {output}"
    )
    return summary


def _locked_run(run: _Run, cfg: AnnotateConfig, inputs: list, output: Path | str, t_start: float) -> dict:
    """List, skip what is done, annotate, plot and write ``summary.json``, holding the output's lock."""
    log, det = run.log, run.det
    with output_lock(output):
        for folder in (storage.join(output, PLOTS_DIR), dataset_dir(output)):  # what a killed run left half-written
            remove_temporaries(folder)
        # The committed parts are read once per run: the state here, then (with this run's own parts
        # added) the current view that plots and summary.json count.
        history = read_these_parts(committed_parts(output, repair=True, log=lambda m: _warn(f"annotate: {m}")), _RUN_COLUMNS, dictionary=True)
        state = state_of(history, run.kp_id, run.em_id, detector=det.describe())
        listed = list_files(inputs, recursive=cfg.recursive, pattern=cfg.glob, include_hidden=cfg.include_hidden, known_roots=state.roots)
        entries = _inputs_only(listed, output)
        for root, path, reason in listed.unreadable:
            _warn(f"annotate: warning: cannot list folder {root}/{path}: {reason}; its files are not annotated")
        todo = state.select(entries)
        done_unchanged = len(entries) - len(todo)
        if cfg.limit is not None:
            todo = todo[: cfg.limit]
        run.local = _choose_local(cfg.local, len(todo))
        log(f"annotate: run {run.run_id}: {len(entries)} files listed, {done_unchanged} already done, {len(todo)} to annotate "
            f"{'in this process' if run.local else 'on Ray'} with {det.describe()} -> {output}")
        annotator = _load_annotator(run, cfg) if todo else None
        if not run.local:
            annotator = None  # checked: the actors load their own
        writer = PartWriter(dataset_dir(output), run.schema, run.run_id, part_images=cfg.part_images, part_seconds=cfg.part_seconds)
        t_pipe = time.perf_counter()
        if todo:
            _run_pipeline(run, cfg, todo, state, writer, annotator)
        pipeline_s = time.perf_counter() - t_pipe
        del state  # the view below is built from the history and the new parts, not from it
        view = _current(history, writer.parts, pa.table({"input_root": pa.array([e.input_root for e in entries], pa.string()),
                                                         "path": pa.array([e.path for e in entries], pa.string())}))
        plot_files = _plots(run, cfg, view, writer.parts)
        summary = _summary(run, cfg, entries, done_unchanged, todo, writer, pipeline_s, time.perf_counter() - t_start, plot_files, view)
        summary["run"]["executor"] = "in-process" if run.local else "ray"
        summary["run"]["unreadable_folders"] = [{"root": r, "path": p, "error": e} for r, p, e in listed.unreadable]
        atomic_write_bytes(storage.join(output, "summary.json"), (json.dumps(summary, indent=2) + "\n").encode())
    return summary


#: What a run reads of the committed parts, once: the state's columns and what plots and summary.json count.
_RUN_COLUMNS = STATE_COLUMNS + ["run_id", "face_index", "num_faces", "emotion", "image_format", "timestamp_s", "track_id"]


def _current(history: pa.Table | None, new_parts: list, listed: pa.Table) -> pa.Table | None:
    """The current view after this run: the rows read at its start and the parts it wrote
    (``listed``: the files just listed, see :func:`current_view`)."""
    new = read_these_parts(new_parts, _RUN_COLUMNS, dictionary=True)
    tables = [t for t in (history, new) if t is not None and t.num_rows]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return current_view(table, listed=listed)


def _warn(message: str) -> None:
    """A warning the user must see even with --quiet: on stderr, one line."""
    print(message, file=sys.stderr, flush=True)


def _choose_local(local: bool | None, n_files: int) -> bool:
    """In-process or Ray (see :func:`annotate`'s ``local``)."""
    if local is not None:
        return bool(local)
    ray_running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    return n_files <= LOCAL_MAX_FILES and not os.environ.get("RAY_ADDRESS") and not ray_running


def _load_annotator(run: _Run, cfg: AnnotateConfig) -> Annotator:
    """The models, loaded here before any work (the Ray path loads them once more in its actors):
    weights that do not fit their meta.json are one line naming the file, not an actor's traceback."""
    try:
        return Annotator(run.keypoints_model, run.emotion_model, device=cfg.device if run.local else "cpu",
                         torch_threads=cfg.torch_threads, batch_size=cfg.batch_size, tasks=cfg.tasks, refine=cfg.refine)
    except (ValueError, OSError) as e:
        raise AnnotateError(str(e)) from None


def _local_batches(records: list[dict], run: _Run, cfg: AnnotateConfig, annotator: Annotator, per_task: int | None = None):
    """The Ray pipeline's two stages, run here on ``per_task`` (``files_per_task``) files at a time."""
    per_task = per_task or cfg.files_per_task
    for i in range(0, len(records), per_task):
        chunk = records[i : i + per_task]
        yield annotator(prepare_batch({k: np.array([r[k] for r in chunk], dtype=object) for k in FILE_COLUMNS}, run.prep))


def _fit_cpus(cpus: float, prepare: float, infer: float, concurrency: int) -> tuple[float, float, int]:
    """CPU requests that cannot deadlock: the actors together always leave room for one
    decode/detect task (else the pool would wait forever for input nobody can produce)."""
    if infer + prepare > cpus:  # e.g. a 1-CPU machine: shrink both, keep their ratio
        scale = 0.95 * cpus / (infer + prepare)
        prepare, infer = prepare * scale, infer * scale
    fitted = max(1, min(concurrency, int((cpus - prepare) // infer)))
    return prepare, infer, fitted


def _run_pipeline(run: _Run, cfg: AnnotateConfig, todo, state, writer, annotator: Annotator) -> None:
    """Every file through the two stages, then the segments of the videos long enough to cut
    (:data:`~facepipe.annotate.prepare.SPLIT` rows), one task each; commits as they complete."""
    records = [
        {"root": e.root, "input_root": e.input_root, "path": e.path, "abs_path": e.abs_path, "file_size": e.size, "file_mtime_ns": e.mtime_ns,
         "done_sha": state.done_shas(e.root, e.path), "segment": ""}
        for e in todo
    ]
    splits: list[dict] = []
    batches = _local_batches(records, run, cfg, annotator) if run.local else _ray_batches(records, run, cfg)
    _consume(batches, len(todo), writer, run, state, splits)
    if splits:
        by_key = {(r["root"], r["path"]): r for r in records}
        segments, videos = _plan_videos(run, splits, by_key, state)
        run.counts["segments"] += len(segments)
        run.log(f"annotate: {len(videos)} videos cut into {sum(v.count for v in videos.values())} segments of about {cfg.segment_seconds:g} s; "
                f"{len(segments)} to annotate, one task each")
        batches = _local_batches(segments, run, cfg, annotator, per_task=1) if run.local else _ray_batches(segments, run, cfg, per_task=1)
        _consume_segments(batches, videos, writer, run)
    writer.close()


@dataclasses.dataclass
class _Video:
    """A segmented video's segments as they arrive: handed to the writer in order, each once its
    rows are all there, with track ids continued across segment borders and one annotation time."""

    count: int  # segments in all
    next: int  # the next segment to hand over (the ones before it are committed or handed over)
    timestamp: object  # the annotation's time (datetime), on every row of it
    tracker: Tracker
    statuses: set = dataclasses.field(default_factory=set)
    pieces: dict = dataclasses.field(default_factory=dict)  # segment -> row batches arrived
    arrived: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    complete: set = dataclasses.field(default_factory=set)


def _plan_videos(run: _Run, splits: list[dict], records: dict, state) -> tuple[list[dict], dict]:
    """The segment records to run and a :class:`_Video` per video: a video whose latest
    annotation lacks segments and whose content and plan are unchanged resumes at its first
    missing segment, with its time and its tracks; any other starts afresh."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    segments, videos, resumed = [], {}, {}
    for row in splits:
        key = (str(row["root"]), str(row["path"]))
        count = int(row["segment_count"])
        partial = state.partial.get(key)
        start, ts = 0, now
        if partial is not None and partial[0] == row["sha256"] and partial[3] == count:
            start, ts = partial[2], datetime.datetime.fromtimestamp(partial[1] / 1e9, datetime.timezone.utc)
            resumed[key] = partial[1]
        videos[key] = _Video(count=count, next=start, timestamp=ts, tracker=Tracker())
        segments += [segment_record(records[key], row, k) for k in range(start, count)]
    for key, tracker in _continued_tracks(run, resumed).items():
        videos[key].tracker = tracker
    if resumed:
        run.log(f"annotate: {len(resumed)} videos resume at their first missing segment")
        run.marks["resumed_videos"] = sorted(resumed)
    return segments, videos


def _continued_tracks(run: _Run, resumed: dict) -> dict:
    """A :class:`Tracker` per resumed video (``{(root, path): annotation time in ns}``) in the state
    it had after the video's committed segments: each track's last box, time and keypoints, the next id."""
    if not resumed:
        return {}
    kp_cols = keypoint_columns(run.kp_meta["keypoint_names"])
    cols = ["root", "path", "timestamp", "status", "track_id", "timestamp_s", "bbox_x", "bbox_y", "bbox_w", "bbox_h", *(c for pair in kp_cols for c in pair)]
    t = read_these_parts(committed_parts(run.output), cols, filter=pc.field("path").isin(sorted({p for _, p in resumed})))
    last: dict = {key: {} for key in resumed}
    if t is not None:
        t = t.set_column(2, "timestamp", pc.cast(pc.cast(t["timestamp"], pa.timestamp("ns", tz="UTC")), pa.int64()))
        for r in t.to_pylist():
            key = (r["root"], r["path"])
            if resumed.get(key) == r["timestamp"] and r["status"] == "ok" and r["track_id"] is not None:
                seen = last[key].get(r["track_id"])
                if seen is None or r["timestamp_s"] >= seen[1]:
                    points = np.array([[r[x], r[y]] for x, y in kp_cols], np.float64)  # None (no keypoints run) -> NaN
                    last[key][r["track_id"]] = (np.array([r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]], np.float64), r["timestamp_s"], points)
    return {key: Tracker.continuing(tracks) for key, tracks in last.items()}


def _consume_segments(batches, videos: dict, writer: PartWriter, run: _Run) -> None:
    """Take segment rows as they arrive; hand each video's segments to the writer in order."""
    timings, log, detector = run.timings, run.log, run.det.describe()
    total, done = sum(v.count - v.next for v in videos.values()), 0
    t0 = last_log = time.perf_counter()
    try:
        for batch in batches:
            for t in _TIMINGS:
                timings[t] += float(np.sum(batch[t]))
            keys = list(zip(batch["root"], batch["path"], np.asarray(batch["segment_index"]).tolist()))
            for (root, path, k), idx in _group(keys).items():
                video = videos[(root, path)]
                video.pieces.setdefault(k, []).append({c: v[idx] for c, v in batch.items()})
                video.arrived[k] += len(idx)
                if video.arrived[k] == int(batch["file_rows"][idx[0]]):
                    video.complete.add(k)
                while video.next in video.complete:
                    _hand_over(video, writer, run, detector)
                    done += 1
            now = time.perf_counter()
            if now - last_log >= 10 or done == total:
                log(f"annotate: video segments {done}/{total}, {writer.images_committed} files and segments committed in {len(writer.parts)} parts"
                    + (f", {eta(done, total, now - t0)}" if 0 < done < total else ""))
                last_log = now
    except BaseException:
        with contextlib.suppress(Exception):
            writer.maybe_commit(force=True)  # the segments handed over are complete: kept
        raise
    left = [f"{r}/{p}" for (r, p), v in videos.items() if v.next < v.count]
    if left:
        raise RuntimeError(f"{len(left)} videos ended with segments missing (not written; a rerun does them): {', '.join(left[:5])}")


def _group(keys: list) -> dict:
    """Row numbers by key, keys in first-seen order."""
    out: dict = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: np.array(v) for k, v in out.items()}


def _hand_over(video: _Video, writer: PartWriter, run: _Run, detector: str) -> None:
    """Segment ``video.next``'s rows, in frame order with track ids from the video's tracker, to the writer."""
    batch = _tracked(video.pieces.pop(video.next), video.tracker)
    status = np.asarray(batch["status"]).astype(str)
    run.counts["frames"] += len(np.unique(np.asarray(batch["frame_index"])[np.asarray(batch["frame_index"]) >= 0]))
    run.counts["faces"] += int((status == "ok").sum())
    video.statuses |= set(status.tolist())
    table = rows_to_table(batch, run.schema, run_id=run.run_id, timestamp=video.timestamp, keypoints_model_id=run.kp_id,
                          emotion_model_id=run.em_id, detector=detector)
    writer.add(table, batch["file_rows"])
    video.next += 1
    if video.next == video.count:
        run.counts["videos"] += 1
        run.counts[file_status(video.statuses)] += 1


def _ray_batches(records: list[dict], run: _Run, cfg: AnnotateConfig, per_task: int | None = None):
    """The two stages on Ray Data: decode/detect tasks (``per_task`` files each, default
    ``files_per_task``), then the model actor pool."""
    import ray

    from facepipe.ray_compat import unfused_cpus, without_operator_reservation
    from facepipe.runtime import init_ray

    resources = init_ray(num_cpus=cfg.num_cpus, progress=cfg.progress, quiet=not cfg.verbose)
    device, concurrency = cfg.device, cfg.concurrency
    gpus = float(resources.get("GPU", 0)) if device != "cpu" else 0.0
    if device.startswith("cuda") and gpus < 1:
        raise AnnotateError("device 'cuda' requested but the Ray cluster has no GPU")
    num_gpus = (1.0 if concurrency <= gpus else gpus / concurrency) if gpus >= 1 else 0.0
    prepare_num_cpus, infer_num_cpus, fitted = _fit_cpus(float(resources.get("CPU", 1)), cfg.prepare_num_cpus, cfg.infer_num_cpus, concurrency)
    if fitted != concurrency:
        run.log(f"annotate: {concurrency} inference actors do not fit with decode tasks on {resources.get('CPU', 1):g} CPUs; using {fitted}")
        concurrency = fitted
    threads = cfg.torch_threads or max(1, int(infer_num_cpus))
    per_task = per_task or cfg.files_per_task
    ds = ray.data.from_items(records, override_num_blocks=max(1, math.ceil(len(records) / per_task)))
    without_operator_reservation(ds)  # the map stages below inherit this dataset's context
    infer_num_cpus = unfused_cpus(prepare_num_cpus, infer_num_cpus)
    ds = ds.map_batches(prepare_batch, fn_kwargs={"config": run.prep}, batch_size=per_task, batch_format="numpy", num_cpus=prepare_num_cpus)
    ds = ds.map_batches(
        Annotator,
        fn_constructor_kwargs={"keypoints_model": run.keypoints_model, "emotion_model": run.emotion_model, "device": "cuda" if num_gpus else ("cpu" if device == "auto" else device), "torch_threads": threads, "batch_size": cfg.batch_size, "tasks": cfg.tasks, "refine": cfg.refine},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=infer_num_cpus,
        num_gpus=num_gpus or None,
    )
    return ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


def _count_files(counts: collections.Counter, videos: dict, batch: dict, status: np.ndarray) -> None:
    """Count files by status (an image on its first row; a video once all its rows arrived: ``ok``
    with any face, else ``no_face`` with any faceless frame, else ``error``), faces and video frames."""
    face_index, file_rows = np.asarray(batch["face_index"]), np.asarray(batch["file_rows"])
    video = file_rows > 0
    for st in status[~video & ((status != "ok") | (face_index == 0))]:
        counts[st] += 1
    counts["faces"] += int((status == "ok").sum())
    counts["frames"] += int((video & (np.asarray(batch["frame_index"]) >= 0) & ((status != "ok") | (face_index == 0))).sum())
    for i in np.flatnonzero(video):
        seen = videos.setdefault((batch["root"][i], batch["path"][i]), [0, set()])
        seen[0] += 1
        seen[1].add(status[i])
        if seen[0] == int(file_rows[i]):
            del videos[(batch["root"][i], batch["path"][i])]
            counts["videos"] += 1
            counts[file_status(seen[1])] += 1


def _tracked(pieces: list[dict], tracker: Tracker) -> dict:
    """One video's (or segment's) row batches as one, in frame order, with ``track_id`` from ``tracker``."""
    batch = {c: np.concatenate([p[c] for p in pieces]) for c in pieces[0]}
    order = np.lexsort((np.asarray(batch["face_index"]), np.asarray(batch["frame_index"])))
    batch = {c: v[order] for c, v in batch.items()}
    batch["track_id"] = track_rows(tracker, batch["frame_index"], batch["timestamp_s"], batch["status"], batch["bbox"], batch["keypoints"])
    return batch


class _WholeVideos:
    """Rows of uncut videos held until all of a video's rows arrived, then given back with their
    ``track_id`` (:func:`~facepipe.faces.track.track_rows` over the frames in order: tracks need
    every frame's keypoints, and a video's rows may come in several batches)."""

    def __init__(self) -> None:
        self.pieces: dict = {}  # (root, path) -> row batches arrived
        self.arrived: collections.Counter = collections.Counter()

    def take(self, batch: dict) -> dict:
        """``batch`` without the rows of videos still incomplete, plus those of videos it completes."""
        video = np.asarray(batch["file_rows"]) > 0
        if not video.any():
            return batch
        out = [{k: v[~video] for k, v in batch.items()}]
        idx = np.flatnonzero(video)
        for key, rows in _group(list(zip(batch["root"][idx], batch["path"][idx]))).items():
            sel = idx[rows]
            self.pieces.setdefault(key, []).append({k: v[sel] for k, v in batch.items()})
            self.arrived[key] += len(sel)
            if self.arrived[key] == int(batch["file_rows"][sel[0]]):
                del self.arrived[key]
                out.append(_tracked(self.pieces.pop(key), Tracker()))
        return {k: np.concatenate([o[k] for o in out]) for k in batch} if len(out) > 1 else out[0]


def _consume(batches, total: int, writer: PartWriter, run: _Run, state, splits: list) -> None:
    """Count, convert and commit annotated batches as they arrive (complete images per part file).

    Not written: ``skipped`` rows (same content as the file's done rows), errors that repeat
    the file's latest error row exactly (:meth:`State.repeats_error`) and a long video's
    :data:`~facepipe.annotate.prepare.SPLIT` row, which goes to ``splits`` (its segments come next)."""
    counts, timings, marks, log = run.counts, run.timings, run.marks, run.log
    videos: dict = {}  # (root, path) of a video whose rows are still arriving -> [rows seen, statuses]
    whole_videos = _WholeVideos()
    detector = run.det.describe()
    t0 = time.perf_counter()
    last_log = t0
    try:
        for batch in batches:
            if "first_result" not in marks:
                marks["first_result"] = time.perf_counter() - t0
            for t in _TIMINGS:
                timings[t] += float(np.sum(batch[t]))
            status = np.asarray(batch["status"]).astype(str).astype(object)  # room for "error_repeated"
            if (status == SPLIT).any():
                split = status == SPLIT
                splits += [{k: v[i] for k, v in batch.items()} for i in np.flatnonzero(split)]
                batch, status = {k: v[~split] for k, v in batch.items()}, status[~split]
            for i in np.flatnonzero(status == "error"):
                if state.repeats_error(batch["root"][i], batch["path"][i], batch["sha256"][i], batch["error"][i]):
                    status[i] = "error_repeated"
            _count_files(counts, videos, batch, status)
            keep = (status != "skipped") & (status != "error_repeated")
            if not keep.all():
                batch = {k: v[keep] for k, v in batch.items()}
            batch = whole_videos.take(batch)
            if len(batch["status"]):
                table = rows_to_table(batch, run.schema, run_id=run.run_id, timestamp=None, keypoints_model_id=run.kp_id, emotion_model_id=run.em_id, detector=detector)
                committed = writer.add(table, batch["file_rows"])
            else:
                committed = writer.maybe_commit()
            now = time.perf_counter()
            if committed or now - last_log >= 10:
                done = sum(counts[s] for s in ("ok", "no_face", "error", "error_repeated", "skipped"))
                left = eta(done, total, now - t0) if done < total else ""
                log(
                    f"annotate: {done}/{total} images (ok {counts['ok']}, no_face {counts['no_face']}, error {counts['error']}), "
                    f"{writer.images_committed} committed in {len(writer.parts)} parts, {done / max(now - t0, 1e-9):.1f} img/s"
                    + (f", {left}" if left else "")
                )
                last_log = now
    except BaseException:
        # Complete images that arrived before the failure are still good: keep them.
        with contextlib.suppress(Exception):
            writer.maybe_commit(force=True)
        raise


def _faces(group, kp_cols) -> list[dict]:
    """The ok rows of one image or video frame as :func:`facepipe.annotate.render.draw` takes them."""
    faces = []
    for r in group:
        if r["status"] != "ok":
            continue
        faces.append(
            {
                "bbox": [r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]],
                "keypoints": [[r[cx], r[cy]] for cx, cy in kp_cols],
                "emotion": r["emotion"],
                "confidence": r["emotion_confidence"],
                "pose": [r[c] for c in POSE_COLUMNS],
            }
        )
    return faces


def _faces_json(group, kp_cols) -> str:
    return json.dumps(_faces(group, kp_cols))


def _plot_items(run: _Run, cfg: AnnotateConfig, view: pa.Table | None, new_parts: list) -> list[dict]:
    """What to draw: ``sample``, a sample of this run's images; ``all``, this run's images and every
    image of the current view whose plot is missing (a plot stage that failed or was killed is
    made good by the next run). ``view``: the current view (:func:`_current`)."""
    output = run.output
    if view is None:
        return []
    from facepipe.faces.video import VIDEO_FORMATS

    # videos get no annotated copy (a timeline is their picture)
    view = view.filter((pc.field("status") != "error") & ~pc.field("image_format").isin(list(VIDEO_FORMATS)))
    view = view.select(["root", "path", "run_id"]).to_pandas().drop_duplicates(["root", "path"])
    mine = view["run_id"] == run.run_id
    if cfg.plots == "sample":
        want = view[mine].sort_values(["root", "path"])
        if len(want) > cfg.plot_samples:
            want = want.iloc[np.linspace(0, len(want) - 1, cfg.plot_samples).round().astype(int)] if cfg.plot_samples else want.iloc[:0]
    else:
        plots_dir = storage.join(output, PLOTS_DIR)
        drawn = {storage.join(plots_dir, e.path) for e in storage.list_tree(plots_dir)[0]}  # one listing, not a lookup per image
        missing = [str(plot_path(output, r, p)) not in drawn for r, p in zip(view["root"], view["path"])]
        want = view[mine | np.array(missing, dtype=bool)].sort_values(["root", "path"])
    if not len(want):
        return []
    wanted = set(zip(want["root"], want["path"], want["run_id"]))
    kp_cols = keypoint_columns(run.kp_meta["keypoint_names"])
    cols = ["root", "path", "input_root", "run_id", "status", "face_index", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "emotion", "emotion_confidence",
            *POSE_COLUMNS]
    runs = sorted({w[2] for w in wanted})
    # this run's images only: its own parts hold them; older images' rows need the whole dataset
    parts = new_parts if runs == [run.run_id] else committed_parts(output)
    t = read_these_parts(parts, cols + [c for pair in kp_cols for c in pair], filter=pc.field("run_id").isin(runs) & (pc.field("status") != "error"))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in t.to_pylist():
        if (r["root"], r["path"], r["run_id"]) in wanted:
            groups.setdefault((r["root"], r["path"]), []).append(r)
    return [
        {"abs_path": os.path.join(g[0]["input_root"], real_name(k[1])), "root": k[0], "path": k[1], "status": g[0]["status"],
         "faces_json": _faces_json(g, kp_cols)}
        for k, g in sorted(groups.items())
    ]


def _plots(run: _Run, cfg: AnnotateConfig, view: pa.Table | None, new_parts: list) -> list[str]:
    """Annotated copies (see :func:`_plot_items`), each video's timeline, and with ``video`` each
    video's annotated copy (:func:`_video_items`); their paths relative to OUT."""
    if cfg.plots == "none":
        return []
    written = _timelines(run, new_parts)
    written += _render(run, cfg, _plot_items(run, cfg, view, new_parts), render_batch, 8)
    if cfg.plots == "video":
        written += _render(run, cfg, _video_items(run, cfg, new_parts), render_video_batch, 1)
    return written


def _render(run: _Run, cfg: AnnotateConfig, items: list[dict], fn, batch_size: int) -> list[str]:
    """``fn`` (a render stage) over ``items``, in this process or as Ray Data tasks; the files
    written, relative to OUT. Failures are counted and said, never raised."""
    if not items:
        return []
    output = run.output
    if run.local:
        batches = (fn({k: np.array([it[k] for it in items[i : i + batch_size]], dtype=object) for k in items[0]}, output=str(output))
                   for i in range(0, len(items), batch_size))
    else:
        import ray

        from facepipe.runtime import init_ray

        init_ray(num_cpus=cfg.num_cpus, progress=cfg.progress, quiet=not cfg.verbose)
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        ds = ds.map_batches(fn, fn_kwargs={"output": str(output)}, batch_size=batch_size, batch_format="numpy", num_cpus=0.5)
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
    written, failed = [], []
    for batch in batches:
        written += [w for w in batch["written"] if w]
        failed += [e for e in batch["error"] if e]
    if failed:
        run.log(f"annotate: {len(failed)} plots failed (the next run with --plots all draws them), e.g. {failed[0]}")
    return _relative(output, written)


def _video_items(run: _Run, cfg: AnnotateConfig, new_parts: list) -> list[dict]:
    """What :func:`facepipe.annotate.render.render_video_batch` draws: each video this run annotated,
    with its sampled frames' faces."""
    if not run.counts["videos"]:
        return []
    from facepipe.faces.video import VIDEO_FORMATS

    kp_cols = keypoint_columns(run.kp_meta["keypoint_names"])
    cols = ["root", "path", "input_root", "status", "image_format", "frame_index", "timestamp_s", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "emotion",
            "emotion_confidence", *POSE_COLUMNS, *(c for pair in kp_cols for c in pair)]
    t = _video_rows(run, new_parts, cols, pc.field("image_format").isin(list(VIDEO_FORMATS)) & pc.field("frame_index").is_valid())
    if t is None or t.num_rows == 0:
        return []
    frames: dict[tuple[str, str, str], dict[int, list[dict]]] = {}  # (root, path, input_root) -> frame -> rows
    for r in t.to_pylist():
        frames.setdefault((r["root"], r["path"], r["input_root"]), {}).setdefault(r["frame_index"], []).append(r)
    return [
        {"abs_path": os.path.join(k[2], real_name(k[1])), "root": k[0], "path": k[1], "fps": cfg.fps, "max_frames": cfg.max_frames or 0,
         "frames_json": json.dumps([[i, g[0]["timestamp_s"], file_status([r["status"] for r in g]), _faces(g, kp_cols)]
                                    for i, g in sorted(v.items())])}
        for k, v in sorted(frames.items())
    ]


def _video_rows(run: _Run, new_parts: list, columns: list[str], filter) -> pa.Table | None:
    """``columns`` of the video rows (``filter``) this run wrote, and of the videos it resumed
    their rows from earlier runs too (their annotation's rows, from every committed part)."""
    resumed = run.marks.get("resumed_videos")
    if not resumed:
        return read_these_parts(new_parts, columns, filter=filter)
    mine = read_these_parts(new_parts, columns, filter=filter)  # the filter's columns are among them
    keys = {(r, p) for r, p in zip(*(mine[c].to_pylist() for c in ("root", "path")))} if mine is not None else set()
    wanted = ["root", "path", "timestamp", *(c for c in columns if c not in ("root", "path", "timestamp"))]
    t = read_these_parts(committed_parts(run.output), wanted, filter=filter & pc.field("path").isin(sorted({p for _, p in keys})))
    if t is None:
        return None
    t = current_view(t, existing=False)
    mask = [k in keys for k in zip(t["root"].to_pylist(), t["path"].to_pylist())]
    return t.filter(pa.array(mask, pa.bool_())).select(columns)


def _relative(output, written: list) -> list[str]:
    if storage.is_uri(output):
        return sorted(w[len(storage.absolute(output)) + 1:] for w in written)
    return sorted(os.path.relpath(w, output) for w in written)


def _timelines(run: _Run, new_parts: list) -> list[str]:
    """``OUT/plots/<root>/<path>.timeline.png`` for each video this run annotated: each face
    track's emotion probabilities over time."""
    if not run.counts["videos"]:  # no video in this run: its parts are not read again
        return []
    from facepipe.faces.video import VIDEO_FORMATS

    probs = [n for n in run.schema.names if n.startswith("prob_")]
    rows = _video_rows(run, new_parts, ["root", "path", "status", "image_format", "timestamp_s", "track_id", *probs],
                       (pc.field("status") == "ok") & pc.field("image_format").isin(list(VIDEO_FORMATS)))
    if rows is None or rows.num_rows == 0:
        return []
    from facepipe import plots as fplots

    written = []
    for (root, path), video in rows.to_pandas().groupby(["root", "path"], sort=True):
        try:
            written.append(fplots.emotion_timeline(video, plot_path(run.output, root, path, suffix=".timeline.png"), f"{root}/{path}"))
        except OSError as e:  # a plot is not worth the run: said, and drawn by a later run that annotates the file
            run.log(f"annotate: the timeline of {root}/{path} failed: {e}")
    return _relative(run.output, [str(w) for w in written])


def _value_counts(values: pa.Array | pa.ChunkedArray) -> dict:
    """Non-null value -> count, most frequent first (pandas' ``value_counts``, in Arrow)."""
    got = pc.value_counts(pc.drop_null(values))
    pairs = zip(got.field("values").to_pylist(), got.field("counts").to_pylist())
    return dict(sorted(pairs, key=lambda vc: -vc[1]))


def _summary(run: _Run, cfg: AnnotateConfig, entries, done_unchanged: int, todo, writer: PartWriter, pipeline_s: float, total_s: float,
             plot_files: list[str], view: pa.Table | None) -> dict:
    output, counts = run.output, run.counts
    from facepipe.faces.track import track_summary

    # Counted in Arrow, not pandas: at 100,000 files a DataFrame of the view (and pandas' import)
    # is ~100 MB of a no-op rerun's driver.
    rows = view.num_rows if view is not None else 0
    status_counts, faces_hist, emotion_counts, n_images, n_faces, tracks = {}, {}, {}, 0, 0, []
    if rows:
        first = first_rows(view)
        n_images = len(first)
        status_counts = {str(k): int(v) for k, v in _value_counts(pc.take(view["status"], first)).items()}
        faces_hist = {int(k): int(v) for k, v in sorted(_value_counts(pc.take(view["num_faces"], first)).items())}
        ok = pc.equal(view["status"], "ok")
        n_faces = int(pc.sum(ok).as_py() or 0)
        emotion_counts = {str(k): int(v) for k, v in _value_counts(pc.filter(view["emotion"], ok)).items()}
        video = view.filter(pc.is_valid(view["timestamp_s"]))  # photos have no time: tracks are videos' only
        if video.num_rows:
            tracks = track_summary(video.select(["root", "path", "status", "emotion", "timestamp_s", "track_id"]).to_pandas())
    annotated = counts["ok"] + counts["no_face"] + counts["error"]
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [storage.absolute(d) for d in run.inputs],
        "output": storage.absolute(output),
        "dataset_path": storage.absolute(dataset_dir(output)),
        "models": {"keypoints": {"dir": run.keypoints_model, "id": run.kp_id}, "emotion": {"dir": run.emotion_model, "id": run.em_id}},
        "detector": run.det.to_dict(),
        "detector_description": run.det.describe(),
        "config": cfg.to_dict(),
        "run": {
            "listed": len(entries),
            "already_done": done_unchanged,
            "skipped_same_content": counts["skipped"],
            "error_repeated": counts["error_repeated"],
            "annotated": annotated,
            "left_by_limit": len(entries) - done_unchanged - len(todo),
            "ok": counts["ok"],
            "no_face": counts["no_face"],
            "error": counts["error"],
            "faces": counts["faces"],
            "videos": counts["videos"],
            "video_frames": counts["frames"],
            "video_segments": counts["segments"],
            "videos_resumed": len(run.marks.get("resumed_videos", ())),
            "parts_written": len(writer.parts),
            "rows_written": writer.rows_committed,
            "seconds": round(total_s, 3),
            "pipeline_seconds": round(pipeline_s, 3),
            "first_result_seconds": round(run.marks.get("first_result", 0.0), 3),
            "img_s": round(annotated / pipeline_s, 2) if pipeline_s > 0 and annotated else 0.0,
            "stage_seconds": {k[2:]: round(v, 3) for k, v in run.timings.items()},
        },
        "dataset": {"images": n_images, "faces": n_faces, "status_counts": status_counts, "faces_per_image": faces_hist, "emotion_counts": emotion_counts},
        "plots": list(plot_files),
        # per face track of each video: dominant emotion, seconds per emotion
        "tracks": tracks,
    }
    # Whole-dataset totals at the top level too (what a caller such as the demo shows first).
    summary["images"] = summary["dataset"]["images"]
    summary["faces"] = summary["dataset"]["faces"]
    summary["status_counts"] = status_counts
    summary_plots = []
    if cfg.plots != "none" and rows:
        from facepipe import plots as fplots  # matplotlib costs ~0.8 s to import: only when plotting

        out = lambda name: storage.join(output, name)  # noqa: E731
        summary_plots.append(fplots.bar_counts(status_counts, out("summary_status.png"), "Images by status (whole dataset)", color="tab:gray"))
        summary_plots.append(fplots.bar_counts(faces_hist, out("summary_faces_per_image.png"), "Faces per image", xlabel="faces detected"))
        if emotion_counts:
            summary_plots.append(fplots.bar_counts(emotion_counts, out("summary_emotions.png"), "Emotion distribution (faces)", color="tab:orange"))
    summary["summary_plots"] = [storage.name_of(p) for p in summary_plots]
    return summary
