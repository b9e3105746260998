"""Combine trained model directories of one task into one model directory that averages them.

The members run on the same input crop and their outputs are averaged (class probabilities for
emotion, coordinates for keypoints); inference costs the sum of the members'. The members must
share labels, input size, normalisation and framing (models trained on the same data with the
same --input-size and framing do). The result loads, evaluates and annotates like any model.
"""
from __future__ import annotations

import argparse
import sys

from facepipe.cli import run_main
from facepipe.model_dir import WEIGHTS_DTYPES


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+", metavar="MODEL", help="model directories written by `facepipe train` (2 or more)")
    p.add_argument("--output", required=True, help="the new model directory")
    p.add_argument("--weights-dtype", choices=WEIGHTS_DTYPES, default=None,
                   help="store the weights in this type (default: the first member's)")
    return p


def main(args: argparse.Namespace) -> int:
    from facepipe.models import save_ensemble

    out = save_ensemble(args.members, args.output, dtype=args.weights_dtype)
    print(f"ensemble: {len(args.members)} members -> {out}")
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("ensemble", get_args_parser, main, argv, prog, errors={FileNotFoundError: 2, ValueError: 2})


if __name__ == "__main__":
    sys.exit(run())
