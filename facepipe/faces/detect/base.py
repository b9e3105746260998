"""What every face detector is: a frozen config dataclass, and a :class:`Detector` built from it.

The config is what travels (Ray task arguments, ``summary.json``, a model's ``meta.json``) and
what ``describe()`` prints into the Parquet ``detector`` column; the detector holds the loaded
model, once per process. The settings every detector shares live in :class:`DetectorConfig`, and
:meth:`Detector.detect` applies them the same way for all: a large image is downscaled so that its
longer side is at most ``max_side`` (boxes and landmarks are scaled back, which keeps a 6000x6000
photo about as fast as a 640x640 one), weak faces are dropped (``min_score``), the largest
``max_faces`` are kept, and faces come ordered left to right (then top to bottom) so that face
indices are stable.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import ClassVar, NamedTuple

import cv2
import numpy as np

from facepipe.flags import field_meta

__all__ = ["Detections", "Detector", "DetectorConfig", "LANDMARK_NAMES"]

#: The 5 landmarks a detector may give, in this order, named as facepipe names points ("left" is
#: the subject's left, so the first eye is the one on the image's left).
LANDMARK_NAMES = ("right_eye_center", "left_eye_center", "nose_tip", "mouth_right_corner", "mouth_left_corner")


class Detections(NamedTuple):
    """Faces in one image, in its pixels: ``boxes`` float32 ``[N, 4]`` (x, y, w, h), ``scores``
    float32 ``[N]`` (NaN where the detector gives none; larger = more face-like), ``landmarks``
    float32 ``[N, 5, 2]`` (:data:`LANDMARK_NAMES`) or None for a detector without landmarks."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None


@dataclass(frozen=True)
class DetectorConfig:
    """The settings every detector shares; each detector's config subclasses it (a frozen dataclass
    whose documented fields are flags of ``facepipe annotate``, see :mod:`facepipe.flags`).

    A field name means the same thing in every detector's config (they share one flag).
    """

    #: The detector's name in the registry (:data:`facepipe.faces.detect.DETECTORS`).
    name: ClassVar[str] = ""

    min_size: int = field(default=30, metadata=field_meta("smallest face, pixels of the (possibly downscaled) detection image",
                                                          flag="--min-face", metavar="PX"))
    max_side: int = field(default=640, metadata=field_meta("longer image side used for detection; larger images are downscaled "
                                                           "(boxes scaled back)", flag="--detect-max-side", metavar="PX"))
    min_score: float | None = field(default=None, metadata=field_meta("drop faces whose detector score is lower (Haar: cascade "
                                                                      "level weight; MTCNN: face probability)", default_text="keep all"))
    max_faces: int = field(default=0, metadata=field_meta("keep at most this many faces per image, largest first; 0 = all"))

    def __post_init__(self) -> None:
        if not self.name:
            raise TypeError("DetectorConfig holds the shared settings only: use a detector's config "
                            "(facepipe.faces.detect.detector_config(name), HaarConfig, MTCNNConfig)")
        if self.min_size < 1 or self.max_side < 32 or self.max_faces < 0:
            raise ValueError("min_size >= 1, max_side >= 32 and max_faces >= 0 are required")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise ValueError(f"min_score must be a finite number, got {self.min_score}")

    def to_dict(self) -> dict:
        """JSON-friendly, with the detector's ``name`` (what :func:`~facepipe.faces.detect.detector_config` reads back)."""
        return {"name": self.name, **asdict(self)}

    def describe(self) -> str:
        """A short string stored in every output row (the ``detector`` column): ``<name>:<settings>``."""
        raise NotImplementedError

    def _describe_shared(self) -> str:
        """The optional shared settings, in the order the ``detector`` column has always had them."""
        s = ""
        if self.min_score is not None:
            s += f" min_score={self.min_score:g}"
        if self.max_faces:
            s += f" max_faces={self.max_faces}"
        return s


class Detector(ABC):
    """A face detector: ``name`` and ``Config`` (its frozen config class), built from a config, and
    ``detect(image)`` for a ``uint8`` gray ``[H, W]`` or BGR ``[H, W, 3]`` image.

    Subclasses implement :meth:`_detect` on the downscaled image; :meth:`detect` does the rest.
    """

    name: ClassVar[str]
    Config: ClassVar[type[DetectorConfig]]
    #: One line for ``--help``: what it is and where its model comes from.
    summary: ClassVar[str] = ""
    #: Whether the detector uses colour: the pipeline then hands it the BGR image where there is
    #: one (else gray, which every detector takes).
    wants_color: ClassVar[bool] = False
    #: Whether it gives the 5 landmarks.
    has_landmarks: ClassVar[bool] = False

    def __init__(self, config: DetectorConfig | None = None):
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def describe(self) -> str:
        return self.config.describe()

    @abstractmethod
    def _detect(self, image: np.ndarray) -> Detections:
        """Faces in ``image`` (already downscaled to ``max_side``), in its pixels, any order."""

    def _empty(self) -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                          np.zeros((0, 5, 2), np.float32) if self.has_landmarks else None)

    def detect(self, image: np.ndarray) -> Detections:
        """Faces in a ``uint8`` gray or BGR image, in its pixels, ordered left to right."""
        cfg = self.config
        if image.ndim == 3 and not self.wants_color:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # before downscaling, as the pipeline's gray image is
        h, w = image.shape[:2]
        if min(h, w) < cfg.min_size:
            return self._empty()
        scale = min(1.0, cfg.max_side / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if min(small.shape[:2]) < cfg.min_size:
            return self._empty()
        boxes, scores, landmarks = self._detect(small)
        if len(boxes) == 0:
            return self._empty()
        if scale != 1.0:
            # Box edges scale exactly: index-space x in the small image is x / scale in the original.
            sx, sy = w / small.shape[1], h / small.shape[0]
            boxes *= np.array([sx, sy, sx, sy], np.float32)
            if landmarks is not None:
                landmarks *= np.array([sx, sy], np.float32)
        if cfg.min_score is not None:
            keep = np.flatnonzero(scores >= cfg.min_score)
            boxes, scores = boxes[keep], scores[keep]
            landmarks = None if landmarks is None else landmarks[keep]
        if cfg.max_faces and len(boxes) > cfg.max_faces:
            largest = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")[: cfg.max_faces]
            boxes, scores = boxes[largest], scores[largest]
            landmarks = None if landmarks is None else landmarks[largest]
        order = np.lexsort((boxes[:, 1], boxes[:, 0]))
        return Detections(boxes[order], scores[order], None if landmarks is None else landmarks[order])
