"""Batch face annotation: decode by content, face detection, batched keypoint + emotion models on
Ray Data, atomic and incremental Parquet output. ``predict`` runs the same stages in-process.

Decoding, detection, framing and crops are the face layer's (:mod:`facepipe.faces`), shared with
training. Here, one concern per module: :mod:`.listing` (input files, roots, lossless names),
:mod:`.prepare` (stage 1: read, hash, then the face layer's decode, detect, crop), :mod:`.infer`
(stage 2: the model actor; ``predict``), :mod:`.schema`
(versioned Parquet schema), :mod:`.writer` (atomic parts, run lock), :mod:`.state` (what is done;
reading the output), :mod:`.render` (annotated images), :mod:`.config` (a run's settings), :mod:`.job` (``annotate``), :mod:`.demo`.
"""
from facepipe.annotate.config import AnnotateConfig
from facepipe.annotate.infer import Annotator, predict
from facepipe.annotate.job import AnnotateError, annotate
from facepipe.annotate.schema import SCHEMA_VERSION
from facepipe.annotate.state import read_annotations
from facepipe.faces.detect import DETECTORS, DetectorConfig, HaarConfig, MTCNNConfig, detector_config  # re-exported: the detector choice

__all__ = ["annotate", "predict", "read_annotations", "Annotator", "AnnotateConfig", "DETECTORS", "DetectorConfig", "HaarConfig",
           "MTCNNConfig", "detector_config", "AnnotateError", "SCHEMA_VERSION", "annotate_demo"]


def annotate_demo(*args, **kwargs):
    """See :func:`facepipe.annotate.demo.annotate_demo` (imported lazily)."""
    from facepipe.annotate.demo import annotate_demo as _demo

    return _demo(*args, **kwargs)
