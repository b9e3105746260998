"""A task = what a model predicts, its loss and its metrics; no Ray here.

Metrics are accumulated as sums (so shards on several workers can be added up with one
all-reduce) and turned into numbers by :meth:`Task.finalize`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facepipe.models import to_normalised, to_pixels


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over present keypoints only: missing ones (mask False, target NaN) give no loss and no gradient."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    t = torch.nan_to_num(target, nan=0.0)
    sq = (pred - t) ** 2 * m
    return sq.sum() / (m.sum() * 2).clamp_min(1.0)


@dataclass(frozen=True)
class KeypointsTask:
    """Keypoint regression: masked MSE on coordinates normalised to [-1, 1]; RMSE in pixels."""

    name: str = "keypoints"
    label_columns: tuple[str, ...] = ("keypoints", "mask")
    primary_metric: str = "val_rmse_px"
    higher_is_better: bool = False

    def loss(self, out: torch.Tensor, batch: dict, meta: dict, train: bool = True) -> torch.Tensor:
        target = to_normalised(batch["keypoints"].float(), meta["input_size"])
        return masked_mse(out.float(), target, batch["mask"])

    def metric_sums(self, out: torch.Tensor, batch: dict, meta: dict) -> dict[str, torch.Tensor]:
        return self.sums_from_predictions(to_pixels(out.float(), meta["input_size"]), batch)

    def sums_from_predictions(self, pred: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Sums from keypoints in input pixels [N, K, 2] (after any test-time augmentation)."""
        m = batch["mask"].float()
        err = (pred - torch.nan_to_num(batch["keypoints"].float())) ** 2
        per_point = (err.sum(-1) * m).sum(0)  # squared px error per keypoint, x and y together
        return {"sq_err": per_point.double(), "count": m.sum(0).double(), "n": torch.tensor([float(len(m))], dtype=torch.float64)}

    def finalize(self, sums: dict[str, np.ndarray], meta: dict) -> dict:
        names = meta["keypoint_names"]
        per = np.sqrt(sums["sq_err"] / np.maximum(2 * sums["count"], 1))
        # No labelled point: no error to report (a 0.0 would read as a perfect model).
        overall = float(np.sqrt(sums["sq_err"].sum() / (2 * sums["count"].sum()))) if sums["count"].sum() > 0 else None
        return {
            "rmse_px": overall,
            "per_keypoint_rmse_px": {n: float(v) if c else None for n, v, c in zip(names, per, sums["count"])},
            "images": int(sums["n"][0]),
        }


@dataclass(frozen=True)
class EmotionTask:
    """Emotion classification: cross-entropy (label smoothing in training); accuracy and confusion matrix."""

    name: str = "emotion"
    label_columns: tuple[str, ...] = ("label",)
    primary_metric: str = "val_accuracy"
    higher_is_better: bool = True
    label_smoothing: float = 0.1

    def loss(self, out: torch.Tensor, batch: dict, meta: dict, train: bool = True) -> torch.Tensor:
        return F.cross_entropy(out.float(), batch["label"].long(), label_smoothing=self.label_smoothing if train else 0.0)

    def metric_sums(self, out: torch.Tensor, batch: dict, meta: dict) -> dict[str, torch.Tensor]:
        return self.sums_from_predictions(out, batch)

    def sums_from_predictions(self, scores: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Sums from class scores or probabilities [N, C]."""
        k = scores.shape[1]
        y = batch["label"].long()
        pred = scores.argmax(1)
        cm = torch.bincount(y * k + pred, minlength=k * k).double()
        return {"confusion": cm, "n": torch.tensor([float(len(y))], dtype=torch.float64)}

    def finalize(self, sums: dict[str, np.ndarray], meta: dict) -> dict:
        k = len(meta["class_names"])
        cm = sums["confusion"].reshape(k, k).astype(np.int64)
        return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "confusion_matrix": cm.tolist(), "images": int(cm.sum())}


TASKS = {"keypoints": KeypointsTask(), "emotion": EmotionTask()}


def get_task(name: str, **overrides) -> KeypointsTask | EmotionTask:
    """The task object by name; unknown names fail loudly."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    task = TASKS[name]
    if overrides:
        task = type(task)(**{**task.__dict__, **overrides})
    return task


def add_sums(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if a is None:
        return {k: v.detach().clone() for k, v in b.items()}
    return {k: a[k] + b[k].detach() for k in a}
