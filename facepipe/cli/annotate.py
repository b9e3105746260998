"""Annotate image folders: faces, keypoints and emotions into Parquet, with plots and summary.json.

Every file under the inputs gets rows in OUT/annotations/*.parquet: one per detected face
(status ok) or one for an image without a face (no_face) or that cannot be read (error).
Reruns annotate only new or changed files (same content and models are skipped); a killed run
loses nothing already committed and its rerun finishes the rest without duplicates.

Output: OUT/annotations/part-*.parquet (schema: facepipe/annotate/schema.py), OUT/plots/<input
folder name>/<path>.jpg (annotated copies), OUT/summary_*.png, OUT/summary.json.

Faces are found by --detector (haar, the default, or mtcnn), each with its own settings below.
Starts a local Ray unless RAY_ADDRESS is set (e.g. under `ray job submit --working-dir .`).
Inputs and OUT may be object-store URIs (s3://bucket/prefix, gs://...; credentials and endpoint
from the usual AWS_* / cloud variables or roles).
Exit codes: 0 done (also when no face was found anywhere), 2 bad arguments or inputs, or a store
that cannot be listed or refuses a write (one-line reason on stderr; committed parts are kept),
3 another run is writing to OUT, 4 OUT's disk is full (committed parts are
kept; free space and rerun), 5 done, but a folder could not be listed (named on stderr and in
summary.json's unreadable_folders; its files have no rows), 1 unexpected failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from facepipe.annotate.config import AnnotateConfig, AnnotateError
from facepipe.cli import run_main
from facepipe.faces.detect import DEFAULT_DETECTOR, DETECTORS, DetectorConfig, detector_config
from facepipe.flags import add_config_flags, config_kwargs, per_name_default

#: Exit code of a run that annotated what it could list but found a folder it could not list.
UNLISTED_EXIT = 5

#: The settings every detector has (one flag each, whichever detector runs).
SHARED_DETECTOR_FIELDS = tuple(f.name for f in dataclasses.fields(DetectorConfig))
#: :class:`AnnotateConfig` flags by ``--help`` group, in their order there (``verbose`` and
#: ``local`` are --quiet and --local/--ray).
MAIN_FLAGS = ("tasks", "landmarks", "recursive", "glob", "include_hidden", "batch_size", "concurrency", "plots", "plot_samples", "limit", "progress")
CROP_FLAGS = ("margin", "refine")
VIDEO_FLAGS = ("fps", "max_frames", "segment_seconds")
EXECUTION_FLAGS = ("device", "num_cpus", "files_per_task", "prepare_num_cpus", "infer_num_cpus", "torch_threads", "part_images", "part_seconds")


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _own_fields(cls: type[DetectorConfig]) -> list[dataclasses.Field]:
    """A detector config's flag fields beyond the shared ones."""
    return [f for f in dataclasses.fields(cls) if f.name not in SHARED_DETECTOR_FIELDS and "help" in f.metadata]


def _add_detector_flags(p: argparse.ArgumentParser) -> None:
    det = p.add_argument_group("face detection and crops")
    det.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR,
                     help="; ".join(f"{n}: {c.summary}" for n, c in DETECTORS.items()) + f" (default: {DEFAULT_DETECTOR})")
    # A shared setting whose default differs between detectors shows each; not given, the detector's own applies.
    per_detector = {f: {n: getattr(c.Config(), f) for n, c in DETECTORS.items()} for f in SHARED_DETECTOR_FIELDS}
    differ = {f: v for f, v in per_detector.items() if len(set(v.values())) > 1}
    add_config_flags(det, DetectorConfig, defaults={f: None for f in differ},
                     default_text={f: per_name_default(v) for f, v in differ.items()})
    add_config_flags(det, AnnotateConfig, only=CROP_FLAGS)
    for name, cls in DETECTORS.items():
        add_config_flags(p.add_argument_group(f"{name} detector (--detector {name})"), cls.Config, exclude=SHARED_DETECTOR_FIELDS)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="image files and/or folders (a file is taken whatever its name; a folder by --glob)")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder (created; reused by reruns)")
    p.add_argument("--keypoints-model", default=None, metavar="MODEL_DIR",
                   help="keypoint model directory (weights.pt + meta.json) (default: the model shipped in facepipe/weights/keypoints, or landmarks68 with --landmarks 68)")
    p.add_argument("--emotion-model", default=None, metavar="MODEL_DIR",
                   help="emotion model directory (weights.pt + meta.json) (default: the model shipped in facepipe/weights/emotion)")
    add_config_flags(p, AnnotateConfig, only=MAIN_FLAGS)
    p.add_argument("--quiet", action="store_true", help="no progress lines, only errors (default: progress lines and a one-line summary)")
    _add_detector_flags(p)
    add_config_flags(p.add_argument_group("video files (MP4, MOV, MKV, WebM, AVI; recognised by content)"), AnnotateConfig, only=VIDEO_FLAGS)
    run = p.add_argument_group("execution")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--local", dest="local", action="store_true", default=None,
                       help="run in this process, without Ray (default: so when at most 200 new files and no RAY_ADDRESS)")
    where.add_argument("--ray", dest="local", action="store_false", help="run on Ray even for a few files (default: above 200 new files, or with RAY_ADDRESS)")
    add_config_flags(run, AnnotateConfig, only=EXECUTION_FLAGS)
    return p


def detector_from_args(args: argparse.Namespace) -> DetectorConfig:
    """The detector config the flags ask for; ValueError for another detector's flag."""
    for name, cls in DETECTORS.items():
        if name == args.detector:
            continue
        for f in _own_fields(cls.Config):
            value = getattr(args, f.name)
            if (list(value) if isinstance(value, (list, tuple)) else value) != (list(f.default) if isinstance(f.default, tuple) else f.default):
                raise ValueError(f"{_flag(f)} is a setting of --detector {name}, and this run uses --detector {args.detector}")
    cls = DETECTORS[args.detector].Config
    shared = {k: v for k, v in config_kwargs(args, DetectorConfig).items() if v is not None}
    return detector_config(args.detector, **shared, **config_kwargs(args, cls, exclude=SHARED_DETECTOR_FIELDS))


def main(args: argparse.Namespace) -> int:
    from facepipe.annotate.job import annotate

    try:
        detector = detector_from_args(args)
        config = AnnotateConfig(**config_kwargs(args, AnnotateConfig), verbose=not args.quiet, local=args.local)
    except (ValueError, TypeError) as e:  # bad flag values: the same exit as any bad argument
        raise AnnotateError(str(e)) from None
    from facepipe.logs import native_lines_aside

    with native_lines_aside(not args.progress, "annotate"):
        summary = annotate(args.input, args.output, args.keypoints_model, args.emotion_model, config, detector=detector)
    unreadable = summary["run"].get("unreadable_folders") or []
    if unreadable:
        print(f"annotate: {len(unreadable)} folder(s) could not be listed (named above): their files have no rows", file=sys.stderr)
        return UNLISTED_EXIT
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    from facepipe.annotate.writer import OutputFull, OutputLocked
    from facepipe.storage import StorageError

    return run_main("annotate", get_args_parser, main, argv, prog, errors={AnnotateError: 2, StorageError: 2, OutputLocked: 3, OutputFull: 4})


if __name__ == "__main__":
    sys.exit(run())
