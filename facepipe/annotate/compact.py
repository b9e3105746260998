"""Rewrite an output folder's Parquet dataset to its current view, atomically.

The dataset is a history (older annotations of changed files, files since deleted, one error row
per run for a file that stays unreadable); :func:`facepipe.annotate.read_annotations` hides that
history, and :func:`compact` drops it for good, so any Parquet reader (duckdb, Spark) counts right.

Under the output's run lock: the current view is written as one part into
``OUT/annotations.compact/`` (fsynced), then ``annotations`` is renamed to ``annotations.old``,
``annotations.compact`` to ``annotations``, and the old folder removed. Each step is a rename, so
a kill at any moment leaves either the old dataset or the new one whole:
:func:`finish_interrupted_compaction` (run by the next compaction or annotation, under the lock)
completes or undoes what was in flight, and readers meanwhile read whichever dataset is whole.
The kept rows are unchanged (timestamps, hashes, model ids), so reruns still skip them.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from facepipe.annotate.state import current_view, read_parts
from facepipe.annotate.writer import COMPACT_DIR, PART_GLOB, dataset_dir, fsync_dir, output_lock, write_part

__all__ = ["compact", "finish_interrupted_compaction"]

OLD_DIR = "annotations.old"


def finish_interrupted_compaction(output: str | os.PathLike) -> str | None:
    """Complete or undo a compaction killed midway; what was done, or None. Hold the output lock."""
    out = Path(output)
    cur, new, old = dataset_dir(out), out / COMPACT_DIR, out / OLD_DIR
    done = None
    if new.is_dir():
        if not cur.exists() and any(new.glob("*.parquet")):
            os.replace(new, cur)  # killed between the two renames: the new dataset is whole
            done = "completed"
        else:
            shutil.rmtree(new)  # killed before the swap: the old dataset is still in place
            done = "undone"
    if old.is_dir():
        if cur.exists():
            shutil.rmtree(old)
            done = done or "cleaned"
        else:  # only possible if the new folder vanished: keep the history rather than nothing
            os.replace(old, cur)
            done = "undone"
    if done:
        fsync_dir(out)
    return done


def compact(output: str | os.PathLike, existing: bool = True) -> dict:
    """Rewrite ``output``'s dataset to its current view (see :func:`.state.current_view`); counts before and after.

    ``existing=False`` keeps the rows of files that no longer exist (their latest annotation).
    Raises :class:`.writer.OutputLocked` while another run writes to ``output``.
    """
    out = Path(output)
    if not dataset_dir(out).is_dir() and not (out / COMPACT_DIR).is_dir():
        raise FileNotFoundError(f"{out}: no annotations/ folder (not an annotate output)")
    with output_lock(out):
        recovered = finish_interrupted_compaction(out)
        quarantined: list[str] = []
        table = read_parts(out, repair=True, log=quarantined.append)  # damaged parts set aside first, never lost
        parts_before = sorted(dataset_dir(out).glob(PART_GLOB))
        rows_before = 0 if table is None else table.num_rows
        summary = {"output": str(out.resolve()), "recovered": recovered, "parts_before": len(parts_before), "rows_before": rows_before,
                   "quarantined": quarantined}
        if table is None or not parts_before:
            return {**summary, "parts_after": 0, "rows_after": 0, "files_after": 0}
        keep = current_view(table, existing=existing)
        new = out / COMPACT_DIR
        new.mkdir()
        name = f"part-compact-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-00000.parquet"
        write_part(keep, new / name)
        for other in dataset_dir(out).iterdir():  # a user's files beside the parts are theirs: they move along
            if not (other.match(PART_GLOB) or other.name.startswith(".")):
                os.replace(other, new / other.name)
        os.replace(dataset_dir(out), out / OLD_DIR)
        os.replace(new, dataset_dir(out))
        fsync_dir(out)
        shutil.rmtree(out / OLD_DIR)
        files = len(set(zip(keep.column("root").to_pylist(), keep.column("path").to_pylist())))
        return {**summary, "parts_after": 1, "rows_after": keep.num_rows, "files_after": files}
