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

On an object store nothing can be renamed: a compaction there switches a small manifest object
instead (:func:`_compact_objects`).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from facepipe import storage
from facepipe.annotate.state import MANIFEST, committed_parts, current_view, read_manifest, read_parts, read_these_parts
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
    if storage.is_uri(output):
        return _compact_objects(storage.absolute(output), existing)
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


def _compact_objects(out: str, existing: bool) -> dict:
    """:func:`compact` on an object store, where nothing can be renamed: write the new generation
    as one object (``compact-<id>.parquet``, not a ``part-*`` name, so no reader takes it alone),
    switch it in with one PUT of ``annotations/_manifest.json`` (which names the parts it
    replaces), then delete the replaced parts. Killed before the switch: the old parts stay the
    dataset and the orphan is removed next time; after it: readers skip the replaced parts, and
    the next compaction deletes what is left of them."""
    d = dataset_dir(out)
    if not storage.list_tree(d, recursive=False)[0]:
        raise FileNotFoundError(f"{out}: no annotations/ objects (not an annotate output)")
    with output_lock(out):
        quarantined: list[str] = []
        parts = committed_parts(out, repair=True, log=quarantined.append)  # damaged parts set aside first, never lost
        table = read_these_parts(parts)
        live = [storage.name_of(p) for p in parts]
        manifest = read_manifest(out)
        recovered = _remove_leftovers(d, manifest, live)
        summary = {"output": out, "recovered": recovered, "parts_before": len(live), "rows_before": 0 if table is None else table.num_rows,
                   "quarantined": quarantined}
        if table is None or not live:
            return {**summary, "parts_after": 0, "rows_after": 0, "files_after": 0}
        keep = current_view(table, existing=existing)
        name = f"compact-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        write_part(keep, storage.join(d, name))
        replaces = sorted(set(manifest.get("replaces", ())) | set(live))
        storage.write_bytes(storage.join(d, MANIFEST), json.dumps({"generation": name, "replaces": replaces}).encode())  # the switch
        for old in live:
            storage.delete(storage.join(d, old))
        files = len(set(zip(keep.column("root").to_pylist(), keep.column("path").to_pylist())))
        return {**summary, "parts_after": 1, "rows_after": keep.num_rows, "files_after": files}


def _remove_leftovers(d: str, manifest: dict, live: list[str]) -> str | None:
    """Delete what a killed object-store compaction left: replaced parts still there, generations never switched in."""
    import fnmatch

    gone = [e.path for e in storage.list_tree(d, recursive=False)[0]
            if e.path not in live and (e.path in set(manifest.get("replaces", ())) or fnmatch.fnmatchcase(e.path, "compact-*.parquet"))]
    for name in gone:
        storage.delete(storage.join(d, name))
    return f"removed {len(gone)} objects left by an interrupted compaction" if gone else None
