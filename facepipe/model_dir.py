"""The model directory's metadata (``meta.json``), readable without importing torch.

The annotation driver only needs a model's metadata (its id, input sizes, labels) to plan a run;
keeping this module free of torch saves the driver ~3 s of importing torch and torchvision
(measured on 2 cores) that only the inference actors need.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from facepipe import storage

WEIGHTS = "weights.pt"
META = "meta.json"

#: The meta.json field that names a task's outputs (its points or its classes), per task. The
#: directory format owns it, so reading and checking a directory needs no task object
#: (:attr:`facepipe.tasks.Task.label_key` is this entry).
LABEL_FIELDS = {"keypoints": "keypoint_names", "emotion": "class_names"}


def model_id(meta: dict) -> str:
    """A short stable id of a trained model (used by annotation to know what is done)."""
    return meta.get("model_id") or f"{meta['task']}-{meta['arch']}-{meta.get('weights_sha256', 'unknown')[:12]}"


#: Largest ``meta.json`` read (the shipped ones are a few KB; an ensemble's lists its members).
MAX_META_BYTES = 8 * 1024 * 1024
#: Largest model input side accepted: the networks here see 40-160 px; a side of 100,000 asked
#: annotation for 4 GB per batch and ``predict`` for 10.9 GB before failing.
MAX_INPUT_SIZE = 1024
#: Most outputs (points or classes) a model may name; more is no landmark set (dense meshes have ~500).
MAX_LABELS = 1000
#: Types ``weights.pt`` may store a network's floating-point tensors in (``--weights-dtype``; :func:`facepipe.models.save_model_dir`).
WEIGHTS_DTYPES = ("float32", "float16", "bfloat16", "int8")


def read_meta(path: str | os.PathLike) -> dict:
    """``meta.json`` of a model directory as a dict; FileNotFoundError / ValueError naming the file
    when ``path`` is not a model directory or its meta.json is not a JSON object of bounded size.
    A directory on an object store is read from its local copy (:func:`facepipe.storage.local_copy`)."""
    path = Path(storage.local_copy(path))
    meta_path = path / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no {META}); train one with jobs/train.py")
    size = meta_path.stat().st_size
    if size > MAX_META_BYTES:
        raise ValueError(f"{meta_path}: {size:,} bytes, more than a model's metadata ({MAX_META_BYTES:,} at most)")
    try:
        meta = json.loads(meta_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: holds a {type(meta).__name__}, not an object of model fields")
    return meta


#: What inference reads from meta.json besides the task's label list: (field, type) pairs.
_REQUIRED = (("arch", str), ("arch_args", dict), ("input_size", int), ("normalization", dict))


def check_model_dir(path: str | os.PathLike, task: str | None = None) -> dict:
    """``meta.json`` of a model directory, checked before any work, for every entry point (annotate,
    ``predict``, evaluation, loading): it is a ``task`` model (any known task when None), every field
    inference reads is there with a usable value within bounds (input side, crop, outputs), and
    ``weights.pt`` is the file meta.json describes (its sha256, so weights swapped under an old
    meta.json are not taken for the old model). Raises ValueError / FileNotFoundError, one line
    naming the file and the field."""
    import hashlib
    import math

    path = Path(storage.local_copy(path))
    meta = read_meta(path)
    file = path / META
    if task is not None and task not in LABEL_FIELDS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(LABEL_FIELDS)}")
    if meta.get("task") not in LABEL_FIELDS or (task is not None and meta["task"] != task):
        expected = repr(task) if task is not None else " or ".join(map(repr, LABEL_FIELDS))
        raise ValueError(f"{path}: is a {meta.get('task')!r} model, expected a {expected} model")
    label_key = LABEL_FIELDS[meta["task"]]
    for field, typ in (*_REQUIRED, (label_key, list)):
        if not isinstance(meta.get(field), typ) or (typ is int and isinstance(meta.get(field), bool)):
            raise ValueError(f"{file}: field {field!r} is missing or not a {typ.__name__}")
    side = meta["input_size"]
    if not 8 <= side <= MAX_INPUT_SIZE:
        raise ValueError(f"{file}: field 'input_size' is {side}, not an image side from 8 to {MAX_INPUT_SIZE}")
    crop = meta.get("crop")
    if crop is not None and (not isinstance(crop, int) or isinstance(crop, bool) or not 8 <= crop <= side):
        raise ValueError(f"{file}: field 'crop' is {crop!r}, not a window side from 8 to the input_size {side}")
    norm = meta["normalization"]
    if not all(isinstance(norm.get(k), (int, float)) and math.isfinite(norm[k]) for k in ("mean", "std")) or norm["std"] <= 0:
        raise ValueError(f"{file}: field 'normalization' must hold a finite 'mean' and a positive 'std', got {norm!r}")
    labels = meta[label_key]
    if not 1 <= len(labels) <= MAX_LABELS:
        raise ValueError(f"{file}: field {label_key!r} lists {len(labels)} names, not 1 to {MAX_LABELS}")
    if not all(isinstance(n, str) and n for n in labels):
        raise ValueError(f"{file}: field {label_key!r} must be a list of non-empty strings")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: no {WEIGHTS}")
    if "weights_sha256" in meta:
        h = hashlib.sha256()
        with open(weights, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != meta["weights_sha256"]:
            raise ValueError(f"{weights}: its sha256 is not the weights_sha256 in {META} (weights changed under an old meta.json?)")
    return meta


#: Models shipped inside the package, one model directory (+ model card README.md) per task.
SHIPPED = Path(__file__).resolve().parent / "weights"


#: The shipped keypoint model of each landmark set (``--landmarks``): its directory under :data:`SHIPPED`.
SHIPPED_LANDMARKS = {15: "keypoints", 68: "landmarks68"}
#: The landmark set a run gets when it names neither a keypoint model nor ``--landmarks``.
DEFAULT_LANDMARKS = 15


def shipped_model(task: str, landmarks: int | None = None) -> Path | None:
    """The shipped model directory for ``task`` (``keypoints`` or ``emotion``; a keypoint model of
    ``landmarks`` points, :data:`SHIPPED_LANDMARKS`), or None if none ships. ValueError for a landmark
    set no model is made for."""
    if task == "keypoints":
        n = DEFAULT_LANDMARKS if landmarks is None else int(landmarks)
        if n not in SHIPPED_LANDMARKS:
            raise ValueError(f"landmarks must be one of {sorted(SHIPPED_LANDMARKS)}, got {landmarks}")
        task = SHIPPED_LANDMARKS[n]
    d = SHIPPED / task
    return d if (d / META).is_file() and (d / WEIGHTS).is_file() else None
