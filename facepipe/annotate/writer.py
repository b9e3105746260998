"""Parquet part files holding complete images only, committed whole, and the output's run lock.

A part is committed by :func:`facepipe.storage.write_bytes`: locally it is written to a hidden
temporary name in ``OUT/annotations/`` (``.tmp-<hex>``: ignored by pyarrow/pandas, which skip names
starting with ``.``, and by ``part-*.parquet`` globs), fsynced, renamed to
``part-<run_id>-<seq>.parquet`` and the folder fsynced; on an object store it is one PUT of the
whole object. A reader (or a rerun) therefore sees a part entirely or not at all, whatever moment
the writer is killed at.

Rows of one image can arrive in different result batches (Ray Data re-batches faces for the
models), so :class:`PartWriter` holds an image's rows back until all of them have arrived
(``num_faces`` rows for ``ok``, else one; a video's rows say how many it has) and only ever
commits complete files. Together with
the incremental state (:mod:`.state`) this gives: killed at any moment, a rerun writes exactly the
images that are not in a committed part — no duplicates, nothing missing.

Only one run may write to an output at a time: :func:`output_lock` holds ``OUT/.annotate.lock``
(:func:`facepipe.storage.exclusive`: ``fcntl`` locally, released by the OS when the process dies,
even by kill -9; a lock object with a heartbeat on an object store).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facepipe import storage

__all__ = ["ANNOTATIONS_DIR", "dataset_dir", "output_lock", "OutputLocked", "OutputFull", "out_of_space", "PartWriter", "atomic_write_bytes", "remove_temporaries", "write_part", "fsync_dir"]

ANNOTATIONS_DIR = "annotations"
#: Where a compaction writes the new dataset before swapping it in (:mod:`.compact`).
COMPACT_DIR = "annotations.compact"
#: Where damaged parts are moved (never deleted), under the output.
QUARANTINE_DIR = "quarantine"
#: Committed parts are named so; anything else in the annotations folder is not ours and is ignored.
PART_GLOB = "part-*.parquet"
LOCK_NAME = ".annotate.lock"


class OutputLocked(RuntimeError):
    """Another run holds the output folder's lock."""


class OutputFull(RuntimeError):
    """The output folder's file system is full (or over quota): nothing committed is lost."""


def out_of_space(e: BaseException) -> bool:
    """Whether ``e`` is a write that failed for lack of space (pyarrow's errors may carry only the text)."""
    import errno

    return isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e))


def dataset_dir(output: str | os.PathLike) -> Path | str:
    """``OUT/annotations``: a Path for a local output, a URI string for an object store's."""
    return storage.join(output, ANNOTATIONS_DIR) if storage.is_uri(output) else Path(output) / ANNOTATIONS_DIR


@contextlib.contextmanager
def output_lock(output: str | os.PathLike):
    """Hold ``OUT/.annotate.lock`` (:func:`facepipe.storage.exclusive`: a flock locally, a lock
    object on an object store) or raise :class:`OutputLocked`."""
    if not storage.is_uri(output):
        Path(output).mkdir(parents=True, exist_ok=True)
    try:
        with storage.exclusive(storage.join(output, LOCK_NAME), what="annotate run"):
            yield
    except storage.StorageLocked as e:
        raise OutputLocked(f"another annotate run is writing to {output} ({e})") from None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_part(table: pa.Table, final: str | os.PathLike) -> str | os.PathLike:
    """Write ``table`` as the Parquet file ``final``, whole or not at all
    (:func:`facepipe.storage.write_bytes`: locally a hidden temporary, fsynced and renamed; on an
    object store one PUT)."""
    buf = pa.BufferOutputStream()
    # Page checksums (CRC32 per page, Parquet's own): a part damaged later is found by reading it
    # (facepipe.annotate.state.committed_parts), not taken for data.
    pq.write_table(table, buf, compression="zstd", write_page_checksum=True)
    storage.write_bytes(final, buf.getvalue().to_pybytes(), fsync=True)
    return final


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str | os.PathLike:
    """Write a small file (summary.json, a plot) whole: a reader sees the old file or the new one,
    never a part (:func:`facepipe.storage.write_bytes`). A killed local writer's temporary is
    removed by :func:`remove_temporaries`."""
    storage.write_bytes(path, data)
    return path


TMP_PREFIX = storage.TMP_PREFIX


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries that killed writers left under ``folder`` (call under the output lock,
    when no writer runs); how many. Object stores have none (a PUT leaves nothing half-written)."""
    if storage.is_uri(folder):
        return 0
    removed = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            # also the names of earlier versions: ".<name>.<hex>.tmp", ".part-....parquet.tmp"
            if name.startswith(TMP_PREFIX) or (name.startswith(".") and name.endswith(".tmp")):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


class PartWriter:
    """Buffers rows until their images are complete; commits parts of ``part_images`` images, or
    what is complete every ``part_seconds``, atomically. Use inside :func:`output_lock`."""

    def __init__(self, directory: str | os.PathLike, schema: pa.Schema, run_id: str, part_images: int = 500, part_seconds: float = 30.0):
        self.dir = directory if storage.is_uri(directory) else Path(directory)
        if isinstance(self.dir, Path):
            self.dir.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.run_id = run_id
        self.part_images = max(1, int(part_images))
        self.part_seconds = float(part_seconds)
        self.pending: dict[tuple[str, str], list[pa.Table]] = {}
        self.pending_rows: dict[tuple[str, str], int] = {}
        self.ready: list[list[pa.Table]] = []  # complete images, each as its row pieces
        self.parts: list = []
        self.images_committed = 0
        self.rows_committed = 0
        self._last_commit = time.monotonic()
        remove_temporaries(directory)

    def add(self, table: pa.Table, file_rows=None) -> list[Path]:
        """Take rows (any mix of images, possibly partial); returns parts committed by this call.
        ``file_rows``: per row, how many rows its file has in all (0: an image, ``num_faces`` says)."""
        if table.num_rows:
            roots = table.column("root").to_pylist()
            paths = table.column("path").to_pylist()
            status = table.column("status").to_pylist()
            nfaces = table.column("num_faces").to_pylist()
            rows_of: dict[tuple[str, str], list[int]] = {}
            need: dict[tuple[str, str], int] = {}
            whole = [0] * len(roots) if file_rows is None else [int(v) for v in file_rows]
            for i, key in enumerate(zip(roots, paths)):
                need[key] = whole[i] or (nfaces[i] if status[i] == "ok" else 1)
                rows_of.setdefault(key, []).append(i)
            for key, idx in rows_of.items():
                have = self.pending_rows.get(key, 0) + len(idx)
                rows = table.take(pa.array(idx, pa.int64()))
                if have > need[key]:
                    raise RuntimeError(f"image {key} produced {have} rows for {need[key]} faces")
                pieces = self.pending.pop(key, []) + [rows]
                if have == need[key]:
                    self.pending_rows.pop(key, None)
                    self.ready.append(pieces)
                else:
                    self.pending[key] = pieces
                    self.pending_rows[key] = have
        return self.maybe_commit()

    @property
    def ready_images(self) -> int:
        return len(self.ready)

    def maybe_commit(self, force: bool = False) -> list[Path]:
        """Commit full parts of ``part_images`` images; the rest too when ``force`` or time is up."""
        parts = []
        while len(self.ready) >= self.part_images:
            parts.append(self.commit(self.part_images))
        if self.ready and (force or (time.monotonic() - self._last_commit) >= self.part_seconds):
            parts.append(self.commit(len(self.ready)))
        return parts

    def commit(self, images: int) -> Path | str:
        """Write the first ``images`` complete images as one part, atomically."""
        chosen, self.ready = self.ready[:images], self.ready[images:]
        table = pa.concat_tables([t for pieces in chosen for t in pieces])
        idx = pc.sort_indices(table, sort_keys=[("root", "ascending"), ("path", "ascending"), ("frame_index", "ascending"), ("face_index", "ascending")])
        table = table.take(idx)
        # Rows get the commit time: an image's rows always land in one part. A segmented video's
        # rows come with their annotation's time (its first segment's), so all its rows share one.
        now = datetime.datetime.now(datetime.timezone.utc)
        given = table.column("timestamp")
        ts = pa.array([now] * table.num_rows, self.schema.field("timestamp").type)
        if given.null_count < table.num_rows:
            ts = pc.if_else(pc.is_valid(given), given, ts)
        table = table.set_column(table.schema.get_field_index("timestamp"), self.schema.field("timestamp"), ts)
        seq = len(self.parts)
        name = f"part-{self.run_id}-{seq:05d}.parquet"
        final = write_part(table, self.dir / name if isinstance(self.dir, Path) else storage.join(self.dir, name))
        self.parts.append(final)
        self.images_committed += len(chosen)
        self.rows_committed += table.num_rows
        self._last_commit = time.monotonic()
        return final

    def close(self) -> list[Path]:
        """Commit what is complete. Incomplete images (should not happen) are reported, not written."""
        parts = self.maybe_commit(force=True)
        if self.pending:
            keys = ", ".join(f"{r}/{p}" for r, p in list(self.pending)[:5])
            raise RuntimeError(f"{len(self.pending)} images ended incomplete (not written; a rerun redoes them): {keys}")
        return parts
