"""OpenCV's Haar cascades (shipped inside ``opencv-python-headless``: no download).

Scores are the cascade's final-stage level weights (``detectMultiScale3(outputRejectLevels=True)``):
larger means more face-like. No landmarks.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from facepipe.faces.detect.base import Detections, Detector, DetectorConfig
from facepipe.flags import field_meta

__all__ = ["HaarConfig", "HaarDetector", "cascade_path", "load_cascade"]


@dataclass(frozen=True)
class HaarConfig(DetectorConfig):
    """Settings of :class:`HaarDetector` (the shared ones: :class:`DetectorConfig`)."""

    name: ClassVar[str] = "haar"

    cascade: str = field(default="haarcascade_frontalface_default.xml",
                         metadata=field_meta("cascade XML: a name in cv2.data.haarcascades or a path"))
    scale_factor: float = field(default=1.1, metadata=field_meta("detectMultiScale scaleFactor (> 1)"))
    min_neighbors: int = field(default=5, metadata=field_meta("detectMultiScale minNeighbors"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")

    def describe(self) -> str:
        return (f"haar:{Path(self.cascade).name} sf={self.scale_factor:g} mn={self.min_neighbors} "
                f"min={self.min_size} max_side={self.max_side}") + self._describe_shared()


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


class HaarDetector(Detector):
    """Viola-Jones frontal faces, on the gray image."""

    name = "haar"
    Config = HaarConfig
    summary = "OpenCV's Haar cascade (Viola-Jones), shipped with OpenCV"

    def __init__(self, config: HaarConfig | None = None):
        super().__init__(config)
        self.cascade = load_cascade(self.config.cascade)

    def _detect(self, image: np.ndarray) -> Detections:
        cfg = self.config
        rects, _, weights = self.cascade.detectMultiScale3(
            image,
            scaleFactor=cfg.scale_factor,
            minNeighbors=cfg.min_neighbors,
            minSize=(cfg.min_size, cfg.min_size),
            outputRejectLevels=True,
        )
        if len(rects) == 0:
            return self._empty()
        return Detections(np.asarray(rects, np.float32).reshape(-1, 4), np.asarray(weights, np.float32).reshape(-1), None)
