"""Exploration of a Kaggle CSV: summary statistics plus the plots people look at first."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facepipe import plots, storage
from facepipe.data import EMOTIONS, read_table
from facepipe.data.stats import summarize
from facepipe.logs import get_logger

log = get_logger(__name__)


def explore(data: str | os.PathLike, output: str | os.PathLike, skip_bad_rows: bool = False, samples: int = 24, seed: int = 0) -> dict:
    """Write summary.json, class_distribution.png (FER2013), samples.png, missing_keypoints.png
    (keypoints) and pixel_histogram.png to ``output``; return the summary."""
    table = read_table(data, skip_bad_rows=skip_bad_rows)
    with storage.staged_output(output, prefix="facepipe-explore-") as staging:
        summary = _write(table, Path(staging), samples, seed)
    skipped = f", {summary['skipped_rows']} bad rows skipped" if summary["skipped_rows"] else ""
    log.info(f"explore: {summary['rows']} rows of {summary['format']} from {data}{skipped} -> {output}")
    return summary


def _write(table, out: Path, samples: int, seed: int) -> dict:
    """The plots and summary.json of ``table`` in ``out``; the summary."""
    summary = summarize(table)
    idx = np.random.default_rng(seed).choice(len(table), size=min(samples, len(table)), replace=False)
    written = []
    if "label" in table.columns:
        written.append(plots.class_distribution(summary["class_counts"], out / "class_distribution.png"))
        written.append(plots.image_grid(table.images[idx], out / "samples.png", titles=[EMOTIONS[i] for i in table.labels[idx]]))
    elif "keypoints" in table.columns:
        written.append(plots.image_grid(table.images[idx], out / "samples.png", keypoints=table.keypoints[idx], point_names=table.schema.names))
        written.append(plots.missing_keypoints(summary["missing_per_keypoint"], len(table), out / "missing_keypoints.png"))
    else:
        written.append(plots.image_grid(table.images[idx], out / "samples.png"))
    written.append(plots.pixel_histogram(table.images, out / "pixel_histogram.png"))
    summary["plots"] = [p.name for p in written]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
