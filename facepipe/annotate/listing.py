"""Listing input files for annotation: roots, lossless names, the sorted file entries.

Decoding what is listed is the face layer's (:mod:`facepipe.faces.decode`).
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import NamedTuple

from facepipe import storage

__all__ = ["FileEntry", "FileList", "input_root", "lossless_name", "real_name", "list_files", "root_labels"]


# --- listing -------------------------------------------------------------------------------------


class FileEntry(NamedTuple):  # a named tuple, not a dataclass: a listing makes one per file
    root: str  # label of the input root (its folder name, made unique within the output)
    input_root: str  # absolute path (or URI) of the input root
    path: str  # POSIX path relative to the input root
    abs_path: str  # path or URI of the file
    size: int
    mtime_ns: int
    ctime_ns: int = -1  # inode change time: moves on every content write, and no tool can set it back

    @property
    def key(self) -> tuple[str, str]:
        return (self.root, self.path)


def input_root(path: str | os.PathLike) -> str:
    """The folder an input stands for: itself, or a file's folder (so a file named alone gets the
    same root and path as when its folder is annotated). A local path comes back absolute, a URI
    without its trailing slash."""
    if storage.is_uri(path):
        return storage.parent_of(path) if storage.stat(path) is not None else storage.absolute(path)
    p = Path(path).resolve()
    return str(p.parent if p.is_file() else p)


def lossless_name(name: str) -> str:
    """A file name as valid UTF-8 text, one-to-one: bytes that are not UTF-8 (which Python keeps as
    surrogate escapes, and Parquet cannot store) become ``\\xNN`` and a backslash becomes two, so
    no other file's name can read the same. Names without either are unchanged."""
    if "\\" not in name:
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    return os.fsencode(name).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def real_name(text: str) -> str:
    """The file name :func:`lossless_name` turned into ``text`` (what ``open`` needs)."""
    if "\\" not in text:
        return text
    raw, out, i = text.encode("utf-8"), bytearray(), 0
    while i < len(raw):
        if raw[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif raw[i : i + 2] == b"\\x":
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def root_labels(inputs: list[str | os.PathLike], known: dict[str, str] | None = None) -> list[str]:
    """One label per input, a function of its folder's absolute path only (never of argument
    order): the label ``known`` gives that folder (what an output already calls it), else the
    folder's name, with ``~2``, ``~3`` ... added when another folder already has that label
    (inputs in the same folder share its label)."""
    labels: list[str] = []
    by_root: dict[str, str] = dict(known or {})
    taken = set(by_root.values())
    for root in sorted({input_root(d) for d in inputs}):  # new folders labelled in a fixed order
        if root not in by_root:
            name, n = storage.name_of(root) or "root", 1
            label = name
            while label in taken:
                n += 1
                label = f"{name}~{n}"
            by_root[root] = label
            taken.add(label)
    for d in inputs:
        labels.append(by_root[input_root(d)])
    return labels


def list_files(
    inputs: list[str | os.PathLike],
    recursive: bool = False,
    pattern: str = "*",
    include_hidden: bool = False,
    known_roots: dict[str, str] | None = None,
) -> "FileList":
    """Regular files under each input folder whose name matches ``pattern`` (fnmatch, case-sensitive),
    and each input that is a file itself (taken as named, whatever its name).

    A folder that cannot be listed (no permission, an I/O error) loses no file silently: it is in
    the result's ``unreadable`` (``(root label, path, reason)``), for the job to name and count.

    Hidden files and folders (name starting with ``.``) are skipped unless ``include_hidden``.
    Symlinks to files are followed wherever they point (like ``cp -L``; what is read from them is
    never quoted in an error); symlinked folders are not entered. The order is sorted by (root, path) so runs are reproducible,
    and a file reached twice (named alone and inside a named folder) is listed once.
    ``known_roots`` (absolute folder → label) keeps the labels an output already uses
    (:func:`root_labels`).
    """
    entries: dict[tuple[str, str], FileEntry] = {}
    unreadable: list[tuple[str, str, str]] = []
    for label, d in zip(root_labels(inputs, known_roots), inputs):
        root = input_root(d)
        alone = storage.stat(d)
        if alone is not None:  # a file (or object) named alone: its resolved name, as inside its folder
            full = storage.absolute(d)
            name = lossless_name(storage.name_of(full))
            entries[(label, name)] = FileEntry(label, root, name, full, alone.size, alone.mtime_ns, alone.ctime_ns)
            continue
        kind = storage.info(root)
        if kind is None or kind[0] != "dir":
            if not storage.is_uri(root):
                raise NotADirectoryError(f"input is neither a file nor a folder: {d}")
        listed, refused = storage.list_tree(root, recursive=recursive, include_hidden=include_hidden)
        unreadable += [(label, lossless_name(rel), why) for rel, why in refused]
        under = root.rstrip("/") + "/"  # joined by hand: this loop runs once per listed file
        for e in listed:
            if pattern != "*" and not fnmatch.fnmatchcase(e.path.rsplit("/", 1)[-1], pattern):
                continue
            rel = lossless_name(e.path)
            entries[(label, rel)] = FileEntry(label, root, rel, under + e.path, e.size, e.mtime_ns, e.ctime_ns)
    return FileList(sorted(entries.values(), key=lambda e: (e.root, e.path)), sorted(unreadable))


class FileList(list):
    """The listed :class:`FileEntry` objects, and the folders that could not be listed."""

    def __init__(self, entries: list[FileEntry], unreadable: list[tuple[str, str, str]]):
        super().__init__(entries)
        #: ``(root label, path relative to the root, reason)`` per folder that could not be listed.
        self.unreadable = unreadable
