"""Model directories of untrained networks for tests and benchmarks, whose code paths and costs do
not depend on training (imported as ``from untrained import ...``: pytest puts this folder on the path)."""
from __future__ import annotations

import os
from pathlib import Path

#: A small emotion network for fast tests (the default one is as costly as the ResNet18).
SMALL_EMOTION_ARGS = {"widths": [16, 32], "convs_per_block": 1, "dropout": 0.1}


def write_untrained_models(folder: str | os.PathLike, small_emotion: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """``folder/keypoints`` (the default keypoint ResNet) and ``folder/emotion`` (the default emotion
    CNN, or a small one), untrained, as model directories."""
    import torch

    from facepipe.data.schema import EMOTIONS, KeypointSchema
    from facepipe.models import build_model, make_meta, save_model_dir
    from facepipe.tasks import TASKS

    torch.manual_seed(seed)
    folder = Path(folder)
    dirs = []
    for name, labels in (("keypoints", KeypointSchema.kaggle().names), ("emotion", list(EMOTIONS))):
        task = TASKS[name]
        args = SMALL_EMOTION_ARGS if small_emotion and name == "emotion" else task.arch_args
        net = build_model(name, task.arch, args, len(labels))
        dirs.append(save_model_dir(folder / name, net, make_meta(name, task.arch, args, task.input_size, list(labels), mean=0.5, std=0.25)))
    return dirs[0], dirs[1]
