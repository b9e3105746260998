"""The Parquet schema of annotation output (versioned), and the conversion from pipeline rows.

Layout: ``OUT/annotations/part-<run_id>-<seq>.parquet`` (plain Parquet, no extension types:
``pandas.read_parquet("OUT/annotations")``, ``pyarrow.dataset.dataset("OUT/annotations")`` and
``duckdb: SELECT * FROM 'OUT/annotations/*.parquet'`` all read it). Every input file has rows:
one per detected face (``status = "ok"``), else one with ``status = "no_face"`` or ``"error"``.
Each part file holds complete images only. Keypoint and probability columns are named from the
models' ``meta.json`` (``kp_<name>_x``/``kp_<name>_y`` for each keypoint, or ``lm_<NN>_x``/``_y``
for the iBUG-68 points ``pNN`` beside the Kaggle ``kp_`` columns derived from them;
``prob_<class>`` in lower case for each class); with the shipped models the schema is fixed.

A video file has rows per sampled frame: one per face found in it (``ok``), else one ``no_face``
row; ``frame_index``, ``timestamp_s`` and ``track_id`` say which frame and which face. Still images
have null frame fields.

Schema version 4 (version 3 had no segment fields, version 2 no pose fields, version 1 no frame
fields either; their parts keep reading, with those columns null)
— fields (null where not applicable, e.g. face fields on ``no_face`` rows):

=====================  ==========  =========================================================
field                  type        meaning
=====================  ==========  =========================================================
schema_version         int16       this schema's version (``SCHEMA_VERSION``)
run_id                 string      the run that wrote the row
timestamp              timestamp   when the file's annotation was committed (UTC, microseconds): one
                                   time for all its rows (a video cut into segments commits segment
                                   by segment; its rows all carry the first segment's commit time)
root                   string      input root label (the input folder's name, ``~2`` if repeated)
input_root             string      absolute path of the input root at annotation time
path                   string      file path relative to its input root (POSIX separators)
sha256                 string      sha256 of the file's bytes (null if it could not be read)
file_size              int64       bytes
file_mtime_ns          int64       modification time (ns since epoch) when read
image_format           string      format sniffed from content: jpeg, png, bmp, webp, tiff, ...
image_mode             string      decoded source mode: gray, gray16, graya, bgr, bgr16, bgra, ...
exif_orientation       int8        EXIF orientation applied (1 = none)
image_width            int32       width of the upright (EXIF-applied) image, pixels
image_height           int32       height of the upright image, pixels
status                 string      ok | no_face | error
error                  string      one-line reason for ``error`` rows
num_faces              int32       faces detected in the image or video frame (0 for no_face / error)
face_index             int32       0..num_faces-1, left to right (null unless ok)
frame_index            int32       video: the frame's number in decode order (null for images)
timestamp_s            float64     video: the frame's presentation time, seconds from the first frame;
                                   on an ``error`` row, where decoding stopped (null for images)
track_id               int32       video: the face across frames (same id = same face; null unless ok)
segment_index          int32       video cut into segments (``--segment-seconds``): the segment, in time
                                   order, whose task decoded the row's frame (null otherwise)
segment_count          int32       its segments in all: the video is complete in the dataset when rows
                                   of every segment are (a killed run's rerun does the missing ones)
bbox_x, bbox_y         float32     face box top-left, image pixels (``mtcnn``: may reach past the edge)
bbox_w, bbox_h         float32     face box size, image pixels
detector_score         float32     the detector's score, larger = more face-like (``haar``: cascade level
                                   weight; ``mtcnn``: face probability); null when it gives none
kp_<name>_x, _y        float32     each keypoint in image pixels (pixel centres: column, row); with a
                                   68-point model (``--landmarks 68``) the 15 Kaggle points derived from
                                   its 68 (``facepipe.data.schema.IBUG68_TO_KAGGLE15``: eye centres are
                                   the means of their contours, eye corners, brow ends, nose tip and
                                   mouth points the iBUG points themselves)
lm_00_x ... lm_67_y    float32     68-point model only: the 68 iBUG points in iBUG order, image pixels:
                                   00-16 jaw line (the subject's right ear to left ear), 17-21 right
                                   brow, 22-26 left brow, 27-30 nose bridge, 31-35 nostrils, 36-41
                                   right eye, 42-47 left eye, 48-59 outer lips, 60-67 inner lips
yaw_deg                float32     head pose from the keypoints (facepipe/faces/pose.py), degrees: > 0 the face
                                   turns to the subject's left (nose towards the image's right)
pitch_deg              float32     > 0 the face tilts up
roll_deg               float32     > 0 the face is turned counter-clockwise in the image
emotion                string      most probable class
emotion_confidence     float32     its probability
prob_<class>           float32     softmax probability of each class (sum to 1)
keypoints_model_id     string      ``model_id`` of the keypoint model (meta.json)
emotion_model_id       string      ``model_id`` of the emotion model
detector               string      detector and settings, ``<name>:<settings>``, e.g. ``haar:...default.xml
                                   sf=1.1 mn=5 min=30 max_side=640`` or ``mtcnn:min=20 th=0.6,0.7,0.7 ...``
facepipe_version       string      package version that wrote the row
=====================  ==========  =========================================================

The schema's metadata carries ``facepipe.schema_version``, ``facepipe.keypoint_names`` and
``facepipe.class_names`` (JSON); every field carries its description as ``description`` metadata.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa

import facepipe
from facepipe.data.schema import IBUG68_TO_KAGGLE15, is_ibug68, kaggle15_from_ibug68

__all__ = ["SCHEMA_VERSION", "POSE_COLUMNS", "STATUSES", "FILE_STATUS_ORDER", "file_status", "keypoint_columns", "derived_keypoints", "named_points", "prob_column", "build_schema", "rows_to_table", "describe_fields"]

SCHEMA_VERSION = 4
#: Head pose columns (schema version 3), degrees, in :data:`facepipe.faces.pose.POSE_NAMES` order.
POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg")
STATUSES = ("ok", "no_face", "error")
#: A file with many rows (a video) has the first of these among its rows' statuses: ``ok`` with
#: any face, else ``no_face`` with any faceless frame, else an error (the job's ``error_repeated``:
#: the same error as its last run).
FILE_STATUS_ORDER = ("ok", "no_face", "error_repeated", "error")


def file_status(statuses) -> str:
    """The status of a file from the statuses of its rows (:data:`FILE_STATUS_ORDER`)."""
    return next((s for s in FILE_STATUS_ORDER if s in statuses), "error")

_TS = pa.timestamp("us", tz="UTC")

_BASE_HEAD: list[tuple[str, pa.DataType, str]] = [
    ("schema_version", pa.int16(), "version of this schema"),
    ("run_id", pa.string(), "the run that wrote the row"),
    ("timestamp", _TS, "when the file's annotation was committed (UTC; one time for all its rows, a segmented video's too)"),
    ("root", pa.string(), "input root label (the input folder's name)"),
    ("input_root", pa.string(), "absolute path of the input root at annotation time"),
    ("path", pa.string(), "file path relative to its input root (POSIX)"),
    ("sha256", pa.string(), "sha256 of the file's bytes"),
    ("file_size", pa.int64(), "file size in bytes"),
    ("file_mtime_ns", pa.int64(), "file modification time (ns since epoch)"),
    ("image_format", pa.string(), "format sniffed from content"),
    ("image_mode", pa.string(), "decoded source mode (gray, gray16, bgr, bgra, ...)"),
    ("exif_orientation", pa.int8(), "EXIF orientation applied (1 = none)"),
    ("image_width", pa.int32(), "upright image width, pixels"),
    ("image_height", pa.int32(), "upright image height, pixels"),
    ("status", pa.string(), "ok | no_face | error"),
    ("error", pa.string(), "one-line reason for error rows"),
    ("num_faces", pa.int32(), "faces detected in the image"),
    ("face_index", pa.int32(), "face number in the image, left to right"),
    ("frame_index", pa.int32(), "video: the frame's number in decode order (null for images)"),
    ("timestamp_s", pa.float64(), "video: the frame's presentation time, seconds (error rows: where decoding stopped)"),
    ("track_id", pa.int32(), "video: the same face across frames (null unless ok)"),
    ("segment_index", pa.int32(), "video cut into segments: the segment the row's frame lies in (null otherwise)"),
    ("segment_count", pa.int32(), "video cut into segments: how many segments it has (null otherwise)"),
    ("bbox_x", pa.float32(), "face box left, image pixels"),
    ("bbox_y", pa.float32(), "face box top, image pixels"),
    ("bbox_w", pa.float32(), "face box width, image pixels"),
    ("bbox_h", pa.float32(), "face box height, image pixels"),
    ("detector_score", pa.float32(), "the detector's score, larger = more face-like"),
]
_BASE_TAIL: list[tuple[str, pa.DataType, str]] = [
    ("keypoints_model_id", pa.string(), "model_id of the keypoint model"),
    ("emotion_model_id", pa.string(), "model_id of the emotion model"),
    ("detector", pa.string(), "detector and settings (<name>:<settings>)"),
    ("facepipe_version", pa.string(), "facepipe version that wrote the row"),
]


def keypoint_columns(names: list[str]) -> list[tuple[str, str]]:
    """The ``(x, y)`` columns of a model's points: ``lm_<NN>_x``/``_y`` for the iBUG-68 points
    ``pNN``, else ``kp_<name>_x``/``_y``."""
    if is_ibug68(names):
        return [(f"lm_{n[1:]}_x", f"lm_{n[1:]}_y") for n in names]
    return [(f"kp_{n}_x", f"kp_{n}_y") for n in names]


def derived_keypoints(names: list[str]) -> list[str]:
    """The Kaggle points a model's points give too (iBUG-68: the 15 Kaggle points, their
    ``kp_<name>`` columns filled by :func:`facepipe.data.schema.kaggle15_from_ibug68`), else none."""
    return list(IBUG68_TO_KAGGLE15) if is_ibug68(names) else []


def named_points(names: list[str], points: np.ndarray) -> dict[str, tuple[float, float]]:
    """``{name: (x, y)}`` of one face's points ``[K, 2]``, the :func:`derived_keypoints` first (as
    the Parquet columns are)."""
    derived = derived_keypoints(names)
    out = {n: (float(x), float(y)) for n, (x, y) in zip(derived, kaggle15_from_ibug68(points, names))} if derived else {}
    return out | {n: (float(x), float(y)) for n, (x, y) in zip(names, points)}


def prob_column(name: str) -> str:
    return "prob_" + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def build_schema(keypoint_names: list[str], class_names: list[str]) -> pa.Schema:
    fields = [(n, t, d) for n, t, d in _BASE_HEAD]
    for name in derived_keypoints(keypoint_names):
        cx, cy = keypoint_columns([name])[0]
        fields += [(cx, pa.float32(), f"{name} x, image pixels (from the 68 points)"), (cy, pa.float32(), f"{name} y, image pixels (from the 68 points)")]
    for name, (cx, cy) in zip(keypoint_names, keypoint_columns(keypoint_names)):
        fields += [(cx, pa.float32(), f"{name} x, image pixels"), (cy, pa.float32(), f"{name} y, image pixels")]
    fields += [(c, pa.float32(), f"head pose {c[:-4]}, degrees (facepipe/faces/pose.py)") for c in POSE_COLUMNS]
    fields += [("emotion", pa.string(), "most probable class"), ("emotion_confidence", pa.float32(), "its probability")]
    fields += [(prob_column(c), pa.float32(), f"probability of {c}") for c in class_names]
    fields += _BASE_TAIL
    names = [f[0] for f in fields]
    if len(set(names)) != len(names):
        raise ValueError("keypoint or class names collide in the output schema")
    meta = {
        "facepipe.schema_version": str(SCHEMA_VERSION),
        "facepipe.keypoint_names": json.dumps(list(keypoint_names)),
        "facepipe.class_names": json.dumps(list(class_names)),
    }
    return pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in fields], metadata=meta)


def describe_fields(schema: pa.Schema) -> dict[str, str]:
    """``{field: "type: description"}`` for docs and summary.json."""
    return {f.name: f"{f.type}: {(f.metadata or {}).get(b'description', b'').decode()}" for f in schema}


def _masked(values: np.ndarray, mask: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.array(values, type=typ, mask=mask)


def rows_to_table(rows: dict[str, np.ndarray], schema: pa.Schema, *, run_id: str, timestamp, keypoints_model_id: str, emotion_model_id: str, detector: str) -> pa.Table:
    """Pipeline rows (numpy columns from the :class:`~facepipe.annotate.infer.Annotator`) → a table of ``schema``."""
    n = len(rows["status"])
    status = np.asarray(rows["status"]).astype(str)
    ok = status == "ok"
    not_ok = ~ok
    has_image = np.asarray(rows["image_width"]) >= 0
    kp_names = json.loads(schema.metadata[b"facepipe.keypoint_names"])
    class_names = json.loads(schema.metadata[b"facepipe.class_names"])

    def strings(name, null_if_empty=True):
        vals = [str(v) if v is not None else "" for v in rows[name]]
        return pa.array([None if (null_if_empty and v == "") else v for v in vals], pa.string())

    def const(value, typ):
        return pa.array([value] * n, typ)

    cols: dict[str, pa.Array] = {
        "schema_version": const(SCHEMA_VERSION, pa.int16()),
        "run_id": const(run_id, pa.string()),
        "timestamp": const(timestamp, _TS),
        "root": strings("root", False),
        "input_root": strings("input_root", False),
        "path": strings("path", False),
        "sha256": strings("sha256"),
        "file_size": _masked(np.asarray(rows["file_size"], np.int64), np.asarray(rows["file_size"]) < 0, pa.int64()),
        "file_mtime_ns": _masked(np.asarray(rows["file_mtime_ns"], np.int64), np.asarray(rows["file_mtime_ns"]) < 0, pa.int64()),
        "image_format": strings("image_format"),
        "image_mode": strings("image_mode"),
        "exif_orientation": _masked(np.asarray(rows["exif_orientation"], np.int8), ~has_image, pa.int8()),
        "image_width": _masked(np.asarray(rows["image_width"], np.int32), ~has_image, pa.int32()),
        "image_height": _masked(np.asarray(rows["image_height"], np.int32), ~has_image, pa.int32()),
        "status": pa.array(status, pa.string()),
        "error": strings("error"),
        "num_faces": pa.array(np.asarray(rows["num_faces"], np.int32), pa.int32()),
        "face_index": _masked(np.asarray(rows["face_index"], np.int32), not_ok, pa.int32()),
    }
    # rows built without frame columns (a caller's own still-image rows) get nulls there
    frame = np.asarray(rows.get("frame_index", np.full(n, -1)), np.int32)
    ts = np.asarray(rows.get("timestamp_s", np.full(n, np.nan)), np.float64)
    track = np.asarray(rows.get("track_id", np.full(n, -1)), np.int32)
    segment = np.asarray(rows.get("segment_index", np.full(n, -1)), np.int32)
    segments = np.asarray(rows.get("segment_count", np.full(n, 0)), np.int32)
    cols["segment_index"] = _masked(segment, segment < 0, pa.int32())
    cols["segment_count"] = _masked(segments, segments <= 0, pa.int32())
    cols["frame_index"] = _masked(frame, frame < 0, pa.int32())
    cols["timestamp_s"] = _masked(ts, ~np.isfinite(ts), pa.float64())
    cols["track_id"] = _masked(track, not_ok | (track < 0), pa.int32())
    bbox = np.asarray(rows["bbox"], np.float32).reshape(n, 4)
    for i, name in enumerate(("bbox_x", "bbox_y", "bbox_w", "bbox_h")):
        cols[name] = _masked(bbox[:, i], not_ok, pa.float32())
    score = np.asarray(rows["score"], np.float32)
    cols["detector_score"] = _masked(score, not_ok | ~np.isfinite(score), pa.float32())
    # A task the run left out (``tasks``) leaves NaN outputs: null columns, like a row without a face.
    kps = np.asarray(rows["keypoints"], np.float32).reshape(n, len(kp_names), 2)
    no_kp = not_ok | ~np.isfinite(kps).all(axis=(1, 2))
    derived = derived_keypoints(kp_names)
    pts = np.concatenate([kaggle15_from_ibug68(kps, kp_names).astype(np.float32), kps], axis=1) if derived else kps
    for k, (cx, cy) in enumerate(keypoint_columns(derived) + keypoint_columns(kp_names)):
        cols[cx] = _masked(pts[:, k, 0], no_kp, pa.float32())
        cols[cy] = _masked(pts[:, k, 1], no_kp, pa.float32())
    pose = np.asarray(rows.get("pose", np.full((n, 3), np.nan)), np.float32).reshape(n, 3)
    for j, name in enumerate(POSE_COLUMNS):
        cols[name] = _masked(pose[:, j], not_ok | ~np.isfinite(pose[:, j]), pa.float32())
    probs = np.asarray(rows["probs"], np.float32).reshape(n, len(class_names))
    no_em = not_ok | ~np.isfinite(probs).all(axis=1)
    cols["emotion"] = pa.array([None if skip else str(v) for v, skip in zip(rows["emotion"], no_em)], pa.string())
    cols["emotion_confidence"] = _masked(np.nan_to_num(probs.max(axis=1) if n else np.zeros(0, np.float32)), no_em, pa.float32())
    for c, name in enumerate(class_names):
        cols[prob_column(name)] = _masked(probs[:, c], no_em, pa.float32())
    cols["keypoints_model_id"] = const(keypoints_model_id, pa.string())
    cols["emotion_model_id"] = const(emotion_model_id, pa.string())
    cols["detector"] = const(detector, pa.string())
    cols["facepipe_version"] = const(facepipe.__version__, pa.string())
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
