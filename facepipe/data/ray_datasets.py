"""Ray Data datasets from Kaggle CSVs: the pixel parse runs in parallel ``map_batches`` tasks.

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

from facepipe.augment import AugmentConfig, BatchAugmenter
from facepipe.data.kaggle import BadRow, CSVFormat, parse_rows, raise_or_record, read_raw

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


def assign_splits(n: int, usage: np.ndarray | None = None, val_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Split name per row: FER2013's ``Usage`` when given; otherwise a seeded random ``train``/``val`` split."""
    if usage is not None:
        return np.asarray(usage, dtype=object)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    split = np.full(n, "train", dtype=object)
    n_val = int(round(n * val_fraction))
    split[np.random.default_rng(seed).permutation(n)[:n_val]] = "val"
    return split


def load_splits(
    path: str | os.PathLike,
    *,
    skip_bad_rows: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    rows_per_block: int = ROWS_PER_BLOCK,
) -> SplitDatasets:
    """Read, parse (in Ray tasks) and split a Kaggle CSV into materialized Ray datasets."""
    raw = read_raw(path, image_size=image_size)
    usage = raw.table.column("Usage").to_pylist() if "Usage" in raw.format.columns else None
    split = assign_splits(raw.num_rows, usage, val_fraction, seed)
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
    for name in sorted(set(split.tolist())):
        ds = parsed.filter(expr=f"split == '{name}' and error == ''").drop_columns(["error"]).materialize()
        datasets[name], counts[name] = ds, ds.count()
    return SplitDatasets(raw.path, raw.format, datasets, counts, raw.skipped, raw.blank_lines)


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


def augment_train_batch(batch: dict, config: dict, flip_permutation: list[int] | None, seed: int, clock) -> dict:
    """``map_batches`` function: augment a training batch, seeded by (seed, epoch, row ids)."""
    import cv2

    cv2.setNumThreads(1)  # these tasks share the cores with the Train workers' torch threads
    epoch = ray.get(clock.get.remote())
    augmenter = BatchAugmenter(AugmentConfig.from_dict(config), flip_permutation, seed=seed, epoch=epoch)
    out = augmenter({**batch, "row_id": batch["line"]})
    out.pop("row_id", None)
    return out
