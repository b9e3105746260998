"""The embedded default for ``make demo``: annotate a small folder with the models just trained.

The folder holds generated photos (``facepipe.data.synth.write_image_folder``; no download) and the
real photo that matplotlib ships (``grace_hopper.jpg``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["write_demo_images", "annotate_demo"]

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
