"""The settings of an annotation run (:class:`AnnotateConfig`), one frozen dataclass.

Its documented fields are the flags of ``facepipe annotate`` (:mod:`facepipe.flags` reads names,
types, help and defaults from them); :func:`facepipe.annotate.annotate` takes one, or keyword
overrides of its fields. Which detector finds the faces is a config of its own
(:mod:`facepipe.faces.detect`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from facepipe.faces.framing import DEFAULT_MARGIN, DEFAULT_REFINE
from facepipe.flags import field_meta
from facepipe.model_dir import SHIPPED_LANDMARKS

__all__ = ["AnnotateConfig", "AnnotateError", "PLOT_CHOICES", "LANDMARK_CHOICES", "LOCAL_MAX_FILES", "TASK_NAMES"]

#: The models annotation can run (a subset with ``tasks``).
TASK_NAMES = ("keypoints", "emotion")
PLOT_CHOICES = ("all", "none", "sample", "video")
#: The landmark sets a model ships for (``--landmarks``).
LANDMARK_CHOICES = tuple(sorted(SHIPPED_LANDMARKS))
#: Up to this many new files, and with no Ray cluster to join, a run stays in this process: starting
#: Ray costs tens of seconds on a small machine, the in-process stages ~20-25 ms per photo on 2 cores.
LOCAL_MAX_FILES = 200


class AnnotateError(ValueError):
    """Bad arguments or inputs, found before any work starts (the CLI prints it as one line)."""


@dataclass(frozen=True)
class AnnotateConfig:
    """How a run lists, annotates, writes and draws; every field but ``verbose`` and ``local`` is a
    flag of ``facepipe annotate`` (those two are ``--quiet`` and ``--local`` / ``--ray``).

    Invalid values raise :class:`AnnotateError` on construction.
    """

    # --- what to annotate
    recursive: bool = field(default=False, metadata=field_meta("descend into sub-folders (default: top level only)"))
    glob: str = field(default="*", metadata=field_meta("file name pattern, fnmatch", default_text="*: every file, by content", metavar="PATTERN"))
    include_hidden: bool = field(default=False, metadata=field_meta("also take files and folders whose name starts with '.' (default: skipped)"))
    limit: int | None = field(default=None, metadata=field_meta("annotate at most N new files this run", default_text="no limit", metavar="N"))
    fps: float = field(default=5.0, metadata=field_meta(
        "video files: frames analysed per second of video (0: every frame); 5 follows expressions, which change over "
        "a fifth of a second or more, at a sixth of the cost of every frame of 30 fps video", metavar="F"))
    max_frames: int | None = field(default=10_000, metadata=field_meta(
        "video files: analyse at most N frames per file (the rest gets one error row saying where it stopped)",
        metavar="N"))
    segment_seconds: float = field(default=30.0, metadata=field_meta(
        "video files longer than 1.5x this are cut into segments of about S seconds, each decoded by a task of its own "
        "(on Ray, in parallel) and committed as it completes, so a killed run resumes at the first missing segment "
        "(0: decode every video whole in one task)", metavar="S"))
    # --- models and crops
    tasks: tuple[str, ...] = field(default=TASK_NAMES, metadata=field_meta(
        "the models to run: keypoints, emotion or both (a task left out gets empty columns)", choices=TASK_NAMES, metavar="TASK"))
    landmarks: int | None = field(default=None, metadata=field_meta(
        "the shipped keypoint model to run: the 15 Kaggle points, or the 68 iBUG points (its Parquet adds lm_00_x..lm_67_y and "
        "derives the 15 kp_ columns from them); with --keypoints-model, that model's point count must match",
        default_text="15", choices=LANDMARK_CHOICES, metavar="{" + ",".join(map(str, LANDMARK_CHOICES)) + "}"))
    batch_size: int = field(default=64, metadata=field_meta("faces per model forward pass", metavar="B"))
    margin: float = field(default=DEFAULT_MARGIN, metadata=field_meta(
        "crop margin around a face box, fraction of its side per edge, for models whose meta.json records no framing "
        "(a model trained on photos is cropped as it was trained)"))
    refine: int = field(default=DEFAULT_REFINE, metadata=field_meta(
        "second passes of a keypoint model trained on photos: re-crop each face around its predicted points, framed as its "
        "training framed faces from their labels, and predict again (0: one pass; models without that framing make one pass)",
        metavar="N"))
    # --- output
    plots: str = field(default="sample", metadata=field_meta(
        "annotated copies of all images, none, or a sample; video: all, and an annotated copy of each video this run "
        "annotated (its sampled frames drawn, an MP4 at their times)", choices=PLOT_CHOICES,
                                                             metavar="{" + ",".join(PLOT_CHOICES) + "}"))
    plot_samples: int = field(default=25, metadata=field_meta("images drawn with --plots sample", metavar="N"))
    part_images: int = field(default=500, metadata=field_meta("images per Parquet part file", metavar="N"))
    part_seconds: float = field(default=30.0, metadata=field_meta("commit a part at least this often, seconds", metavar="S"))
    progress: bool = field(default=False, metadata=field_meta(
        "show Ray's own output too: Ray Data progress bars, its warnings and log lines (default: the job's progress lines only)"))
    verbose: bool = True
    # --- execution
    local: bool | None = None
    concurrency: int = field(default=1, metadata=field_meta("inference actors, each loading both models once", metavar="N"))
    device: str = field(default="auto", metadata=field_meta("auto (GPU when the cluster has one), cpu or cuda"))
    num_cpus: int | None = field(default=None, metadata=field_meta("CPUs of the embedded local Ray", default_text="all; ignored with RAY_ADDRESS", metavar="N"))
    files_per_task: int = field(default=8, metadata=field_meta("files per decode/detect task", metavar="N"))
    prepare_num_cpus: float = field(default=0.5, metadata=field_meta("CPU request of a decode/detect task", metavar="CPUS"))
    infer_num_cpus: float = field(default=0.75, metadata=field_meta(
        "CPU request of an inference actor; torch threads = its whole CPUs, at least 1", metavar="CPUS"))
    torch_threads: int | None = field(default=None, metadata=field_meta(
        "torch threads per inference actor", default_text="the actor's whole CPUs, at least 1", metavar="N"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(self.tasks)))  # a list from the command line; repeats dropped
        problems = []
        if not self.tasks or any(t not in TASK_NAMES for t in self.tasks):
            problems.append(f"tasks must be among {TASK_NAMES}, got {list(self.tasks)}")
        if self.landmarks is not None and self.landmarks not in LANDMARK_CHOICES:
            problems.append(f"landmarks must be one of {LANDMARK_CHOICES}, got {self.landmarks}")
        if self.plots not in PLOT_CHOICES:
            problems.append(f"plots must be one of {PLOT_CHOICES}, got {self.plots!r}")
        if not 0 <= int(self.refine) <= 5:
            problems.append(f"refine must be within 0..5, got {self.refine}")
        for name in ("batch_size", "concurrency", "files_per_task", "part_images"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.plot_samples < 0:
            problems.append(f"plot_samples must be >= 0, got {self.plot_samples}")
        if not 0 <= self.margin <= 2:
            problems.append(f"margin must be within 0..2, got {self.margin}")
        if not self.segment_seconds >= 0:
            problems.append(f"segment_seconds must be >= 0, got {self.segment_seconds}")
        if not self.fps >= 0:
            problems.append(f"fps must be >= 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            problems.append(f"max_frames must be >= 1, got {self.max_frames}")
        if self.limit is not None and self.limit < 0:
            problems.append(f"limit must be >= 0, got {self.limit}")
        if not self.part_seconds > 0:
            problems.append(f"part_seconds must be > 0, got {self.part_seconds}")
        if not (self.prepare_num_cpus > 0 and self.infer_num_cpus > 0):
            problems.append("prepare_num_cpus and infer_num_cpus must be > 0")
        if self.num_cpus is not None and self.num_cpus < 1:
            problems.append(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.torch_threads is not None and self.torch_threads < 1:
            problems.append(f"torch_threads must be >= 1, got {self.torch_threads}")
        if problems:
            raise AnnotateError("; ".join(problems))

    def replace(self, **overrides: Any) -> "AnnotateConfig":
        """A copy with ``overrides``; TypeError naming the known fields for an unknown one."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown annotate setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides) if overrides else self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
