"""Incremental state: what an output folder already holds, read from its committed Parquet parts.

An image is done for a pair of models and a detector when a committed row has its (root, path), the
models' ids, the detector's description and its content hash. Reruns skip done files in two steps:

1. on the driver, without reading the file: same (root, path, size, mtime) as a done row;
2. in the pipeline, after hashing: same sha256 as a done row of that (root, path) (a file that was
   touched or copied back unchanged), emitted as ``skipped`` and not written again.

A changed file (new content) is annotated again and gets new rows; :func:`read_annotations` with
``latest=True`` keeps, for each file, only the rows of its most recent annotation. Files that could
not be read at all (``error`` rows without a hash, e.g. permission denied) are retried by every
run, so they can have one error row per run until they become readable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from facepipe.annotate.writer import COMPACT_DIR, dataset_dir

__all__ = ["State", "load_state", "read_parts", "read_annotations", "current_view"]

_STATE_COLUMNS = ["root", "path", "sha256", "file_size", "file_mtime_ns", "keypoints_model_id", "emotion_model_id", "status"]


@dataclass
class State:
    by_stat: set[tuple[str, str, int, int]] = field(default_factory=set)
    shas: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    rows: int = 0
    images: int = 0

    def done_by_stat(self, root: str, path: str, size: int, mtime_ns: int) -> bool:
        return (root, path, int(size), int(mtime_ns)) in self.by_stat

    def done_shas(self, root: str, path: str) -> str:
        return ",".join(sorted(self.shas.get((root, path), ())))


def _dataset(output: str | os.PathLike) -> pads.Dataset | None:
    d = dataset_dir(output)
    if not d.is_dir():
        # A compaction between its two renames (facepipe.annotate.compact): its committed copy is complete.
        d = Path(output) / COMPACT_DIR
    if not d.is_dir() or not any(d.glob("*.parquet")):
        return None
    return pads.dataset(str(d), format="parquet")


def read_parts(output: str | os.PathLike, columns: list[str] | None = None, filter=None) -> pa.Table | None:
    """All committed rows (or None when there are none yet)."""
    ds = _dataset(output)
    if ds is None:
        return None
    return ds.to_table(columns=columns, filter=filter)


def load_state(output: str | os.PathLike, keypoints_model_id: str, emotion_model_id: str, detector: str | None = None) -> State:
    """What ``output`` holds for these models and, when given, this detector (its ``describe()``):
    another detector, or other settings of it, finds other faces, so its rows do not count as done."""
    state = State()
    done = (pc.field("keypoints_model_id") == keypoints_model_id) & (pc.field("emotion_model_id") == emotion_model_id)
    if detector is not None:
        done = done & (pc.field("detector") == detector)
    t = read_parts(output, columns=_STATE_COLUMNS, filter=done)
    if t is None or t.num_rows == 0:
        return state
    state.rows = t.num_rows
    seen: set[tuple[str, str, str | None]] = set()
    for root, path, sha, size, mtime in zip(
        t.column("root").to_pylist(),
        t.column("path").to_pylist(),
        t.column("sha256").to_pylist(),
        t.column("file_size").to_pylist(),
        t.column("file_mtime_ns").to_pylist(),
    ):
        if not sha:  # could not be read at all (e.g. permissions): retried by every run
            continue
        key = (root, path, sha)
        if key in seen:
            continue
        seen.add(key)
        if size is not None and mtime is not None:
            state.by_stat.add((root, path, int(size), int(mtime)))
        state.shas.setdefault((root, path), set()).add(sha)
    state.images = len(seen)
    return state


def current_view(table: pa.Table, existing: bool = True) -> pa.Table:
    """The rows of ``table`` that make the current view: per (root, path) the rows of its most
    recent annotation and, with ``existing``, only files that still exist at ``input_root/path``."""
    if table.num_rows == 0:
        return table
    keys = table.select(["root", "path", "timestamp"]).to_pandas()
    newest = keys.groupby(["root", "path"])["timestamp"].transform("max")
    keep = (keys["timestamp"] == newest).to_numpy(copy=True)  # written below; pandas may hand out a read-only view
    if existing:
        roots, paths = table.column("input_root").to_pylist(), table.column("path").to_pylist()
        alive: dict[tuple[str, str], bool] = {}
        for i, (r, p) in enumerate(zip(roots, paths)):
            if keep[i]:
                if (r, p) not in alive:
                    alive[(r, p)] = os.path.lexists(os.path.join(r, p))
                keep[i] = alive[(r, p)]
    return table.filter(pa.array(keep))


def read_annotations(output: str | os.PathLike, latest: bool = True, columns: list[str] | None = None, existing: bool = True):
    """The annotations in ``output`` as a pandas DataFrame, sorted by (root, path, face_index).

    The Parquet folder is a history: a file that changed, or was annotated with other models, has
    older rows too, and a deleted file keeps its rows. ``latest=True`` (the current view,
    :func:`current_view`) keeps, per (root, path), only the rows of its most recent annotation and,
    with ``existing=True``, only files that still exist at ``input_root/path``; ``latest=False``
    returns every row ever written. ``facepipe compact OUT`` rewrites the folder to the current view.
    Counts over the current view are correct: ``df[df.status == "ok"].emotion.value_counts()``.
    """
    import pandas as pd

    if columns is not None:
        columns = list(dict.fromkeys(list(columns) + ["root", "path", "timestamp", "face_index", "input_root"]))
    t = read_parts(output, columns=columns)
    if t is None:
        return pd.DataFrame(columns=columns or [])
    if latest:
        t = current_view(t, existing=existing)
    df = t.to_pandas()
    return df.sort_values(["root", "path", "face_index"], na_position="first").reset_index(drop=True)
