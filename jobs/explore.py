"""Explore a Kaggle CSV (FER2013 or Facial Keypoints): plots and summary.json.

Writes to --output: summary.json (rows per split/class, missing keypoints, image size, skipped
rows), class_distribution.png (FER2013), samples.png (a grid of images with their keypoints
drawn and labelled, or their emotion), missing_keypoints.png (keypoints), pixel_histogram.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from facepipe import plots  # noqa: E402
from facepipe.data import EMOTIONS, CSVFormatError, read_table  # noqa: E402
from facepipe.data.stats import summarize  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a FER2013 or Facial Keypoints CSV (.csv or .csv.gz)")
    p.add_argument("--output", required=True, help="folder for the plots and summary.json")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (listed in summary.json) instead of failing")
    p.add_argument("--samples", type=int, default=24, help="images in the sample grid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which rows the sample grid shows (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> dict:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    table = read_table(args.data, skip_bad_rows=args.skip_bad_rows)
    summary = summarize(table)
    rng = __import__("numpy").random.default_rng(args.seed)
    idx = rng.choice(len(table), size=min(args.samples, len(table)), replace=False)
    written = []
    if "label" in table.columns:
        written.append(plots.class_distribution(summary["class_counts"], out / "class_distribution.png"))
        titles = [EMOTIONS[i] for i in table.labels[idx]]
        written.append(plots.image_grid(table.images[idx], out / "samples.png", titles=titles))
    elif "keypoints" in table.columns:
        written.append(
            plots.image_grid(table.images[idx], out / "samples.png", keypoints=table.keypoints[idx], point_names=table.schema.names)
        )
        written.append(plots.missing_keypoints(summary["missing_per_keypoint"], len(table), out / "missing_keypoints.png"))
    else:
        written.append(plots.image_grid(table.images[idx], out / "samples.png"))
    written.append(plots.pixel_histogram(table.images, out / "pixel_histogram.png"))
    summary["plots"] = [p.name for p in written]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    skipped = f", {summary['skipped_rows']} bad rows skipped" if summary["skipped_rows"] else ""
    print(f"explore: {summary['rows']} rows of {summary['format']} from {args.data}{skipped} -> {out}")
    return summary


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (CSVFormatError, FileNotFoundError) as e:
        sys.exit(f"explore: {e}")
