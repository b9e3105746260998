"""Listing input files and decoding images by their content (never their extension).

Decoding uses OpenCV only (``cv2.imdecode`` with ``IMREAD_UNCHANGED``: JPEG, PNG, BMP, WebP, TIFF
and whatever else the OpenCV build reads), then normalises every mode to ``uint8``:

* 16-bit (and float) images are scaled to 8 bits; grayscale stays grayscale;
* alpha (RGBA, LA, palette with transparency) is composited over white;
* palette PNGs arrive expanded to BGR from OpenCV;
* the EXIF orientation is applied. ``IMREAD_UNCHANGED`` makes OpenCV skip it for JPEG, PNG and
  WebP, so :func:`exif_orientation` reads the tag with Pillow from the header;
  OpenCV's TIFF decoder applies it on its own, so TIFF is left alone. ``tests/test_annotate_units``
  checks this against OpenCV's own ``IMREAD_COLOR`` orientation for every format and value.

Truncated JPEGs (no end-of-image marker after the last scan) are errors: libjpeg would otherwise
return a half-grey image with only a warning on stderr.
"""
from __future__ import annotations

import fnmatch
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image

__all__ = [
    "FileEntry",
    "DecodedImage",
    "ImageDecodeError",
    "list_files",
    "root_labels",
    "sniff_format",
    "exif_orientation",
    "apply_orientation",
    "decode_image",
    "to_uint8",
    "to_gray",
]


class ImageDecodeError(ValueError):
    """The bytes are not an image this build can decode (the message says why)."""


# --- listing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    root: str  # label of the input root (its folder name, made unique within the output)
    input_root: str  # absolute path of the input root
    path: str  # POSIX path relative to the input root
    abs_path: str
    size: int
    mtime_ns: int
    ctime_ns: int = -1  # inode change time: moves on every content write, and no tool can set it back

    @property
    def key(self) -> tuple[str, str]:
        return (self.root, self.path)


def input_root(path: str | os.PathLike) -> Path:
    """The folder an input stands for: itself, or a file's folder (so a file named alone gets the
    same root and path as when its folder is annotated)."""
    p = Path(path).resolve()
    return p.parent if p.is_file() else p


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
    for root in sorted({str(input_root(d)) for d in inputs}):  # new folders labelled in a fixed order
        if root not in by_root:
            name, n = Path(root).name or "root", 1
            label = name
            while label in taken:
                n += 1
                label = f"{name}~{n}"
            by_root[root] = label
            taken.add(label)
    for d in inputs:
        labels.append(by_root[str(input_root(d))])
    return labels


def list_files(
    inputs: list[str | os.PathLike],
    recursive: bool = False,
    pattern: str = "*",
    include_hidden: bool = False,
    known_roots: dict[str, str] | None = None,
) -> list[FileEntry]:
    """Regular files under each input folder whose name matches ``pattern`` (fnmatch, case-sensitive),
    and each input that is a file itself (taken as named, whatever its name).

    Hidden files and folders (name starting with ``.``) are skipped unless ``include_hidden``.
    Symlinks to files are followed; the order is sorted by (root, path) so runs are reproducible,
    and a file reached twice (named alone and inside a named folder) is listed once.
    ``known_roots`` (absolute folder → label) keeps the labels an output already uses
    (:func:`root_labels`).
    """
    entries: dict[tuple[str, str], FileEntry] = {}
    for label, d in zip(root_labels(inputs, known_roots), inputs):
        root = input_root(d)
        if Path(d).is_file():
            full = Path(d).resolve()
            st = full.stat()
            entries[(label, full.name)] = FileEntry(label, str(root), lossless_name(full.name), str(full), int(st.st_size), int(st.st_mtime_ns),
                                                  int(st.st_ctime_ns))
            continue
        if not root.is_dir():
            raise NotADirectoryError(f"input is neither a file nor a folder: {d}")
        walker = os.walk(root, followlinks=False) if recursive else [(str(root), [], os.listdir(root))]
        for dirpath, dirnames, filenames in walker:
            if not include_hidden:
                dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            dirnames.sort()
            for name in sorted(filenames):
                if not include_hidden and name.startswith("."):
                    continue
                if not fnmatch.fnmatchcase(name, pattern):
                    continue
                full = Path(dirpath) / name
                try:
                    st = full.stat()
                except OSError:  # dangling symlink: still an input file, the read will report it
                    st = None
                if st is not None and not _is_regular(st.st_mode):
                    continue
                rel = lossless_name(full.relative_to(root).as_posix())
                entries[(label, rel)] = FileEntry(
                    root=label,
                    input_root=str(root),
                    path=rel,
                    abs_path=str(full),
                    size=int(st.st_size) if st else -1,
                    mtime_ns=int(st.st_mtime_ns) if st else -1,
                    ctime_ns=int(st.st_ctime_ns) if st else -1,
                )
    return sorted(entries.values(), key=lambda e: (e.root, e.path))


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


# --- format sniffing and EXIF --------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes, or None when unrecognised."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:1] == b"P" and head[1:2] in b"123456" and len(head) > 2:
        return "pnm"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    return None


#: Formats whose EXIF orientation ``IMREAD_UNCHANGED`` leaves unapplied (OpenCV's TIFF decoder
#: applies it itself, so reading TIFF's tag too would turn the image twice).
_EXIF_FORMATS = ("jpeg", "png", "webp")


def exif_orientation(data: bytes, fmt: str | None = None) -> int:
    """The EXIF orientation (1..8) of a JPEG, PNG or WebP file, read by Pillow from the header;
    1 when absent, out of range or unreadable. Never raises: a header Pillow cannot parse may
    still be pixels OpenCV decodes, and those are taken as upright.

    Other formats (TIFF included) return 1.
    """
    fmt = fmt or sniff_format(data)
    if fmt not in _EXIF_FORMATS:
        return 1
    try:
        with warnings.catch_warnings():
            # Large images (the pixel budget is check_pixel_budget's job) and corrupt EXIF (read as
            # no orientation) would otherwise warn once per file.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as im:
                # A PNG eXIf chunk after IDAT is only seen by decoding every pixel (getexif loads
                # the image); pay that only for files that have such a chunk.
                if fmt == "png" and "exif" not in im.info and b"eXIf" not in data:
                    return 1
                value = im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001 - incl. DecompressionBombError; see the docstring
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into the upright image that EXIF ``orientation`` (1..8) describes."""
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:
        return np.ascontiguousarray(np.swapaxes(img, 0, 1))
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(np.ascontiguousarray(np.swapaxes(img, 0, 1)), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


# --- decoding ------------------------------------------------------------------------------------


@dataclass
class DecodedImage:
    """An upright ``uint8`` image (``[H, W]`` gray or ``[H, W, 3]`` BGR) and where it came from."""

    image: np.ndarray
    format: str  # jpeg, png, bmp, webp, tiff, ... ("unknown" when OpenCV read it anyway)
    mode: str  # source mode: gray, gray16, bgr, bgr16, bgra, bgra16, graya, float ...
    orientation: int  # EXIF orientation that was applied (1 = none)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def gray(self) -> np.ndarray:
        return to_gray(self.image)


def _mode(img: np.ndarray) -> str:
    ch = 1 if img.ndim == 2 else img.shape[2]
    base = {1: "gray", 2: "graya", 3: "bgr", 4: "bgra"}.get(ch, f"{ch}ch")
    if img.dtype == np.uint8:
        return base
    if img.dtype == np.uint16:
        return base + "16"
    return f"{base}-{img.dtype}"


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Any OpenCV-decoded array → ``uint8`` gray ``[H, W]`` or BGR ``[H, W, 3]`` (alpha over white)."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype == np.int8 or img.dtype == np.int16 or img.dtype == np.int32:
        lo, hi = float(img.min()), float(img.max())
        img = ((img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))).astype(np.uint8)
    elif img.dtype.kind == "f":
        x = np.nan_to_num(img.astype(np.float32))
        scale = 255.0 if float(x.max(initial=0.0)) <= 1.0 else 1.0
        img = np.clip(x * scale, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (2, 4):
        alpha = img[:, :, -1]
        color = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
        if int(alpha.min()) < 255:  # composite over white
            a = alpha.astype(np.float32) * np.float32(1 / 255)
            if color.ndim == 3:
                a = a[:, :, None]
            color = (color.astype(np.float32) * a + np.float32(255.0) * (1 - a) + 0.5).astype(np.uint8)
        img = np.ascontiguousarray(color)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ImageDecodeError(f"unsupported image shape {img.shape}")
    return img


def to_gray(img: np.ndarray) -> np.ndarray:
    """``uint8`` gray ``[H, W]`` from any array :func:`to_uint8` accepts."""
    img = to_uint8(img)
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _jpeg_complete(data: bytes) -> bool:
    """A JPEG is complete when an end-of-image marker follows its last start-of-scan marker.

    Entropy-coded data cannot contain ``FF D9`` (``FF`` is stuffed as ``FF 00``), so the marker
    after the last scan is the real end, even when a camera appends a trailer after it.
    """
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.find(b"\xff\xd9", sos) >= 0


#: Largest image decoded (width x height). An 18 KB JPEG whose header claims 30000x30000 pixels
#: decoded to 5.3 GB; four at once took the job to 13.6 GB. 120 MP is a 12,000 x 10,000 photo.
MAX_PIXELS = 120_000_000


def check_pixel_budget(data: bytes, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels, before any decoding
    (Pillow parses only the header on open). Formats Pillow does not know are left to OpenCV."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as e:  # Pillow's own limit (~179 MP) refused it first
        raise ImageDecodeError(f"over the decode budget of {max_pixels:,} pixels ({str(e).split(',')[0]})") from None
    except Exception:  # noqa: BLE001 - not Pillow's format or a broken header: OpenCV decides
        return
    if width * height > max_pixels:
        raise ImageDecodeError(f"image of {width}x{height} pixels is over the decode budget of {max_pixels:,} pixels")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode image bytes by content; raise :class:`ImageDecodeError` with a one-line reason.

    Images whose header claims more than ``max_pixels`` pixels are refused before decoding.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    check_pixel_budget(data, max_pixels)
    fmt = sniff_format(data)
    if fmt == "jpeg" and not _jpeg_complete(data):
        raise ImageDecodeError("truncated JPEG (no end-of-image marker after the last scan)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV raises on some corrupt inputs instead of returning None
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ImageDecodeError(f"OpenCV could not decode the {fmt or 'file'}: {msg}") from None
    if img is None or img.size == 0:
        if fmt is None:
            head = data[:8].hex(" ")
            raise ImageDecodeError(f"not an image: unrecognised content (first bytes {head})")
        raise ImageDecodeError(f"corrupt or unsupported {fmt} file (OpenCV could not decode it)")
    mode = _mode(img)
    img = to_uint8(img)
    orientation = exif_orientation(data, fmt)
    img = apply_orientation(img, orientation)
    return DecodedImage(image=img, format=fmt or "unknown", mode=mode, orientation=orientation)
