"""Batch face annotation: decode by content, face detection, batched keypoint + emotion models on
Ray Data, atomic and incremental Parquet output. ``predict`` runs the same stages in-process.

One concern per module: :mod:`.io` (listing, decoding, EXIF), :mod:`.detect` (detector registry: Haar, MTCNN),
:mod:`.crop` (model crops and the crop→image mapping), :mod:`.prepare` (stage 1: read, hash,
decode, detect, crop), :mod:`.infer` (stage 2: the model actor; ``predict``), :mod:`.schema`
(versioned Parquet schema), :mod:`.writer` (atomic parts, run lock), :mod:`.state` (what is done;
reading the output), :mod:`.render` (annotated images), :mod:`.config` (a run's settings), :mod:`.job` (``annotate``), :mod:`.demo`.
"""
from facepipe.annotate.config import AnnotateConfig
from facepipe.annotate.detect import DETECTORS, DetectorConfig, HaarConfig, MTCNNConfig, detector_config
from facepipe.annotate.infer import Annotator, predict
from facepipe.annotate.job import AnnotateError, annotate
from facepipe.annotate.schema import SCHEMA_VERSION
from facepipe.annotate.state import read_annotations

__all__ = ["annotate", "predict", "read_annotations", "Annotator", "AnnotateConfig", "DETECTORS", "DetectorConfig", "HaarConfig",
           "MTCNNConfig", "detector_config", "AnnotateError", "SCHEMA_VERSION", "annotate_demo"]


def annotate_demo(*args, **kwargs):
    """See :func:`facepipe.annotate.demo.annotate_demo` (imported lazily)."""
    from facepipe.annotate.demo import annotate_demo as _demo

    return _demo(*args, **kwargs)
