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
import pyarrow.dataset as pads

from facepipe import storage
from facepipe.annotate.listing import real_name
from facepipe.annotate.writer import COMPACT_DIR, PART_GLOB, QUARANTINE_DIR, atomic_write_bytes, dataset_dir

__all__ = ["DamagedOutput", "MANIFEST", "State", "committed_parts", "read_manifest", "STATE_COLUMNS", "load_state", "state_of", "read_parts", "read_these_parts", "read_annotations", "current_view"]

_STATE_COLUMNS = ["root", "path", "timestamp", "sha256", "file_size", "file_mtime_ns", "status", "error"]


@dataclass
class State:
    #: (root, path) → (size, mtime_ns, commit time ns) of the latest done annotation.
    by_stat: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    #: (root, path) → sha256 of the latest done annotation.
    shas: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (root, path) → (sha256 or "", reason) of a latest annotation that is an error.
    errors: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: absolute input folder → its root label in this output.
    roots: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    images: int = 0

    def done_by_stat(self, root: str, path: str, size: int, mtime_ns: int, ctime_ns: int = -1) -> bool:
        """Whether the file is done, from its stat alone (``ctime_ns`` -1: unknown, not compared)."""
        got = self.by_stat.get((root, path))
        return got is not None and got[:2] == (int(size), int(mtime_ns)) and int(ctime_ns) < got[2]

    def done_shas(self, root: str, path: str) -> str:
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


def read_these_parts(parts: list, columns: list[str] | None = None, filter=None) -> pa.Table | None:
    """The rows of the given part files (all on one store), or None for no parts."""
    if not parts:
        return None
    fs, _ = storage.resolve(parts[0])
    return pads.dataset([storage.resolve(p)[1] for p in parts], format="parquet", filesystem=fs).to_table(columns=columns, filter=filter)


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
    first = everything.group_by(["input_root", "root"]).aggregate([("timestamp", "min")]).sort_by("timestamp_min")
    for folder, label in zip(first.column("input_root").to_pylist(), first.column("root").to_pylist()):
        state.roots.setdefault(folder, label)  # the label a folder got first (older outputs may hold two)
    done = pc.scalar(True)
    for column, wanted in matched:
        if wanted is not None:
            done = done & (pc.field(column) == wanted)
    t = everything.filter(done).select(_STATE_COLUMNS)
    if t.num_rows == 0:
        return state
    state.rows = t.num_rows
    # One row per file: its latest annotation (an image's rows share their commit time). Plain
    # Python lists from Arrow, not pandas: this loop runs once per committed row of the output.
    t = t.sort_by([("timestamp", "descending")])
    t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp",
                     pc.cast(pc.cast(t.column("timestamp"), pa.timestamp("ns", tz="UTC")), pa.int64()))
    names = ("root", "path", "sha256", "file_size", "file_mtime_ns", "status", "error", "timestamp")
    for batch in t.select(list(names)).to_batches(max_chunksize=16384):  # a chunk of Python objects at a time
        for root, path, sha, size, mtime, status, error, ts in zip(*(batch.column(i).to_pylist() for i in range(len(names)))):
            key = (root, path)
            if key in state.shas or key in state.errors:
                continue  # an older annotation of a file already seen
            sha = sha if isinstance(sha, str) else ""
            if status == "error":
                state.errors[key] = (sha, error if isinstance(error, str) else "")
                continue
            state.images += 1
            state.shas[key] = sha
            if size is not None and mtime is not None:
                state.by_stat[key] = (size, mtime, ts)
    return state


def current_view(table: pa.Table, existing: bool = True, listed: set[tuple[str, str]] | None = None) -> pa.Table:
    """The rows of ``table`` that make the current view: per (root, path) the rows of its most
    recent annotation and, with ``existing``, only files that still exist at ``input_root/path``
    (``listed``: ``(input_root, path)`` of files just listed, known to exist without a look)."""
    if table.num_rows == 0:
        return table
    keys = table.select(["root", "path", "timestamp"]).to_pandas()
    newest = keys.groupby(["root", "path"])["timestamp"].transform("max")
    keep = (keys["timestamp"] == newest).to_numpy(copy=True)  # written below; pandas may hand out a read-only view
    if existing:
        roots, paths = table.column("input_root").to_pylist(), table.column("path").to_pylist()
        alive: dict[tuple[str, str], bool] = {}
        objects: dict[str, set[str]] = {}  # an object store's input root → its objects, listed once
        for i, (r, p) in enumerate(zip(roots, paths)):
            if keep[i]:
                if (r, p) not in alive:
                    if listed is not None and (r, p) in listed:
                        alive[(r, p)] = True
                    elif storage.is_uri(r):
                        if r not in objects:
                            objects[r] = {e.path for e in storage.list_tree(r, recursive=True)[0]}
                        alive[(r, p)] = real_name(p) in objects[r]
                    else:
                        alive[(r, p)] = os.path.lexists(os.path.join(r, real_name(p)))  # rows hold lossless names
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
