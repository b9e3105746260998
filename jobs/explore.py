"""Explore a Kaggle CSV (FER2013 or Facial Keypoints): plots and summary.json.

Writes to --output: summary.json (rows per split/class, missing keypoints, image size, skipped
rows), class_distribution.png (FER2013), samples.png (a grid of images with their keypoints
drawn and labelled, or their emotion), missing_keypoints.png (keypoints), pixel_histogram.png.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.explore import get_args_parser, main, run  # noqa: E402,F401  (one parser, shared with the facepipe command)

if __name__ == "__main__":
    sys.exit(run())
