"""`ray job submit` entry point of `facepipe demo` (the main job end to end on the embedded default (what `make demo` runs; no download, no ../shared)).

The code and the parser are in facepipe/cli/demo.py; `python jobs/demo.py --help` lists every flag.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.demo import get_args_parser, main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run())
