"""Stage 2 of annotation: batched forward passes of both models, and in-process :func:`predict`.

:class:`Annotator` is the callable class that Ray Data runs as an actor pool
(``map_batches(Annotator, concurrency=N)``): each actor loads both model directories once, then
turns batches of face rows from :mod:`.prepare` into keypoints in original-image pixels (the
keypoint :class:`~facepipe.predictor.Predictor`, then :func:`facepipe.faces.crop.crop_to_image`) and emotion
probabilities (the emotion one). :func:`predict` runs the
very same two stages in the calling process.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np

from facepipe.faces.crop import context_square, crop_resize, crop_to_image, square_crop, square_in_crop
from facepipe.faces.detect import DetectorConfig, detector_config
from facepipe.annotate.prepare import PrepareConfig, model_crops, prepare_items
from facepipe.annotate.schema import file_status, named_points
from facepipe.faces.decode import COLOR_ORDERS
from facepipe.faces.pose import POSE_NAMES, can_solve, head_pose
from facepipe.faces.framing import CONTEXT_FACTOR, DEFAULT_MARGIN, DEFAULT_REFINE, BoxModel, refine_passes

__all__ = ["Annotator", "predict", "load_models_meta", "default_model", "keypoints_model_id"]


def keypoints_model_id(kp_meta: dict, refine: int) -> str:
    """The id annotation rows record for the keypoints: the model's, plus its second passes (they
    change the points, so files annotated without them are not done for a run with them)."""
    from facepipe.model_dir import model_id  # not facepipe.models: a run with nothing new never imports torch

    passes = refine_passes(kp_meta, refine)
    return model_id(kp_meta) + (f"+refine{passes}" if passes else "")


def default_model(task: str, path: str | os.PathLike | None, landmarks: int | None = None) -> str | os.PathLike:
    """``path`` (a directory on an object store: its local copy, :func:`facepipe.storage.local_copy`),
    or the model shipped in the package for ``task`` when ``path`` is None (for ``keypoints``, the
    one of ``landmarks`` points, :data:`facepipe.model_dir.SHIPPED_LANDMARKS`). FileNotFoundError
    when none ships; ValueError for an unknown landmark set, or a given keypoint model whose point
    count is not ``landmarks``."""
    from facepipe.model_dir import read_meta, shipped_model

    if path is not None:
        from facepipe import storage

        local = storage.local_copy(path)
        if task == "keypoints" and landmarks is not None:
            names = read_meta(local).get("keypoint_names") or []
            if len(names) != int(landmarks):
                raise ValueError(f"{path}: a keypoint model of {len(names)} points, but {landmarks} landmarks were asked for "
                                 "(give the model or --landmarks, not both)")
        return local
    shipped = shipped_model(task, landmarks if task == "keypoints" else None)
    if shipped is None:
        which = f"{task} model" if task != "keypoints" or landmarks is None else f"{landmarks}-point keypoint model"
        raise FileNotFoundError(f"no {which} given and this installation ships none: pass a model directory")
    return shipped


def load_models_meta(keypoints_model: str | os.PathLike, emotion_model: str | os.PathLike) -> tuple[dict, dict]:
    """Both ``meta.json`` files, checked (:func:`facepipe.model_dir.check_model_dir`) before Ray starts."""
    from facepipe.model_dir import check_model_dir

    return check_model_dir(keypoints_model, "keypoints"), check_model_dir(emotion_model, "emotion")


def _spans(rows: dict[str, np.ndarray]):
    """``(first row, row count, is a video)`` of each item, in order: :func:`.prepare.prepare_items`
    gives one row per face or one status row per image, and a video's rows all say how many it has."""
    j, n = 0, len(rows["status"])
    while j < n:
        video = int(rows["file_rows"][j]) > 0
        count = int(rows["file_rows"][j]) if video else (int(rows["num_faces"][j]) if str(rows["status"][j]) == "ok" else 1)
        yield j, count, video
        j += count


def _with_tracks(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``rows`` with each video's ``track_id`` (its rows come frame by frame, in order)."""
    from facepipe.faces.track import Tracker, track_rows

    for j, count, video in _spans(rows):
        if video:
            span = slice(j, j + count)
            rows["track_id"][span] = track_rows(Tracker(), rows["frame_index"][span], rows["timestamp_s"][span], rows["status"][span],
                                                rows["bbox"][span], rows["keypoints"][span])
    return rows


class Annotator:
    """Loads the models of ``tasks`` once (both by default), as :class:`facepipe.predictor.Predictor`
    objects; ``__call__`` annotates a batch of rows from :mod:`.prepare`.

    Rows whose status is not ``ok``, and every row for a task not run, get NaN keypoints /
    probabilities. Output adds ``keypoints`` float32 ``[N, K, 2]`` (original image pixels),
    ``probs`` float32 ``[N, C]``, ``emotion`` (label), ``pose`` float32 ``[N, 3]`` (yaw, pitch, roll in
    degrees, :mod:`facepipe.faces.pose`; NaN without keypoints) and ``t_infer`` (seconds, spread over the
    batch's faces) and drops the crops. A task not run still names its outputs (from its model's
    ``meta.json``), so the rows keep one schema whatever ``tasks`` is.
    """

    def __init__(
        self,
        keypoints_model: str | os.PathLike,
        emotion_model: str | os.PathLike,
        device: str = "auto",
        torch_threads: int | None = None,
        batch_size: int = 64,
        tasks: tuple[str, ...] = ("keypoints", "emotion"),
        refine: int = DEFAULT_REFINE,
    ):
        import torch

        from facepipe.models import model_id
        from facepipe.predictor import Predictor

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.tasks = tuple(tasks)
        checked = load_models_meta(keypoints_model, emotion_model)  # both, even for a task not run: its names fill the schema
        self.kp = Predictor.load(keypoints_model, device, batch_size) if "keypoints" in self.tasks else None
        self.em = Predictor.load(emotion_model, device, batch_size) if "emotion" in self.tasks else None
        self.kp_meta = self.kp.meta if self.kp else checked[0]
        self.em_meta = self.em.meta if self.em else checked[1]
        self.device = (self.kp or self.em).device
        self.keypoint_names = list(self.kp_meta["keypoint_names"])
        self.class_names = list(self.em_meta["class_names"])
        self.kp_size, self.em_size = int(self.kp_meta["input_size"]), int(self.em_meta["input_size"])
        # Second passes re-frame each face from its predicted points as training framed faces from
        # their labels (box_from_points), so the crop no longer carries the detector's box noise.
        self.refine = refine_passes(self.kp_meta, refine) if self.kp else 0
        # Head pose needs points the mean face knows (Kaggle's 15 or iBUG's 68); other point sets get none.
        self.pose = self.kp is not None and can_solve(self.keypoint_names)
        self.model_ids = (keypoints_model_id(self.kp_meta, refine) if self.kp else None, model_id(self.em_meta) if self.em else None)

    @property
    def crops(self) -> dict:
        """How stage 1 crops for the models run (:func:`.prepare.model_crops`)."""
        return model_crops({t: m for t, m in (("keypoints", self.kp_meta), ("emotion", self.em_meta)) if t in self.tasks}, self.refine)

    def keypoints(self, crops: np.ndarray, squares: np.ndarray, contexts: np.ndarray | None = None) -> np.ndarray:
        """uint8 crops ``[N, S, S]`` and their squares ``[N, 3]`` → points ``[N, K, 2]`` in image pixels.

        With the wider views ``contexts`` (``[N, F*S, F*S]``, :data:`facepipe.faces.framing.CONTEXT_FACTOR`) each
        of :attr:`refine` second passes re-crops every face from them around its predicted points.
        """
        squares = np.asarray(squares)
        points = crop_to_image(self.kp(crops), squares[:, None, :], self.kp_size)
        if self.refine and len(points):
            if contexts is None:
                raise ValueError("the keypoint model makes a second pass but the rows carry no crop_keypoints_context: "
                                 "build the PrepareConfig from Annotator.crops")
            framing = self.kp_meta["framing"]
            box_model, margin = BoxModel(**framing["box_from_points"]), float(framing["margin"])
            n_ctx = contexts.shape[1]
            outer = np.array([context_square(sq, CONTEXT_FACTOR) for sq in squares], np.float64)
            for _ in range(self.refine):
                inner = np.array([square_in_crop(square_crop(b, margin), o, n_ctx) for b, o in zip(box_model.boxes(points), outer)], np.float64)
                again = self.kp(np.stack([crop_resize(c, sq, self.kp_size) for c, sq in zip(contexts, inner)]))
                points = crop_to_image(crop_to_image(again, inner[:, None, :], self.kp_size), outer[:, None, :], n_ctx)
        return points.astype(np.float32)

    def emotions(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops ``[N, S, S]`` → class probabilities ``[N, C]``."""
        return self.em(crops)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        status = np.asarray(batch["status"])
        n = len(status)
        kps = np.full((n, len(self.keypoint_names), 2), np.nan, np.float32)
        probs = np.full((n, len(self.class_names)), np.nan, np.float32)
        labels = np.full(n, "", dtype=object)
        pose = np.full((n, 3), np.nan, np.float32)
        ok = np.flatnonzero(status == "ok")
        if len(ok):
            for task, size in (("keypoints", self.kp_size), ("emotion", self.em_size)):
                if task in self.tasks and batch[f"crop_{task}"].shape[1:] != (size, size):
                    raise ValueError(f"{task} crops are {batch[f'crop_{task}'].shape[1:]}, the model's input is {size}x{size}")
            if self.kp:
                context = batch.get("crop_keypoints_context")
                kps[ok] = self.keypoints(batch["crop_keypoints"][ok], batch["square"][ok], None if context is None else context[ok])
                if self.pose:
                    sizes = np.stack([np.asarray(batch["image_width"])[ok], np.asarray(batch["image_height"])[ok]], axis=1)
                    pose[ok] = head_pose(kps[ok], self.keypoint_names, sizes)
            if self.em:
                probs[ok] = self.emotions(batch["crop_emotion"][ok])
                names = np.array(self.class_names, dtype=object)
                labels[ok] = names[probs[ok].argmax(axis=1)]
        out = {k: v for k, v in batch.items() if not k.startswith("crop_")}
        out["keypoints"] = kps
        out["probs"] = probs
        out["emotion"] = labels
        out["pose"] = pose
        t_infer = np.zeros(n, np.float64)
        if len(ok):
            t_infer[ok] = (time.perf_counter() - t0) / len(ok)
        out["t_infer"] = t_infer
        return out


@functools.lru_cache(maxsize=4)
def _cached_annotator(kp: str, em: str, device: str, batch_size: int, tasks: tuple[str, ...], refine: int) -> Annotator:
    return Annotator(kp, em, device=device, batch_size=batch_size, tasks=tasks, refine=refine)


def predict(
    images,
    keypoints_model: str | os.PathLike | None = None,
    emotion_model: str | os.PathLike | None = None,
    *,
    annotator: Annotator | None = None,
    detector: str | DetectorConfig | dict | None = None,
    margin: float = DEFAULT_MARGIN,
    detect: bool = True,
    device: str = "auto",
    batch_size: int = 64,
    color: str = "rgb",
    as_frame: bool = False,
    tasks: tuple[str, ...] | list[str] = ("keypoints", "emotion"),
    refine: int = DEFAULT_REFINE,
    fps: float = 5.0,
    landmarks: int | None = None,
):
    """Keypoints and emotion for every face in ``images``, in this process (no Ray).

    ``images``: one item or a list of items; an item is a file path, encoded image bytes, a PIL
    image, or a decoded array (gray, 3 or 4 channels, 8 or 16 bit) whose channels are in ``color``
    order: ``"rgb"`` (PIL, matplotlib, imageio, most libraries) or ``"bgr"`` (OpenCV's ``imread``).
    With ``as_frame`` the result is a pandas DataFrame with the annotation job's Parquet columns
    (:mod:`.schema`), one row per face and one per image without a face or that failed. Models
    are model directories (loaded once per process and cached) or a ready ``annotator``; a model
    not given is the one shipped in the package (``facepipe/weights/<task>``; ``landmarks`` 15 or 68
    picks the shipped keypoint model of that many points, default 15). With ``detect=False`` each image
    is taken as one face crop (like the Kaggle / FER2013 images) instead of running the detector.
    ``detector``: a detector name (``"haar"``, ``"mtcnn"``), config or dict
    (:func:`facepipe.faces.detect.detector_config`; default: Haar with its defaults).
    ``tasks``: the models to run (a face then has no keypoints, or no emotion, for a task left out).
    ``refine``: second passes of a keypoint model trained on photos (re-crop each face around its
    predicted points as training framed faces from their labels, predict again; 0: one pass).

    Returns one dict per item (a single dict for a single item)::

        {"status": "ok" | "no_face" | "error", "error": str | None, "width": int, "height": int,
         "faces": [{"face_index": 0, "bbox": (x, y, w, h), "score": float | None,
                    "keypoints": {name: (x, y)}, "keypoints_array": float32 [K, 2],
                    "emotion": "Happy", "confidence": 0.91, "probabilities": {class: p},
                    "pose": {"yaw": deg, "pitch": deg, "roll": deg} or None}]}

    A video item (a path or bytes of MP4, MOV, MKV, WebM or AVI) is sampled at ``fps`` frames per
    second: its faces carry ``frame_index``, ``timestamp_s`` and ``track_id`` too, and its dict has
    ``frames`` (sampled) and ``tracks`` (per face track: first/last time, dominant emotion, seconds
    per emotion; as in the annotation job's ``summary.json``).

    Coordinates are pixels of the (EXIF-upright) original image. Uses the same stage functions as
    the Ray job (:func:`.prepare.prepare_items` and :class:`Annotator`), so results are identical.
    """
    if color not in COLOR_ORDERS:
        raise ValueError(f"color must be one of {COLOR_ORDERS}, got {color!r}")
    if annotator is None:
        keypoints_model = default_model("keypoints", keypoints_model, landmarks)
        emotion_model = default_model("emotion", emotion_model)
        annotator = _cached_annotator(str(Path(keypoints_model).resolve()), str(Path(emotion_model).resolve()), device, int(batch_size),
                                      tuple(tasks), int(refine))
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    det = detector_config(detector)
    if not items:
        if as_frame:
            from facepipe.annotate.schema import build_schema

            return build_schema(annotator.keypoint_names, annotator.class_names).empty_table().to_pandas()
        return []
    config = PrepareConfig(detector=det, margin=margin, detect=detect, cv2_threads=0, video_fps=fps, **annotator.crops)
    rows = _with_tracks(annotator(prepare_items(items, config, color=color)))
    if as_frame:
        from facepipe.annotate.schema import build_schema, rows_to_table

        schema = build_schema(annotator.keypoint_names, annotator.class_names)
        table = rows_to_table(rows, schema, run_id="predict", timestamp=None, keypoints_model_id=annotator.model_ids[0],
                              emotion_model_id=annotator.model_ids[1], detector=det.describe() if detect else "none")
        return table.to_pandas()
    results: list[dict] = []
    for j, count, video in _spans(rows):
        st = str(rows["status"][j])
        span = range(j, j + count)
        statuses = [str(rows["status"][r]) for r in span]
        errors = [str(rows["error"][r]) for r in span if statuses[r - j] == "error" and str(rows["error"][r])]
        res = {
            "status": file_status(statuses) if video else st,
            "error": errors[0] if errors else None,
            "width": int(rows["image_width"][j]) if rows["image_width"][j] >= 0 else None,
            "height": int(rows["image_height"][j]) if rows["image_height"][j] >= 0 else None,
            "faces": [],
        }
        for r in span:
            if statuses[r - j] != "ok":
                continue
            kp, probs, score = rows["keypoints"][r], rows["probs"][r], float(rows["score"][r])
            face = {
                "face_index": int(rows["face_index"][r]),
                "bbox": tuple(float(v) for v in rows["bbox"][r]),
                "score": score if np.isfinite(score) else None,
                "keypoints": named_points(annotator.keypoint_names, kp) if annotator.kp else {},
                "keypoints_array": kp.copy(),
                "emotion": str(rows["emotion"][r]) if annotator.em else None,
                "confidence": float(probs.max()) if annotator.em else None,
                "probabilities": {c: float(p) for c, p in zip(annotator.class_names, probs)} if annotator.em else {},
                "pose": {k: float(v) for k, v in zip(POSE_NAMES, rows["pose"][r])} if np.isfinite(rows["pose"][r]).all() else None,
            }
            if video:
                face.update(frame_index=int(rows["frame_index"][r]), timestamp_s=float(rows["timestamp_s"][r]), track_id=int(rows["track_id"][r]))
            res["faces"].append(face)
        if video:
            import pandas as pd

            from facepipe.faces.track import track_summary

            frames = pd.DataFrame({k: rows[k][j:j + count] for k in ("status", "frame_index", "timestamp_s", "track_id", "emotion")})
            frames = frames.assign(root="", path="", track_id=frames["track_id"].where(frames["status"] == "ok"))
            res["frames"] = int(frames.loc[frames["frame_index"] >= 0, "frame_index"].nunique())
            res["tracks"] = [{k: v for k, v in t.items() if k not in ("root", "path")} for t in track_summary(frames)]
        results.append(res)
    return results[0] if single else results
