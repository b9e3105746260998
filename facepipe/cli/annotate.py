"""Annotate image folders: faces, keypoints and emotions into Parquet, with plots and summary.json.

Every file under the inputs gets rows in OUT/annotations/*.parquet: one per detected face
(status ok) or one for an image without a face (no_face) or that cannot be read (error).
Reruns annotate only new or changed files (same content and models are skipped); a killed run
loses nothing already committed and its rerun finishes the rest without duplicates.

Output: OUT/annotations/part-*.parquet (schema: facepipe/annotate/schema.py), OUT/plots/<input
folder name>/<path> (annotated copies), OUT/summary_*.png, OUT/summary.json.

Starts a local Ray unless RAY_ADDRESS is set (e.g. under `ray job submit --working-dir .`).
Exit codes: 0 done (also when no face was found anywhere), 2 bad arguments or inputs (one-line
reason on stderr), 3 another run is writing to OUT, 1 unexpected failure.
"""
from __future__ import annotations

import argparse
import sys

from facepipe.annotate.detect import DetectorConfig
from facepipe.annotate.prepare import DEFAULT_MARGIN
from facepipe.cli import run_main

_DET = DetectorConfig()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="image files and/or folders (a file is taken whatever its name; a folder by --glob)")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder (created; reused by reruns)")
    p.add_argument("--keypoints-model", default=None, metavar="MODEL_DIR",
                   help="keypoint model directory (weights.pt + meta.json) (default: the model shipped in facepipe/weights/keypoints)")
    p.add_argument("--emotion-model", default=None, metavar="MODEL_DIR",
                   help="emotion model directory (weights.pt + meta.json) (default: the model shipped in facepipe/weights/emotion)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (default: top level only)")
    p.add_argument("--glob", default="*", metavar="PATTERN", help="file name pattern, fnmatch (default: %(default)s: every file, by content)")
    p.add_argument("--include-hidden", action="store_true", help="also take files and folders whose name starts with '.' (default: skipped)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="faces per model forward pass (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="inference actors, each loading both models once (default: %(default)s)")
    p.add_argument("--plots", choices=("all", "none", "sample"), default="sample", help="annotated copies of all images, none, or a sample (default: %(default)s)")
    p.add_argument("--plot-samples", type=int, default=25, metavar="N", help="images drawn with --plots sample (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="annotate at most N new files this run (default: no limit)")
    p.add_argument("--progress", action="store_true", help="show Ray Data progress bars too (default: job progress lines only)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only errors (default: progress lines and a one-line summary)")
    det = p.add_argument_group("face detection (OpenCV Haar cascade)")
    det.add_argument("--cascade", default=_DET.cascade, help="cascade XML: a name in cv2.data.haarcascades or a path (default: %(default)s)")
    det.add_argument("--scale-factor", type=float, default=_DET.scale_factor, help="detectMultiScale scaleFactor (default: %(default)s)")
    det.add_argument("--min-neighbors", type=int, default=_DET.min_neighbors, help="detectMultiScale minNeighbors (default: %(default)s)")
    det.add_argument("--min-face", type=int, default=_DET.min_size, metavar="PX", help="smallest face, pixels of the detection image (default: %(default)s)")
    det.add_argument("--detect-max-side", type=int, default=_DET.max_side, metavar="PX", help="larger images are downscaled to this side for detection (default: %(default)s)")
    det.add_argument("--min-score", type=float, default=None, help="drop faces whose cascade level weight is lower (default: keep all)")
    det.add_argument("--max-faces", type=int, default=0, help="keep at most this many faces per image, largest first; 0 = all (default: %(default)s)")
    det.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                     help="crop margin around a face box, fraction of its side per edge, for models whose meta.json records no framing "
                          "(a model trained on photos is cropped as it was trained) (default: %(default)s)")
    run = p.add_argument_group("execution")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--local", dest="local", action="store_true", default=None,
                       help="run in this process, without Ray (default: so when at most 200 new files and no RAY_ADDRESS)")
    where.add_argument("--ray", dest="local", action="store_false", help="run on Ray even for a few files (default: above 200 new files, or with RAY_ADDRESS)")
    run.add_argument("--device", default="auto", help="auto (GPU when the cluster has one), cpu or cuda (default: %(default)s)")
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all; ignored with RAY_ADDRESS)")
    run.add_argument("--files-per-task", type=int, default=8, help="files per decode/detect task (default: %(default)s)")
    run.add_argument("--prepare-num-cpus", type=float, default=0.5, help="CPU request of a decode/detect task (default: %(default)s)")
    run.add_argument("--infer-num-cpus", type=float, default=0.75, help="CPU request of an inference actor; torch threads = its whole CPUs, at least 1 (default: %(default)s)")
    run.add_argument("--part-images", type=int, default=500, help="images per Parquet part file (default: %(default)s)")
    run.add_argument("--part-seconds", type=float, default=30.0, help="commit a part at least this often, seconds (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> int:
    from facepipe.annotate.job import AnnotateError, annotate
    from facepipe.annotate.writer import OutputLocked

    try:
        detector = DetectorConfig(
            cascade=args.cascade,
            scale_factor=args.scale_factor,
            min_neighbors=args.min_neighbors,
            min_size=args.min_face,
            max_side=args.detect_max_side,
            min_score=args.min_score,
            max_faces=args.max_faces,
        )
        if args.limit is not None and args.limit < 0:
            raise ValueError("--limit must be >= 0")
        if args.part_images < 1 or args.part_seconds <= 0 or args.plot_samples < 0:
            raise ValueError("--part-images >= 1, --part-seconds > 0 and --plot-samples >= 0 are required")
    except ValueError as e:
        print(f"annotate: error: {e}", file=sys.stderr)
        return 2
    try:
        annotate(
            args.input,
            args.output,
            args.keypoints_model,
            args.emotion_model,
            recursive=args.recursive,
            glob=args.glob,
            include_hidden=args.include_hidden,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            plots=args.plots,
            plot_samples=args.plot_samples,
            limit=args.limit,
            detector=detector,
            margin=args.margin,
            files_per_task=args.files_per_task,
            prepare_num_cpus=args.prepare_num_cpus,
            infer_num_cpus=args.infer_num_cpus,
            part_images=args.part_images,
            part_seconds=args.part_seconds,
            device=args.device,
            num_cpus=args.num_cpus,
            progress=args.progress,
            verbose=not args.quiet,
            local=args.local,
        )
    except AnnotateError as e:
        print(f"annotate: error: {e}", file=sys.stderr)
        return 2
    except OutputLocked as e:
        print(f"annotate: error: {e}", file=sys.stderr)
        return 3
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("annotate", get_args_parser, main, argv, prog, errors=())


if __name__ == "__main__":
    sys.exit(run())
