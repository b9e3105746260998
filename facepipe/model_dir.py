"""The model directory's metadata (``meta.json``), readable without importing torch.

The annotation driver only needs a model's metadata (its id, input sizes, labels) to plan a run;
keeping this module free of torch saves the driver ~3 s of importing torch and torchvision
(measured on 2 cores) that only the inference actors need.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

WEIGHTS = "weights.pt"
META = "meta.json"


def model_id(meta: dict) -> str:
    """A short stable id of a trained model (used by annotation to know what is done)."""
    return meta.get("model_id") or f"{meta['task']}-{meta['arch']}-{meta.get('weights_sha256', 'unknown')[:12]}"


def read_meta(path: str | os.PathLike) -> dict:
    """``meta.json`` of a model directory; a clear error when ``path`` is not one."""
    path = Path(path)
    if not (path / META).exists():
        raise FileNotFoundError(f"{path}: not a model directory (no {META}); train one with jobs/train.py")
    return json.loads((path / META).read_text())


#: What inference reads from meta.json besides the task's label list: (field, type) pairs.
_REQUIRED = (("arch", str), ("arch_args", dict), ("input_size", int), ("normalization", dict))


def check_model_dir(path: str | os.PathLike, task: str) -> dict:
    """``meta.json`` of a ``task`` model directory, checked before any work: every field inference
    reads is there with a usable value, and ``weights.pt`` is the file meta.json describes
    (its sha256, so weights swapped under an old meta.json are not taken for the old model).
    Raises ValueError / FileNotFoundError naming the file and the field."""
    import hashlib

    path = Path(path)
    try:
        meta = read_meta(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / META}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path / META}: holds a {type(meta).__name__}, not an object of model fields")
    if meta.get("task") != task:
        raise ValueError(f"{path}: is a {meta.get('task')!r} model, expected a {task!r} model")
    from facepipe.tasks import get_task  # the task names its label field

    label_key = get_task(task).label_key
    for field, typ in (*_REQUIRED, (label_key, list)):
        if not isinstance(meta.get(field), typ):
            raise ValueError(f"{path / META}: field {field!r} is missing or not a {typ.__name__}")
    if meta["input_size"] < 8:
        raise ValueError(f"{path / META}: field 'input_size' is {meta['input_size']}, not an image side")
    labels = meta[label_key]
    if not labels or not all(isinstance(n, str) and n for n in labels):
        raise ValueError(f"{path / META}: {label_key!r} must be a list of non-empty strings")
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


def shipped_model(task: str) -> Path | None:
    """The shipped model directory for ``task`` (``keypoints`` or ``emotion``), or None if none ships."""
    d = SHIPPED / task
    return d if (d / META).is_file() and (d / WEIGHTS).is_file() else None
