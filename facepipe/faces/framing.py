"""Framing: how a face box becomes a model's input square, and how boxes relate to labelled points.

Training on photos, evaluation on photos, annotation and ``predict()`` frame faces with these same
functions, so a model sees at inference the framing it was trained on:

* :data:`DEFAULT_MARGIN`: the margin around the detector's box (a model's ``meta.json``
  ``framing.margin`` wins over it, :func:`model_margins`);
* :class:`Framing`: the margin and the box noise training adds (the detector's measured scatter);
* :class:`BoxModel` (``framing.box_from_points``): the detector-like box of a face known only from
  its points, for photos the detector missed and for the keypoint model's second pass
  (:func:`refine_passes`, re-cropped from a view :data:`CONTEXT_FACTOR` times wider);
* :func:`match_face`: which detected box holds a labelled face.

Nothing here imports torch, Ray, ``facepipe.data`` or ``facepipe.annotate``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CONTEXT_FACTOR", "DEFAULT_MARGIN", "DEFAULT_REFINE", "JITTER_CLIP", "BoxModel", "Framing", "face_boxes", "fit_box_model", "match_face",
    "model_margins", "point_frame", "refine_passes",
]

#: Fraction of the face box's longer side added on each edge of the square crop.
DEFAULT_MARGIN = 0.15
#: Box jitter draws are clipped at this many standard deviations.
JITTER_CLIP = 2.0


@dataclass(frozen=True)
class Framing:
    """How a face box becomes the model's input crop, and the box noise added in training.

    ``margin``: fraction of the box's longer side added on every edge (as in annotation).
    ``shift_x``/``shift_y``: std of the box centre's offset, as a fraction of the box side;
    ``scale``/``aspect``: std of the log box side / log aspect ratio. All zero: no jitter.
    """

    margin: float = DEFAULT_MARGIN
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 0.0
    aspect: float = 0.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Framing.{k} must be a finite number >= 0, got {v!r}")
        if self.margin > 2:
            raise ValueError(f"Framing.margin must be <= 2, got {self.margin}")

    def to_dict(self) -> dict:
        return asdict(self)

    def without_jitter(self) -> "Framing":
        return Framing(margin=self.margin)

    def jitter(self, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Boxes ``[N, 4]`` (x, y, w, h) moved and resized by draws of this noise."""
        boxes = np.asarray(boxes, np.float64)
        n = len(boxes)
        z = np.clip(rng.standard_normal((n, 4)), -JITTER_CLIP, JITTER_CLIP)
        side = np.maximum(boxes[:, 2], boxes[:, 3])
        cx = boxes[:, 0] + boxes[:, 2] / 2 + z[:, 0] * self.shift_x * side
        cy = boxes[:, 1] + boxes[:, 3] / 2 + z[:, 1] * self.shift_y * side
        s = np.exp(z[:, 2] * self.scale)
        a = np.exp(z[:, 3] * self.aspect / 2)
        w, h = boxes[:, 2] * s * a, boxes[:, 3] * s / a
        return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)


def point_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``[N, 2]`` and spread ``[N]`` (RMS distance to the centre) of the present points."""
    c = np.nanmean(points, axis=1)
    spread = np.sqrt(np.nanmean(((points - c[:, None, :]) ** 2).sum(-1), axis=1))
    return c, spread


@dataclass(frozen=True)
class BoxModel:
    """Where the detector puts its box relative to the labelled points, in units of their spread."""

    offset_x: float
    offset_y: float
    side: float

    def to_dict(self) -> dict:
        return asdict(self)

    def boxes(self, points: np.ndarray) -> np.ndarray:
        """The detector-like box ``[N, 4]`` for faces known only from their points ``[N, K, 2]``."""
        c, s = point_frame(points)
        side = self.side * s
        cx, cy = c[:, 0] + self.offset_x * s, c[:, 1] + self.offset_y * s
        return np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)


def face_boxes(det_box: np.ndarray, points: np.ndarray, box_model: BoxModel | dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The detector's box ``[N, 4]`` where it found the labelled face, else the box ``box_model``
    frames from the labels; and which faces were framed from their labels ``[N]``."""
    box = np.asarray(det_box, np.float64).reshape(-1, 4).copy()
    missed = ~np.isfinite(box).all(1)
    if missed.any():
        if box_model is None:
            raise ValueError(f"{int(missed.sum())} faces without a detected box and no box_from_points to frame them from their labels")
        model = box_model if isinstance(box_model, BoxModel) else BoxModel(**box_model)
        box[missed] = model.boxes(np.asarray(points, np.float64)[missed])
    return box, missed


def fit_box_model(boxes: np.ndarray, points: np.ndarray, margin: float) -> tuple[BoxModel, Framing]:
    """Fit :class:`BoxModel` on faces the detector found, and the box noise around it.

    The noise (``Framing`` std's) is the spread of the detector's boxes around the fitted relation:
    what a model must tolerate at inference, where only the detector's box is known.
    """
    ok = np.isfinite(boxes).all(1)
    if ok.sum() < 10:
        raise ValueError(f"only {int(ok.sum())} photos with a detected face: too few to fit the box framing (need >= 10)")
    b, p = np.asarray(boxes, np.float64)[ok], points[ok]
    c, s = point_frame(p)
    side = np.maximum(b[:, 2], b[:, 3])
    ox = (b[:, 0] + b[:, 2] / 2 - c[:, 0]) / s
    oy = (b[:, 1] + b[:, 3] / 2 - c[:, 1]) / s
    rel = side / s
    model = BoxModel(float(np.median(ox)), float(np.median(oy)), float(np.median(rel)))
    # Robust std (1.4826 * MAD): a few odd labels should not set the noise for everyone.
    mad = lambda v: float(1.4826 * np.median(np.abs(v - np.median(v))))  # noqa: E731
    framing = Framing(
        margin=margin,
        shift_x=mad(ox / rel),
        shift_y=mad(oy / rel),
        scale=mad(np.log(rel)),
        aspect=mad(np.log(b[:, 2] / b[:, 3])),
    )
    return model, framing


def match_face(boxes: np.ndarray, points: np.ndarray) -> int | None:
    """Index of the box ``[F, 4]`` holding the labelled face: it contains the points' centre and is
    the closest such box to it; None when no box does."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0 or not np.isfinite(points).any():
        return None
    c = np.nanmean(points, axis=0)
    inside = (boxes[:, 0] <= c[0]) & (c[0] <= boxes[:, 0] + boxes[:, 2]) & (boxes[:, 1] <= c[1]) & (c[1] <= boxes[:, 1] + boxes[:, 3])
    if not inside.any():
        return None
    d = np.hypot(boxes[:, 0] + boxes[:, 2] / 2 - c[0], boxes[:, 1] + boxes[:, 3] / 2 - c[1])
    return int(np.argmin(np.where(inside, d, np.inf)))


def model_margins(metas: dict[str, dict]) -> tuple[tuple[str, float], ...]:
    """``(task, margin)`` for each model whose ``meta.json`` records the framing it was trained on."""
    return tuple((t, float(m["framing"]["margin"])) for t, m in metas.items() if "margin" in (m.get("framing") or {}))


#: Second passes of a keypoint model by default (annotate --refine): one more gained little and
#: added failures on the photo dev split (bench/results/keypoints_in_the_wild.md).
DEFAULT_REFINE = 1

#: How much wider than the keypoint crop the view is that a second pass re-crops from: room for
#: the re-framed square to move half a side from the detector's.
CONTEXT_FACTOR = 2.0


def refine_passes(kp_meta: dict, requested: int) -> int:
    """Second passes a keypoint model makes: ``requested``, for a model that knows how training framed
    faces from their points (meta.json ``framing.box_from_points``); none for others."""
    return int(requested) if "box_from_points" in (kp_meta.get("framing") or {}) else 0
