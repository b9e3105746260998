"""Incremental state: what an output folder already holds, read from its committed Parquet parts.

An image is done for a pair of models and a detector when the most recent committed rows of its
(root, path) for them are ``ok`` or ``no_face``. Reruns skip done files in two steps:

1. on the driver, without reading the file: same (root, path, size, mtime) as those rows, and an
   inode change time (ctime) older than their commit. Every content write moves ctime and no tool
   can set it back, so a change that keeps size and mtime (``touch -d``, ``cp -p``) is still seen;
   a file whose ctime moved for another reason (chmod, a copied tree) is only hashed again:
2. in the pipeline, after hashing: the same sha256 as those rows (touched or copied back unchanged),
   emitted as ``skipped`` and not written again.

A changed file (new content) is annotated again and gets new rows; :func:`read_annotations` with
``latest=True`` keeps, for each file, only the rows of its most recent annotation. ``error`` rows
never make a file done: every run tries the file again (a missing codec installed, permissions
fixed), and when it fails exactly as its latest row says (same content hash, same reason) no new
row is written, so a file that stays broken keeps one error row, not one per run.

Input folders get their ``root`` label once per output (:meth:`State.roots`, absolute folder →
label): two folders of the same name never share one, whatever order the inputs come in.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from facepipe import storage
from facepipe.annotate.listing import real_name
from facepipe.annotate.writer import COMPACT_DIR, PART_GLOB, QUARANTINE_DIR, atomic_write_bytes, dataset_dir

__all__ = ["DamagedOutput", "MANIFEST", "PARTIAL", "State", "committed_parts", "read_manifest", "STATE_COLUMNS", "load_state", "state_of", "read_parts", "read_these_parts", "read_annotations", "current_view"]

_STATE_COLUMNS = ["root", "path", "timestamp", "sha256", "file_size", "file_mtime_ns", "status", "error", "segment_index", "segment_count"]

#: The status :class:`State` gives a segmented video's latest annotation that lacks segments (a
#: killed run's): not done, and resumed at its first missing segment when its content is unchanged.
PARTIAL = "partial"


@dataclass
class State:
    """What an output holds for one set of models: per file, its latest annotation, as Arrow
    columns (a per-file Python object costs ~1 KB; at millions of files that is the driver's memory)."""

    #: One row per (root, path): its latest annotation (root, path, sha256, file_size,
    #: file_mtime_ns, status, error, timestamp as int64 ns); None when there are none.
    latest: pa.Table | None = None
    #: absolute input folder → its root label in this output.
    roots: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    images: int = 0
    #: (root, path) → (sha256 or "", reason) of a latest annotation that is an error.
    errors: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: (root, path) → sha256 of the latest done annotation, for the files :meth:`select` kept.
    shas: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (root, path) → (sha256, commit time in ns, segments committed, segments in all) of a
    #: segmented video whose latest annotation lacks segments; its committed ones are a prefix.
    partial: dict[tuple[str, str], tuple[str, int, int, int]] = field(default_factory=dict)

    def select(self, entries: list) -> list:
        """The listed entries (:class:`~facepipe.annotate.listing.FileEntry`, in their order) that are
        not done by their stat alone: no done annotation, or a different size or mtime, or a ctime
        (-1: unknown, not compared) not older than the commit. Remembers the done content hashes of
        the entries it returns (:meth:`done_shas`), joined in Arrow, not per file in Python."""
        if self.latest is None or not entries:
            return list(entries)
        # A lookup of each listed file's row in ``latest`` by (root, path) (index_in: a hash set of
        # the latest keys), not an Acero join: at 100,000 files the join's tables cost ~45 MB.
        at = pc.index_in(_keys(pa.array([e.root for e in entries], pa.string()), pa.array([e.path for e in entries], pa.string())),
                         value_set=_keys(self.latest["root"], self.latest["path"]))
        row = lambda column: pc.take(self.latest[column], at)  # noqa: E731 - null where the file has no row
        status = row("status")
        finished = pc.invert(pc.is_in(status, pa.array(["error", PARTIAL])))
        done = pc.and_kleene(pc.and_kleene(finished, pc.equal(pa.array([e.size for e in entries], pa.int64()), row("file_size"))),
                             pc.and_kleene(pc.equal(pa.array([e.mtime_ns for e in entries], pa.int64()), row("file_mtime_ns")),
                                           pc.less(pa.array([e.ctime_ns for e in entries], pa.int64()), row("timestamp"))))
        rest = pc.indices_nonzero(pc.invert(pc.fill_null(done, False)))  # in the listing's order
        known = pc.filter(rest, pc.take(pc.and_kleene(pc.is_valid(status), finished), rest))
        for i, sha in zip(known.to_pylist(), pc.take(row("sha256"), known).to_pylist()):
            self.shas[(entries[i].root, entries[i].path)] = sha if isinstance(sha, str) else ""
        return [entries[i] for i in rest.to_pylist()]

    def done_shas(self, root: str, path: str) -> str:
        """The content hash of a file's done annotation ("" when none), for a file :meth:`select` returned."""
        return self.shas.get((root, path), "")

    def repeats_error(self, root: str, path: str, sha: str | None, error: str | None) -> bool:
        """Whether an error result is what the file's latest rows already say (not written again)."""
        return self.errors.get((root, path)) == (sha if isinstance(sha, str) else "", error if isinstance(error, str) else "")


def _parts_dir(output: str | os.PathLike) -> Path | str | None:
    d = dataset_dir(output)
    if storage.is_uri(d):
        return d
    if not d.is_dir():
        # A compaction between its two renames (facepipe.annotate.compact): its committed copy is complete.
        d = Path(output) / COMPACT_DIR
    return d if d.is_dir() else None


class DamagedOutput(ValueError):
    """A committed part cannot be read whole; the message names it and what to do."""


#: Parts read whole once, by (size, mtime_ns, ctime_ns): any later write to a part moves its ctime
#: (an object's time moves on every PUT; objects have no ctime).
_VERIFIED = ".verified.json"


def committed_parts(output: str | os.PathLike, repair: bool = False, log=None) -> list:
    """The committed part files (paths, or URIs on an object store) of ``output`` that read whole,
    each read once with its page checksums verified (remembered in ``annotations/.verified.json``
    until the file changes). Files that are not parts (``notes.txt``) are ignored.

    A damaged part (truncated, overwritten, bytes changed inside its pages) raises
    :class:`DamagedOutput` naming it; with ``repair`` (a caller holding the output lock) it is moved
    to ``OUT/quarantine/`` instead (never deleted), ``log`` says so in one line (the caller adds its command's name),
    and the files whose rows it held are no longer done, so the run annotates them again.
    """
    import fnmatch
    import json

    import pyarrow.parquet as pq

    d = _parts_dir(output)
    if d is None:
        return []
    child = (lambda name: d / name) if isinstance(d, Path) else (lambda name: storage.join(d, name))
    try:
        cache = json.loads(storage.read_bytes(child(_VERIFIED)))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    listed, _ = storage.list_tree(d, recursive=False)
    manifest = read_manifest(output)
    replaced, generation = set(manifest.get("replaces", ())), manifest.get("generation")
    good, bad, changed = [], [], False
    fs = None
    for e in listed:
        if not (fnmatch.fnmatchcase(e.path, PART_GLOB) and e.path not in replaced) and e.path != generation:
            continue
        p = child(e.path)
        key = [e.size, e.mtime_ns, e.ctime_ns]
        if cache.get(e.path) == key:
            good.append(p)
            continue
        try:
            fs, inside = storage.resolve(p)
            with fs.open_input_file(inside) as f:
                pq.ParquetFile(f, page_checksum_verification=True).read()
        except FileNotFoundError:
            continue  # gone since the listing (another reader's compaction is locked out; a user's rm)
        except Exception as err:  # noqa: BLE001 - whatever pyarrow says, the part is not data
            bad.append((p, (str(err).strip().splitlines() or [type(err).__name__])[0][:200]))
            continue
        cache[e.path], changed = key, True
        good.append(p)
    if bad and not repair:
        p, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DamagedOutput(f"{p}: a damaged part ({why}){more}; run annotate on {output} again to set it aside and redo its files")
    for p, why in bad:
        name = storage.name_of(p)
        aside = storage.join(output, QUARANTINE_DIR, name)
        if storage.exists(aside):
            aside = storage.join(output, QUARANTINE_DIR, f"{name[: -len('.parquet')]}-{time.strftime('%Y%m%dT%H%M%S')}.parquet")
        storage.move(p, aside)
        cache.pop(name, None)
        changed = True
        if log is not None:
            log(f"damaged part {name} ({why}) moved to {aside}; its files are annotated again")
    if changed:
        live = {storage.name_of(p) for p in good}
        with contextlib.suppress(OSError, storage.StorageError):  # a reader without write access just verifies again next time
            atomic_write_bytes(child(_VERIFIED), json.dumps({k: v for k, v in cache.items() if k in live}).encode())
    return good


#: On an object store, the small object that switches a compaction's generation in
#: (:mod:`.compact`): ``{"generation": name, "replaces": [names]}``: the parts named in ``replaces``
#: are no longer part of the dataset, the generation part is.
MANIFEST = "_manifest.json"


def read_manifest(output: str | os.PathLike) -> dict:
    """The output's compaction manifest (object stores only; ``{}`` when there is none)."""
    import json

    if not storage.is_uri(output):
        return {}
    try:
        got = json.loads(storage.read_bytes(storage.join(dataset_dir(output), MANIFEST)))
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise DamagedOutput(f"{storage.join(dataset_dir(output), MANIFEST)}: not a compaction manifest ({e})") from None
    return got if isinstance(got, dict) else {}


def read_parts(output: str | os.PathLike, columns: list[str] | None = None, filter=None, repair: bool = False, log=None) -> pa.Table | None:
    """All committed rows (or None when there are none yet), from the parts :func:`committed_parts` vouches for."""
    return read_these_parts(committed_parts(output, repair=repair, log=log), columns, filter)


#: Columns with few distinct values: :func:`read_these_parts` with ``dictionary`` keeps them
#: dictionary-encoded (a 100-character detector description once, not once per row).
_FEW_VALUES = ("root", "input_root", "status", "error", "run_id", "keypoints_model_id", "emotion_model_id", "detector", "emotion",
               "image_format", "image_mode", "facepipe_version")


def read_these_parts(parts: list, columns: list[str] | None = None, filter=None, dictionary: bool = False) -> pa.Table | None:
    """The rows of the given part files (all on one store), or None for no parts; a column some
    parts lack (an older schema) is null in their rows, one that no part has is a KeyError, except
    the columns added since (:data:`ADDED_FIELDS`: frame and pose columns), null when no part has them. With
    ``dictionary`` the few-valued string columns come dictionary-encoded (:func:`_plain` turns them
    back), for a reader that keeps a whole history.

    One part at a time, each opened once: a dataset scan of them all holds read-ahead buffers of
    several parts at once (~2x the rows' own size at 100,000 files)."""
    import pyarrow.parquet as pq

    if not parts:
        return None
    fs, _ = storage.resolve(parts[0])
    few = [c for c in _FEW_VALUES if dictionary and (columns is None or c in columns)] or None
    tables = []
    for p in parts:
        with fs.open_input_file(storage.resolve(p)[1]) as f:
            pf = pq.ParquetFile(f, read_dictionary=few)
            names = set(pf.schema_arrow.names)
            t = pf.read(columns=None if columns is None else [c for c in columns if c in names], use_threads=False)
        if filter is not None:
            for name, type_ in ADDED_FIELDS.items():  # a filter on a column an older part lacks sees nulls there
                if name not in names and name not in t.schema.names:
                    t = t.append_column(name, pa.nulls(t.num_rows, type_))
            t = t.filter(filter)
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    for name, type_ in ADDED_FIELDS.items():
        if name not in table.schema.names and (columns is None or name in columns):
            table = table.append_column(name, pa.nulls(table.num_rows, type_))
    if columns is not None:
        missing = [c for c in columns if c not in table.schema.names]
        if missing:
            raise KeyError(f"no part of {storage.parent_of(parts[0])} has the columns {missing}")
        table = table.select(columns)
    return table


#: The columns :func:`state_of` needs.
STATE_COLUMNS = _STATE_COLUMNS + ["input_root", "keypoints_model_id", "emotion_model_id", "detector"]


def load_state(output: str | os.PathLike, keypoints_model_id: str | None, emotion_model_id: str | None, detector: str | None = None,
               log=None) -> State:
    """What ``output`` holds for these models and, when given, this detector (:func:`state_of`).
    Call it holding the output lock: damaged parts are set aside (:func:`committed_parts` with
    ``repair``, ``log``)."""
    return state_of(read_parts(output, columns=STATE_COLUMNS, repair=True, log=log), keypoints_model_id, emotion_model_id, detector)


def state_of(everything: pa.Table | None, keypoints_model_id: str | None, emotion_model_id: str | None, detector: str | None = None) -> State:
    """The state that committed rows (with :data:`STATE_COLUMNS`; None: no rows yet) give for these
    models and, when given, this detector (its ``describe()``): another detector, or other settings
    of it, finds other faces, so its rows do not count as done. A model id None (a task this run
    leaves out) matches any rows: a keypoints-only run finds the files a full run did done, a full
    run redoes the files a keypoints-only run did."""
    state = State()
    matched = (("keypoints_model_id", keypoints_model_id), ("emotion_model_id", emotion_model_id), ("detector", detector))
    if everything is None or everything.num_rows == 0:
        return state
    # dictionary columns (read_these_parts) decoded before grouping: each part has its own dictionary
    first = _plain(everything.select(["input_root", "root", "timestamp"])).group_by(["input_root", "root"], use_threads=False)
    first = first.aggregate([("timestamp", "min")]).sort_by("timestamp_min")
    for folder, label in zip(first.column("input_root").to_pylist(), first.column("root").to_pylist()):
        state.roots.setdefault(folder, label)  # the label a folder got first (older outputs may hold two)
    t = everything.select(_STATE_COLUMNS)  # the columns kept, before the copy a filter makes
    done = None
    for column, wanted in matched:
        if wanted is not None:
            match = _equals(everything[column], wanted)
            done = match if done is None else pc.and_(done, match)
    if done is not None:
        t = t.filter(done)
    t = _plain(t)
    if t.num_rows == 0:
        return state
    state.rows = t.num_rows
    # One row per file: its latest annotation (a file's rows share their commit time), found in
    # Arrow: the first row of each (root, path) once sorted newest first, and among a commit's
    # rows a non-error one first: a video with good frames before a damaged one is done, only
    # a file that gave nothing but an error is tried again.
    t = t.append_column("_error", pc.equal(t["status"], "error"))
    t = t.sort_by([("timestamp", "descending"), ("_error", "ascending")])
    t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp",
                     pc.cast(pc.cast(t.column("timestamp"), pa.timestamp("ns", tz="UTC")), pa.int64()))
    latest = t.take(first_rows(t)).select(["root", "path", "sha256", "file_size", "file_mtime_ns", "status", "error", "timestamp"])
    latest = _mark_partial(t, latest, state)
    errors = latest.filter(pc.fill_null(pc.equal(latest["status"], "error"), False))
    for root, path, sha, error in zip(*(errors[c].to_pylist() for c in ("root", "path", "sha256", "error"))):
        state.errors[(root, path)] = (sha if isinstance(sha, str) else "", error if isinstance(error, str) else "")
    state.images = latest.num_rows - errors.num_rows - len(state.partial)
    state.latest = latest
    return state


def _mark_partial(rows: pa.Table, latest: pa.Table, state: State) -> pa.Table:
    """``latest`` with the status :data:`PARTIAL` for each segmented video whose latest annotation
    (the rows sharing its time) has rows of fewer segments than its ``segment_count``, noted in
    ``state.partial``."""
    seg = rows.filter(pc.is_valid(rows["segment_count"])).select(["root", "path", "timestamp", "segment_index", "segment_count"])
    if seg.num_rows == 0:
        return latest
    newest = latest.select(["root", "path", "timestamp", "sha256"]).rename_columns(["root", "path", "_latest", "sha256"])
    seg = seg.join(newest, keys=["root", "path"], join_type="inner", use_threads=False)
    seg = seg.filter(pc.equal(seg["timestamp"], seg["_latest"]))
    got = seg.group_by(["root", "path", "sha256", "_latest"], use_threads=False).aggregate(
        [("segment_index", "count_distinct"), ("segment_count", "max")])
    short = got.filter(pc.less(got["segment_index_count_distinct"], got["segment_count_max"]))
    if short.num_rows == 0:
        return latest
    for root, path, sha, ts, have, count in zip(*(short[c].to_pylist() for c in ("root", "path", "sha256", "_latest", "segment_index_count_distinct", "segment_count_max"))):
        state.partial[(root, path)] = (sha or "", int(ts), int(have), int(count))
    keys = pa.array([f"{r}\0{p}" for r, p in state.partial], pa.string())
    key = pc.binary_join_element_wise(latest["root"], latest["path"], "\0")
    return latest.set_column(latest.schema.get_field_index("status"), "status", pc.if_else(pc.is_in(key, keys), PARTIAL, latest["status"]))


def _equals(column: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    """Where ``column`` is ``value`` (null: no). A dictionary column is compared by its indices:
    decoding a 100-character detector description per row costs more than the whole state."""
    if not pa.types.is_dictionary(column.type):
        return pc.fill_null(pc.equal(column, value), False)
    chunks = []
    for chunk in column.chunks:
        at = pc.index(chunk.dictionary, value).as_py()  # a part's dictionary holds each value once
        chunks.append(pc.fill_null(pc.equal(chunk.indices, at), False) if at >= 0 else pa.repeat(False, len(chunk)))
    return pa.chunked_array(chunks, pa.bool_())


def _keys(root, path):
    """One string per row that names its (root, path) (a NUL cannot be in either), for lookups by file."""
    return pc.binary_join_element_wise(root, path, "\0")


def first_rows(table: pa.Table) -> pa.ChunkedArray:
    """The index of each (root, path)'s first row in ``table`` (plain string columns)."""
    return _numbered(table.select(["root", "path"])).group_by(["root", "path"], use_threads=False).aggregate([("_i", "min")])["_i_min"]


def _numbered(table: pa.Table) -> pa.Table:
    """``table`` with an ``_i`` column of its row numbers, to restore an order after a join or group_by."""
    return table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))


def _plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary-encoded columns (:func:`read_these_parts` ``dictionary``) as plain strings."""
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, pa.field(f.name, f.type.value_type, f.nullable, f.metadata), pc.cast(table.column(i), f.type.value_type))
    return table


def current_view(table: pa.Table, existing: bool = True, listed: pa.Table | None = None) -> pa.Table:
    """The rows of ``table`` that make the current view (dictionary columns decoded, rows in
    their order): per (root, path) the rows of its most recent annotation and, with ``existing``,
    only files that still exist at ``input_root/path`` (``listed``: a table of ``input_root`` and
    ``path`` of files just listed, known to exist without a look). Matched in Arrow; only rows
    whose file was not just listed are looked at one by one."""
    if table.num_rows == 0:
        return _plain(table)
    # Lookups by key (index_in, is_in), not Acero joins: a join's tables are the larger part of a
    # no-op rerun's memory at 100,000 files.
    keys = _plain(table.select(["root", "path", "timestamp"]))
    key = _keys(keys["root"], keys["path"])
    newest = keys.group_by(["root", "path"], use_threads=False).aggregate([("timestamp", "max")])
    newest_ts = pc.take(newest["timestamp_max"], pc.index_in(key, value_set=_keys(newest["root"], newest["path"])))
    table = table.filter(pc.equal(keys["timestamp"], newest_ts))  # in the table's order
    del keys, key, newest, newest_ts
    if existing and table.num_rows:
        unseen = _numbered(_plain(table.select(["input_root", "path"])))
        if listed is not None:
            unseen = unseen.filter(pc.invert(pc.is_in(_keys(unseen["input_root"], unseen["path"]),
                                                      value_set=_keys(listed["input_root"], listed["path"]))))
        alive: dict[tuple[str, str], bool] = {}
        objects: dict[str, set[str]] = {}  # an object store's input root → its objects, listed once
        gone = []
        for r, p, i in zip(*(unseen[c].to_pylist() for c in ("input_root", "path", "_i"))):
            if (r, p) not in alive:
                if storage.is_uri(r):
                    if r not in objects:
                        objects[r] = {e.path for e in storage.list_tree(r, recursive=True)[0]}
                    alive[(r, p)] = real_name(p) in objects[r]
                else:
                    alive[(r, p)] = os.path.lexists(os.path.join(r, real_name(p)))  # rows hold lossless names
            if not alive[(r, p)]:
                gone.append(i)
        if gone:
            table = table.filter(pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), pa.array(gone, pa.int64()))))
    return _plain(table)


def read_annotations(output: str | os.PathLike, latest: bool = True, columns: list[str] | None = None, existing: bool = True):
    """The annotations in ``output`` as a pandas DataFrame, sorted by (root, path, frame_index, face_index).

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
    return df.sort_values(["root", "path", "frame_index", "face_index"] if "frame_index" in df.columns else ["root", "path", "face_index"],
                          na_position="first").reset_index(drop=True)


#: Columns added after schema version 1, null in outputs written before them: the frame columns a
#: video's rows fill (version 2; null on still images too), the head pose (version 3) and a
#: segmented video's segment columns (version 4).
ADDED_FIELDS = {"frame_index": pa.int32(), "timestamp_s": pa.float64(), "track_id": pa.int32(),
                "yaw_deg": pa.float32(), "pitch_deg": pa.float32(), "roll_deg": pa.float32(),
                "segment_index": pa.int32(), "segment_count": pa.int32()}
