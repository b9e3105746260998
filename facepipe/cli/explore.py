"""Explore a Kaggle CSV (FER2013 or Facial Keypoints): plots and summary.json.

Writes to --output: summary.json (rows per split/class, missing keypoints, image size, skipped
rows), class_distribution.png (FER2013), samples.png (a grid of images with their keypoints
drawn and labelled, or their emotion), missing_keypoints.png (keypoints), pixel_histogram.png.
"""
from __future__ import annotations

import argparse
import sys

from facepipe.data import CSVFormatError


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


def _parse(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = get_args_parser()
    parser.prog = prog or parser.prog
    return parser.parse_args(argv)


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; 1 with a one-line reason on bad input."""
    try:
        main(_parse(argv, prog))
    except (CSVFormatError, FileNotFoundError) as e:
        print(f"explore: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
