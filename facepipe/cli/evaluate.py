"""Evaluate a saved model directory on a Kaggle CSV of its format.

Writes to --output: metrics.json; keypoints: per_keypoint_rmse.csv/.png and keypoint_predictions.png
(RMSE in pixels of the 96x96 input); emotion: classification_report.csv, confusion_matrix.png
(row-normalised), confusion_matrix_counts.png and emotion_predictions.png.
"""
from __future__ import annotations

import argparse
import sys

from facepipe.cli import run_main
from facepipe.data import CSVFormatError
from facepipe.predictor import TTA_MODES
from facepipe.tasks import TASKS


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TASKS), default=None, help="expected task, checked against the model's meta.json (default: any)")
    p.add_argument("--model", required=True, help="model directory (weights.pt + meta.json) written by jobs/train.py")
    p.add_argument("--data", required=True, help="CSV of the model's format (.csv, .csv.gz or a Kaggle .zip), or photo labels for a keypoint model (see --images)")
    p.add_argument("--images", default=None, help="photo labels: the folder their image names are relative to (default: the CSV's folder)")
    p.add_argument("--split", default=None,
                   help="FER2013: a Usage value (PublicTest, PrivateTest, Training); keypoints: val or train (the training run's seeded split, by person for photo labels); 'all' = every row (default: PublicTest / val)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--tta", choices=TTA_MODES, default="flip",
                   help="test-time augmentation: none, flip (the mirrored image averaged in) or crops (flip at the centre and shifted "
                        "5%% left/right/up/down: 10 views) (default: %(default)s)")
    p.add_argument("--no-tta", dest="tta", action="store_const", const="none", help="same as --tta none")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (counted and listed) instead of failing")
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> dict:
    from facepipe.evaluate import evaluate
    from facepipe.models import read_meta

    meta = read_meta(args.model)
    if args.task and meta["task"] != args.task:
        raise ValueError(f"{args.model} is a {meta['task']} model, not {args.task}")
    return evaluate(args.model, args.data, args.output, split=args.split, tta=args.tta,
                    skip_bad_rows=args.skip_bad_rows, batch_size=args.batch_size, images=args.images)


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("evaluate", get_args_parser, main, argv, prog, errors=(CSVFormatError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(run())
