"""What defines a training run (:class:`TrainConfig`, the ``facepipe train`` flags) and what it
returns, without torch or Ray: the CLI builds its parser from these (``train --help`` in well
under a second) and :mod:`facepipe.train` runs them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from facepipe.augment import AugmentConfig
from facepipe.data.kaggle import FER_FRAME_MARGIN
from facepipe.model_dir import WEIGHTS_DTYPES
from facepipe.tasks import Task, get_task

__all__ = ["TrainConfig", "TrainingFailed", "TrainResult"]


def _flag(help: str, **extra) -> dict:
    """Field metadata that makes a :class:`TrainConfig` field a ``train`` flag (:mod:`facepipe.flags`)."""
    return {"help": help, **extra}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint and in meta.json).

    Fields with help metadata are the ``facepipe train`` flags; None means the task's default.
    """

    task: str
    data: str
    output: str
    epochs: int | None = field(default=None, metadata=_flag("epochs"))
    batch_size: int | None = field(default=None, metadata=_flag("batch size per worker"))
    lr: float | None = field(default=None, metadata=_flag("peak learning rate of the OneCycle schedule"))
    weight_decay: float | None = field(default=None, metadata=_flag("AdamW weight decay"))
    #: Emotion cross-entropy label smoothing (None: the task's default).
    label_smoothing: float | None = field(default=None, metadata=_flag("cross-entropy label smoothing (emotion)"))
    keypoint_weights: str | None = field(default=None, metadata=_flag(
        "keypoints: training-loss weight per point, NAME=W or FIRST..LAST=W (in the labels' order), comma-separated; "
        "others 1 (e.g. p00..p16=0.3: the 68-point jaw line, whose labels are vaguest)", default_text="all 1"))
    arch: str | None = field(default=None, metadata=_flag("network architecture (facepipe.models.ARCHS)"))
    arch_args: dict | None = None
    members: int = field(default=1, metadata=_flag(
        "networks of --arch trained together on the same batches and exported as one ensemble (arch: ensemble)"))
    mutual: float = field(default=0.0, metadata=_flag(
        "deep mutual learning: weight of each member's loss towards the others' mean prediction (emotion; needs --members >= 2)"))
    ema: float = field(default=0.0, metadata=_flag(
        "decay of an exponential moving average of the weights, updated every step; validation, the best epoch and the "
        "exported model use the average (0: off; 0.999 averages the last ~1,000 steps)"))
    augment: dict = field(default_factory=dict)
    num_workers: int = field(default=1, metadata=_flag("Train workers (data-parallel, DDP)"))
    cpus_per_worker: float | None = field(default=None, metadata=_flag(
        "CPUs reserved per worker", default_text="up to 1, leaving 0.5 CPU for Ray Data tasks"))
    threads_per_worker: int | None = field(default=None, metadata=_flag("torch threads per worker", default_text="the node's cores / workers"))
    use_gpu: bool = field(default=False, metadata=_flag("one GPU per worker (DDP via prepare_model)"))
    amp: bool = field(default=True, metadata=_flag(
        "train in fp32 only (default: bf16 mixed precision where the GPU or CPU computes bf16 natively: CUDA, AVX512-BF16, AMX)"))
    resume: bool = field(default=False, metadata=_flag("continue the run with this name from its last checkpoint"))
    storage_path: str | None = field(default=None, metadata=_flag(
        "where checkpoints go: local path or URI (s3://, gs://); multi-node needs shared storage", default_text="OUTPUT/ray_results"))
    name: str | None = field(default=None, metadata=_flag("run name", default_text="the task"))
    val_fraction: float = field(default=0.1, metadata=_flag("keypoints: seeded hold-out fraction (FER2013 uses Usage)"))
    train_fraction: float = field(default=1.0, metadata=_flag(
        "train on this seeded fraction of the training split (whole people for photo labels), for learning curves; "
        "the validation split does not change"))
    train_split: str | None = None
    val_split: str | None = None
    seed: int = field(default=0, metadata=_flag("seed for splits, augmentation and initialisation"))
    skip_bad_rows: bool = field(default=False, metadata=_flag("skip malformed CSV rows (counted and listed) instead of failing"))
    max_failures: int = field(default=0, metadata=_flag("worker failures to recover from (from the last checkpoint)"))
    stop_after_epoch: int | None = field(default=None, metadata=_flag(
        "stop after this epoch, as an interruption would (resume later with --resume)", default_text="run all epochs"))
    images: str | None = field(default=None, metadata=_flag(
        "photo labels: the folder their image names are relative to", default_text="the CSV's folder"))
    input_size: int | None = field(default=None, metadata=_flag(
        "photo labels: side of the square crop the model sees, recorded in meta.json (annotation crops faces to it)",
        default_text="96"))
    margin: float | None = field(default=None, metadata=_flag(
        "crop margin around the detector's box at annotation, as a fraction of its side, recorded in meta.json",
        default_text=f"photo labels 0.15, annotation's; FER2013 {FER_FRAME_MARGIN}, which reproduces FER's framing"))
    weights_dtype: str | None = field(default=None, metadata=_flag(
        "store the exported weights in this type (float16 halves the file, int8 quarters it: per-channel scales)",
        choices=list(WEIGHTS_DTYPES), default_text="float32"))

    def __post_init__(self) -> None:
        task = get_task(self.task)  # unknown names fail here
        for k, v in task.defaults.items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        self.arch = self.arch or task.arch
        self.arch_args = dict(task.arch_args if self.arch_args is None else self.arch_args)
        if self.label_smoothing is None:
            self.label_smoothing = getattr(task, "label_smoothing", None)
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.members < 1 or self.mutual < 0:
            raise ValueError(f"members must be >= 1 and mutual >= 0, got members {self.members}, mutual {self.mutual}")
        if self.mutual and self.members < 2:
            raise ValueError("mutual learning needs --members 2 or more")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is a decay and must be in [0, 1), got {self.ema}")
        if self.keypoint_weights and not hasattr(task, "point_weights"):
            raise ValueError(f"--keypoint-weights weighs keypoints; the {self.task} task has none")
        if self.mutual and type(task).agreement is Task.agreement:
            raise ValueError(f"mutual learning is not defined for the {self.task} task")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        self.name = self.name or self.task
        self.storage_path = self.storage_path or str(Path(self.output) / "ray_results")
        if "://" not in self.storage_path:
            self.storage_path = str(Path(self.storage_path).resolve())
        aug = AugmentConfig.from_dict({**asdict(AugmentConfig.for_task(self.task)), **self.augment})  # validate early
        if aug.crop and task.name != "emotion":
            # Keypoint targets are normalised by the model's input side, which a crop would change.
            raise ValueError(f"a random training crop (--crop) is for the emotion task only, not {self.task}")
        if aug.crop >= task.input_size:
            raise ValueError(f"--crop {aug.crop} must be smaller than the {task.input_size}-px input (0: no crop)")
        if self.input_size is not None and not 32 <= self.input_size <= 512:
            raise ValueError(f"input_size must be between 32 and 512 pixels, got {self.input_size}")
        if self.weights_dtype is not None and self.weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {self.weights_dtype!r}")


class TrainingFailed(RuntimeError):
    """Training stopped on worker or node failures beyond ``max_failures``; resumable with ``resume``."""


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict]
    metrics: dict
    run_path: str
