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


#: Models shipped inside the package, one model directory (+ model card README.md) per task.
SHIPPED = Path(__file__).resolve().parent / "weights"


def shipped_model(task: str) -> Path | None:
    """The shipped model directory for ``task`` (``keypoints`` or ``emotion``), or None if none ships."""
    d = SHIPPED / task
    return d if (d / META).is_file() and (d / WEIGHTS).is_file() else None
