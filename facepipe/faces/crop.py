"""Face crops for the models, and the one mapping from model-input pixels back to the image.

Pixel-centre convention everywhere (as in :func:`facepipe.coords.to_pixels`): the centre of pixel
``(row i, column j)`` is at ``x = j, y = i``. A crop is an integer square ``(x0, y0, side)`` of
image pixels (it may reach outside the image; the outside is filled by edge replication) resized to
``size x size`` with OpenCV's centre-aligned resize, so model-input pixel ``u`` looks at image
``x = x0 - 0.5 + (u + 0.5) * side / size``; :func:`crop_to_image` is exactly that.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["square_crop", "crop_resize", "crop_to_image", "image_to_crop", "context_square", "square_in_crop"]


def square_crop(box, margin: float) -> tuple[int, int, int]:
    """The integer square ``(x0, y0, side)`` centred on ``box`` (x, y, w, h), grown by ``margin``
    of the box's longer side on every edge."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
    x0 = int(round(x + w / 2.0 - side / 2.0))
    y0 = int(round(y + h / 2.0 - side / 2.0))
    return x0, y0, side


def crop_resize(gray: np.ndarray, square: tuple[int, int, int], size: int) -> np.ndarray:
    """``uint8 [size, size]`` crop of ``square`` from a ``uint8 [H, W]`` image."""
    x0, y0, side = (int(v) for v in square)
    h, w = gray.shape[:2]
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + side, w), min(y0 + side, h)
    if ax1 <= ax0 or ay1 <= ay0:
        raise ValueError(f"crop {square} does not overlap the {w}x{h} image")
    region = gray[ay0:ay1, ax0:ax1]
    pads = (ay0 - y0, y0 + side - ay1, ax0 - x0, x0 + side - ax1)
    if any(pads):
        region = cv2.copyMakeBorder(region, *pads, borderType=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interp)


def crop_to_image(points: np.ndarray, square, size: int) -> np.ndarray:
    """Points ``[..., 2]`` in pixels of a ``size`` model input → pixels of the original image.

    ``square`` is ``(x0, y0, side)`` or an array ``[..., 3]`` broadcasting against ``points[..., 0]``
    (e.g. ``[N, 1, 3]`` for ``[N, K, 2]`` points).
    """
    points = np.asarray(points, np.float64)
    sq = np.asarray(square, np.float64)
    x0, y0, side = sq[..., 0], sq[..., 1], sq[..., 2]
    s = side / float(size)
    out = np.empty_like(points)
    out[..., 0] = x0 - 0.5 + (points[..., 0] + 0.5) * s
    out[..., 1] = y0 - 0.5 + (points[..., 1] + 0.5) * s
    return out


def image_to_crop(points: np.ndarray, square, size: int) -> np.ndarray:
    """The inverse of :func:`crop_to_image`."""
    points = np.asarray(points, np.float64)
    sq = np.asarray(square, np.float64)
    x0, y0, side = sq[..., 0], sq[..., 1], sq[..., 2]
    s = side / float(size)
    out = np.empty_like(points)
    out[..., 0] = (points[..., 0] - x0 + 0.5) / s - 0.5
    out[..., 1] = (points[..., 1] - y0 + 0.5) / s - 0.5
    return out


def context_square(square, factor: float) -> tuple[int, int, int]:
    """The integer square with ``square``'s centre and ``factor`` times its side (the wider view a
    second pass re-crops from)."""
    x0, y0, side = (float(v) for v in square)
    big = max(1, int(round(side * factor)))
    return int(round(x0 + side / 2.0 - big / 2.0)), int(round(y0 + side / 2.0 - big / 2.0)), big


def square_in_crop(square, crop_square, size: int) -> tuple[int, int, int]:
    """An image square ``(x0, y0, side)`` in the pixels of the ``size`` crop of ``crop_square``
    (rounded to whole pixels; :func:`crop_to_image` of that square maps its points back exactly)."""
    x0, y0, side = (float(v) for v in square)
    cx0, cy0, cside = (float(v) for v in crop_square)
    k = size / cside
    return int(round((x0 - cx0) * k)), int(round((y0 - cy0) * k)), max(1, int(round(side * k)))
