"""Kaggle CSV formats, validation, pixel parsing, keypoint schema, generated data, Ray datasets."""
from facepipe.data.kaggle import (
    FER,
    KEYPOINTS,
    KEYPOINTS_TEST,
    BadRow,
    CSVFormat,
    CSVFormatError,
    FaceTable,
    RawTable,
    detect_format,
    parse_rows,
    read_raw,
    read_table,
)
from facepipe.data.schema import EMOTIONS, FER_USAGES, KAGGLE_KEYPOINT_COLUMNS, KeypointSchema

__all__ = [
    "FER", "KEYPOINTS", "KEYPOINTS_TEST", "BadRow", "CSVFormat", "CSVFormatError", "FaceTable", "RawTable",
    "detect_format", "parse_rows", "read_raw", "read_table",
    "EMOTIONS", "FER_USAGES", "KAGGLE_KEYPOINT_COLUMNS", "KeypointSchema",
]
