"""A task = what a model predicts and everything specific to it; no Ray here.

One object per task owns its defaults (architecture, epochs, batch, lr), labels, loss, metrics,
head decoding (network output → keypoints in input pixels or class probabilities), the flip that
test-time augmentation undoes, and its evaluation outputs (reports and plots). Training,
evaluation, the predictor and the CLI ask the task; adding a task means one new class here and
an entry in :data:`TASKS`.

torch is imported where a method computes, not with the module: the annotation driver reads a
task's facts (its label field, to check a model directory) without loading torch.

Metrics are accumulated as sums (so shards on several workers can be added up with one
all-reduce) and turned into numbers by ``finalize``.
"""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facepipe.coords import to_normalised, to_pixels
from facepipe.model_dir import LABEL_FIELDS

if TYPE_CHECKING:
    import torch


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over present keypoints only: missing ones (mask False, target NaN) give no loss and no gradient.

    ``weights`` ``[K]`` scale each point's squared error; the mean is over present points' weights.
    """
    import torch

    m = mask.unsqueeze(-1).to(pred.dtype)
    if weights is not None:
        m = m * weights.to(pred.dtype).reshape(1, -1, 1)
    t = torch.nan_to_num(target, nan=0.0)
    sq = (pred - t) ** 2 * m
    return sq.sum() / (m.sum() * 2).clamp_min(1e-12 if weights is not None else 1.0)


def parse_point_weights(spec: str | None, names: list[str]) -> np.ndarray | None:
    """``NAME=W`` or ``FIRST..LAST=W`` (a range in ``names``' order), comma-separated → weights ``[K]``
    (1 where not given); None for no spec. Unknown names and negative weights fail loudly."""
    if not spec:
        return None
    w = np.ones(len(names), np.float32)
    index = {n: i for i, n in enumerate(names)}
    for part in spec.split(","):
        key, eq, value = part.strip().partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not eq or weight < 0:
            raise ValueError(f"keypoint weight {part.strip()!r}: expected NAME=W or FIRST..LAST=W with W >= 0")
        first, _, last = key.partition("..")
        unknown = [n for n in (first, last or first) if n not in index]
        if unknown:
            raise ValueError(f"keypoint weight {part.strip()!r}: no point {unknown[0]!r} in this data ({', '.join(names[:3])}, ...)")
        lo, hi = sorted((index[first], index[last or first]))
        w[lo : hi + 1] = weight
    if not w.any():
        raise ValueError(f"keypoint weights {spec!r} leave every point at weight 0")
    return w


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts as CSV, floats rounded to 4 decimals."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})


def classification_report(cm: np.ndarray, classes: list[str]) -> list[dict]:
    """Per-class precision/recall/F1/support from a confusion matrix (rows = true), plus macro and weighted averages."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    rows = [
        {"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(classes, precision, recall, f1, support)
    ]
    total = support.sum()
    w = support / total if total else np.zeros_like(support)
    rows.append({"class": "macro avg", "precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean()), "support": int(total)})
    rows.append({"class": "weighted avg", "precision": float((precision * w).sum()), "recall": float((recall * w).sum()), "f1": float((f1 * w).sum()), "support": int(total)})
    return rows


@dataclass(frozen=True)
class ArchFlag:
    """A command-line option of a task's default architecture (an ``arch_args`` entry)."""

    name: str
    type: type
    help: str
    default: Any
    nargs: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Task:
    """What every task provides; the class attributes are its fixed facts and defaults."""

    name: ClassVar[str]
    #: The meta.json field holding the output names (keypoints or classes).
    label_key: ClassVar[str]
    #: Dataset columns the loss and metrics read (besides ``image``).
    label_columns: ClassVar[tuple[str, ...]]
    #: The validation metric (as ``finalize`` names it) that picks the best epoch.
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool]
    #: Optimisation defaults, tuned on the real data (RESULTS.md).
    defaults: ClassVar[dict[str, Any]]
    #: Default architecture (a name in :data:`facepipe.models.ARCHS`), its arguments and input side.
    arch: ClassVar[str]
    arch_args: ClassVar[dict[str, Any]]
    #: The architecture arguments the train command exposes as flags.
    arch_flags: ClassVar[tuple[ArchFlag, ...]] = ()
    input_size: ClassVar[int]

    @property
    def primary_metric(self) -> str:
        """The metric's name in the training history (``val_`` + :attr:`metric`)."""
        return "val_" + self.metric

    def configure(self, options: dict[str, Any]) -> "Task":
        """This task with the settings it has a field for taken from ``options`` (others ignored; None keeps the default)."""
        own = {f.name: options[f.name] for f in dataclasses.fields(self) if options.get(f.name) is not None}
        return dataclasses.replace(self, **own) if own else self

    def labels(self, fmt) -> list[str]:
        """The output names a model trained on data of format ``fmt`` predicts."""
        raise NotImplementedError

    def data_meta(self, label_batches: Iterable[dict[str, np.ndarray]], source: str, split: str) -> dict[str, Any]:
        """Extra meta.json fields computed from the labels of ``source``'s training ``split`` (none by default)."""
        return {}

    def flip_permutation(self, labels: list[str]) -> list[int] | None:
        """How a horizontal flip permutes the outputs (None: outputs do not move)."""
        return None

    def decode(self, out: torch.Tensor, meta: dict) -> torch.Tensor:
        """Network output → what users get (float32)."""
        raise NotImplementedError

    def average(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Several networks' outputs for the same images → one output that :meth:`decode` reads
        as their average (an ensemble): the mean output by default."""
        import torch

        return torch.stack([o.float() for o in outputs]).mean(0)

    def agreement(self, out: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Mutual-learning loss pulling one member's raw output ``out`` towards ``others`` (the other
        members' outputs averaged by :meth:`average`, detached). Tasks without one leave it undefined."""
        raise NotImplementedError(f"mutual learning is not defined for the {self.name} task")

    def members_loss(self, outputs: list[torch.Tensor], batch: dict, meta: dict, mutual: float) -> torch.Tensor:
        """Loss of networks trained together (an ensemble): each member's own loss, plus ``mutual`` x its
        agreement with the others (deep mutual learning, Zhang et al. 2018); the mean over members
        (one network: its :meth:`loss`)."""
        total = 0.0
        for i, out in enumerate(outputs):
            total = total + self.loss(out, batch, meta, train=True)
            if mutual:
                others = self.average([o.detach() for j, o in enumerate(outputs) if j != i])
                total = total + mutual * self.agreement(out, others)
        return total / len(outputs)

    def unflip(self, decoded: torch.Tensor, meta: dict, permutation: torch.Tensor | None) -> torch.Tensor:
        """Decoded outputs of a mirrored image → outputs for the original image."""
        return decoded

    def untranslate(self, decoded: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
        """Decoded outputs of an image whose content was moved by (dx, dy) px → outputs for the original."""
        return decoded

    def output_shape(self, meta: dict) -> tuple[int, ...]:
        """Shape of one image's decoded output."""
        raise NotImplementedError

    def history_entry(self, val: dict) -> dict[str, float]:
        """The finalized validation metrics that go into each epoch's history line."""
        return {self.primary_metric: val[self.metric]} if val.get(self.metric) is not None else {}

    def summary(self, metrics: dict) -> str:
        """A short text of evaluation metrics for the job's last line."""
        raise NotImplementedError

    def report(self, pred: np.ndarray, table, meta: dict, out: Path, show: np.ndarray, plots) -> tuple[dict, str]:
        """Evaluation outputs for predictions ``pred`` on ``table``: metrics, report files and
        plots written to ``out`` (``show``: the rows to draw); returns (metrics, headline)."""
        raise NotImplementedError


@dataclass(frozen=True)
class KeypointsTask(Task):
    """Keypoint regression: masked MSE on coordinates normalised to [-1, 1]; RMSE in pixels."""

    name: ClassVar[str] = "keypoints"
    label_key: ClassVar[str] = LABEL_FIELDS["keypoints"]
    label_columns: ClassVar[tuple[str, ...]] = ("keypoints", "mask")
    metric: ClassVar[str] = "rmse_px"
    higher_is_better: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4}
    arch: ClassVar[str] = "resnet18"
    arch_args: ClassVar[dict[str, Any]] = {}
    arch_flags: ClassVar[tuple[ArchFlag, ...]] = (
        ArchFlag("width", int, "keypoints ResNet: channels of the first stage, doubled per stage (64: the standard ResNet)", 64),
        ArchFlag("head", str, "keypoints ResNet head: pool (global pooling + linear) or integral (heatmaps read out by their expectation)",
                 "pool", choices=("pool", "integral")),
    )
    input_size: ClassVar[int] = 96
    #: Loss weight per point (:func:`parse_point_weights`; None: all 1).
    keypoint_weights: str | None = None

    def labels(self, fmt) -> list[str]:
        return list(fmt.schema.names)

    def point_weights(self, names: list[str]) -> np.ndarray | None:
        """This task's loss weight per point of ``names`` (None: all equal); bad specs fail loudly."""
        return parse_point_weights(self.keypoint_weights, names)

    def data_meta(self, label_batches: Iterable[dict[str, np.ndarray]], source: str, split: str) -> dict[str, Any]:
        """``mean_shape``: each keypoint's mean in input pixels (the box-only baseline; None where never labelled)."""
        s = n = 0.0
        for b in label_batches:
            kp = np.asarray(b["keypoints"], np.float64)
            s, n = s + np.nansum(kp, axis=0), n + np.isfinite(kp).sum(axis=0)
        if not np.any(n):
            # Masked MSE over no labels is 0: training would report a perfect "RMSE 0.00 px".
            raise ValueError(f"{source}: no labelled keypoint in the {split} split, nothing to learn from")
        mean = np.round(s / np.maximum(n, 1), 3)
        return {"mean_shape": [[float(v) if c else None for v, c in zip(m, k)] for m, k in zip(mean, np.asarray(n) > 0)]}

    def flip_permutation(self, labels: list[str]) -> list[int]:
        from facepipe.data.schema import KeypointSchema

        return KeypointSchema.from_names(labels).flip_permutation.tolist()

    def decode(self, out: torch.Tensor, meta: dict) -> torch.Tensor:
        """Normalised coordinates → pixels of the model input ``[N, K, 2]``."""
        return to_pixels(out.float().reshape(len(out), -1, 2), meta["input_size"])

    def unflip(self, decoded: torch.Tensor, meta: dict, permutation: torch.Tensor | None) -> torch.Tensor:
        """Points of the mirrored image: swap left/right names, mirror x back."""
        back = decoded[:, permutation].clone()
        back[..., 0] = (meta["input_size"] - 1) - back[..., 0]
        return back

    def untranslate(self, decoded: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
        """Points of the moved content, moved back."""
        if not (dx or dy):
            return decoded
        return decoded - decoded.new_tensor([dx, dy])

    def output_shape(self, meta: dict) -> tuple[int, ...]:
        return (len(meta[self.label_key]), 2)

    def loss(self, out: torch.Tensor, batch: dict, meta: dict, train: bool = True) -> torch.Tensor:
        import torch

        target = to_normalised(batch["keypoints"].float(), meta["input_size"])
        w = self.point_weights(meta[self.label_key]) if train else None
        return masked_mse(out.float(), target, batch["mask"], None if w is None else torch.from_numpy(w))

    def metric_sums(self, out: torch.Tensor, batch: dict, meta: dict) -> dict[str, torch.Tensor]:
        return self.sums_from_predictions(self.decode(out, meta), batch)

    def sums_from_predictions(self, pred: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Sums from keypoints in input pixels [N, K, 2] (after any test-time augmentation)."""
        import torch

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

    def summary(self, metrics: dict) -> str:
        return f"RMSE {metrics['rmse_px']:.2f} px"

    def report(self, pred: np.ndarray, table, meta: dict, out: Path, show: np.ndarray, plots) -> tuple[dict, str]:
        import torch

        batch = {"keypoints": torch.as_tensor(table.keypoints), "mask": torch.as_tensor(table.mask)}
        sums = {k: v.numpy() for k, v in self.sums_from_predictions(torch.as_tensor(pred), batch).items()}
        res = self.finalize(sums, meta)
        if res["rmse_px"] is None:
            raise ValueError(f"{table.path}: no labelled keypoint to measure an error on")
        rows = [{"keypoint": k, "rmse_px": v, "present": int(c)} for (k, v), c in zip(res["per_keypoint_rmse_px"].items(), sums["count"])]
        write_csv(out / "per_keypoint_rmse.csv", rows)
        plots.per_keypoint_rmse({k: v for k, v in res["per_keypoint_rmse_px"].items() if v is not None}, out / "per_keypoint_rmse.png", overall=res["rmse_px"])
        plots.image_grid(table.images[show], out / "keypoint_predictions.png", keypoints=pred[show], true_keypoints=table.keypoints[show],
                         suptitle=f"predicted (red x) vs true (green) — RMSE {res['rmse_px']:.2f} px")
        metrics = {"task": self.name, "rmse_px": res["rmse_px"], "per_keypoint_rmse_px": res["per_keypoint_rmse_px"]}
        return metrics, f"RMSE {res['rmse_px']:.3f} px"


@dataclass(frozen=True)
class EmotionTask(Task):
    """Emotion classification: cross-entropy (label smoothing in training); accuracy and confusion matrix."""

    name: ClassVar[str] = "emotion"
    label_key: ClassVar[str] = LABEL_FIELDS["emotion"]
    label_columns: ClassVar[tuple[str, ...]] = ("label",)
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"epochs": 40, "batch_size": 128, "lr": 3e-3, "weight_decay": 5e-4}
    # 1.2M parameters; 32 channels at full 48 px resolution keeps it ~4x cheaper than 64.
    # No dropout inside the blocks by default: with it, FER2013 underfit within a 60-minute CPU
    # budget (train loss stayed above validation loss for all 13 epochs; RESULTS.md).
    arch: ClassVar[str] = "vgg_cnn"
    arch_args: ClassVar[dict[str, Any]] = {"widths": [32, 64, 128, 256], "convs_per_block": 2, "dropout": 0.3, "block_dropout": 0.0}
    arch_flags: ClassVar[tuple[ArchFlag, ...]] = (
        ArchFlag("widths", int, "emotion CNN channels per block", arch_args["widths"], nargs="+"),
        ArchFlag("convs_per_block", int, "emotion CNN convs per block", arch_args["convs_per_block"]),
        ArchFlag("dropout", float, "emotion CNN dropout before the head", arch_args["dropout"]),
        ArchFlag("block_dropout", float, "emotion CNN channel dropout after each block", arch_args["block_dropout"]),
    )
    input_size: ClassVar[int] = 48
    #: Cross-entropy label smoothing during training (evaluation loss uses none).
    label_smoothing: float = 0.1

    def labels(self, fmt) -> list[str]:
        from facepipe.data.schema import EMOTIONS

        return list(EMOTIONS)

    def decode(self, out: torch.Tensor, meta: dict) -> torch.Tensor:
        """Logits → class probabilities ``[N, C]``."""
        import torch

        return torch.softmax(out.float(), dim=1)

    def average(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The log of the members' mean class probabilities, so :meth:`decode` gives that mean."""
        import math

        import torch

        logp = torch.stack([o.float().log_softmax(dim=1) for o in outputs])
        return logp.logsumexp(0) - math.log(len(outputs))

    def output_shape(self, meta: dict) -> tuple[int, ...]:
        return (len(meta[self.label_key]),)

    def agreement(self, out: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """KL(others' mean class probabilities || this member's)."""
        import torch.nn.functional as F

        return F.kl_div(out.float().log_softmax(dim=1), others.float(), log_target=True, reduction="batchmean")

    def loss(self, out: torch.Tensor, batch: dict, meta: dict, train: bool = True) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), batch["label"].long(), label_smoothing=self.label_smoothing if train else 0.0)

    def metric_sums(self, out: torch.Tensor, batch: dict, meta: dict) -> dict[str, torch.Tensor]:
        return self.sums_from_predictions(out, batch)

    def sums_from_predictions(self, scores: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Sums from class scores or probabilities [N, C]."""
        import torch

        k = scores.shape[1]
        y = batch["label"].long()
        pred = scores.argmax(1)
        cm = torch.bincount(y * k + pred, minlength=k * k).double()
        return {"confusion": cm, "n": torch.tensor([float(len(y))], dtype=torch.float64)}

    def finalize(self, sums: dict[str, np.ndarray], meta: dict) -> dict:
        k = len(meta["class_names"])
        cm = sums["confusion"].reshape(k, k).astype(np.int64)
        return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "confusion_matrix": cm.tolist(), "images": int(cm.sum())}

    def summary(self, metrics: dict) -> str:
        return f"accuracy {metrics['accuracy']:.3f}"

    def report(self, pred: np.ndarray, table, meta: dict, out: Path, show: np.ndarray, plots) -> tuple[dict, str]:
        import torch

        classes = meta["class_names"]
        sums = {k: v.numpy() for k, v in self.sums_from_predictions(torch.as_tensor(pred), {"label": torch.as_tensor(table.labels)}).items()}
        res = self.finalize(sums, meta)
        cm = np.asarray(res["confusion_matrix"])
        report = classification_report(cm, classes)
        metrics = {
            "task": self.name,
            "accuracy": res["accuracy"],
            "confusion_matrix": cm.tolist(),
            "confusion_matrix_normalized": np.round(cm / np.maximum(cm.sum(1, keepdims=True), 1), 4).tolist(),
            "classification_report": report,
        }
        write_csv(out / "classification_report.csv", report)
        plots.confusion_matrix(cm, out / "confusion_matrix.png", classes, normalize=True)
        plots.confusion_matrix(cm, out / "confusion_matrix_counts.png", classes, normalize=False)
        p = pred[show].argmax(1)
        t = table.labels[show]
        plots.image_grid(table.images[show], out / "emotion_predictions.png",
                         titles=[f"{classes[a]} ({pred[i].max():.2f})\ntrue: {classes[b]}" for i, a, b in zip(show, p, t)],
                         title_colors=["green" if a == b else "red" for a, b in zip(p, t)],
                         suptitle=f"predicted vs true — accuracy {res['accuracy']:.3f}")
        return metrics, f"accuracy {res['accuracy']:.4f}"


#: The task registry: name → task object with its defaults.
TASKS: dict[str, Task] = {t.name: t for t in (KeypointsTask(), EmotionTask())}


def get_task(name: str, **options) -> Task:
    """The task object by name, with ``options`` it has a field for (e.g. ``label_smoothing``); unknown names fail loudly."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name].configure(options)


def add_sums(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if a is None:
        return {k: v.detach().clone() for k, v in b.items()}
    return {k: a[k] + b[k].detach() for k in a}
