"""Explore a Kaggle CSV (FER2013 or Facial Keypoints): plots and summary.json.

Writes to --output: summary.json (rows per split/class, missing keypoints, image size, skipped
rows), class_distribution.png (FER2013), samples.png (a grid of images with their keypoints
drawn and labelled, or their emotion), missing_keypoints.png (keypoints), pixel_histogram.png.
"""
from __future__ import annotations

import argparse
import sys

from facepipe.data import CSVFormatError
from facepipe.cli import run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a FER2013 or Facial Keypoints CSV (.csv, .csv.gz or a Kaggle .zip)")
    p.add_argument("--output", required=True, help="folder for the plots and summary.json")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (listed in summary.json) instead of failing")
    p.add_argument("--samples", type=int, default=24, help="images in the sample grid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which rows the sample grid shows (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> dict:
    from facepipe.explore import explore

    return explore(args.data, args.output, skip_bad_rows=args.skip_bad_rows, samples=args.samples, seed=args.seed)


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("explore", get_args_parser, main, argv, prog, errors=(CSVFormatError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(run())
