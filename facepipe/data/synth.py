"""Procedurally drawn grayscale faces with exact keypoints and distinct expressions.

This is the project's embedded default data: no downloads, deterministic for a given seed,
and fast (the geometry of a whole batch is computed with numpy at once; per face only a few
dozen OpenCV drawing calls remain).

Every face is drawn in a canonical, upright frame measured in "Kaggle units" (the 96x96
frame of the Kaggle Facial Keypoints crops, face centre at (48, 50)).  The 15 Kaggle points
are computed in that frame and mapped to the output with the very same affine transform
(rotation, scale, translation) that warps the drawing, so they are exact.

Point names follow Kaggle: "left" is the subject's left, i.e. the image's right side
(``left_eye_center`` has the larger x).  Pixel-centre convention: the centre of pixel
``(row i, column j)`` is at ``x = j, y = i``.

Public API:

* :func:`render_faces` - tight face crops (like Kaggle / FER2013), keypoints and labels.
* :func:`render_photos` - larger "photos" with one face each plus its ground-truth box.
* :func:`write_keypoints_csv` - the Kaggle ``training.csv`` layout (with missing points).
* :func:`write_fer_csv` - the FER2013 ``fer2013.csv`` layout.
* :func:`write_image_folder` - PNG photos for face-detection demos.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import os
from pathlib import Path

import cv2
import numpy as np

from facepipe.data.schema import EMOTIONS, FER_USAGES, KAGGLE_KEYPOINT_COLUMNS

__all__ = [
    "POINT_NAMES",
    "render_faces",
    "render_photos",
    "write_keypoints_csv",
    "write_fer_csv",
    "write_image_folder",
]

#: The 15 keypoint names in Kaggle file order (index into the ``[n, 15, 2]`` arrays).
POINT_NAMES: tuple[str, ...] = tuple(c[:-2] for c in KAGGLE_KEYPOINT_COLUMNS[::2])
_P = {name: i for i, name in enumerate(POINT_NAMES)}

# Points an incomplete Kaggle row keeps most of the time (as in the real training.csv).
_KAGGLE_CORE_POINTS = ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = float(1 << _SHIFT)
_AA = cv2.LINE_AA
_C0 = np.array([48.0, 50.0])  # face centre in canonical Kaggle units

# --------------------------------------------------------------------------------------
# Expressions: offsets from the neutral face, in Kaggle units (96 px crop).
# brow_dy: whole brow (+ = down); brow_in_dy: extra for the inner end (+ = down, - = raised);
# brow_in_dx: inner end toward the midline; brow_arch: extra arch height;
# eye_open: added to the lid-opening multiplier; mouth_w: half-width change;
# corner_dy: mouth corners (+ = down); open: lip gap at the centre; shape: exponent of the
# opening profile (1 = lens, 0.5 = round 'O', small = flat/stretched); tu / tl: lip
# thickness change; ym: mouth height change; teeth: visible upper teeth; naso: nasolabial
# folds; furrow: vertical lines between the brows; wrinkle: nose wrinkles; raise: one-sided
# upper-lip raise (disgust).
# --------------------------------------------------------------------------------------
_EXPR_KEYS = (
    "brow_dy", "brow_in_dy", "brow_in_dx", "brow_arch", "eye_open", "mouth_w", "corner_dy",
    "open", "shape", "tu", "tl", "ym", "teeth", "naso", "furrow", "wrinkle", "raise",
)
_NEUTRAL = dict.fromkeys(_EXPR_KEYS, 0.0) | {"shape": 1.0}
_EXPRESSIONS: dict[str, dict[str, float]] = {
    "Angry": {"brow_dy": 3.0, "brow_in_dy": 3.8, "brow_in_dx": 2.0, "brow_arch": -1.2,
              "eye_open": -0.38, "mouth_w": -2.5, "corner_dy": 1.0, "tu": -1.1, "tl": -1.4,
              "furrow": 1.0, "naso": 0.3},
    "Disgust": {"brow_dy": 2.2, "brow_in_dy": 1.8, "brow_in_dx": 1.2, "brow_arch": -0.6,
                "eye_open": -0.28, "mouth_w": -1.0, "corner_dy": 1.2, "open": 1.6, "tl": 0.8,
                "naso": 0.9, "wrinkle": 1.0, "raise": 4.0},
    "Fear": {"brow_dy": -3.0, "brow_in_dy": -1.8, "brow_in_dx": 1.5, "brow_arch": -1.3,
             "eye_open": 0.5, "mouth_w": 3.5, "corner_dy": 1.8, "open": 3.8, "shape": 0.35,
             "tu": -0.5, "tl": -0.5, "furrow": 0.4},
    "Happy": {"brow_dy": -0.8, "eye_open": -0.18, "mouth_w": 3.0, "corner_dy": -5.5,
              "open": 2.8, "ym": -0.5, "tl": 0.5, "teeth": 1.0, "naso": 1.0},
    "Sad": {"brow_dy": 0.5, "brow_in_dy": -4.8, "brow_arch": -1.6, "eye_open": -0.2,
            "mouth_w": -1.5, "corner_dy": 5.0, "tl": 0.9, "ym": 0.5, "naso": 0.3},
    "Surprise": {"brow_dy": -3.8, "brow_arch": 1.5, "eye_open": 0.45, "mouth_w": -8.0,
                 "open": 9.0, "shape": 0.5, "ym": 1.5, "tu": -0.4, "tl": -0.4},
    "Neutral": {},
}
_EXPR_TABLE = np.array(
    [[(_NEUTRAL | _EXPRESSIONS[e])[k] for k in _EXPR_KEYS] for e in EMOTIONS], dtype=np.float64
)
_NEUTRAL_VEC = np.array([_NEUTRAL[k] for k in _EXPR_KEYS], dtype=np.float64)

# Random per-face parameters: name -> (low, high), drawn uniformly.  Lengths in Kaggle units.
_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "rot": (-12.0, 12.0), "tx": (-1.0, 1.0), "ty": (-1.0, 1.0), "scale": (0.9, 1.1),
    "tone": (115.0, 205.0), "face_a": (37.5, 42.5), "face_bt": (58.0, 64.0),
    "face_bb": (44.0, 48.5), "jaw": (0.06, 0.16), "eye_dx": (16.8, 19.2), "eye_y": (36.5, 39.5),
    "ew": (6.4, 7.6), "eh": (2.7, 3.3), "brow_gap": (7.5, 9.5), "brow_in": (7.0, 9.0),
    "brow_out": (29.5, 33.0), "brow_w": (2.2, 3.2), "brow_dark": (0.25, 0.5),
    "nose_y": (60.5, 64.5), "nose_w": (5.5, 7.5), "mouth_y": (74.8, 77.2), "mouth_w": (13.5, 16.5),
    "tu": (1.9, 2.7), "tl": (2.6, 3.6), "lip_dark": (0.62, 0.82), "hair": (0.0, 1.0),
    "hair_val": (15.0, 110.0), "hairline": (8.0, 15.0), "hair_vol": (1.04, 1.14),
    "lx": (-0.55, 0.55), "ly": (-0.45, 0.05), "amb": (0.3, 0.5), "strength": (0.75, 1.2),
    "side": (0.0, 1.0), "bg": (40.0, 215.0), "bg_ang": (0.0, 2 * math.pi), "bg_grad": (0.0, 60.0),
    "bg_blob": (0.0, 28.0), "gain": (0.75, 1.2), "bias": (-20.0, 20.0),
    "lg_ang": (0.0, 2 * math.pi), "lg_amp": (0.0, 0.25), "noise": (0.5, 6.0),
    "cloth": (25.0, 225.0), "tilt": (-0.8, 0.2), "iris_dark": (0.12, 0.35), "white": (0.9, 1.1),
}
_PARAM_NAMES = tuple(_PARAM_RANGES)
_HAIR_PROB = 0.85


def _sample_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    u = rng.random((n, len(_PARAM_NAMES)))
    lo = np.array([_PARAM_RANGES[k][0] for k in _PARAM_NAMES])
    hi = np.array([_PARAM_RANGES[k][1] for k in _PARAM_NAMES])
    vals = lo + u * (hi - lo)
    return {k: vals[:, i] for i, k in enumerate(_PARAM_NAMES)}


def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    k = len(EMOTIONS)
    labels = np.tile(np.arange(k, dtype=np.int64), n // k + 1)[:n]
    return rng.permutation(labels).astype(np.int64)


def _check_labels(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(EMOTIONS)):
        raise ValueError(f"labels must be in 0..{len(EMOTIONS) - 1}")
    return labels.astype(np.int64)


# --------------------------------------------------------------------------------------
# Vectorised geometry helpers (arrays carry a leading batch axis)
# --------------------------------------------------------------------------------------
def _xy(x, y) -> np.ndarray:
    """Stack x and y (broadcast) into ``[..., 2]``."""
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    out = np.empty(x.shape + (2,))
    out[..., 0] = x
    out[..., 1] = y
    return out


def _band_polygon(pts: np.ndarray, widths) -> np.ndarray:
    """Polygons ``[..., 2m, 2]`` around polylines ``[..., m, 2]`` of (per-point) width."""
    m = pts.shape[-2]
    d = np.empty_like(pts)
    d[..., 1:-1, :] = pts[..., 2:, :] - pts[..., :-2, :]
    d[..., 0, :] = pts[..., 1, :] - pts[..., 0, :]
    d[..., -1, :] = pts[..., -1, :] - pts[..., -2, :]
    h = np.asarray(widths, float) * 0.5 / np.maximum(np.hypot(d[..., 0], d[..., 1]), 1e-9)
    ox = -d[..., 1] * h
    oy = d[..., 0] * h
    out = np.empty(pts.shape[:-2] + (2 * m, 2))
    out[..., :m, 0] = pts[..., 0] + ox
    out[..., :m, 1] = pts[..., 1] + oy
    out[..., m:, 0] = (pts[..., 0] - ox)[..., ::-1]
    out[..., m:, 1] = (pts[..., 1] - oy)[..., ::-1]
    return out


def _seg(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    """Polylines of m points from a to b (both ``[..., 2]``) -> ``[..., m, 2]``."""
    s = np.linspace(0.0, 1.0, m)[:, None]
    return a[..., None, :] + (b - a)[..., None, :] * s


def _col(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a per-face vector ``[n]`` to broadcast against ``[n, ...]`` of ``ndim`` dims."""
    return np.asarray(v, float).reshape((-1,) + (1,) * (ndim - 1))


_T = np.linspace(-1.0, 1.0, 25)  # curve parameter (mouth / eyes)
_T_BASE = 1.0 - _T * _T
_T_SQRT = np.sqrt(_T_BASE)
_T_EYE = _T_BASE ** 0.85
_T_MOUTH_W = _T_BASE ** 0.3
_MID = len(_T) // 2
_TB = np.linspace(0.0, 1.0, 14)  # brow parameter, inner (0) -> outer (1)
_TB_ARCH = np.sin(math.pi * _TB ** 0.75)
_TB_TAPER = 1.15 - 0.55 * _TB ** 1.5
_PHI = np.linspace(0.0, 2 * math.pi, 72, endpoint=False)
_S_PHI, _C_PHI = np.sin(_PHI), np.cos(_PHI)
_HAIR_ANG = np.linspace(math.pi - 0.12, 2 * math.pi + 0.12, 30)
_HAIR_T = np.linspace(1.0, -1.0, 21)
_HAIR_P = np.abs(_HAIR_T) ** 2.5
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * math.pi, 20, endpoint=False)),
                    np.sin(np.linspace(0, 2 * math.pi, 20, endpoint=False))], axis=1)
_WING = np.sin(np.linspace(0, math.pi, 7))
_WING_Y = np.linspace(0.0, 3.2, 7)
_WR_X = np.linspace(-3.0, 3.0, 7)
_WR_Y = 0.6 * np.abs(np.linspace(-1, 1, 7))
_SIDES = np.array([1.0, -1.0])  # subject's left (image right, +x) first, as in Kaggle order
_GLINT = np.array([-0.3, -0.35])


class _Ops:
    """A list of drawing operations, each vectorised over the batch.

    ``poly``: ``pts`` ``[n, B, m, 2]`` canvas px (B non-overlapping polygons per face);
    ``ell``: centre ``[n, 2]`` and half-axes ``[n, 2]`` in canvas px, angle in degrees.
    ``value`` is a per-face vector (or scalar); ``on`` an optional per-face bool mask.
    """

    def __init__(self, n: int):
        self.n = n
        self.ops: list[tuple] = []

    def _v(self, value) -> list:
        return np.broadcast_to(np.asarray(value, float), (self.n,)).tolist()

    def poly(self, pts: np.ndarray, value, on=None) -> None:
        if pts.ndim == 3:
            pts = pts[:, None]
        ip = np.rint(pts * _ONE).astype(np.int32)
        self.ops.append(("poly", ip, self._v(value), None if on is None else np.asarray(on).tolist()))

    def band(self, pts: np.ndarray, widths, value, on=None) -> None:
        self.poly(_band_polygon(pts, widths), value, on)

    def ell(self, c: np.ndarray, axes: np.ndarray, value, angle: float = 0.0, on=None) -> None:
        ax = np.maximum(np.rint(np.broadcast_to(axes, c.shape) * _ONE), 1)
        arr = np.concatenate([np.rint(c * _ONE), ax], axis=1).astype(np.int64).tolist()
        self.ops.append(("ell", arr, self._v(value), None if on is None else np.asarray(on).tolist(),
                         float(angle)))

    def draw(self, img: np.ndarray, i: int) -> None:
        for op in self.ops:
            on = op[3]
            if on is not None and not on[i]:
                continue
            if op[0] == "poly":
                cv2.fillPoly(img, list(op[1][i]), op[2][i], _AA, _SHIFT)
            else:
                cx, cy, ax, ay = op[1][i]
                cv2.ellipse(img, (cx, cy), (ax, ay), op[4], 0, 360, op[2][i], -1, _AA, _SHIFT)


def _clipped_disc(c: np.ndarray, r: float, poly32: np.ndarray) -> np.ndarray | None:
    """A disc (as a polygon) intersected with a convex polygon, or None if empty."""
    disc = (c + _CIRCLE * r).astype(np.float32)
    area, inter = cv2.intersectConvexConvex(disc, poly32)
    if inter is None or area <= 0:
        return None
    return np.rint(inter.reshape(-1, 2) * _ONE).astype(np.int32)


def _render_batch(p: dict[str, np.ndarray], labels: np.ndarray, S: int, k: np.ndarray,
                  origin: np.ndarray, theta: np.ndarray):
    """Draw a batch of faces.

    ``k`` is output pixels per Kaggle unit, ``origin`` the output position of the canonical
    face centre (48, 50), ``theta`` the in-plane rotation in degrees (all per face).
    Returns ``(layers float32 [n,S,S], alphas float32 [n,S,S] in 0..1, keypoints [n,15,2])``;
    the caller composites the layers over a background.
    """
    n = len(labels)
    ev = _NEUTRAL_VEC + (_EXPR_TABLE[labels] - _NEUTRAL_VEC) * p["strength"][:, None]
    e = {key: ev[:, j] for j, key in enumerate(_EXPR_KEYS)}
    cx, cy = _C0
    c1 = lambda v: v[:, None]  # noqa: E731  per-face vector -> [n, 1]

    # ---- canvas layout: upright canvas at output resolution covering the rotated output --
    th = np.radians(theta)
    cos, sin = np.cos(th), np.sin(th)
    corners = np.array([[-0.5, -0.5], [S - 0.5, -0.5], [-0.5, S - 0.5], [S - 0.5, S - 0.5]])
    dx = corners[None, :, 0] - origin[:, 0:1]
    dy = corners[None, :, 1] - origin[:, 1:2]
    hx = np.ceil(np.abs(c1(cos) * dx + c1(sin) * dy).max(1)).astype(int) + 3
    hy = np.ceil(np.abs(-c1(sin) * dx + c1(cos) * dy).max(1)).astype(int) + 3
    cc = np.stack([hx, hy], axis=1).astype(float)
    off = cc - _C0[None, :] * k[:, None]  # canvas px = units * k + off

    def q(u: np.ndarray) -> np.ndarray:  # canonical units [n, ..., 2] -> canvas px
        nd = u.ndim
        return u * _col(k, nd) + off.reshape((n,) + (1,) * (nd - 2) + (2,))

    tone = p["tone"]
    A, Bt, Bb, jaw = p["face_a"], p["face_bt"], p["face_bb"], p["jaw"]
    SG = _SIDES

    # ---- head outline, body --------------------------------------------------------------
    face_u = _xy(cx + c1(A) * _C_PHI * (1 - c1(jaw) * np.maximum(_S_PHI, 0)),
                 cy + np.where(_S_PHI < 0, c1(Bt), c1(Bb)) * _S_PHI)
    face_q = q(face_u)
    body = _Ops(n)  # drawn on the face canvas and (value 255) on the alpha canvas
    body_vals = []
    sh = np.array([[-3.2, 200], [-2.6, 24], [-1.2, 10], [-0.5, 8], [0.5, 8], [1.2, 10], [2.6, 24], [3.2, 200]])
    sh_u = _xy(cx + sh[:, 0] * c1(A), cy + np.where(sh[:, 1] < 100, c1(Bb) + sh[:, 1], sh[:, 1]))
    body.poly(q(sh_u), 255)
    body_vals.append(p["cloth"])
    nk = np.array([[-0.55, 0], [0.55, 0], [0.6, 1], [0.0, 2], [-0.6, 1]])
    neck_y = np.stack([np.full(n, cy + 10.0), np.full(n, cy + 10.0), Bb + cy + 14, Bb + cy + 20, Bb + cy + 14], 1)
    body.poly(q(_xy(cx + nk[:, 0] * c1(A), neck_y)), 255)
    body_vals.append(tone * 0.72)
    for sgn in (-1.0, 1.0):
        body.ell(q(_xy(cx + sgn * (A - 0.5), p["eye_y"] + 9.0)), _xy(5.0 * k, 10.5 * k), 255)
        body_vals.append(tone * 0.8)
    body_vals = [np.asarray(v).tolist() for v in body_vals]

    # ---- features (canonical units); side axis index 0 = subject's left -------------------
    eo = np.maximum(1.0 + e["eye_open"], 0.3)
    ew = p["ew"] * (1.0 + 0.04 * e["eye_open"])
    eh_up = p["eh"] * eo
    eh_lo = p["eh"] * 0.72 * (0.6 + 0.4 * eo)
    eye_y = p["eye_y"]
    ex = cx + SG[None, :] * c1(p["eye_dx"])  # [n, 2]
    iy, oy = eye_y + 0.3, eye_y + p["tilt"]
    xline = ex[..., None] + (SG[None, :] * c1(ew))[..., None] * _T  # [n, 2, m]
    yline = (c1(iy) + c1(oy - iy) * (_T + 1) / 2)[:, None, :]
    upper = _xy(xline, yline - eh_up[:, None, None] * _T_EYE)  # [n, 2, m, 2]
    lower = _xy(xline, yline + eh_lo[:, None, None] * _T_EYE)
    centre = _xy(ex, c1((iy + oy) / 2 - 0.25 * (eh_up - eh_lo)))  # [n, 2, 2]
    kp = np.zeros((n, 15, 2))
    kp[:, [0, 1]] = centre
    kp[:, [2, 4]] = _xy(ex - SG * c1(ew), c1(iy))
    kp[:, [3, 5]] = _xy(ex + SG * c1(ew), c1(oy))

    brow_y0 = eye_y - p["brow_gap"] + e["brow_dy"]
    arch = np.maximum(2.0 + e["brow_arch"], 0.0)
    bi = _xy(cx + SG * c1(p["brow_in"] - e["brow_in_dx"]), c1(brow_y0 + e["brow_in_dy"]))
    bo = _xy(cx + SG * c1(p["brow_out"]), c1(brow_y0 + 0.6 - 0.15 * e["brow_in_dy"]))
    brows = bi[:, :, None, :] + (bo - bi)[:, :, None, :] * _TB[:, None]  # [n, 2, 14, 2]
    brows[..., 1] -= arch[:, None, None] * _TB_ARCH
    kp[:, [6, 8]] = bi
    kp[:, [7, 9]] = bo

    nose_y, nw = p["nose_y"], p["nose_w"]
    kp[:, 10] = _xy(np.full(n, cx), nose_y)

    ym = p["mouth_y"] + e["ym"]
    mw = np.maximum(p["mouth_w"] + e["mouth_w"], 4.0)
    side = np.where(p["side"] < 0.5, 1.0, -1.0)
    rz = e["raise"]
    yk_l = ym + e["corner_dy"] - np.where(side > 0, 0.35 * rz, 0.0)
    yk_r = ym + e["corner_dy"] - np.where(side < 0, 0.35 * rz, 0.0)
    opn = np.maximum(e["open"], 0.0)
    tu = np.maximum(p["tu"] + e["tu"], 0.7)
    tl = np.maximum(p["tl"] + e["tl"], 0.8)
    shape = np.maximum(e["shape"], 0.2)
    # lip curves, t = +1 is the subject's left corner (image right); all meet at the corners
    mx = cx + c1(mw) * _T
    yk = c1(yk_r) + c1(yk_l - yk_r) * (_T + 1) / 2
    mid = yk + (c1(ym) - yk) * _T_BASE
    prof = _T_BASE[None, :] ** c1(shape)
    up_in = mid - 0.5 * c1(opn) * prof
    lo_in = mid + 0.5 * c1(opn) * prof
    up_out = up_in - c1(tu) * _T_SQRT
    lo_out = lo_in + c1(tl) * _T_SQRT
    lift = c1(rz) * _T_BASE * ((1.0 + c1(side) * _T) / 2.0) ** 1.5
    up_in = np.where(c1(rz) > 0, np.minimum(up_in - 0.8 * lift, lo_in - 0.3 * _T_BASE), up_in)
    up_out = up_out - lift
    up_out = up_out + c1(tu) * (0.35 * np.exp(-(_T / 0.12) ** 2) - 0.2 * np.exp(-((np.abs(_T) - 0.3) / 0.15) ** 2))
    up_out, up_in, lo_in, lo_out = (_xy(mx, y) for y in (up_out, up_in, lo_in, lo_out))  # [n, m, 2]
    kp[:, 11] = up_out[:, -1]     # mouth_left_corner (image right)
    kp[:, 12] = up_out[:, 0]      # mouth_right_corner
    kp[:, 13] = up_out[:, _MID]   # mouth_center_top_lip
    kp[:, 14] = lo_out[:, _MID]   # mouth_center_bottom_lip

    # ---- soft shading: darkening amounts, drawn then blurred -----------------------------
    soft = _Ops(n)
    # eye sockets: from the brow down to below the eye (keeps the eye band dark even when
    # the brows are raised, which the classic frontal-face detectors rely on)
    brow_mid = brow_y0 + 0.5 * e["brow_in_dy"] - 0.6 * arch
    sock_top = np.minimum(brow_mid - 1.0, eye_y - 6.0)
    sock_bot = eye_y + eh_lo + 1.5
    sock_y, sock_h = (sock_top + sock_bot) / 2, (sock_bot - sock_top) / 2 + 0.8
    for j in (0, 1):
        soft.ell(q(_xy(ex[:, j] - SG[j] * 0.5, sock_y)), _xy(p["ew"] * 1.45 * k, sock_h * k), 0.42)
        soft.ell(q(_xy(ex[:, j], eye_y + 3.2)), _xy(p["ew"] * k, 2.2 * k), 0.2)
    shadow_side = np.where(p["lx"] > 0, -1.0, 1.0)  # side away from the light
    for sgn in (-1.0, 1.0):
        seg = _seg(_xy(cx + sgn * 3.2, eye_y + 1.0), _xy(cx + sgn * nw * 0.55, nose_y - 1.0), 4)
        soft.band(q(seg), 2.4 * c1(k), np.where(shadow_side == sgn, 0.26, 0.14))
    naso = _seg(_xy(cx + SG * c1(nw * 0.75), c1(nose_y + 0.5)), _xy(cx + SG * c1(mw + 2.5), c1(ym + 3.0)), 4)
    soft.band(q(naso), 1.6 * k[:, None, None], 0.05 + 0.12 * e["naso"])
    raised_side = np.where(side > 0, 0, 1)
    soft.band(q(naso[np.arange(n), raised_side]), 1.6 * c1(k), 0.05 + 0.16 * e["naso"], on=rz > 0)
    soft.ell(q(_xy(np.full(n, cx), nose_y + 3.2)), _xy(nw * 0.75 * k, 1.9 * k), 0.26)
    soft.band(q(_seg(_xy(np.full(n, cx), eye_y - 2.0), _xy(np.full(n, cx), nose_y - 2.5), 3)), 2.6 * c1(k), -0.12)
    soft.ell(q(_xy(np.full(n, cx), nose_y - 1.5)), _xy(1.9 * k, 1.9 * k), -0.12)
    soft.ell(q(_xy(np.full(n, cx), lo_out[:, _MID, 1] + 2.8)), _xy(mw * 0.55 * k, 2.2 * k), 0.22)
    fur_t = np.linspace(0.0, 1.0, 3)
    fur = _xy(cx + SG[None, :, None] * (1.8 - 0.4 * fur_t),
              (c1(brow_y0 + 1.5) + c1(eye_y - 2.0 - brow_y0) * fur_t)[:, None, :])
    soft.band(q(fur), 1.2 * c1(k)[:, None], 0.25 * e["furrow"], on=e["furrow"] > 0.05)
    soft.ell(q(_xy(np.full(n, cx), eye_y + 6.0)), _xy(4.5 * k, 4.0 * k), 0.12 * e["wrinkle"],
             on=e["wrinkle"] > 0.05)

    # ---- hair ------------------------------------------------------------------------------
    has_hair = p["hair"] < _HAIR_PROB
    top_y = cy - Bt + p["hairline"]
    side_y = eye_y - 4.0
    hair_u = np.concatenate([
        _xy(cx + c1(A * p["hair_vol"]) * np.cos(_HAIR_ANG), cy + c1(Bt * p["hair_vol"]) * np.sin(_HAIR_ANG)),
        _xy(cx + c1(A - 1.5) * _HAIR_T, c1(top_y) + c1(side_y - top_y) * _HAIR_P)], axis=1)
    hair = _Ops(n)
    hair.poly(q(hair_u), np.minimum(p["hair_val"], 0.6 * tone), on=has_hair)
    hair_alpha = _Ops(n)
    hair_alpha.poly(q(hair_u), 255, on=has_hair)

    # ---- absolute-valued features: eye whites, mouth opening, teeth ------------------------
    absf = _Ops(n)
    eye_polys = q(np.concatenate([upper, lower[:, :, ::-1]], axis=2))  # [n, 2, 2m, 2]
    absf.poly(eye_polys, np.minimum(tone * p["white"] * 0.75, 200.0))
    absf.poly(q(np.concatenate([up_in, lo_in[:, ::-1]], axis=1)), 22.0, on=opn > 0.4)
    teeth_low = up_in.copy()
    teeth_low[..., 1] = np.minimum(up_in[..., 1] + c1(np.minimum(opn * 0.55, 3.0)), lo_in[..., 1])
    absf.poly(q(np.concatenate([up_in, teeth_low[:, ::-1]], axis=1)), np.minimum(tone * 1.05, 225.0),
              on=(opn > 0.4) & (e["teeth"] > 0.05))
    eye_polys32 = eye_polys.astype(np.float32)
    centre_q = q(centre)
    ri = 0.55 * p["ew"] * k
    iris_val = (tone * p["iris_dark"]).tolist()

    # ---- multiplicative features: value = 255 * (1 - factor) -------------------------------
    def dk(f):
        return 255.0 * (1.0 - np.asarray(f, float))

    dark = _Ops(n)
    kk = c1(k)
    dark.band(q(brows), p["brow_w"][:, None, None] * _TB_TAPER * k[:, None, None], dk(p["brow_dark"]))
    crease = upper[:, :, 3:-3].copy()
    crease[..., 1] -= (2.2 + 0.4 * np.maximum(eo - 1.0, 0.0))[:, None, None]
    dark.band(q(crease), 0.5 * kk[:, None], dk(0.8))
    dark.band(q(upper), (0.25 + 1.3 * _T_SQRT) * kk[:, None], dk(0.3))
    dark.band(q(lower), (0.15 + 0.6 * _T_SQRT) * kk[:, None], dk(0.7))
    ny = nose_y + 1.6 - 0.6 * e["wrinkle"]
    for sgn in (-1.0, 1.0):
        dark.ell(q(_xy(cx + sgn * nw * 0.42, ny)), _xy(1.7 * k, 0.95 * k), dk(0.4), angle=-sgn * 20.0)
    wings = _xy(cx + SG[None, :, None] * c1(nw * 0.55)[:, None] + SG[None, :, None] * 1.3 * _WING,
                c1(ny - 2.8)[:, None] + _WING_Y)
    dark.band(q(wings), 0.6 * kk[:, None], dk(0.78))
    wr = _xy(cx + _WR_X + np.zeros((n, 3, 1)), c1(eye_y + 3.5)[:, None] + np.array([0.0, 2.0, 4.0])[:, None] + _WR_Y)
    dark.band(q(wr), 0.55 * kk[:, None], dk(1 - 0.25 * e["wrinkle"]), on=e["wrinkle"] > 0.05)
    fur2 = _xy(cx + SG[None, :, None] * (1.8 - 0.4 * fur_t),
               (c1(brow_y0 + 2.0) + c1(eye_y - 2.5 - brow_y0) * fur_t)[:, None, :])
    dark.band(q(fur2), 0.5 * kk[:, None], dk(1 - 0.3 * e["furrow"]), on=e["furrow"] > 0.05)
    dark.poly(q(np.concatenate([up_out, lo_out[:, ::-1]], axis=1)), dk(p["lip_dark"]))
    midline = _xy(up_in[..., 0], (up_in[..., 1] + lo_in[..., 1]) / 2)
    dark.band(q(midline), (0.35 + 0.9 * _T_MOUTH_W) * kk, dk(0.35))
    for j in (0, -1):
        dark.ell(q(up_out[:, j]), _xy(0.9 * k, 0.9 * k), dk(0.7))

    # ---- face shading constants ---------------------------------------------------------------
    lz = np.sqrt(np.maximum(1.0 - p["lx"] ** 2 - p["ly"] ** 2, 0.05))
    norm = tone / (p["amb"] + (1 - p["amb"]) * lz)
    face_ip = np.rint(face_q * _ONE).astype(np.int32)
    flo = np.floor(face_q.min(1)).astype(int) - 1
    fhi = np.ceil(face_q.max(1)).astype(int) + 2
    blur_sigma = np.maximum(1.6 * k, 0.6)

    # ---- affine canvas -> output ------------------------------------------------------------
    M = np.empty((n, 2, 3))
    M[:, 0, 0], M[:, 0, 1], M[:, 1, 0], M[:, 1, 1] = cos, -sin, sin, cos
    M[:, 0, 2] = origin[:, 0] - (cos * cc[:, 0] - sin * cc[:, 1])
    M[:, 1, 2] = origin[:, 1] - (sin * cc[:, 0] + cos * cc[:, 1])
    kq = q(kp)
    kout = _xy(c1(cos) * kq[..., 0] - c1(sin) * kq[..., 1] + c1(M[:, 0, 2]),
               c1(sin) * kq[..., 0] + c1(cos) * kq[..., 1] + c1(M[:, 1, 2]))

    layers = np.empty((n, S, S), np.float32)
    alphas = np.empty((n, S, S), np.float32)
    for i in range(n):
        H, W = 2 * hy[i] + 1, 2 * hx[i] + 1
        t = float(tone[i])
        canvas = np.full((H, W), min(t, 255.0), np.uint8)
        alpha = np.zeros((H, W), np.uint8)
        body.draw(alpha, i)
        for op, v in zip(body.ops, body_vals):  # same shapes, per-face grey values
            if op[0] == "poly":
                cv2.fillPoly(canvas, list(op[1][i]), v[i], _AA, _SHIFT)
            else:
                cx_, cy_, ax_, ay_ = op[1][i]
                cv2.ellipse(canvas, (cx_, cy_), (ax_, ay_), op[4], 0, 360, v[i], -1, _AA, _SHIFT)
        # face oval with ellipsoid (Lambertian) shading
        img = canvas.astype(np.float32)
        x0, y0 = max(flo[i, 0], 0), max(flo[i, 1], 0)
        x1, y1 = min(fhi[i, 0], W), min(fhi[i, 1], H)
        cv2.fillPoly(alpha, [face_ip[i]], 255, _AA, _SHIFT)
        if x1 > x0 and y1 > y0:
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [face_ip[i] - np.int32([x0 * _ONE, y0 * _ONE])], 255, _AA, _SHIFT)
            ki = np.float32(1.0 / k[i])
            xs = (np.arange(x0, x1, dtype=np.float32) - np.float32(cc[i, 0])) * ki
            ys = (np.arange(y0, y1, dtype=np.float32) - np.float32(cc[i, 1])) * ki
            b = np.where(ys < 0, ys / np.float32(Bt[i]), ys / np.float32(Bb[i]))[:, None]
            a = xs[None, :] / (np.float32(A[i]) * (1 - np.float32(jaw[i]) * np.maximum(b, 0)))
            z = np.sqrt(1.0 - np.minimum(a * a + b * b, 1.0))
            amb = np.float32(p["amb"][i])
            dif = np.maximum(a * np.float32(p["lx"][i]) + b * np.float32(p["ly"][i]) + z * np.float32(lz[i]), 0.0)
            shade = (amb + (1 - amb) * dif) * np.float32(norm[i])
            roi = img[y0:y1, x0:x1]
            roi += (shade - roi) * (mask.astype(np.float32) * np.float32(1 / 255))
        sm = np.zeros((H, W), np.float32)
        soft.draw(sm, i)
        sm = cv2.GaussianBlur(sm, (0, 0), float(blur_sigma[i]))
        img *= np.clip(1.0 - sm, 0.3, 1.5)
        canvas = np.clip(img, 0, 255).astype(np.uint8)
        hair.draw(canvas, i)
        hair_alpha.draw(alpha, i)
        absf.draw(canvas, i)
        for j in (0, 1):  # iris, pupil, glint, clipped to the eye opening
            poly32 = eye_polys32[i, j]
            cqj = centre_q[i, j]
            r = float(ri[i])
            for c, rr, val in ((cqj, r, iris_val[i]), (cqj, 0.45 * r, 12.0), (cqj + _GLINT * r, 0.2 * r, 200.0)):
                d = _clipped_disc(c, rr, poly32)
                if d is not None:
                    cv2.fillPoly(canvas, [d], val, _AA, _SHIFT)
        dmap = np.zeros((H, W), np.uint8)
        dark.draw(dmap, i)
        img = canvas.astype(np.float32) * (1.0 - dmap.astype(np.float32) * np.float32(1 / 255))
        layers[i] = cv2.warpAffine(img, M[i], (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alphas[i] = cv2.warpAffine(alpha, M[i], (S, S), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT) * np.float32(1 / 255)
    return layers, alphas, kout


class _SingleThreadCV2:
    """Run OpenCV single-threaded inside the block (many tiny images: threads only add
    overhead); the previous setting is restored afterwards."""

    def __enter__(self):
        self._prev = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc):
        cv2.setNumThreads(self._prev)
        return False


def _composite(layers, alphas, p, blobs, noise_rng, plain: bool) -> np.ndarray:
    """Background (level + gradient + smooth blobs), compositing, lighting and noise."""
    n, S, _ = layers.shape
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / np.float32(max(S - 1, 1)) - np.float32(0.5)
    out = np.empty((n, S, S), np.uint8)
    blob_scale = 0.35 if plain else 1.0
    for i in range(n):
        ang = p["bg_ang"][i]
        bg = (xx * np.float32(math.cos(ang) * p["bg_grad"][i]) + yy * np.float32(math.sin(ang) * p["bg_grad"][i])
              + np.float32(p["bg"][i]))
        bg += cv2.resize(blobs[i], (S, S), interpolation=cv2.INTER_CUBIC) * np.float32(p["bg_blob"][i] * blob_scale)
        img = bg + (layers[i] - bg) * alphas[i]
        la = p["lg_ang"][i]
        amp = p["lg_amp"][i]
        g = p["gain"][i]
        light = xx * np.float32(math.cos(la) * amp * g) + yy * np.float32(math.sin(la) * amp * g) + np.float32(g)
        img *= light
        img += np.float32(p["bias"][i])
        img += noise_rng.standard_normal((S, S), dtype=np.float32) * np.float32(p["noise"][i])
        out[i] = np.clip(np.rint(img), 0, 255)
    return out


def render_faces(n: int, size: int = 96, seed: int = 0,
                 labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render ``n`` tight face crops (framed like the Kaggle 96x96 keypoint crops).

    Returns ``(images, keypoints, labels)``: ``images`` uint8 ``[n, size, size]``;
    ``keypoints`` float32 ``[n, 15, 2]`` (x, y) in pixels of that image (pixel centres at
    integer coordinates), in Kaggle order (:data:`POINT_NAMES`); ``labels`` int64 ``[n]``
    emotion indices into ``EMOTIONS`` (balanced and shuffled when not given).
    Variation: rotation +-12 deg, translation +-3 px (at 96), scale +-10 %, skin tone,
    proportions, hair, lighting, background and noise.  Deterministic in ``seed``.
    """
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 16 <= size <= 1024:
        raise ValueError("size must be in 16..1024")
    rng = np.random.default_rng([int(seed), 0xFACE])
    labels = _balanced_labels(rng, n) if labels is None else _check_labels(labels, n)
    p = _sample_params(rng, n)
    blobs = rng.standard_normal((n, 4, 4)).astype(np.float32)
    noise_rng = np.random.default_rng([int(seed), 0xFACE, 1])
    images = np.empty((n, size, size), np.uint8)
    keypoints = np.empty((n, 15, 2), np.float32)
    base_k = size / 96.0
    chunk = max(1, min(512, (1 << 22) // (size * size)))
    with _SingleThreadCV2():
        _render_into(images, keypoints, p, labels, blobs, noise_rng, size, chunk, base_k)
    return images, keypoints, labels


def _render_into(images, keypoints, p, labels, blobs, noise_rng, size, chunk, base_k) -> None:
    n = len(labels)
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        ps = {key: v[sl] for key, v in p.items()}
        k = base_k * ps["scale"]
        # canonical (48, 50) (+ jitter) of the 96 frame, rescaled with pixel centres kept
        origin = (_C0[None, :] + 3.0 * np.stack([ps["tx"], ps["ty"]], 1) + 0.5) * base_k - 0.5
        layers, alphas, kp = _render_batch(ps, labels[sl], size, k, origin, ps["rot"])
        images[sl] = _composite(layers, alphas, ps, blobs[sl], noise_rng, plain=False)
        keypoints[sl] = kp


def render_photos(n: int, size: int = 256, seed: int = 0, labels: np.ndarray | None = None,
                  max_rotation: float = 8.0):
    """Render ``n`` "photos": one face (hairline to chin ~50-68 % of the image height) with
    hair, neck and shoulders on a plain-ish background.

    Returns ``(images uint8 [n, size, size], boxes float32 [n, 4] (x0, y0, x1, y1) of the
    face from above the brows to the chin (unrotated), keypoints float32 [n, 15, 2],
    labels int64 [n])``.
    """
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 32 <= size <= 2048:
        raise ValueError("size must be in 32..2048")
    rng = np.random.default_rng([int(seed), 0xB0D7])
    labels = _balanced_labels(rng, n) if labels is None else _check_labels(labels, n)
    p = _sample_params(rng, n)
    frac = rng.uniform(0.5, 0.68, n)
    off = rng.uniform(-0.06, 0.06, (n, 2))
    rots = rng.uniform(-max_rotation, max_rotation, n)
    blobs = rng.standard_normal((n, 4, 4)).astype(np.float32)
    noise_rng = np.random.default_rng([int(seed), 0xB0D7, 1])
    p["noise"] = np.minimum(p["noise"], 4.0)
    k = frac * size / (p["face_bt"] + p["face_bb"])
    origin = np.stack([size * (0.5 + off[:, 0]), size * (0.47 + off[:, 1])], axis=1)
    images = np.empty((n, size, size), np.uint8)
    keypoints = np.empty((n, 15, 2), np.float32)
    chunk = max(1, (1 << 22) // (size * size))
    with _SingleThreadCV2():
        for s in range(0, n, chunk):
            sl = slice(s, min(s + chunk, n))
            ps = {key: v[sl] for key, v in p.items()}
            layers, alphas, kp = _render_batch(ps, labels[sl], size, k[sl], origin[sl], rots[sl])
            images[sl] = _composite(layers, alphas, ps, blobs[sl], noise_rng, plain=True)
            keypoints[sl] = kp
    top = origin[:, 1] + (p["eye_y"] - p["brow_gap"] - 4.0 - _C0[1]) * k
    boxes = np.stack([origin[:, 0] - p["face_a"] * k, top, origin[:, 0] + p["face_a"] * k,
                      origin[:, 1] + p["face_bb"] * k], axis=1).astype(np.float32)
    return images, boxes, keypoints, labels


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------
_LUT = np.array([str(v) for v in range(256)], dtype=object)


def _pixels_str(img: np.ndarray) -> str:
    return " ".join(_LUT[img.ravel()].tolist())


@contextlib.contextmanager
def _open_text(path: Path):
    """Text writer for ``path``; gzip-compressed (deterministic bytes) if it ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        # mtime=0 and an empty embedded file name keep the gzip bytes deterministic
        with open(path, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz, \
                io.TextIOWrapper(gz, encoding="utf-8", newline="") as f:
            yield f
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            yield f


def write_keypoints_csv(path, n: int, seed: int = 0, missing_fraction: float = 0.3,
                        size: int = 96) -> Path:
    """Write ``n`` faces in the Kaggle Facial Keypoints ``training.csv`` layout.

    Header: the 30 ``KAGGLE_KEYPOINT_COLUMNS`` then ``Image``; each row has the coordinates
    (4 decimals) and the image as space-separated ints (row-major).  About
    ``missing_fraction`` of the rows are incomplete: they always keep the 4 "core" points
    (eye centres, nose tip, bottom lip); most (85 %) keep only those, like the real file,
    the others also keep a random part of the remaining 11; a missing point has both its x
    and y cells empty.  ``.gz`` paths are gzipped.
    """
    path = Path(path)
    if not 0.0 <= missing_fraction <= 1.0:
        raise ValueError("missing_fraction must be in [0, 1]")
    images, kps, _ = render_faces(n, size=size, seed=seed)
    rng = np.random.default_rng([int(seed), 0xC5F])
    core = [_P[c] for c in _KAGGLE_CORE_POINTS]
    others = np.array([i for i in range(15) if i not in core])
    present = np.ones((n, 15), bool)
    incomplete = rng.random(n) < missing_fraction
    mode = rng.random(n)
    drop = rng.random((n, 15)) < 0.5
    forced = rng.integers(len(others), size=n)
    for i in np.flatnonzero(incomplete):
        present[i, others] = False
        if mode[i] >= 0.85:  # keep a random part of the other points (never all of them)
            keep = ~drop[i, others]
            if keep.all():
                keep[forced[i]] = False
            present[i, others] = keep
    with _open_text(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(KAGGLE_KEYPOINT_COLUMNS) + ["Image"])
        for i in range(n):
            row = []
            for j in range(15):
                if present[i, j]:
                    row += [f"{kps[i, j, 0]:.4f}", f"{kps[i, j, 1]:.4f}"]
                else:
                    row += ["", ""]
            row.append(_pixels_str(images[i]))
            w.writerow(row)
    return path


def write_fer_csv(path, n: int, seed: int = 0, size: int = 48,
                  usage_fractions=(0.8, 0.1, 0.1)) -> Path:
    """Write ``n`` faces in the FER2013 ``fer2013.csv`` layout (``emotion,pixels,Usage``).

    ``emotion`` is 0..6 (``EMOTIONS`` order); ``pixels`` space-separated ints; ``Usage`` is
    Training / PublicTest / PrivateTest in that order (as in the real file) with counts from
    ``usage_fractions`` (normalised, rounded; the rest goes to PrivateTest).  ``.gz`` paths
    are gzipped.
    """
    path = Path(path)
    fr = np.asarray(usage_fractions, float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError("usage_fractions must be three non-negative numbers")
    fr = fr / fr.sum()
    n_train = int(round(n * fr[0]))
    n_pub = min(int(round(n * fr[1])), n - n_train)
    usages = [FER_USAGES[0]] * n_train + [FER_USAGES[1]] * n_pub + [FER_USAGES[2]] * (n - n_train - n_pub)
    images, _, labels = render_faces(n, size=size, seed=seed)
    with _open_text(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["emotion", "pixels", "Usage"])
        for i in range(n):
            w.writerow([int(labels[i]), _pixels_str(images[i]), usages[i]])
    return path


def write_image_folder(path, n: int, seed: int = 0, size: int = 256) -> list[Path]:
    """Write ``n`` grayscale PNG photos (``face_0000.png`` ...), one face each on a
    plain-ish background (see :func:`render_photos`), for face-detection demos.

    Returns the written paths in order.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    images, _, _, _ = render_photos(n, size=size, seed=seed)
    out = []
    for i in range(n):
        f = path / f"face_{i:04d}.png"
        if not cv2.imwrite(str(f), images[i]):
            raise OSError(f"could not write {f}")
        out.append(f)
    return out


def write_photo_labels(path, n: int, seed: int = 0, size: int = 160) -> Path:
    """Write ``n`` generated photos (``<person>_<k>.png``, three per person) and ``labels.csv``
    beside them: the photo-labels layout (``image,width,height,<point>_x,<point>_y,...``, points
    in image pixels), as :mod:`facepipe.data.photos` reads it. Returns the CSV's path."""
    from facepipe.data.schema import KeypointSchema

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    images, _, keypoints, _ = render_photos(n, size=size, seed=seed)
    schema = KeypointSchema.kaggle()
    lines = [",".join(["image", "width", "height", *schema.columns])]
    for i in range(n):
        name = f"person{i // 3:03d}_{i % 3:02d}.png"
        if not cv2.imwrite(str(path / name), images[i]):
            raise OSError(f"could not write {path / name}")
        lines.append(",".join([name, str(size), str(size), *(f"{v:.2f}" for v in keypoints[i].reshape(-1))]))
    csv = path / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


#: Rows of the embedded default data sets (small enough to train on 2 cores in about a minute).
DEFAULT_FER_ROWS = 2100
DEFAULT_KEYPOINT_ROWS = 1200


def default_data(folder: str | os.PathLike, fer_rows: int = DEFAULT_FER_ROWS, keypoint_rows: int = DEFAULT_KEYPOINT_ROWS, seed: int = 0) -> dict[str, Path]:
    """The embedded default: generated FER2013 and keypoints CSVs in ``folder`` (written once, then reused)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "emotion": folder / f"generated_fer2013_{fer_rows}_s{seed}.csv.gz",
        "keypoints": folder / f"generated_keypoints_{keypoint_rows}_s{seed}.csv.gz",
    }
    writers = {"emotion": lambda p: write_fer_csv(p, fer_rows, seed=seed), "keypoints": lambda p: write_keypoints_csv(p, keypoint_rows, seed=seed)}
    for task, path in paths.items():
        if not path.exists():
            tmp = path.with_name(path.name.replace(".csv.gz", ".tmp.csv.gz"))
            writers[task](tmp)
            os.replace(tmp, path)  # never leave a half-written default behind
    (folder / GENERATED_MARKER).write_text("The generated_*.csv.gz files here are facepipe's generated faces, not real data "
                                           "(facepipe.data.synth.default_data).\n")
    return paths


#: Written beside :func:`default_data`'s files; models trained on them say so in meta.json.
GENERATED_MARKER = "GENERATED.txt"


def is_generated(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of :func:`default_data`'s generated CSVs."""
    path = Path(path)
    return path.name.startswith("generated_") and (path.parent / GENERATED_MARKER).is_file()
