"""The embedded default for ``make demo``: annotate a small folder with the models just trained.

The folder holds generated photos (``facepipe.data.synth.write_image_folder``; no download) and the
real photo that matplotlib ships (``grace_hopper.jpg``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["write_demo_images", "annotate_demo", "write_untrained_models"]

#: A small emotion network for fast tests (the default one is as costly as the ResNet18).
SMALL_EMOTION_ARGS = {"widths": [16, 32], "convs_per_block": 1, "dropout": 0.1}


def write_untrained_models(folder: str | os.PathLike, small_emotion: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """Model directories of untrained networks (keypoint ResNet18; emotion VGG-CNN, default or small):
    ``folder/keypoints`` and ``folder/emotion``. For tests and benchmarks, whose costs and code
    paths do not depend on training."""
    import torch

    from facepipe.data.schema import EMOTIONS, KeypointSchema
    from facepipe.models import DEFAULT_ARCH, build_model, make_meta, save_model_dir

    torch.manual_seed(seed)
    folder = Path(folder)
    arch, args, size = DEFAULT_ARCH["keypoints"]
    names = KeypointSchema.kaggle().names
    kp = save_model_dir(folder / "keypoints", build_model("keypoints", arch, args, len(names)), make_meta("keypoints", arch, args, size, names, mean=0.5, std=0.25))
    arch, args, size = DEFAULT_ARCH["emotion"]
    args = SMALL_EMOTION_ARGS if small_emotion else args
    em = save_model_dir(folder / "emotion", build_model("emotion", arch, args, len(EMOTIONS)), make_meta("emotion", arch, args, size, list(EMOTIONS), 0.5, 0.25))
    return kp, em


def write_demo_images(folder: str | os.PathLike, n_generated: int = 8, seed: int = 0) -> list[Path]:
    """Write ``n_generated`` generated face photos and ``grace_hopper.jpg`` into ``folder``."""
    import matplotlib.cbook

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if n_generated:
        from facepipe.data.synth import write_image_folder

        paths += write_image_folder(folder, n_generated, seed=seed)
    hopper = folder / "grace_hopper.jpg"
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as src, open(hopper, "wb") as dst:
        shutil.copyfileobj(src, dst)
    paths.append(hopper)
    return paths


def annotate_demo(
    output: str | os.PathLike,
    keypoints_model: str | os.PathLike,
    emotion_model: str | os.PathLike,
    n_generated: int = 8,
    seed: int = 0,
    plots: str = "all",
    **kwargs,
) -> dict:
    """Write the demo folder to ``output/images`` and annotate it into ``output`` (returns the summary).

    Results: ``output/annotations/*.parquet``, ``output/plots/images/...`` and ``output/summary.json``.
    """
    from facepipe.annotate.job import annotate

    output = Path(output)
    images = output / "images"
    write_demo_images(images, n_generated=n_generated, seed=seed)
    return annotate([images], output, keypoints_model, emotion_model, plots=plots, **kwargs)
