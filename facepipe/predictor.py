"""The one inference path: a model directory's network + its meta.json normalisation + the task's
head decoding, batched, on a device, with optional flip test-time augmentation.

Evaluation, annotation (:class:`facepipe.annotate.infer.Annotator`, which also serves
:func:`facepipe.predict`) and the benchmarks all call a :class:`Predictor`, so a face gets the
same keypoints and probabilities whichever of them looks at it.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from facepipe import models
from facepipe.tasks import Task, get_task

__all__ = ["Predictor", "resolve_device", "TTA_MODES"]

#: Test-time augmentation: none; the mirrored image averaged in; or both of those at the centre and
#: shifted by 5% of the side left, right, up and down (10 views, like the ten-crop of the FER2013
#: literature without cutting the border off).
TTA_MODES = ("none", "flip", "crops")
#: Shift of the "crops" views, as a fraction of the input side.
CROP_SHIFT = 0.05


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; an unavailable ``cuda`` fails loudly."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU")
    return device


class Predictor:
    """Decoded predictions of one model for uint8 model-size images ``[N, S, S]``.

    Returns keypoints in input pixels ``[N, K, 2]`` or class probabilities ``[N, C]`` (float32).
    ``tta`` (:data:`TTA_MODES`; True means ``flip``): the mirrored and shifted views are predicted
    too and averaged in, each mapped back by the task (keypoints: left/right points swapped by
    name and mirrored back, shifts subtracted).
    """

    def __init__(self, model: nn.Module, meta: dict, device: str = "cpu", batch_size: int = 256, tta: bool | str = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.task: Task = get_task(meta["task"])
        self.batch_size = int(batch_size)
        self.tta = {True: "flip", False: "none"}.get(tta, tta) if isinstance(tta, bool) else str(tta)
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
        self.size = int(meta["input_size"])
        #: The window the network sees: the whole image, or the centre of it for a model trained on crops.
        self.view = models.view_side(meta)
        d = max(1, round(CROP_SHIFT * self.size))
        self._shifts = [(0, 0)] + ([(d, 0), (-d, 0), (0, d), (0, -d)] if self.tta == "crops" else [])
        perm = self.task.flip_permutation(list(meta[self.task.label_key]))
        self._perm = None if perm is None else torch.as_tensor(perm)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str = "auto", batch_size: int = 256, tta: bool | str = False) -> "Predictor":
        """A predictor for a model directory (``weights.pt`` + ``meta.json``)."""
        device = resolve_device(device)
        model, meta = models.load_model(model_dir, device)
        return cls(model, meta, device=device, batch_size=batch_size, tta=tta)

    @property
    def labels(self) -> list[str]:
        """Keypoint or class names, in output order."""
        return list(self.meta[self.task.label_key])

    def _views(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded outputs for ``x`` averaged over the TTA views."""
        total = None
        d = max(abs(v) for shift in self._shifts for v in shift)
        o = (self.size - self.view) // 2  # the centre window's corner
        p = max(d - o, 0)  # shifted windows past the image's edge see replicated border pixels
        padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate") if p else x
        for dx, dy in self._shifts:
            # Content moved by (dx, dy): the window starts (dx, dy) before the centre window's corner.
            top, left = p + o - dy, p + o - dx
            view = padded[..., top : top + self.view, left : left + self.view]
            outs = [self.task.untranslate(self.task.decode(self.model(view), self.meta), dx, dy)]
            if self.tta != "none":
                mirrored = self.task.decode(self.model(torch.flip(view, dims=[3])), self.meta)
                outs.append(self.task.untranslate(self.task.unflip(mirrored, self.meta, self._perm), dx, dy))
            for y in outs:
                total = y if total is None else total + y
        return total / (len(self._shifts) * (1 if self.tta == "none" else 2))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (self.size, self.size):
            raise ValueError(f"expected images [N, {self.size}, {self.size}], got {images.shape}")
        outs = []
        for i in range(0, len(images), self.batch_size):
            x = models.preprocess(np.ascontiguousarray(images[i : i + self.batch_size]), self.meta, self.device, centre=False)
            outs.append(self._views(x).float().cpu().numpy())
        if not outs:
            return np.zeros((0, *self.task.output_shape(self.meta)), np.float32)
        return np.concatenate(outs)
