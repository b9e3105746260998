"""Decoding images by their content (never their extension), and images already decoded.

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

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image

__all__ = [
    "COLOR_ORDERS",
    "DecodedImage",
    "ImageDecodeError",
    "MAX_PIXELS",
    "apply_orientation",
    "array_to_image",
    "check_pixel_budget",
    "decode_image",
    "exif_orientation",
    "gray_and_bgr",
    "sniff_format",
    "to_gray",
    "to_uint8",
]


class ImageDecodeError(ValueError):
    """The bytes are not an image this build can decode (the message says why)."""


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
            # No byte of the file in the message: an input may be a link to a file outside the
            # input folder, and error rows are read by whoever reads the output.
            raise ImageDecodeError(f"not an image: {len(data):,} bytes in no format this build decodes")
        raise ImageDecodeError(f"corrupt or unsupported {fmt} file (OpenCV could not decode it)")
    mode = _mode(img)
    img = to_uint8(img)
    orientation = exif_orientation(data, fmt)
    img = apply_orientation(img, orientation)
    return DecodedImage(image=img, format=fmt or "unknown", mode=mode, orientation=orientation)


# --- images already decoded ----------------------------------------------------------------------


#: Channel orders an array may come in: RGB(A) as PIL, matplotlib and most libraries hold it, or
#: BGR(A) as OpenCV does.
COLOR_ORDERS = ("rgb", "bgr")


def array_to_image(item, color: str) -> tuple[np.ndarray, str, str]:
    """A decoded image (numpy array in ``color`` order, 8/16 bit, gray/3/4 channels, or a PIL image,
    always RGB) → ``uint8`` gray or 3 channels, their order (``color``, or ``rgb`` for PIL) and the
    mode it came in."""
    if color not in COLOR_ORDERS:
        raise ValueError(f"color must be one of {COLOR_ORDERS}, got {color!r}")
    if hasattr(item, "getbands") and hasattr(item, "mode"):  # a PIL image, without importing PIL
        mode = f"pil-{item.mode}"
        if item.mode not in ("L", "RGB", "RGBA", "I;16"):
            item = item.convert("RGBA" if "A" in item.getbands() else "RGB")
        arr, color = np.asarray(item), "rgb"
    else:
        arr = np.asarray(item)
        mode = f"{color}-{arr.dtype}" if arr.ndim == 3 else str(arr.dtype)
    return to_uint8(arr), color, mode  # alpha composited over white, channel order kept


def gray_and_bgr(img: np.ndarray, order: str, want_bgr: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``uint8`` gray, and the BGR image when ``want_bgr`` (None for a gray image), of an image in ``order``."""
    if img.ndim == 2:
        return img, None
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if order == "rgb" else cv2.COLOR_BGR2GRAY)
    return gray, ((img if order == "bgr" else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)) if want_bgr else None)
