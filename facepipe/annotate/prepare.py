"""Stage 1 of annotation: read bytes → sha256 → decode → detect → crop for each model input.

:func:`prepare_batch` is the Ray Data ``map_batches`` function (plain tasks, fractional CPU);
:func:`prepare_items` is the same code for in-process use by :func:`facepipe.annotate.predict`.
Both emit one row per detected face (status ``ok``) or one row per image without a face
(``no_face``), that could not be read (``error``) or that turned out to be done already
(``skipped``: same content and models as a committed row). Nothing here raises for a bad image:
every failure becomes an ``error`` row carrying a one-line message.

Rows are columns of numpy arrays (the internal batch format; :mod:`.schema` defines the Parquet
one). Timing columns ``t_read``/``t_decode``/``t_detect``/``t_crop`` hold seconds spent per image,
on the image's first row, so their sums are the stage costs of a run.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from facepipe import storage
from facepipe.faces.crop import context_square, crop_resize, square_crop
from facepipe.faces.decode import ImageDecodeError, array_to_image, decode_image, gray_and_bgr
from facepipe.faces.detect import DetectorConfig, detector_config, get_detector
from facepipe.faces.framing import CONTEXT_FACTOR, DEFAULT_MARGIN, model_margins, refine_passes
from facepipe.faces.video import SegmentPlan, VideoError, plan_segments, sample_frames, sample_segment, sniff_video

__all__ = ["FILE_COLUMNS", "SPLIT", "PrepareConfig", "segment_record", "crop_columns", "model_crops", "prepare_batch", "prepare_items"]

#: Columns a listed file brings into the pipeline (see :class:`facepipe.annotate.listing.FileEntry`);
#: ``segment``: "" for a file, else the JSON of one segment of a video (:func:`segment_record`).
FILE_COLUMNS = ("root", "input_root", "path", "abs_path", "file_size", "file_mtime_ns", "done_sha", "segment")

#: The status of the one row a long video gives in its file's task when cut into segments: its
#: :class:`~facepipe.faces.video.SegmentPlan` (``segment_plan``), for the job to run each segment
#: as a task of its own. Never written.
SPLIT = "split"


@dataclass(frozen=True)
class PrepareConfig:
    #: Which detector finds the faces, with its settings (:mod:`facepipe.faces.detect`).
    detector: DetectorConfig = field(default_factory=detector_config)
    margin: float = DEFAULT_MARGIN
    #: Model input size per task, e.g. ``{"keypoints": 96, "emotion": 48}`` (from meta.json).
    crop_sizes: tuple[tuple[str, int], ...] = (("keypoints", 96), ("emotion", 48))
    #: The margin a model was trained with, per task (meta.json ``framing``; see
    #: :func:`facepipe.faces.framing.model_margins`): it wins over ``margin``, which serves models without one.
    crop_margins: tuple[tuple[str, float], ...] = ()
    #: ``(task, factor)``: also keep a view ``factor`` times wider than that task's crop (same
    #: centre, ``factor x size`` px, column ``crop_<task>_context``) for the model's second pass.
    crop_contexts: tuple[tuple[str, float], ...] = ()
    #: False: every image is one face already (a crop), no detection.
    detect: bool = True
    #: Threads OpenCV may use inside one task (parallelism comes from Ray; 1 avoids oversubscription).
    cv2_threads: int = 1
    #: Larger files are not decoded (an ``error`` row; their hash is still computed, streaming).
    max_file_bytes: int = 512 * 1024 * 1024
    #: Video files: frames analysed per second of presentation time (0: every frame), and at most this many per file.
    video_fps: float = 5.0
    video_max_frames: int | None = 10_000
    #: Videos longer than 1.5 times this (seconds) are cut into segments of about this length,
    #: each decoded by a task of its own (0: every video is decoded whole in its file's task).
    video_segment_s: float = 0.0


class _Rows:
    """Accumulates output rows, then turns them into numpy columns."""

    def __init__(self, config: PrepareConfig):
        self.config = config
        self.cols: dict[str, list] = {}
        self.crop_sizes = crop_columns(config)
        self.crops: dict[str, list[np.ndarray]] = {c: [] for c in self.crop_sizes}
        self.n = 0

    def add(self, crops: dict[str, np.ndarray] | None = None, **values) -> None:
        for k, v in values.items():
            self.cols.setdefault(k, [None] * self.n).append(v)
        self.n += 1
        for k, lst in self.cols.items():
            if len(lst) < self.n:
                lst.append(None)
        for c, size in self.crop_sizes.items():
            self.crops[c].append(crops[c] if crops is not None else np.zeros((size, size), np.uint8))

    def set(self, i: int, name: str, value) -> None:
        """Set one value of row ``i`` after it was added."""
        self.cols.setdefault(name, [None] * self.n)[i] = value

    def columns(self) -> dict[str, np.ndarray]:
        n = self.n

        def col(name, dtype, fill):
            vals = self.cols.get(name, [None] * n)
            return np.array([fill if v is None else v for v in vals], dtype=dtype)

        out = {
            name: col(name, object, "")
            for name in ("root", "input_root", "path", "abs_path", "sha256", "status", "error", "image_format", "image_mode", "segment_plan")
        }
        out["file_size"] = col("file_size", np.int64, -1)
        out["file_mtime_ns"] = col("file_mtime_ns", np.int64, -1)
        out["exif_orientation"] = col("exif_orientation", np.int16, 0)
        out["image_width"] = col("image_width", np.int32, -1)
        out["image_height"] = col("image_height", np.int32, -1)
        out["num_faces"] = col("num_faces", np.int32, 0)
        out["face_index"] = col("face_index", np.int32, -1)
        out["frame_index"] = col("frame_index", np.int32, -1)
        out["timestamp_s"] = col("timestamp_s", np.float64, np.nan)
        out["track_id"] = col("track_id", np.int32, -1)
        out["segment_index"] = col("segment_index", np.int32, -1)
        out["segment_count"] = col("segment_count", np.int32, 0)
        # rows the row's file has in all (0: an image, whose num_faces says): the writer commits a file whole
        out["file_rows"] = col("file_rows", np.int32, 0)
        out["score"] = col("score", np.float32, np.nan)
        out["bbox"] = np.array([[np.nan] * 4 if v is None else v for v in self.cols.get("bbox", [None] * n)], np.float32).reshape(n, 4)
        out["square"] = np.array([[0, 0, 0] if v is None else v for v in self.cols.get("square", [None] * n)], np.int64).reshape(n, 3)
        for t in ("t_read", "t_decode", "t_detect", "t_crop"):
            out[t] = col(t, np.float64, 0.0)
        for c, size in self.crop_sizes.items():
            out[c] = np.stack(self.crops[c]) if n else np.zeros((0, size, size), np.uint8)
        return out


def crop_columns(config: PrepareConfig) -> dict[str, int]:
    """``{column: side}`` of the crops a row carries: ``crop_<task>``, and ``crop_<task>_context``."""
    sizes = {f"crop_{t}": int(size) for t, size in config.crop_sizes}
    for t, factor in config.crop_contexts:
        sizes[f"crop_{t}_context"] = int(round(sizes[f"crop_{t}"] * factor))
    return sizes


def model_crops(metas: dict[str, dict], refine: int = 0) -> dict:
    """The :class:`PrepareConfig` fields that crop each model's input as its ``meta.json`` says
    (size and framing), for ``{task: meta}``, with the keypoint model's wider view when it makes
    ``refine`` second passes: the job and ``predict`` build their config from it."""
    return {"crop_sizes": tuple((t, int(m["input_size"])) for t, m in metas.items()), "crop_margins": model_margins(metas),
            "crop_contexts": (("keypoints", CONTEXT_FACTOR),) if "keypoints" in metas and refine_passes(metas["keypoints"], refine) else ()}


def _error_message(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    text = msg[-1] if msg else ""
    if isinstance(e, ImageDecodeError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _wants_color(config: PrepareConfig) -> bool:
    """Whether detection needs the colour image beside the gray one (the crops are gray)."""
    return config.detect and get_detector(config.detector).wants_color


def _analyse(rows: _Rows, gray: np.ndarray, base: dict, timings: dict, color: np.ndarray | None = None) -> None:
    """Detect and crop one decoded image; append its rows (a face per row, or one no_face row).

    ``color``: the BGR image (or None, or gray) for a detector that uses colour.
    """
    cfg = rows.config
    t0 = time.perf_counter()
    h, w = gray.shape[:2]
    if cfg.detect:
        detector = get_detector(cfg.detector)
        boxes, scores, _ = detector.detect(color if detector.wants_color and color is not None else gray)
        margins = {t: dict(cfg.crop_margins).get(t, cfg.margin) for t, _ in cfg.crop_sizes}
    else:
        boxes, scores = np.array([[0, 0, w, h]], np.float32), np.array([np.nan], np.float32)
        margins = {t: 0.0 for t, _ in cfg.crop_sizes}
    t1 = time.perf_counter()
    faces = []
    contexts = dict(cfg.crop_contexts)
    for box in boxes:
        squares = {t: square_crop(box, margins[t]) for t, _ in cfg.crop_sizes}
        # The row's square maps keypoint outputs back to the image, so it is the keypoint crop's.
        sq = squares.get("keypoints", next(iter(squares.values())))
        crops = {f"crop_{t}": crop_resize(gray, squares[t], size) for t, size in cfg.crop_sizes}
        for t, factor in contexts.items():
            crops[f"crop_{t}_context"] = crop_resize(gray, context_square(squares[t], factor), rows.crop_sizes[f"crop_{t}_context"])
        faces.append((box, sq, crops))
    t2 = time.perf_counter()
    timings = dict(timings, t_detect=t1 - t0, t_crop=t2 - t1)
    if not faces:
        rows.add(**base, status="no_face", num_faces=0, **timings)
        return
    for i, ((box, sq, crops), score) in enumerate(zip(faces, scores)):
        rows.add(
            crops,
            **base,
            status="ok",
            num_faces=len(faces),
            face_index=i,
            bbox=[float(v) for v in box],
            score=None if not np.isfinite(score) else float(score),
            square=list(sq),
            **(timings if i == 0 else {}),
        )


def _prepare_file(rows: _Rows, rec: dict) -> None:
    if rec.get("segment"):
        _prepare_segment(rows, rec)
        return
    base = {k: rec[k] for k in ("root", "input_root", "path", "abs_path", "file_size", "file_mtime_ns")}
    t0 = time.perf_counter()
    too_big = None
    try:
        # A local file is checked to be regular as opened (storage.open_read); an object is fetched
        # here, inside the task, and keeps the size and time its listing gave.
        with storage.open_read(rec["abs_path"]) as (f, st):
            if st is not None:
                base["file_size"], base["file_mtime_ns"] = st
            limit = rows.config.max_file_bytes
            # A file known to be too big is only hashed, streaming; else at most limit + 1 bytes are read.
            data = b"" if base["file_size"] > limit else f.read(limit + 1)
            h = hashlib.sha256(data)
            if base["file_size"] > limit or len(data) > limit:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
                too_big = f"file too large to decode ({max(base['file_size'], len(data))} bytes > {limit})"
                data = b""
            sha = h.hexdigest()
    except OSError as e:
        rows.add(**base, status="error", error=f"cannot read file: {e.strerror or e}", t_read=time.perf_counter() - t0)
        return
    base["sha256"] = sha
    t1 = time.perf_counter()
    if too_big:
        rows.add(**base, status="error", error=too_big, t_read=t1 - t0)
        return
    done = rec.get("done_sha") or ""
    if done and sha in done.split(","):
        rows.add(**base, status="skipped", t_read=t1 - t0)
        return
    video = sniff_video(data[:64])
    if video:
        _prepare_video(rows, base, data, video, t1 - t0)
        return
    try:
        dec = decode_image(data)
        del data
        gray = dec.gray
    except Exception as e:  # noqa: BLE001 - one bad image never stops the batch
        rows.add(**base, status="error", error=_error_message(e), t_read=t1 - t0, t_decode=time.perf_counter() - t1)
        return
    t2 = time.perf_counter()
    base.update(image_format=dec.format, image_mode=dec.mode, exif_orientation=dec.orientation, image_width=dec.width, image_height=dec.height)
    # Outside the per-image try: a detector that cannot be built (a package missing on this node)
    # must fail the task, not write an error row that would mark the image done.
    color = dec.image if _wants_color(rows.config) else None
    del dec
    try:
        _analyse(rows, gray, base, {"t_read": t1 - t0, "t_decode": t2 - t1}, color)
    except Exception as e:  # noqa: BLE001 - a detector failure is this image's error only
        rows.add(**base, status="error", error=_error_message(e), t_read=t1 - t0, t_decode=t2 - t1)


def _prepare_video(rows: _Rows, base: dict, data: bytes, fmt: str, t_read: float) -> None:
    """A video's rows: its sampled frames' faces (``frame_index``, ``timestamp_s``; the job gives
    ``track_id`` once the faces have keypoints), a ``no_face`` row per frame without one, and an ``error`` row naming the time where decoding
    stopped early (a damaged file, or ``video_max_frames``); every row carries the file's row count.
    A video long enough to cut (``video_segment_s``) gives one :data:`SPLIT` row instead."""
    cfg = rows.config
    start = rows.n
    t0 = time.perf_counter()
    try:
        info, frames = sample_frames(data, cfg.video_fps or None, cfg.video_max_frames, fmt)
    except VideoError as e:
        rows.add(**base, status="error", error=str(e), image_format=fmt, t_read=t_read, t_decode=time.perf_counter() - t0)
        return
    base = dict(base, image_format=fmt, image_mode="bgr", exif_orientation=1, image_width=info.width, image_height=info.height)
    plan = plan_segments(data, cfg.video_fps or None, cfg.video_max_frames, cfg.video_segment_s) if cfg.video_segment_s else None
    if plan is not None:
        next(frames, None)  # started, so that closing it closes its container
        frames.close()
        rows.add(**base, status=SPLIT, segment_plan=plan.to_json(), segment_count=len(plan.segments), file_rows=1,
                 t_read=t_read, t_decode=time.perf_counter() - t0)
        return
    kept, last_t, stopped = _analyse_frames(rows, base, frames, t_read)
    del data
    limit = cfg.video_max_frames
    if stopped is None and limit is not None and kept >= limit and info.duration_s and last_t + 1.5 / (cfg.video_fps or 30.0) < info.duration_s:
        stopped = (_limit_message(limit, last_t, info.duration_s), last_t)
    if stopped is not None or kept == 0:
        message, at_s = stopped or ("the video stream has no frames", 0.0)
        rows.add(**base, status="error", error=message, timestamp_s=at_s)
    for i in range(start, rows.n):
        rows.set(i, "file_rows", rows.n - start)


def _limit_message(limit: int, last_t: float, duration_s: float | None) -> str:
    of = f" of {duration_s:.3f} s" if duration_s else ""
    return f"not analysed after {last_t:.3f} s{of}: the limit of {limit} frames per video (--max-frames) was reached"


def _analyse_frames(rows: _Rows, base: dict, frames, t_read: float) -> tuple[int, float, tuple[str, float] | None]:
    """Detect and crop each sampled frame of ``frames`` (rows per face); how many frames, the last
    one's time, and ``(message, at_s)`` when decoding failed on the way."""
    want_color = _wants_color(rows.config)
    stopped, kept, last_t = None, 0, 0.0
    while True:
        t1 = time.perf_counter()
        try:
            frame = next(frames)
        except StopIteration:
            break
        except VideoError as e:
            stopped = (str(e), e.at_s)
            break
        timings = {"t_read": t_read if kept == 0 else 0.0, "t_decode": time.perf_counter() - t1}
        at = dict(base, frame_index=frame.index, timestamp_s=frame.timestamp_s)
        try:
            _analyse(rows, cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), at, timings, frame.image if want_color else None)
        except Exception as e:  # noqa: BLE001 - a detector failure is this frame's error only
            rows.add(**at, status="error", error=_error_message(e), **timings)
        kept, last_t = kept + 1, frame.timestamp_s
    return kept, last_t, stopped


def segment_record(rec: dict, split_row: dict, k: int) -> dict:
    """The pipeline record (:data:`FILE_COLUMNS`) of segment ``k`` of the video whose file record
    is ``rec`` and whose :data:`SPLIT` row (its values by column) is ``split_row``."""
    carried = {c: split_row[c] for c in ("sha256", "image_format", "image_width", "image_height", "file_size", "file_mtime_ns")}
    return {**{c: rec[c] for c in FILE_COLUMNS}, "file_size": int(carried["file_size"]), "file_mtime_ns": int(carried["file_mtime_ns"]),
            "done_sha": "", "segment": json.dumps({"plan": split_row["segment_plan"], "k": int(k), **{c: _plain(v) for c, v in carried.items()}})}


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _prepare_segment(rows: _Rows, rec: dict) -> None:
    """The rows of one segment of a video (:func:`segment_record`): as :func:`_prepare_video` gives
    for its frames, with ``segment_index``/``segment_count`` (the job tracks faces across
    segments, in order) and each row counting the segment's rows as its file's."""
    cfg = rows.config
    seg = json.loads(rec["segment"])
    plan, k = SegmentPlan.from_json(seg["plan"]), int(seg["k"])
    count = len(plan.segments)
    base = {c: rec[c] for c in ("root", "input_root", "path", "abs_path")} | {
        "file_size": seg["file_size"], "file_mtime_ns": seg["file_mtime_ns"], "sha256": seg["sha256"], "image_format": seg["image_format"],
        "image_mode": "bgr", "exif_orientation": 1, "image_width": seg["image_width"], "image_height": seg["image_height"],
        "segment_index": k, "segment_count": count}
    start = rows.n
    t0 = time.perf_counter()
    stopped, kept, last_t = None, 0, 0.0
    try:
        with storage.open_read(rec["abs_path"], seekable=True) as (f, st):
            if st is not None and st != (seg["file_size"], seg["file_mtime_ns"]):
                stopped = ("the file changed while its segments were annotated (a later run annotates it again)", None)
            else:
                kept, last_t, stopped = _analyse_frames(rows, base, sample_segment(f, plan, k, cfg.video_fps or None), time.perf_counter() - t0)
    except (OSError, VideoError) as e:
        stopped = (f"cannot read file: {getattr(e, 'strerror', None) or e}", None)
    if stopped is None and k == count - 1 and plan.limited:
        stopped = (_limit_message(cfg.video_max_frames, plan.last_s, None), plan.last_s)
    if stopped is not None or kept == 0:
        message, at_s = stopped or ("the segment gave no frames", None)
        rows.add(**base, status="error", error=message, timestamp_s=at_s if at_s is not None else float("nan"))
    for i in range(start, rows.n):
        rows.set(i, "file_rows", rows.n - start)


def prepare_batch(batch: dict[str, np.ndarray], config: PrepareConfig) -> dict[str, np.ndarray]:
    """Ray Data stage: a batch of listed files (:data:`FILE_COLUMNS`) → face / status rows."""
    if config.cv2_threads and cv2.getNumThreads() != config.cv2_threads:
        cv2.setNumThreads(config.cv2_threads)
    rows = _Rows(config)
    n = len(batch["abs_path"])
    for i in range(n):
        rec = {k: (batch[k][i] if k in batch else None) for k in FILE_COLUMNS}
        rec["file_size"] = int(rec["file_size"]) if rec["file_size"] is not None else -1
        rec["file_mtime_ns"] = int(rec["file_mtime_ns"]) if rec["file_mtime_ns"] is not None else -1
        _prepare_file(rows, rec)
    return rows.columns()


def prepare_items(items: list, config: PrepareConfig, color: str = "rgb") -> dict[str, np.ndarray]:
    """In-process stage 1 for :func:`predict`: items are paths, encoded bytes, decoded arrays or PIL images.

    Arrays are upright images in ``color`` channel order (``rgb``: PIL, matplotlib, imageio;
    ``bgr``: OpenCV); gray, 3 or 4 channels, 8 or 16 bit. Each item's ``path`` column is its
    index as a string (or the path for path items).
    """
    rows = _Rows(config)
    want_color = _wants_color(config)
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):  # a path, or an object-store URI
            _prepare_file(
                rows,
                {"root": "", "input_root": "", "path": str(item), "abs_path": storage.absolute(item), "file_size": -1, "file_mtime_ns": -1, "done_sha": ""},
            )
            continue
        base = {"root": "", "input_root": "", "path": str(i)}
        t0 = time.perf_counter()
        try:
            if isinstance(item, (bytes, bytearray, memoryview)):
                data = bytes(item)
                base["sha256"] = hashlib.sha256(data).hexdigest()
                video = sniff_video(data[:64])
                if video:
                    _prepare_video(rows, base, data, video, 0.0)
                    continue
                dec = decode_image(data)
                base.update(image_format=dec.format, image_mode=dec.mode, exif_orientation=dec.orientation)
                gray, bgr = dec.gray, (dec.image if want_color else None)
            else:
                img, order, mode = array_to_image(item, color)
                gray, bgr = gray_and_bgr(img, order, want_color)
                base.update(image_format="array", image_mode=mode)
            base.update(image_width=int(gray.shape[1]), image_height=int(gray.shape[0]))
        except Exception as e:  # noqa: BLE001
            rows.add(**base, status="error", error=_error_message(e))
            continue
        try:
            _analyse(rows, gray, base, {"t_decode": time.perf_counter() - t0}, bgr)
        except Exception as e:  # noqa: BLE001
            rows.add(**base, status="error", error=_error_message(e))
    return rows.columns()
