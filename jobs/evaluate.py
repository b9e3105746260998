"""Evaluate a saved model directory on a Kaggle CSV of its format.

Writes to --output: metrics.json; keypoints: per_keypoint_rmse.csv/.png and keypoint_predictions.png
(RMSE in pixels of the 96x96 input); emotion: classification_report.csv, confusion_matrix.png
(row-normalised), confusion_matrix_counts.png and emotion_predictions.png.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install (ray job submit --working-dir .)

from facepipe.cli.evaluate import get_args_parser, main, run  # noqa: E402,F401  (one parser, shared with the facepipe command)

if __name__ == "__main__":
    sys.exit(run())
