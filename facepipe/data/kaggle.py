"""Readers for the Kaggle CSV formats: FER2013 and Facial Keypoints (training and test).

The format is detected from the header, never from the file name; ``.csv``, ``.csv.gz`` and ``.zip``
alike (compression detected by content; in a zip, the one member with a known header is read; a
UTF-8 byte-order mark is accepted). Reading is split in two so Ray Data can parallelise the costly
part:

* :func:`read_raw` reads the file with pyarrow (cells as strings), checks the row structure and
  the cheap columns, and numbers every row with its physical line in the file;
* :func:`parse_rows` turns pixel strings into ``uint8`` images (one compiled pass) and keypoint
  strings into floats with NaN for blanks.

Every bad input raises :class:`CSVFormatError` naming the file, the line and the column; with
``skip_bad_rows=True`` such rows are dropped instead and listed in ``RawTable.skipped``.
"""
from __future__ import annotations

import collections
import gzip
import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from facepipe import storage

from facepipe.data import pixels as px
from facepipe.data.schema import EMOTIONS, FER_USAGES, KeypointSchema
from facepipe.model_dir import MAX_LABELS

FER = "fer2013"
KEYPOINTS = "keypoints"
KEYPOINTS_TEST = "keypoints_test"
#: The crop margin around the annotation detector's box that reproduces FER2013's own framing
#: (median Haar box = 1/1.036 of the frame, centred; bench/results/emotion_framing.md): emotion
#: models trained on FER2013 record it in meta.json, and annotation crops their input with it.
FER_FRAME_MARGIN = 0.02
#: Photos + points in image pixels (``image[,width,height],<point>_x,<point>_y,...``): see facepipe.data.photos.
PHOTO_POINTS = "photo_points"


class CSVFormatError(ValueError):
    """Bad input: names the file, the (1-based, physical) line and the column."""

    def __init__(self, path: str | os.PathLike, line: int | None, column: str | None, message: str):
        self.path, self.line, self.column, self.reason = str(path), line, column, message
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class BadRow:
    """One skipped input row and why."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        col = f", column {self.column!r}" if self.column else ""
        return f"line {self.line}{col}: {self.reason}"


@dataclass(frozen=True)
class CSVFormat:
    """What a header says about a file."""

    name: str  # FER | KEYPOINTS | KEYPOINTS_TEST | PHOTO_POINTS
    columns: tuple[str, ...]  # header names, stripped, in file order
    pixel_column: str  # PHOTO_POINTS: the column of image file names
    image_size: int  # PHOTO_POINTS: the model input side the photos are cropped to
    schema: KeypointSchema | None = None

    @property
    def task(self) -> str:
        return "emotion" if self.name == FER else "keypoints"

    @property
    def has_labels(self) -> bool:
        if self.name == FER:
            return "emotion" in self.columns
        return self.name in (KEYPOINTS, PHOTO_POINTS)


#: Leading bytes -> compression; decided by content, never by the file name.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty archive: reported as holding no CSV
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
#: Longest header line read (a 68-point header is ~2k characters); bounds the look at binary zip members.
_MAX_HEADER_CHARS = 1 << 20
#: Errors of corrupt compressed data.
_CORRUPT = (gzip.BadGzipFile, EOFError, zipfile.BadZipFile, zlib.error)
#: ... plus bad encoding and zip members Python cannot open (encrypted: RuntimeError; unknown method: NotImplementedError).
_READ_ERRORS = (UnicodeDecodeError, NotImplementedError, RuntimeError, *_CORRUPT)
#: Zip members listed in an error message before "... and N more".
_MAX_LISTED_MEMBERS = 20


@dataclass(frozen=True)
class CSVSource:
    """Where a CSV's bytes are: a file on disk, gzip-compressed or not, or one member of a zip archive."""

    path: str
    compression: str | None = None  # None | "gzip" | "zip"
    member: str | None = None  # zip only
    origin: str | None = None  # the URI a file on an object store was fetched from (``path`` is its local copy)

    @property
    def name(self) -> str:
        """How errors name the file (as given): ``archive.zip:member.csv`` for a zip member."""
        where = self.origin or self.path
        return f"{where}:{self.member}" if self.member else where


def _compression(path: str) -> str | None:
    """The compression the first bytes announce, or None for a plain file."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def resolve_source(path: str | os.PathLike) -> CSVSource:
    """Find the CSV bytes behind ``path``; a zip archive is searched for the one member with a known header."""
    origin = None
    if storage.is_uri(path):  # fetched once into a local cache (keyed by size and time: a changed object is fetched again)
        origin = storage.absolute(path)
        if storage.stat(origin) is None:
            raise FileNotFoundError(f"{origin}: no such object")
        path = storage.local_copy(origin)
    path = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    compression = _compression(path)
    if compression in ("bz2", "xz"):
        # Without this the bytes reach the UTF-8 decoder and the user sees a decode error.
        message = f"a {compression}-compressed file; only gzip, zip or plain CSV files are read"
        raise CSVFormatError(origin or path, None, None, message)
    if compression == "zip":
        return CSVSource(path, "zip", _csv_member(path), origin)
    return CSVSource(path, compression, origin=origin)


def _csv_member(path: str) -> str:
    """The single member of a zip archive whose first line is a header this module knows."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
            hits = [n for n in names if _has_known_header(zf, n)]
    except zipfile.BadZipFile as e:
        raise CSVFormatError(path, None, None, f"not a readable zip archive ({e})") from None
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise CSVFormatError(path, None, None, f"{len(hits)} members look like data CSVs: {_listing(hits)}; "
                                               "unzip the archive and pass the one you mean")
    raise CSVFormatError(path, None, None, "no member is a FER2013, keypoints (training.csv/test.csv) or photo-labels "
                                           f"CSV; members: {_listing(names)}")


def _listing(names: list[str]) -> str:
    """Member names for an error message, capped (an archive of photos can hold thousands)."""
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED_MEMBERS]) or "none"
    more = len(names) - _MAX_LISTED_MEMBERS
    return shown + (f" ... and {more} more" if more > 0 else "")


def _has_known_header(zf: zipfile.ZipFile, member: str) -> bool:
    """Whether a zip member's first line names one of this module's formats (binary members are not)."""
    try:
        with io.TextIOWrapper(zf.open(member), encoding="utf-8-sig", newline="") as f:
            line = f.readline(_MAX_HEADER_CHARS)
    except _READ_ERRORS:
        return False
    return _kind(_split_header(line)) is not None


def _open_binary(src: CSVSource):
    """The CSV's (decompressed) bytes as a binary file object."""
    if src.compression == "zip":
        with zipfile.ZipFile(src.path) as zf:
            # The member keeps the archive's file open until the member itself is closed.
            return zf.open(src.member)
    if src.compression == "gzip":
        return gzip.open(src.path, "rb")
    return open(src.path, "rb")


def open_text(path: str | os.PathLike | CSVSource) -> io.TextIOBase:
    """Open a plain, gzip- or zip-compressed CSV as text (compression decided by content, not the name).

    ``utf-8-sig`` drops the byte-order mark Excel's "CSV UTF-8" writes.
    """
    src = path if isinstance(path, CSVSource) else resolve_source(path)
    return io.TextIOWrapper(_open_binary(src), encoding="utf-8-sig", newline="")


def _arrow_input(src: CSVSource):
    """A pyarrow input stream over the CSV's bytes; a zip member streams through Python (Arrow cannot open zips)."""
    if src.compression == "zip":
        return pa.PythonFile(_open_binary(src), mode="r")
    return pa.input_stream(src.path, compression=src.compression)


def _split_header(line: str) -> tuple[str, ...]:
    """Header names, stripped of spaces, quotes and a byte-order mark (the icml variant spaces its names)."""
    return tuple(c.strip().strip('"') for c in line.lstrip("\ufeff").rstrip("\r\n").split(","))


def _kind(cols: tuple[str, ...]) -> str | None:
    """The format a header names, before its columns are checked; None for anything else."""
    names = set(cols)
    if "pixels" in names:
        return FER
    if "Image" in names and "ImageId" in names:
        return KEYPOINTS_TEST
    if "image" in names and "Image" not in names:
        return PHOTO_POINTS
    if "Image" in names:
        return KEYPOINTS
    return None


def detect_format(path: str | os.PathLike, image_size: int | None = None) -> CSVFormat:
    """Read the header line and tell which Kaggle format the file is.

    ``image_size`` overrides the default side (48 for FER2013, 96 for keypoints).
    """
    return _detect(resolve_source(path), image_size)


def _detect(src: CSVSource, image_size: int | None) -> CSVFormat:
    """:func:`detect_format` for a resolved source; errors name ``src.name``."""
    path = src.name
    try:
        with open_text(src) as f:
            header = f.readline(_MAX_HEADER_CHARS)
    except _READ_ERRORS as e:
        raise CSVFormatError(path, 1, None, f"not a readable text/CSV file ({e})") from None
    if not header.strip():
        raise CSVFormatError(path, None, None, "the file is empty (no header line)")
    if len(header) >= _MAX_HEADER_CHARS and not header.endswith("\n"):
        raise CSVFormatError(path, 1, None, f"no end of the header line within {_MAX_HEADER_CHARS:,} characters: not a CSV of faces")
    cols = _split_header(header)
    counts = collections.Counter(cols)
    if len(counts) != len(cols):
        raise CSVFormatError(path, 1, sorted(c for c, k in counts.items() if k > 1)[0], "duplicate column in header")

    def unexpected(allowed: set[str], what: str) -> None:
        extra = [c for c in cols if c not in allowed]
        if extra:
            raise CSVFormatError(path, 1, extra[0], f"unexpected column for a {what} file; expected {sorted(allowed)}")

    kind = _kind(cols)
    if kind == FER:
        unexpected({"emotion", "pixels", "Usage"}, "FER2013")
        return CSVFormat(FER, cols, "pixels", image_size or 48)
    if kind == KEYPOINTS_TEST:
        unexpected({"ImageId", "Image"}, "keypoints test.csv")
        return CSVFormat(KEYPOINTS_TEST, cols, "Image", image_size or 96)
    if kind == PHOTO_POINTS:
        return _keypoint_format(path, PHOTO_POINTS, cols, "image", image_size or 96, {"image", "width", "height"})
    if kind == KEYPOINTS:
        return _keypoint_format(path, KEYPOINTS, cols, "Image", image_size or 96, {"Image"})
    raise CSVFormatError(
        path,
        1,
        None,
        f"unknown header {list(cols)[:6]}: expected FER2013 (emotion,pixels,Usage), "
        "Facial Keypoints training.csv (<point>_x,<point>_y,...,Image) or test.csv (ImageId,Image), "
        "or photo labels (image[,width,height],<point>_x,<point>_y,...)",
    )


#: More points than this is no landmark set (dense meshes have ~500): a header that long is a wrong
#: file, and exploring 100,000 columns took 10+ minutes and 6.5 GB. The same bound as a model's outputs.
MAX_POINTS = MAX_LABELS


def _keypoint_format(path, name: str, cols: tuple[str, ...], pixel_column: str, image_size: int, other: set[str]) -> CSVFormat:
    """A keypoints header: ``other`` columns plus ``<point>_x/<point>_y`` pairs."""
    coords = [c for c in cols if c not in other]
    if len(coords) > 2 * MAX_POINTS:
        raise CSVFormatError(path, 1, None, f"{len(coords)} keypoint columns: more than {MAX_POINTS} points is not a landmark set (is this the right file?)")
    bad = [c for c in coords if not (c.endswith("_x") or c.endswith("_y"))]
    if bad:
        raise CSVFormatError(path, 1, bad[0], "keypoint columns must be named <point>_x / <point>_y")
    if not coords:
        raise CSVFormatError(path, 1, None, "keypoints file without any <point>_x/<point>_y column")
    try:
        schema = KeypointSchema.from_columns(coords)
    except ValueError as e:
        raise CSVFormatError(path, 1, None, str(e)) from None
    return CSVFormat(name, cols, pixel_column, image_size, schema)


@dataclass
class RawTable:
    """Rows of a Kaggle CSV with cells still as strings, each numbered by its line in the file."""

    path: str
    format: CSVFormat
    table: pa.Table  # the file's columns + "line" (int64)
    skipped: list[BadRow] = field(default_factory=list)
    blank_lines: list[int] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def _find_lines(src: CSVSource, n_expected_cols: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Slow path, only when pyarrow found malformed rows: (good lines, blank lines, [(bad line, n cols)])."""
    good, blank, bad = [], [], []
    with open_text(src) as f:
        f.readline()
        for i, line in enumerate(f, start=2):
            s = line.rstrip("\r\n")
            if not s.strip():
                blank.append(i)
                continue
            n = s.count(",") + 1
            (good.append(i) if n == n_expected_cols else bad.append((i, n)))
    return good, blank, bad


#: Bytes pyarrow parses at a time; no row may be longer (a 96x96 keypoints row is ~40 KB).
_READ_BLOCK_BYTES = 1 << 24


def _oversized_row(src: CSVSource, fmt: CSVFormat, limit: int) -> CSVFormatError:
    """The error for the first row longer than ``limit`` bytes, naming its line and its longest cell's column."""
    with _open_binary(src) as f:
        for number, raw in enumerate(f, start=1):
            if len(raw) > limit:
                cells = raw.split(b",")
                i = max(range(len(cells)), key=lambda j: len(cells[j]))
                column = fmt.columns[i] if i < len(fmt.columns) else None
                return CSVFormatError(src.name, number, column, f"a cell of {len(cells[i]):,} bytes: more than a row of faces "
                                                                f"may hold ({limit:,} bytes)")
    return CSVFormatError(src.name, None, None, f"a row longer than {limit:,} bytes")


def read_raw(path: str | os.PathLike, image_size: int | None = None) -> RawTable:
    """Read a Kaggle CSV into string columns, checking structure, labels, ``Usage`` and keypoints.

    Bad rows are removed and listed in ``RawTable.skipped``; pixel strings are checked later, by
    :func:`parse_rows`. Callers then apply the policy with :func:`raise_or_record`, which raises
    for the earliest bad line unless bad rows are to be skipped.
    """
    src = resolve_source(path)
    path = src.name  # what errors and RawTable.path call the file: archive.zip:member.csv for a zip
    fmt = _detect(src, image_size)
    ncols = len(fmt.columns)
    malformed: list[tuple] = []

    def on_invalid(row) -> str:
        malformed.append((row.number, row.actual_columns, row.text))
        return "skip"

    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in fmt.columns},
        null_values=[""],  # only a blank cell is missing; "n/a" and friends are errors
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        with _arrow_input(src) as stream:
            table = pacsv.read_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=list(fmt.columns), skip_rows=1, block_size=_READ_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
                convert_options=convert,
            )
    except pa.ArrowInvalid as e:
        if "straddl" in str(e):  # a row longer than pyarrow's block: say which one
            raise _oversized_row(src, fmt, _READ_BLOCK_BYTES) from None
        raise CSVFormatError(path, None, None, f"could not parse as CSV: {e}") from None
    except (OSError, *_CORRUPT) as e:  # a truncated gzip (pyarrow: OSError), a corrupt zip member (through pa.PythonFile)
        raise CSVFormatError(path, None, None, f"could not read the file ({e})") from None

    skipped: list[BadRow] = []
    blank: list[int] = []
    n = table.num_rows
    if malformed:
        # pyarrow drops malformed rows and (multi-threaded) cannot say where they were: find their lines.
        good, blank, bad = _find_lines(src, ncols)
        for line, found in bad:
            skipped.append(BadRow(line, None, f"expected {ncols} columns ({','.join(fmt.columns)}), found {found}"))
        lines = np.asarray(sorted(good + blank), dtype=np.int64)
        if len(lines) != n:  # quoted commas or newlines in a cell: cannot map rows to lines
            raise CSVFormatError(path, None, None, "rows could not be matched to lines (quoted commas or newlines?)")
    else:
        lines = np.arange(2, n + 2, dtype=np.int64)
    table = table.append_column("line", pa.array(lines))

    # Blank lines come through as all-null rows: not data, not an error, but counted.
    all_null = None
    for c in fmt.columns:
        isn = table.column(c).is_null()
        all_null = isn if all_null is None else pc.and_(all_null, isn)
    if all_null is not None and pc.any(all_null).as_py():
        blank_mask = all_null.to_numpy(zero_copy_only=False)
        blank = sorted(set(blank) | set(lines[blank_mask].tolist()))
        table = table.filter(pc.invert(all_null))
    if table.num_rows == 0 and not skipped:
        raise CSVFormatError(path, 2, None, "the file has a header but no data rows")

    raw = RawTable(path, fmt, table, skipped, blank)
    _validate_columns(raw)
    return raw


def _drop(raw: RawTable, bad: np.ndarray, column: str, reasons: list[str]) -> None:
    """Remove bad rows from the table and record why."""
    idx = np.flatnonzero(bad)
    if len(idx):
        lines = raw.table.column("line").to_numpy()
        raw.skipped.extend(BadRow(int(lines[i]), column, r) for i, r in zip(idx, reasons))
        raw.table = raw.table.filter(pa.array(~bad))


def _validate_columns(raw: RawTable) -> None:
    fmt = raw.format
    t = raw.table
    if fmt.name == FER and "emotion" in fmt.columns:
        vals = t.column("emotion").to_pylist()
        bad, reasons = np.zeros(len(vals), bool), []
        for i, v in enumerate(vals):
            s = (v or "").strip()
            if not (s.isdigit() and int(s) < len(EMOTIONS)):
                bad[i] = True
                reasons.append(f"label {v!r} is not an emotion 0..{len(EMOTIONS) - 1}")
        _drop(raw, bad, "emotion", reasons)
    if fmt.name == FER and "Usage" in fmt.columns:
        usage = raw.table.column("Usage")
        ok = pc.fill_null(pc.is_in(usage, value_set=pa.array(FER_USAGES)), False).to_numpy(zero_copy_only=False)
        vals = usage.to_pylist()
        reasons = [f"unknown Usage {vals[i]!r}; expected one of {list(FER_USAGES)}" for i in np.flatnonzero(~ok)]
        _drop(raw, ~ok, "Usage", reasons)
    if fmt.name in (KEYPOINTS, PHOTO_POINTS):
        for c in fmt.schema.columns:
            col = raw.table.column(c)
            try:
                pc.cast(col, pa.float64())
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            vals = col.to_pylist()
            bad = np.zeros(len(vals), bool)
            reasons = []
            for i, v in enumerate(vals):
                try:
                    if v is not None:
                        float(v)
                except ValueError:
                    bad[i] = True
                    reasons.append(f"keypoint value {v[:20]!r} is not a number")
            _drop(raw, bad, c, reasons)
        if fmt.name == KEYPOINTS:
            _drop_off_image_points(raw)
    if fmt.name == KEYPOINTS_TEST:
        ids = raw.table.column("ImageId").to_pylist()
        bad = np.array([not (v or "").strip().isdigit() for v in ids])
        reasons = [f"ImageId {ids[i]!r} is not an integer" for i in np.flatnonzero(bad)]
        _drop(raw, bad, "ImageId", reasons)


#: A Kaggle keypoint may lie this far (fraction of the image side) outside its 96x96 image; further,
#: or not finite, it is not a position in that image (inf, 1e6 or -50 trained to "RMSE inf px").
KEYPOINT_OUTSIDE = 0.5


def _drop_off_image_points(raw: RawTable) -> None:
    """Rows whose coordinates are not finite or lie far outside the image are bad rows."""
    size = raw.format.image_size
    lo, hi = -KEYPOINT_OUTSIDE * size, (1 + KEYPOINT_OUTSIDE) * size
    for c in raw.format.schema.columns:
        v = pc.cast(raw.table.column(c), pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isnan(v) & ~((v >= lo) & (v <= hi))  # inf fails the range test; NaN is a missing point
        _drop(raw, bad, c, [f"keypoint value {x:g} is outside the {size}x{size} image (allowed {lo:g} to {hi:g})" for x in v[bad]])


def parse_rows(batch: pa.Table, fmt: CSVFormat, drop_bad: bool = True) -> tuple[dict[str, np.ndarray], list[BadRow]]:
    """Turn a slice of a :class:`RawTable` into arrays.

    Returns ``(columns, bad_rows)``: columns always include ``image`` (uint8 [N,S,S]), ``line``
    and, by format, ``label`` (int64), ``usage`` (str), ``keypoints`` (float32 [N,K,2], NaN when
    missing), ``mask`` (bool [N,K]) or ``image_id``. Rows listed in ``bad_rows`` are removed,
    or, with ``drop_bad=False``, kept (pixels unspecified) for the caller to flag.
    """
    s = fmt.image_size
    images, status, detail = px.parse_pixel_column(batch.column(fmt.pixel_column), s * s)
    out: dict[str, np.ndarray] = {"image": images.reshape(-1, s, s), "line": batch.column("line").to_numpy()}
    if fmt.name == FER:
        if "emotion" in fmt.columns:
            out["label"] = np.asarray(pc.cast(batch.column("emotion"), pa.int64()).to_numpy(zero_copy_only=False))
        if "Usage" in fmt.columns:
            out["usage"] = np.asarray(batch.column("Usage").to_pylist(), dtype=object)
    elif fmt.name == KEYPOINTS:
        k = fmt.schema.num_points
        kp = np.empty((batch.num_rows, k, 2), dtype=np.float32)
        for i, (cx, cy) in enumerate(zip(fmt.schema.x_columns, fmt.schema.y_columns)):
            kp[:, i, 0] = pc.cast(batch.column(cx), pa.float64()).to_numpy(zero_copy_only=False)
            kp[:, i, 1] = pc.cast(batch.column(cy), pa.float64()).to_numpy(zero_copy_only=False)
        # A point counts as present only when both coordinates are.
        missing = np.isnan(kp).any(axis=2)
        kp[missing] = np.nan
        out["keypoints"], out["mask"] = kp, ~missing
    else:
        out["image_id"] = np.asarray(pc.cast(batch.column("ImageId"), pa.int64()).to_numpy(zero_copy_only=False))

    bad_idx = np.flatnonzero(status != px.OK)
    bad: list[BadRow] = []
    if len(bad_idx):
        texts = batch.column(fmt.pixel_column)
        for i in bad_idx:
            reason = px.describe_bad_pixels(texts[int(i)].as_py(), int(status[i]), int(detail[i]), s * s)
            bad.append(BadRow(int(out["line"][i]), fmt.pixel_column, reason))
        if drop_bad:
            keep = status == px.OK
            out = {k: v[keep] for k, v in out.items()}
    return out, bad


@dataclass
class FaceTable:
    """A parsed Kaggle CSV held in memory (the in-process twin of the Ray dataset)."""

    path: str
    format: CSVFormat
    columns: dict[str, np.ndarray]
    skipped: list[BadRow]
    blank_lines: list[int]

    def __len__(self) -> int:
        return len(self.columns["image"])

    def __getattr__(self, name: str) -> np.ndarray:
        # images/labels/keypoints/mask/usage/line as attributes, for notebooks and tests.
        alias = {"images": "image", "labels": "label", "lines": "line"}.get(name, name)
        cols = self.__dict__.get("columns", {})
        if alias in cols:
            return cols[alias]
        raise AttributeError(name)

    @property
    def schema(self) -> KeypointSchema | None:
        return self.format.schema

    def select(self, index: np.ndarray) -> "FaceTable":
        """Rows by index or boolean mask (e.g. a split)."""
        return FaceTable(self.path, self.format, {k: v[index] for k, v in self.columns.items()}, self.skipped, self.blank_lines)


def raise_or_record(raw: RawTable, bad: list[BadRow], skip_bad_rows: bool) -> None:
    """Apply the bad-row policy: raise for the earliest bad line, or keep the full list of skipped rows."""
    raw.skipped.extend(bad)
    raw.skipped.sort(key=lambda b: b.line)
    if raw.skipped and not skip_bad_rows:
        first = raw.skipped[0]
        n = len(raw.skipped)
        more = f" (and {n - 1} more bad rows; --skip-bad-rows skips them)" if n > 1 else ""
        raise CSVFormatError(raw.path, first.line, first.column, first.reason + more)


def read_table(path: str | os.PathLike, skip_bad_rows: bool = False, image_size: int | None = None) -> FaceTable:
    """Read and parse a whole Kaggle CSV in this process."""
    raw = read_raw(path, image_size=image_size)
    cols, bad = parse_rows(raw.table, raw.format)
    raise_or_record(raw, bad, skip_bad_rows)
    if len(cols["image"]) == 0:
        raise CSVFormatError(raw.path, None, None, f"no valid rows ({len(raw.skipped)} bad rows skipped)")
    return FaceTable(raw.path, raw.format, cols, raw.skipped, raw.blank_lines)
