"""Annotate image folders: faces, keypoints and emotions into Parquet, with plots and summary.json.

Every file under the inputs gets rows in OUT/annotations/*.parquet: one per detected face
(status ok) or one for an image without a face (no_face) or that cannot be read (error).
Reruns annotate only new or changed files (same content and models are skipped); a killed run
loses nothing already committed and its rerun finishes the rest without duplicates.

Output: OUT/annotations/part-*.parquet (schema: facepipe/annotate/schema.py), OUT/plots/<input
folder name>/<path> (annotated copies), OUT/summary_*.png, OUT/summary.json.

Starts a local Ray unless RAY_ADDRESS is set (e.g. under `ray job submit --working-dir .`).
Exit codes: 0 done (also when no face was found anywhere), 2 bad arguments or inputs (one-line
reason on stderr), 3 another run is writing to OUT, 1 unexpected failure.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.annotate import get_args_parser, main, run  # noqa: E402,F401  (one parser, shared with the facepipe command)

if __name__ == "__main__":
    sys.exit(run())
