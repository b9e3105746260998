"""`ray job submit` entry point of `facepipe train` (train the keypoints ResNet and/or the emotion CNN on Ray Train).

The code and the parser are in facepipe/cli/train.py; `python jobs/train.py --help` lists every flag.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.train import get_args_parser, main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run())
