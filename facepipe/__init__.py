"""facepipe: facial keypoints and emotion recognition at cluster scale, on Ray.

The small public API: read a dataset, train, evaluate, load a model, annotate, predict.
Submodules load lazily so ``import facepipe`` stays cheap (no torch or Ray until needed).
"""
__version__ = "0.1.0"

__all__ = ["read_table", "load_splits", "train", "TrainConfig", "evaluate", "load_model", "annotate", "predict", "read_annotations", "__version__"]

_LAZY = {
    "read_table": "facepipe.data.kaggle",
    "load_splits": "facepipe.data.ray_datasets",
    "train": "facepipe.train",
    "TrainConfig": "facepipe.train_config",
    "evaluate": "facepipe.evaluate",
    "load_model": "facepipe.models",
    "annotate": "facepipe.annotate",
    "predict": "facepipe.annotate",
    "read_annotations": "facepipe.annotate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facepipe' has no attribute {name!r}")
