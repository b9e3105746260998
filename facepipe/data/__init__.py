"""Kaggle CSV formats, validation, pixel parsing, keypoint schema, generated data, Ray datasets.

The names below load their module on first use (PEP 562): annotation needs only the schema, and the
CSV parser's numba kernel costs an annotation driver ~50 MB and ~0.3 s to import.
"""
from __future__ import annotations

import importlib

_FROM = {
    "facepipe.data.kaggle": ("FER", "KEYPOINTS", "KEYPOINTS_TEST", "BadRow", "CSVFormat", "CSVFormatError", "FaceTable",
                             "RawTable", "detect_format", "parse_rows", "read_raw", "read_table"),
    "facepipe.data.schema": ("EMOTIONS", "FER_USAGES", "KAGGLE_KEYPOINT_COLUMNS", "KeypointSchema"),
}
_MODULE_OF = {name: module for module, names in _FROM.items() for name in names}

__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'facepipe.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
