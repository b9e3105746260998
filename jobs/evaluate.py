"""`ray job submit` entry point of `facepipe evaluate` (evaluate a saved model directory on a Kaggle CSV of its format).

The code and the parser are in facepipe/cli/evaluate.py; `python jobs/evaluate.py --help` lists every flag.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.evaluate import get_args_parser, main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run())
