"""`ray job submit` entry point of `facepipe annotate` (annotate image folders: faces, keypoints and emotions into Parquet, with plots and summary.json).

The code and the parser are in facepipe/cli/annotate.py; `python jobs/annotate.py --help` lists every flag.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.annotate import get_args_parser, main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run())
