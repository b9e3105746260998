"""Keypoint coordinates of a model input: pixels, and the [-1, 1] scale networks predict in.

Pixel-centre convention (as in :mod:`facepipe.faces.crop`): the centre of pixel ``(row i, column
j)`` is at ``x = j, y = i``, so pixel 0 maps to -1 and pixel ``size - 1`` to +1 (the integral head of
:mod:`facepipe.models` places its cell centres on the same scale). The keypoint task turns targets
and outputs with these, so it needs nothing from the models, which build on the tasks. Works on
numpy arrays and torch tensors alike, without importing either.
"""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

__all__ = ["to_normalised", "to_pixels"]


def to_pixels(normalised: T, size: int) -> T:
    """Model keypoint outputs in [-1, 1] → pixel coordinates of a ``size`` input (pixel centres)."""
    half = (size - 1) / 2.0
    return normalised * half + half


def to_normalised(pixels: T, size: int) -> T:
    """Pixel coordinates of a ``size`` input → [-1, 1]; the inverse of :func:`to_pixels`."""
    half = (size - 1) / 2.0
    return (pixels - half) / half
