"""Train the keypoints ResNet and/or the emotion CNN on Ray Train.

Runs on an embedded local Ray by default, or on the cluster in RAY_ADDRESS (``ray job submit``).
With no --data it trains on generated data (written once under OUTPUT/data). For each task it
writes OUTPUT/<task>/model (weights.pt + meta.json: all that inference needs), history.json,
training_curves.png and, unless --no-evaluate, OUTPUT/<task>/eval (metrics.json, reports, plots).
Checkpoints go to --storage-path/<name>; rerun with --resume to continue an interrupted run.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.train import get_args_parser, main, run  # noqa: E402,F401  (one parser, shared with the facepipe command)

if __name__ == "__main__":
    sys.exit(run())
