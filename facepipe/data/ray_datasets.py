"""Ray Data datasets from Kaggle CSVs (the pixel parse runs in parallel ``map_batches`` tasks) and
from photos + point labels (decode, detect and crop run in parallel tasks; :mod:`.photos`).

The driver reads the file once with pyarrow (cells as strings, the cheap part) and checks its
structure; parsing pixel strings and keypoints, the costly part, runs in Ray tasks, one block
at a time. Each split becomes its own materialized dataset with the columns of
:func:`facepipe.data.kaggle.parse_rows`, plus ``split``. The training split's per-epoch
augmentation stage (:func:`augment_train_batch`, with :class:`EpochClock` for the epoch) lives
here too, so that data workers never import torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa
import ray

from facepipe.augment import AugmentConfig, BatchAugmenter, batch_rng
from facepipe.data.kaggle import PHOTO_POINTS, BadRow, CSVFormat, detect_format, parse_rows, raise_or_record, read_raw

#: Ray Data tasks ask for a fraction of a CPU so that, on a 2-core machine, they can always be
#: scheduled next to Train workers or inference actors (whole-CPU asks there deadlock).
DATA_TASK_CPUS = 0.25
ROWS_PER_BLOCK = 2048

#: FER2013 ``Usage`` values are the split names, so ``--split PublicTest`` means what it says.
FER_TRAIN, FER_VAL = "Training", "PublicTest"


@dataclass
class SplitDatasets:
    """Parsed datasets per split, with what was skipped along the way."""

    path: str
    format: CSVFormat
    datasets: dict[str, ray.data.Dataset]
    counts: dict[str, int]
    skipped: list[BadRow] = field(default_factory=list)
    blank_lines: list[int] = field(default_factory=list)
    #: Photo sources: the framing (margin, measured box noise), the box-from-points relation and
    #: how each photo's face was found (see :func:`load_photo_splits`).
    photo_info: dict | None = None

    def __getitem__(self, split: str) -> ray.data.Dataset:
        if split not in self.datasets:
            raise KeyError(f"{self.path}: no split {split!r}; available: {sorted(self.datasets)}")
        return self.datasets[split]


def parse_batch(batch: pa.Table, fmt: CSVFormat) -> dict[str, np.ndarray]:
    """``map_batches`` function: Arrow batch of strings → numpy columns plus an ``error`` column.

    Bad rows stay in the output with their reason in ``error`` ("" when fine), so the driver can
    raise or report them: nothing is dropped out of sight inside a worker.
    """
    # Ray runs several of these tasks at once: one numba thread each avoids oversubscription.
    numba.set_num_threads(1)
    cols, bad = parse_rows(batch, fmt, drop_bad=False)
    cols["split"] = batch.column("split").to_numpy(zero_copy_only=False)
    error = np.full(batch.num_rows, "", dtype=object)
    if bad:
        where = {b.line: f"{b.column}|{b.reason}" for b in bad}
        for i, line in enumerate(cols["line"]):
            error[i] = where.get(int(line), "")
    cols["error"] = error
    return cols


def assign_splits(n: int, usage: np.ndarray | None = None, val_fraction: float = 0.1, seed: int = 0,
                  train_fraction: float = 1.0) -> np.ndarray:
    """Split name per row: FER2013's ``Usage`` when given; otherwise a seeded random ``train``/``val`` split.

    ``train_fraction`` < 1 keeps a seeded fraction of the training rows (``Training`` for FER2013)
    and names the others ``unused``; the validation rows do not change (:func:`subsample_order`).
    """
    from facepipe.data.photos import subsample_order

    if usage is None:
        return subsample_order(n, val_fraction, seed, train_fraction)
    split = np.asarray(usage, dtype=object).copy()
    if train_fraction != 1.0:
        train = np.flatnonzero(split == FER_TRAIN)
        split[train] = np.where(subsample_order(len(train), 0.0, seed, train_fraction) == "train", FER_TRAIN, "unused")
    return split


def load_splits(
    path: str | os.PathLike,
    *,
    skip_bad_rows: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    rows_per_block: int = ROWS_PER_BLOCK,
    images: str | os.PathLike | None = None,
    margin: float | None = None,
    detector: dict | None = None,
    train_fraction: float = 1.0,
) -> SplitDatasets:
    """Read, parse (in Ray tasks) and split a Kaggle CSV into materialized Ray datasets.

    A photo-points CSV goes to :func:`load_photo_splits` (``images``, ``margin``, ``detector``).
    ``train_fraction``: see :func:`assign_splits`; rows left out get no dataset.
    """
    if detect_format(path, image_size).name == PHOTO_POINTS:
        return load_photo_splits(path, images=images, margin=margin, detector=detector, skip_bad_rows=skip_bad_rows,
                                 val_fraction=val_fraction, seed=seed, image_size=image_size, train_fraction=train_fraction)
    raw = read_raw(path, image_size=image_size)
    usage = raw.table.column("Usage").to_pylist() if "Usage" in raw.format.columns else None
    split = assign_splits(raw.num_rows, usage, val_fraction, seed, train_fraction)
    table = raw.table.append_column("split", pa.array(split.astype(str)))
    blocks = [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)]
    parsed = ray.data.from_arrow(blocks).map_batches(
        parse_batch,
        fn_kwargs={"fmt": raw.format},
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=DATA_TASK_CPUS,
    ).materialize()

    errors = parsed.select_columns(["line", "error"]).filter(expr="error != ''").take_all()
    bad = [BadRow(int(r["line"]), *r["error"].split("|", 1)) for r in errors]
    raise_or_record(raw, bad, skip_bad_rows)

    datasets, counts = {}, {}
    for name in sorted(set(split.tolist()) - {"unused"}):
        ds = parsed.filter(expr=f"split == '{name}' and error == ''").drop_columns(["error"]).materialize()
        datasets[name], counts[name] = ds, ds.count()
    return SplitDatasets(raw.path, raw.format, datasets, counts, raw.skipped, raw.blank_lines)


#: Photos per decode/detect task (~15 ms each on one core).
PHOTOS_PER_TASK = 64
#: Columns the training split of a photo source keeps, to be re-cropped every epoch.
PHOTO_COLUMNS = ("photo", "box", "points", "line")


def _with_boxes(batch: dict, box_model: dict) -> dict:
    """``box``: the detector's box where it found the labelled face, else the box framed from the labels."""
    from facepipe.faces.framing import face_boxes

    box, _ = face_boxes(batch["det_box"], batch["points"], box_model)
    return {**batch, "box": box.astype(np.float32)}


def _base_crops(batch: dict, framing: dict, size: int) -> dict:
    from facepipe.data.photos import crop_photos

    return {**batch, **crop_photos(batch, framing, size)}


def load_photo_splits(
    path: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    margin: float | None = None,
    detector: dict | None = None,
    skip_bad_rows: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    train_fraction: float = 1.0,
) -> SplitDatasets:
    """Photos + point labels → per-split datasets of crops framed as annotation frames them.

    Decode and detection run in Ray tasks (the annotation job's detector with ``detector``
    settings). The box-from-points relation and the detector's box noise are fitted on the
    training split's detected faces; photos without a matching detection are framed from their
    labels. Every split gets ``image`` (the un-jittered crop), ``keypoints`` (crop pixels),
    ``mask``, ``line``, ``square``; the training split keeps :data:`PHOTO_COLUMNS` too, for the
    per-epoch jittered re-crop (:func:`augment_train_batch` with ``framing``).
    """
    from facepipe.faces.detect import detector_config
    from facepipe.faces.framing import DEFAULT_MARGIN
    from facepipe.data.photos import detect_batch, read_photo_rows
    from facepipe.faces.framing import fit_box_model

    rows = read_photo_rows(path, images, skip_bad_rows=skip_bad_rows, val_fraction=val_fraction, seed=seed, image_size=image_size,
                           train_fraction=train_fraction)
    det_cfg = detector_config(detector)
    size = rows.raw.format.image_size
    items = [{"line": int(l), "abs_path": a, "points": p, "split": s} for l, a, p, s in zip(rows.line, rows.abs_path, rows.points, rows.split)]
    found = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // PHOTOS_PER_TASK))).map_batches(
        detect_batch, fn_kwargs={"detector": det_cfg.to_dict()}, batch_size=None, num_cpus=DATA_TASK_CPUS,
    ).materialize()

    meta_cols = found.select_columns(["line", "det_box", "num_faces", "error", "split", "points"]).to_pandas()
    bad = [BadRow(int(l), *e.split("|", 1)) for l, e in zip(meta_cols["line"], meta_cols["error"]) if e]
    raise_or_record(rows.raw, bad, skip_bad_rows)
    good = meta_cols[meta_cols["error"] == ""]
    det_box = np.stack(good["det_box"].to_numpy()).astype(np.float64)
    points = np.stack([np.stack(p) for p in good["points"].to_numpy()]).astype(np.float64)
    train = (good["split"] == "train").to_numpy()
    box_model, framing = fit_box_model(det_box[train], points[train], DEFAULT_MARGIN if margin is None else margin)

    matched = np.isfinite(det_box).all(1)
    faces = good["num_faces"].to_numpy()
    how = {}
    for name in ("train", "val"):
        sel = (good["split"] == name).to_numpy()
        how[name] = {"photos": int(sel.sum()), "detected": int((sel & matched).sum()), "no_face": int((sel & (faces == 0)).sum()),
                     "wrong_face": int((sel & (faces > 0) & ~matched).sum())}
    info = {"framing": framing.to_dict(), "box_model": box_model.to_dict(), "detector": det_cfg.to_dict(),
            "detector_description": det_cfg.describe(), "images": rows.images_dir, "split_by": "person (file name without _<number>)",
            "faces": how}

    cropped = (
        found.filter(expr="error == ''")
        .drop_columns(["error", "abs_path"])
        .map_batches(_with_boxes, fn_kwargs={"box_model": box_model.to_dict()}, batch_size=None, num_cpus=DATA_TASK_CPUS)
        .map_batches(_base_crops, fn_kwargs={"framing": framing.without_jitter().to_dict(), "size": size}, batch_size=None, num_cpus=DATA_TASK_CPUS)
        .materialize()
    )
    datasets, counts = {}, {}
    for name in ("train", "val"):
        ds = cropped.filter(expr=f"split == '{name}'")
        if name != "train":
            ds = ds.drop_columns(["photo"])
        datasets[name] = ds.materialize()
        counts[name] = datasets[name].count()
    return SplitDatasets(rows.raw.path, rows.raw.format, datasets, counts, rows.raw.skipped, rows.raw.blank_lines, info)


# --- per-epoch augmentation of the training split --------------------------------------------
# Kept here, away from torch: Ray imports a map_batches function's module in every data worker,
# and from facepipe.train that meant torch + torchvision in each (a first epoch waited 11.7 s
# for its first batch, against 0.9 s without the augmentation stage).


@ray.remote(num_cpus=0)
class EpochClock:
    """The current epoch, read by augmentation tasks so each epoch draws new (seeded) transforms."""

    def __init__(self) -> None:
        self.epoch = 0

    def set(self, epoch: int) -> None:
        self.epoch = epoch

    def get(self) -> int:
        return self.epoch


def augment_train_batch(batch: dict, config: dict, flip_permutation: list[int] | None, seed: int, clock,
                        framing: dict | None = None, size: int | None = None) -> dict:
    """``map_batches`` function: augment a training batch, seeded by (seed, epoch, row ids).

    With ``framing`` (photo sources) each photo is first re-cropped to ``size`` from its box
    jittered by the framing's noise, with annotation's crop function (:func:`.photos.crop_photos`).
    """
    import cv2

    cv2.setNumThreads(1)  # these tasks share the cores with the Train workers' torch threads
    epoch = ray.get(clock.get.remote())
    if framing is not None:
        from facepipe.data.photos import crop_photos

        # Its own stream (seed + 1), so the box jitter and the augmentation below draw independently.
        crops = crop_photos(batch, framing, size, rng=batch_rng({"row_id": batch["line"]}, seed + 1, epoch))
        batch = {"image": crops["image"], "keypoints": crops["keypoints"], "mask": crops["mask"], "line": batch["line"]}
    augmenter = BatchAugmenter(AugmentConfig.from_dict(config), flip_permutation, seed=seed, epoch=epoch)
    out = augmenter({**batch, "row_id": batch["line"]})
    out.pop("row_id", None)
    return out
