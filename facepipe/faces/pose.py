"""Head pose (yaw, pitch, roll in degrees) from 2-D facial points and a 3-D mean face.

The mean face (``mean_face.json`` beside this file) holds 3-D positions of the 68 iBUG points and
of Kaggle's 15 points, fitted from the 2-D labels of ``ytf_frames`` by rigid factorisation
(:func:`fit_mean_face`; ``bench/mean_face.py`` rebuilds it and reports the fit). A face's pose is
the rotation :func:`cv2.solvePnP` finds between those model points and the face's points in the
image, for a pinhole camera whose focal length is the image's longer side (about 53 degrees of
view across it, a phone's or a webcam's; the angles depend little on it) and whose principal point
is the image centre.

Axes of the model, in the camera's convention for a frontal face: x to the image's right (towards
the subject's left eye), y down, z away from the camera; x runs along the eye centres and the
eyes-mouth plane is the x-y plane. Angles (degrees), with the rotation taken as
``Rz(-roll) @ Ry(-yaw) @ Rx(-pitch)``:

* ``yaw`` > 0: the face turns towards the subject's left (its nose towards the image's right);
* ``pitch`` > 0: the face tilts up (nose up);
* ``roll`` > 0: the face is turned counter-clockwise in the image (as ``cv2.getRotationMatrix2D``
  with a positive angle turns an image).

A frontal face reads 0, 0, 0; its mirror image has yaw and roll negated and the same pitch; an
image turned in-plane by t degrees has its roll shifted by t. Nothing here imports torch.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import cv2
import numpy as np

__all__ = ["MEAN_FACE", "POSE_NAMES", "PoseError", "mean_face", "can_solve", "head_pose", "solve_pose",
           "rotation_from_angles", "angles_from_rotation", "fit_mean_face"]

MEAN_FACE = Path(__file__).resolve().parent / "mean_face.json"
#: The pose outputs, in order.
POSE_NAMES = ("yaw", "pitch", "roll")
#: Fewest model points a pose is solved from (solvePnP's iterative solver needs 4; 6 keep it stable).
MIN_POINTS = 6


class PoseError(ValueError):
    """Points that no pose can be solved from (too few known to the mean face)."""


@functools.lru_cache(maxsize=2)
def mean_face(path: str | None = None) -> dict[str, np.ndarray]:
    """``{point name: float64 [3]}`` of the shipped mean face (or of ``path``), model units ~ mm."""
    data = json.loads(Path(path or MEAN_FACE).read_text())
    return {k: np.asarray(v, np.float64) for k, v in data["points"].items()}


def can_solve(names: list[str] | tuple[str, ...]) -> bool:
    """Whether points named ``names`` hold enough of the mean face (:data:`MIN_POINTS`) for a pose."""
    face = mean_face()
    return sum(n in face for n in names) >= MIN_POINTS


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The model-to-camera rotation ``[3, 3]`` of these angles (degrees; conventions above)."""
    y, p, r = (-math.radians(v) for v in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a model-to-camera rotation (inverse of :func:`rotation_from_angles`)."""
    r = np.asarray(rot, np.float64)
    beta = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    alpha = math.atan2(r[2, 1], r[2, 2])
    gamma = math.atan2(r[1, 0], r[0, 0])
    return -math.degrees(beta), -math.degrees(alpha), -math.degrees(gamma)


def camera_matrix(width: int, height: int) -> np.ndarray:
    """The pinhole camera assumed for an image: focal length its longer side, principal point its centre."""
    f = float(max(width, height))
    return np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1]], np.float64)


def head_pose(points: np.ndarray, names: list[str] | tuple[str, ...], sizes: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees ``float32 [N, 3]`` of faces with points ``[N, K, 2]`` (image
    pixels, named as the model names them) in images of ``sizes`` ``[N, 2]`` (width, height).

    Points the mean face does not know are left out; a face with a missing point, or whose solve
    fails, gets NaN. :class:`PoseError` when fewer than :data:`MIN_POINTS` names are known.
    """
    face = mean_face()
    known = [i for i, n in enumerate(names) if n in face]
    if not can_solve(names):
        raise PoseError(f"only {len(known)} of the points {list(names)[:4]}... are on the mean face: need {MIN_POINTS} for a pose")
    model = np.stack([face[names[i]] for i in known])
    pts = np.asarray(points, np.float64)[:, known, :]
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    out = np.full((len(pts), 3), np.nan, np.float32)
    for i, (p, (w, h)) in enumerate(zip(pts, sizes)):
        if not np.isfinite(p).all() or w <= 0 or h <= 0:
            continue
        solved = solve_pose(model, p, camera_matrix(int(w), int(h)))
        if solved is not None:
            out[i] = angles_from_rotation(solved[0])
    return out


def solve_pose(model: np.ndarray, image_points: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(rotation [3, 3], rvec, tvec)`` mapping ``model`` ``[K, 3]`` onto ``image_points`` ``[K, 2]``:
    SQPnP (a global solver, no initial guess to go wrong), refined by Levenberg-Marquardt on the
    reprojection error; None if it fails or puts the face behind the camera."""
    obj, img = np.ascontiguousarray(model), np.ascontiguousarray(image_points)
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            return None
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, cam, None, rvec, tvec)
    except cv2.error:
        return None
    if not np.isfinite(tvec).all() or tvec[2, 0] <= 0:
        return None
    return cv2.Rodrigues(rvec)[0], rvec, tvec


def fit_mean_face(points: np.ndarray, names: list[str], flip_permutation: np.ndarray, eye_distance: float = 63.0) -> np.ndarray:
    """A symmetric 3-D face ``[K, 3]`` from many 2-D views of it ``[N, K, 2]`` (complete rows only).

    Rigid factorisation under scaled orthography (Tomasi and Kanade 1992): the centred views,
    stacked ``[2N, K]``, have rank 3; the metric constraints (each view's two camera rows
    orthogonal and of equal length) fix the 3-D frame up to a rotation and a mirror. The result is
    then put in the axes of this module (x along the eye centres, eyes-mouth plane x-y, nose
    towards the camera), averaged with its mirror image (``flip_permutation``: the index of each
    point's mirror twin) and scaled so the eye centres are ``eye_distance`` apart (~63 mm in adults).
    ``names`` must hold the iBUG-68 points ``p00``..``p67``.
    """
    pts = np.asarray(points, np.float64)
    pts = pts[np.isfinite(pts).all(axis=(1, 2))]
    if len(pts) < 10:
        raise ValueError(f"{len(pts)} complete faces: too few to fit a 3-D face (need >= 10)")
    centred = pts - pts.mean(axis=1, keepdims=True)
    # each view's size set to 1: every face counts the same whatever its pixel size
    centred /= np.sqrt((centred ** 2).sum(axis=(1, 2)))[:, None, None]
    w = centred.transpose(0, 2, 1).reshape(-1, pts.shape[1])  # rows x0, y0, x1, y1, ...
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    m = u[:, :3] * np.sqrt(s[:3])
    shape = np.sqrt(s[:3])[:, None] * vt[:3]
    a, b = m[0::2], m[1::2]

    def sym_row(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # x^T L y for symmetric L, as coefficients of (l00, l01, l02, l11, l12, l22)
        return np.stack([x[:, 0] * y[:, 0], x[:, 0] * y[:, 1] + x[:, 1] * y[:, 0], x[:, 0] * y[:, 2] + x[:, 2] * y[:, 0],
                         x[:, 1] * y[:, 1], x[:, 1] * y[:, 2] + x[:, 2] * y[:, 1], x[:, 2] * y[:, 2]], axis=1)

    # L = Q Q^T up to scale: the null vector of the constraints (a L a = b L b, a L b = 0 per view)
    rows = np.concatenate([sym_row(a, a) - sym_row(b, b), sym_row(a, b)])
    l6 = np.linalg.svd(rows, full_matrices=False)[2][-1]
    lmat = np.array([[l6[0], l6[1], l6[2]], [l6[1], l6[3], l6[4]], [l6[2], l6[4], l6[5]]])
    lmat *= np.sign(np.trace(lmat))
    q = np.linalg.cholesky(lmat)  # fails loudly when the views do not fit a rigid shape
    face = (np.linalg.inv(q) @ shape).T  # [K, 3]
    idx = {n: i for i, n in enumerate(names)}
    ids = lambda lo, hi: [idx[f"p{i:02d}"] for i in range(lo, hi)]  # noqa: E731
    right_eye, left_eye = face[ids(36, 42)].mean(0), face[ids(42, 48)].mean(0)
    mouth = face[ids(48, 68)].mean(0)
    x = left_eye - right_eye
    x /= np.linalg.norm(x)
    y = mouth - (right_eye + left_eye) / 2
    y -= x * (y @ x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    face = (face - face.mean(0)) @ np.stack([x, y, z], axis=1)
    if face[idx["p30"], 2] > face[ids(36, 48), 2].mean():  # the nose tip must point at the camera (-z)
        face[:, 2] *= -1
    mirrored = face[np.asarray(flip_permutation)] * np.array([-1.0, 1.0, 1.0])
    face = (face + mirrored) / 2
    face -= face.mean(0)
    scale = eye_distance / np.linalg.norm(face[ids(42, 48)].mean(0) - face[ids(36, 42)].mean(0))
    return face * scale
