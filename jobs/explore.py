"""`ray job submit` entry point of `facepipe explore` (explore a Kaggle CSV (FER2013 or Facial Keypoints): plots and summary.json).

The code and the parser are in facepipe/cli/explore.py; `python jobs/explore.py --help` lists every flag.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.explore import get_args_parser, main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run())
