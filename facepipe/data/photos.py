"""Photos + a CSV of points in image pixels, as a keypoint training (and evaluation) source.

The CSV has an ``image`` column (a file name relative to the images folder), optional ``width`` and
``height``, and ``<point>_x``/``<point>_y`` columns in pixels of the upright photo (a blank cell is
a missing point); ``ytf_frames_kaggle15.csv`` and ``ytf_frames_68.csv`` in ``../shared`` are two.

Training framing and annotation framing agree by construction: both go through the face layer
(:mod:`facepipe.faces`): every photo through the detector annotation uses
(:func:`facepipe.faces.detect.detect_faces`, with the detector recorded in the model's
``meta.json``) and its crop (:func:`~facepipe.faces.crop.square_crop` +
:func:`~facepipe.faces.crop.crop_resize`, via :func:`crop_photos`). The training split is re-cropped
every epoch from a randomly jittered box whose noise matches what the detector's box shows against
the labelled points (:func:`facepipe.faces.framing.fit_box_model`).
Photos where the detector finds no face, or only faces that do not hold the labelled points, are
framed from their labels through the same fitted relation, and counted.

The split is by group (person): a file name's stem without its trailing ``_<number>``
(``Luis_Fonsi_21.jpg`` → ``Luis_Fonsi``), since frames of one video are near-duplicates.
Nothing here imports torch (these functions run in Ray Data workers).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import storage
from facepipe.data.kaggle import PHOTO_POINTS, BadRow, CSVFormatError, RawTable, raise_or_record, read_raw
from facepipe.faces.crop import crop_resize, image_to_crop, square_crop
from facepipe.faces.decode import ImageDecodeError, decode_image
from facepipe.faces.detect import detect_faces, detector_config
from facepipe.faces.framing import Framing, match_face

__all__ = [
    "PhotoRows", "group_of", "group_split", "subsample_order", "read_photo_rows", "model_split_rows", "detect_batch", "crop_photos", "interocular", "nme",
]

_GROUP_SUFFIX = re.compile(r"_\d+$")
#: A labelled point further outside its photo than this fraction of the photo's size is a bad row.
OUTSIDE_TOLERANCE = 0.5


# --- reading the CSV ----------------------------------------------------------------------------


def group_of(image: str) -> str:
    """The group (person) of an image name: its stem without a trailing ``_<number>``."""
    return _GROUP_SUFFIX.sub("", Path(image).stem)


def group_split(groups: np.ndarray, val_fraction: float = 0.1, seed: int = 0, train_fraction: float = 1.0) -> np.ndarray:
    """``train``/``val`` per row, seeded, with every group wholly on one side.

    ``train_fraction`` < 1 keeps that fraction of the training groups (:func:`subsample_order`)
    and marks the others' rows ``unused``; the ``val`` groups do not change.
    """
    uniq = np.array(sorted(set(np.asarray(groups).tolist())), dtype=object)
    order = subsample_order(len(uniq), val_fraction, seed, train_fraction)
    by_group = dict(zip(uniq.tolist(), order.tolist()))
    return np.array([by_group[g] for g in groups], dtype=object)


def subsample_order(n: int, val_fraction: float, seed: int, train_fraction: float = 1.0) -> np.ndarray:
    """``val`` / ``train`` / ``unused`` for ``n`` units (rows or groups), seeded.

    One seeded permutation decides both: its first ``val_fraction`` is ``val``, the next
    ``train_fraction`` of the rest ``train``. So a smaller ``train_fraction`` (a learning curve)
    keeps the same ``val`` units and trains on a subset of what a larger one trains on.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_train = max(1, int(round((n - n_val) * train_fraction))) if n > n_val else 0
    out = np.full(n, "unused", dtype=object)
    out[perm[:n_val]] = "val"
    out[perm[n_val:n_val + n_train]] = "train"
    return out


@dataclass
class PhotoRows:
    """The valid rows of a photo-points CSV: file paths, points in image pixels, groups, splits."""

    raw: RawTable
    images_dir: str
    line: np.ndarray  # int64 [N]
    image: np.ndarray  # object [N]: names as in the CSV
    abs_path: np.ndarray  # object [N]
    points: np.ndarray  # float32 [N, K, 2], NaN where missing
    split: np.ndarray  # object [N]: train / val
    skipped: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.line)

    @property
    def names(self) -> list[str]:
        return list(self.raw.format.schema.names)

    def select(self, keep: np.ndarray) -> "PhotoRows":
        return PhotoRows(self.raw, self.images_dir, self.line[keep], self.image[keep], self.abs_path[keep], self.points[keep], self.split[keep], self.skipped)


def read_photo_rows(path: str | os.PathLike, images: str | os.PathLike | None = None, *, skip_bad_rows: bool = False,
                    val_fraction: float = 0.1, seed: int = 0, image_size: int | None = None, train_fraction: float = 1.0) -> PhotoRows:
    """Read and check a photo-points CSV (structure, numbers, image files); split it by group.

    With ``train_fraction`` < 1 the rows of the training groups left out are not returned.

    ``images``: the folder the ``image`` names are relative to (default: the CSV's folder); on an
    object store it is copied to a local cache once (:func:`facepipe.storage.local_copy`). Bad rows
    (no image name, a missing image file, non-positive width/height, no labelled point) raise
    :class:`~facepipe.data.kaggle.CSVFormatError` naming the file, line and column, or are skipped
    and listed with ``skip_bad_rows``.
    """
    if storage.is_uri(images if images is not None else path):  # the photos are read by path: fetched once (cached)
        images = storage.local_copy(images if images is not None else storage.parent_of(path))
    raw = read_raw(path, image_size=image_size)
    fmt = raw.format
    if fmt.name != PHOTO_POINTS:
        raise CSVFormatError(raw.path, 1, None, f"a {fmt.name} file, not photo labels (image,<point>_x,<point>_y,...)")
    images_dir = Path(images) if images is not None else Path(raw.path).parent
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    t = raw.table
    n = t.num_rows
    line = t.column("line").to_numpy()
    names = np.array([v or "" for v in t.column("image").to_pylist()], dtype=object)
    k = fmt.schema.num_points
    pts = np.empty((n, k, 2), np.float32)
    for i, (cx, cy) in enumerate(zip(fmt.schema.x_columns, fmt.schema.y_columns)):
        pts[:, i, 0] = pc.cast(t.column(cx), pa.float64()).to_numpy(zero_copy_only=False)
        pts[:, i, 1] = pc.cast(t.column(cy), pa.float64()).to_numpy(zero_copy_only=False)
    pts[np.isnan(pts).any(axis=2)] = np.nan  # a point counts only with both coordinates

    bad: list[BadRow] = []
    keep = np.ones(n, bool)

    def reject(i: int, column: str, reason: str) -> None:
        keep[i] = False
        bad.append(BadRow(int(line[i]), column, reason))

    sizes = {}
    for c in ("width", "height"):
        if c in fmt.columns:
            vals = t.column(c).to_pylist()
            sizes[c] = vals
            for i, v in enumerate(vals):
                if keep[i] and not ((v or "").strip().isdigit() and int(v) > 0):
                    reject(i, c, f"{c} {v!r} is not a positive integer")
    abs_paths = np.empty(n, dtype=object)
    for i in range(n):
        if not keep[i]:
            continue
        if not names[i].strip():
            reject(i, "image", "no image file name")
            continue
        if not np.isfinite(pts[i]).any():
            reject(i, fmt.schema.columns[0], "no labelled point in this row")
            continue
        finite = pts[i][np.isfinite(pts[i])]
        if np.abs(finite).max() > 1e6:
            reject(i, fmt.schema.columns[0], f"coordinate {finite[np.abs(finite).argmax()]:g} is not a pixel position")
            continue
        p = images_dir / names[i]
        if not p.is_file():
            reject(i, "image", f"image file not found: {p} (set the images folder with --images)")
            continue
        abs_paths[i] = str(p.resolve())
    raise_or_record(raw, bad, skip_bad_rows)
    if not keep.any():
        raise CSVFormatError(raw.path, None, None, f"no valid rows ({len(raw.skipped)} bad rows skipped)")
    groups = np.array([group_of(v) for v in names[keep]], dtype=object)
    rows = PhotoRows(raw, str(images_dir), line[keep], names[keep], abs_paths[keep], pts[keep],
                     group_split(groups, val_fraction, seed, train_fraction), raw.skipped)
    return rows.select(rows.split != "unused")


def model_split_rows(path: str | os.PathLike, images: str | os.PathLike | None, meta: dict, *, skip_bad_rows: bool = False,
                     val_fraction: float | None = None, seed: int | None = None) -> PhotoRows:
    """:func:`read_photo_rows` split by person as the model of ``meta`` was trained (its ``train_config``'s
    ``val_fraction`` and ``seed``, unless given here), so its ``val`` rows are people it never saw."""
    cfg = meta.get("train_config", {})
    return read_photo_rows(path, images, skip_bad_rows=skip_bad_rows,
                           val_fraction=cfg.get("val_fraction", 0.1) if val_fraction is None else val_fraction,
                           seed=cfg.get("seed", 0) if seed is None else seed, image_size=meta.get("input_size"),
                           train_fraction=cfg.get("train_fraction", 1.0))


# --- the two stages (Ray Data map_batches functions, or called in-process) ----------------------


def detect_batch(batch: dict[str, np.ndarray], detector: dict | None = None) -> dict[str, np.ndarray]:
    """Read, decode and detect each photo; keep the box holding its labelled face.

    ``detector``: a detector config as ``to_dict()`` writes it (None: the default detector; a dict
    without ``name``, as older ``meta.json`` files hold it, is a Haar config).

    In: ``line``, ``abs_path``, ``points``. Out adds ``photo`` (the file's bytes), ``width``,
    ``height``, ``det_box`` float32 ``[4]`` (NaN: no face or no face holding the points),
    ``num_faces`` and ``error`` ("" when fine; a bad photo is reported, never dropped here).
    """
    cv2.setNumThreads(1)  # several of these tasks run at once
    cfg = detector_config(detector)
    n = len(batch["line"])
    photo = np.empty(n, dtype=object)
    error = np.full(n, "", dtype=object)
    wh = np.zeros((n, 2), np.int32)
    det = np.full((n, 4), np.nan, np.float32)
    faces = np.zeros(n, np.int32)
    for i in range(n):
        pts = np.asarray(batch["points"][i], np.float32)
        photo[i] = b""
        try:
            with open(batch["abs_path"][i], "rb") as f:
                data = f.read()
            image = decode_image(data).image  # gray or BGR: a detector that uses colour gets it
        except (OSError, ImageDecodeError) as e:
            error[i] = f"image|cannot read {batch['abs_path'][i]}: {e}"
            continue
        h, w = image.shape[:2]
        wh[i] = (w, h)
        present = pts[np.isfinite(pts).all(1)]
        tol = OUTSIDE_TOLERANCE * max(w, h)
        if len(present) and ((present < -tol).any() or (present[:, 0] > w + tol).any() or (present[:, 1] > h + tol).any()):
            error[i] = f"image|a labelled point lies far outside the {w}x{h} image"
            continue
        photo[i] = data
        boxes, _ = detect_faces(image, cfg)
        faces[i] = len(boxes)
        j = match_face(boxes, pts)
        if j is not None:
            det[i] = boxes[j]
    return {**batch, "photo": photo, "width": wh[:, 0], "height": wh[:, 1], "det_box": det, "num_faces": faces, "error": error}


def crop_photos(batch: dict[str, np.ndarray], framing: Framing | dict, size: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Model-input crops of the photos with annotation's crop function, and the points in them.

    In: ``photo`` (encoded bytes), ``box`` ``[4]`` and ``points`` ``[K, 2]`` in image pixels. With
    ``rng`` the boxes are jittered by ``framing``'s noise first. Out: ``image`` uint8
    ``[N, size, size]``, ``keypoints`` float32 ``[N, K, 2]`` in crop pixels (NaN where missing or
    outside the crop), ``mask`` bool ``[N, K]`` and ``square`` int64 ``[N, 3]``.
    """
    framing = framing if isinstance(framing, Framing) else Framing(**framing)
    boxes = np.asarray(batch["box"], np.float64).reshape(-1, 4)
    if rng is not None:
        boxes = framing.jitter(boxes, rng)
    n = len(boxes)
    images = np.empty((n, size, size), np.uint8)
    squares = np.empty((n, 3), np.int64)
    for i in range(n):
        sq = square_crop(boxes[i], framing.margin)
        gray = decode_image(bytes(batch["photo"][i])).gray
        images[i] = crop_resize(gray, sq, size)
        squares[i] = sq
    pts = np.asarray(batch["points"], np.float64).reshape(n, -1, 2)
    kp = image_to_crop(pts, squares[:, None, :], size).astype(np.float32)
    inside = np.isfinite(kp).all(-1) & (kp >= -0.5).all(-1) & (kp <= size - 0.5).all(-1)
    kp[~inside] = np.nan
    return {"image": images, "keypoints": kp, "mask": inside, "square": squares}


# --- error measures in image pixels -------------------------------------------------------------


def interocular(points: np.ndarray, names: list[str]) -> np.ndarray:
    """Distance between the eye centres ``[N]`` (Kaggle names, or iBUG-68 ``p36..p47`` eye contours)."""
    idx = {n: i for i, n in enumerate(names)}
    if "left_eye_center" in idx and "right_eye_center" in idx:
        a, b = points[:, idx["left_eye_center"]], points[:, idx["right_eye_center"]]
    elif all(f"p{i:02d}" in idx for i in range(36, 48)):
        a = points[:, [idx[f"p{i:02d}"] for i in range(42, 48)]].mean(1)
        b = points[:, [idx[f"p{i:02d}"] for i in range(36, 42)]].mean(1)
    else:
        raise ValueError("no eye centres among the point names: cannot normalise by the interocular distance")
    return np.hypot(*(a - b).T)


def nme(pred: np.ndarray, true: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Interocular-normalised error: per face (mean over its labelled points) ``[N]`` and per point ``[N, K]``."""
    d = np.hypot(*(np.asarray(pred, np.float64) - true).transpose(2, 0, 1)) / interocular(np.asarray(true, np.float64), names)[:, None]
    return np.nanmean(d, axis=1), d
