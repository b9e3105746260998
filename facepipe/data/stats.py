"""Dataset statistics for exploration and for the record kept beside a trained model."""
from __future__ import annotations

from collections import Counter

import numpy as np

from facepipe.data.kaggle import FER, FaceTable
from facepipe.data.schema import EMOTIONS


def summarize(table: FaceTable) -> dict:
    """Row counts per split and class, missing keypoints per point, image size and pixel statistics."""
    fmt = table.format
    imgs = table.images
    out: dict = {
        "path": table.path,
        "format": fmt.name,
        "rows": len(table),
        "image_size": [int(imgs.shape[1]), int(imgs.shape[2])],
        "pixel_mean": round(float(imgs.mean()), 3),
        "pixel_std": round(float(imgs.std()), 3),
        "skipped_rows": len(table.skipped),
        "skipped": [str(b) for b in table.skipped[:100]],
        "blank_lines": len(table.blank_lines),
    }
    if fmt.name == FER:
        usage = table.columns.get("usage")
        splits = usage if usage is not None else np.full(len(table), "all", dtype=object)
        out["rows_per_split"] = dict(sorted(Counter(splits.tolist()).items()))
        if "label" in table.columns:
            per = {}
            for split in sorted(set(splits.tolist())):
                counts = np.bincount(table.labels[splits == split], minlength=len(EMOTIONS))
                per[split] = {name: int(c) for name, c in zip(EMOTIONS, counts)}
            out["class_counts"] = per
            total = np.bincount(table.labels, minlength=len(EMOTIONS))
            out["class_counts_all"] = {name: int(c) for name, c in zip(EMOTIONS, total)}
    elif "keypoints" in table.columns:
        mask = table.mask
        out["keypoints"] = list(table.schema.names)
        out["missing_per_keypoint"] = {n: int(m) for n, m in zip(table.schema.names, (~mask).sum(axis=0))}
        out["complete_rows"] = int(mask.all(axis=1).sum())
        out["points_per_row"] = {str(k): int(v) for k, v in sorted(Counter(mask.sum(axis=1).tolist()).items())}
        kp = table.keypoints
        out["keypoint_mean"] = {n: [round(float(x), 2) for x in np.nanmean(kp[:, i], axis=0)] for i, n in enumerate(table.schema.names) if mask[:, i].any()}
    return out
