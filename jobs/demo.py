"""The main job end to end on the embedded default (what `make demo` runs; no download, no ../shared).

1. writes generated FER2013 and keypoints CSVs (OUTPUT/data),
2. explores them (OUTPUT/explore/<task>: plots + summary.json),
3. trains both models on an embedded local Ray with Ray Train (OUTPUT/<task>/model),
4. evaluates them (OUTPUT/<task>/eval: metrics.json, reports, confusion matrix, RMSE plots),
5. annotates a small folder of generated photos plus matplotlib's real grace_hopper.jpg
   (OUTPUT/annotate: Parquet, annotated images, summary plots, summary.json),
6. annotates the same folder again with the models shipped in the package, trained on real faces
   (OUTPUT/annotate_shipped; the demo's emotion model where no emotion model ships): the demo's own
   models learnt generated faces only.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.demo import get_args_parser, main, run  # noqa: E402,F401  (one parser, shared with the facepipe command)

if __name__ == "__main__":
    sys.exit(run())
