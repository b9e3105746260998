"""Face detection with OpenCV's Haar cascades (shipped inside ``opencv-python-headless``: no download).

Large images are downscaled so that their longer side is at most ``max_side`` before detection and
the boxes are scaled back, which keeps a 6000x6000 photo about as fast as a 640x640 one. Scores are
the cascade's final-stage level weights (``detectMultiScale3(outputRejectLevels=True)``): larger
means more face-like; ``min_score`` can drop weak detections.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["DetectorConfig", "cascade_path", "load_cascade", "detect_faces"]


@dataclass(frozen=True)
class DetectorConfig:
    """How faces are found; every field is a CLI flag of ``jobs/annotate.py``."""

    #: A cascade file name under ``cv2.data.haarcascades`` or a path to a cascade XML.
    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    #: Smallest face, in pixels of the (possibly downscaled) detection image.
    min_size: int = 30
    #: Longer image side used for detection; larger images are downscaled (boxes scaled back).
    max_side: int = 640
    #: Drop detections whose level weight is below this (None keeps all).
    min_score: float | None = None
    #: Keep at most this many faces per image, the largest first (0 = all).
    max_faces: int = 0

    def __post_init__(self):
        if self.scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        if self.min_neighbors < 0 or self.min_size < 1 or self.max_side < 32 or self.max_faces < 0:
            raise ValueError("min_neighbors >= 0, min_size >= 1, max_side >= 32 and max_faces >= 0 are required")

    @classmethod
    def from_any(cls, value: "DetectorConfig | dict | None") -> "DetectorConfig":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        return cls(**dict(value))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """A short string stored in every output row (``detector`` column)."""
        s = (
            f"haar:{Path(self.cascade).name} sf={self.scale_factor:g} mn={self.min_neighbors} "
            f"min={self.min_size} max_side={self.max_side}"
        )
        if self.min_score is not None:
            s += f" min_score={self.min_score:g}"
        if self.max_faces:
            s += f" max_faces={self.max_faces}"
        return s


def cascade_path(name: str) -> str:
    """Resolve a cascade name or path; raise FileNotFoundError with the known names when missing."""
    if os.path.isfile(name):
        return name
    candidate = os.path.join(cv2.data.haarcascades, name)
    if os.path.isfile(candidate):
        return candidate
    if not name.endswith(".xml") and os.path.isfile(candidate + ".xml"):
        return candidate + ".xml"
    known = sorted(f for f in os.listdir(cv2.data.haarcascades) if f.endswith(".xml"))
    raise FileNotFoundError(f"no Haar cascade {name!r}; use a path or one of: {', '.join(known)}")


@functools.lru_cache(maxsize=8)
def load_cascade(name: str) -> cv2.CascadeClassifier:
    """The classifier, loaded once per process (Ray reuses worker processes across tasks)."""
    path = cascade_path(name)
    clf = cv2.CascadeClassifier(path)
    if clf.empty():
        raise ValueError(f"{path}: not a valid cascade file")
    return clf


def detect_faces(gray: np.ndarray, config: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Faces in a ``uint8`` gray image: boxes ``float32 [F, 4]`` (x, y, w, h) in its pixels, scores ``[F]``.

    Faces are ordered left to right (then top to bottom) so that face indices are stable.
    """
    h, w = gray.shape[:2]
    empty = np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    if min(h, w) < config.min_size:
        return empty
    scale = min(1.0, config.max_side / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if min(small.shape[:2]) < config.min_size:
        return empty
    rects, _, weights = load_cascade(config.cascade).detectMultiScale3(
        small,
        scaleFactor=config.scale_factor,
        minNeighbors=config.min_neighbors,
        minSize=(config.min_size, config.min_size),
        outputRejectLevels=True,
    )
    if len(rects) == 0:
        return empty
    boxes = np.asarray(rects, np.float32).reshape(-1, 4)
    scores = np.asarray(weights, np.float32).reshape(-1)
    if scale != 1.0:
        # Box edges scale exactly: index-space x in the small image is x / scale in the original.
        sx, sy = w / small.shape[1], h / small.shape[0]
        boxes *= np.array([sx, sy, sx, sy], np.float32)
    if config.min_score is not None:
        keep = scores >= config.min_score
        boxes, scores = boxes[keep], scores[keep]
    if config.max_faces and len(boxes) > config.max_faces:
        largest = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")[: config.max_faces]
        boxes, scores = boxes[largest], scores[largest]
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    return boxes[order], scores[order]
