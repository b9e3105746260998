"""Evaluate a model directory on a split of any CSV of its format: metrics, reports and plots.

Keypoints: RMSE in pixels of the model input (96x96 for Kaggle), overall and per keypoint.
Emotion: accuracy, confusion matrix (counts and row-normalised), classification report
(precision, recall, F1, support per class, macro and weighted averages).
Writes ``metrics.json``, ``per_keypoint_rmse.csv`` or ``classification_report.csv`` and PNGs.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from facepipe import models, plots, storage
from facepipe.data.kaggle import FER, PHOTO_POINTS, FaceTable, detect_format, read_table
from facepipe.data.ray_datasets import FER_VAL, assign_splits
from facepipe.predictor import Predictor
from facepipe.tasks import classification_report  # noqa: F401  (re-exported)
from facepipe.logs import get_logger

log = get_logger(__name__)


def select_split(table, meta: dict, split: str | None) -> tuple[np.ndarray, str]:
    """Row mask and name of the split to evaluate.

    FER2013: a ``Usage`` value (default PublicTest, or all rows if the file has no such rows).
    Keypoints: ``val``/``train`` reproduce the training run's seeded split; ``all`` takes every row.
    """
    n = len(table)
    if split == "all":
        return np.ones(n, bool), "all"
    if table.format.name == FER:
        usage = table.columns.get("usage")
        if usage is None:
            if split:
                raise ValueError(f"{table.path} has no Usage column; use --split all")
            return np.ones(n, bool), "all"
        split = split or (FER_VAL if (usage == FER_VAL).any() else None)
        if split is None:
            return np.ones(n, bool), "all"
        mask = usage == split
    else:
        cfg = meta.get("train_config", {})
        # Training assigned the split over the rows before their pixels were parsed: rows whose
        # pixels were bad (and skipped) still took their place in it, so put them back first.
        pixel_bad = [b.line for b in table.skipped if b.column == table.format.pixel_column]
        raw_lines = np.sort(np.concatenate([np.asarray(table.line, np.int64), np.asarray(pixel_bad, np.int64)]))
        names = assign_splits(len(raw_lines), None, cfg.get("val_fraction", 0.1), cfg.get("seed", 0),
                              cfg.get("train_fraction", 1.0))[np.searchsorted(raw_lines, table.line)]
        split = split or "val"
        mask = names == split
    if not mask.any():
        raise ValueError(f"{table.path}: split {split!r} has no rows")
    return mask, split


def photo_split(data: str | os.PathLike, images: str | os.PathLike | None, meta: dict, split: str | None,
                skip_bad_rows: bool = False) -> tuple[FaceTable, str, dict]:
    """Crops of a photo-labels CSV's ``split`` (default ``val``: the person split training made),
    framed as annotation frames them (detector box, or the box from the labels where it found none).

    Returns the crops as a table (``image``, ``keypoints``, ``mask``, ``line``), the split's name,
    and ``extra``: points in image pixels, crop squares and how each face was framed.
    """
    from facepipe.data.photos import crop_photos, detect_batch, model_split_rows
    from facepipe.faces.framing import DEFAULT_MARGIN, face_boxes

    framing = meta.get("framing") or {}
    rows = model_split_rows(data, images, meta, skip_bad_rows=skip_bad_rows)
    split = split or "val"
    if split != "all":
        rows = rows.select(rows.split == split)
    if not len(rows):
        raise ValueError(f"{data}: split {split!r} has no rows")
    found = detect_batch({"line": rows.line, "abs_path": rows.abs_path, "points": rows.points}, framing.get("detector_config"))
    bad = found["error"] != ""
    if bad.any() and not skip_bad_rows:
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{data}, line {rows.line[i]}: {found['error'][i].split('|', 1)[1]}")
    found = {k: v[~bad] for k, v in found.items()}
    try:
        box, missed = face_boxes(found["det_box"], found["points"], framing.get("box_from_points"))
    except ValueError as e:
        raise ValueError(f"{data}: {e} (the model's meta.json has no framing.box_from_points)") from None
    crops = crop_photos({**found, "box": box}, {"margin": framing.get("margin", DEFAULT_MARGIN)}, meta["input_size"])
    table = FaceTable(str(data), detect_format(data), {"image": crops["image"], "keypoints": crops["keypoints"], "mask": crops["mask"],
                                                     "line": found["line"]}, rows.skipped, rows.raw.blank_lines)
    extra = {"points": np.asarray(found["points"], np.float64), "square": crops["square"], "detected": int((~missed).sum()),
             "framed_from_labels": int(missed.sum()), "bad_photos": int(bad.sum())}
    return table, split, extra


def _nme_metrics(pred: np.ndarray, sub, photo: dict | None, meta: dict) -> dict:
    """Interocular-normalised error (NME) of keypoint predictions ``[N, K, 2]`` made in model-crop pixels.

    Photo labels are measured in the photo's pixels (the crop mapped back); Kaggle-style crops in the
    crop's, which gives the same number when the crops are similarity-aligned, as Kaggle's are.
    Faces without both eye centres labelled have no NME and are counted apart.
    """
    from facepipe.data.photos import nme

    names = meta["keypoint_names"]
    if photo is not None:
        from facepipe.faces.crop import crop_to_image

        pred, true, pixels = crop_to_image(pred, photo["square"][:, None, :], meta["input_size"]), photo["points"], "image"
    else:
        true, pixels = np.asarray(sub.keypoints, np.float64).reshape(pred.shape), "crop"
    try:
        face_nme, point_nme = nme(pred, true, names)
    except ValueError:  # no eye centres among the points: nothing to normalise by
        return {}
    ok = np.isfinite(face_nme)
    face_nme, point_nme = face_nme[ok], point_nme[ok]
    out = {
        "nme_mean": float(np.mean(face_nme)), "nme_median": float(np.median(face_nme)), "failure_rate": float(np.mean(face_nme > 0.10)),
        "per_keypoint_nme": {k: float(v) for k, v in zip(names, np.nanmean(point_nme, axis=0))},
        "nme_pixels": pixels, "nme_faces": int(ok.sum()), "nme_faces_without_eye_centres": int((~ok).sum()),
    }
    if photo is not None:
        out["faces"] = {k: photo[k] for k in ("detected", "framed_from_labels", "bad_photos")}
    return out


def evaluate(model_dir: str | os.PathLike, data: str | os.PathLike, output: str | os.PathLike, split: str | None = None,
             tta: bool | str = True, skip_bad_rows: bool = False, batch_size: int = 256, samples: int = 24,
             images: str | os.PathLike | None = None) -> dict:
    """Evaluate a saved model on ``split`` of ``data``; write metrics, report files and plots to ``output``.

    ``data`` may be photo labels (``images``: their folder): keypoints are then also measured in
    image pixels as NME (mean point distance / distance between the eye centres).
    """
    t0 = time.perf_counter()
    predictor = Predictor.load(model_dir, device="cpu", batch_size=batch_size, tta=tta)
    meta, task = predictor.meta, predictor.task
    photo = None
    if detect_format(data).name == PHOTO_POINTS:
        if detect_format(data).task != task.name:
            raise ValueError(f"{data}: photo labels cannot evaluate a {task.name} model")
        sub, split_name, photo = photo_split(data, images, meta, split, skip_bad_rows)
        table = sub
    else:
        table = read_table(data, skip_bad_rows=skip_bad_rows)
        if table.format.task != task.name or not table.format.has_labels:
            raise ValueError(f"{data}: a {table.format.name} file cannot evaluate a {task.name} model")
        if table.format.image_size != meta["input_size"]:
            raise ValueError(f"{data}: images are {table.format.image_size} px, the model expects {meta['input_size']} px")
        mask, split_name = select_split(table, meta, split)
        sub = table.select(mask)
    pred = predictor(sub.images)
    with storage.staged_output(output, prefix="facepipe-eval-") as staging:
        metrics, headline = _report(task, pred, sub, meta, photo, Path(staging), samples)
        metrics.update({"split": split_name, "images": len(sub), "tta": predictor.tta, "model_id": models.model_id(meta), "data": str(data),
                        "skipped_rows": len(table.skipped), "seconds": round(time.perf_counter() - t0, 2)})
        (Path(staging) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info(f"[evaluate] {task.name} on {split_name} ({len(sub)} images): {headline} -> {output}")
    return metrics


def _report(task, pred, sub, meta: dict, photo, out: Path, samples: int) -> tuple[dict, str]:
    """The task's report files in ``out`` and its metrics (NME too, for photo labels)."""
    rng = np.random.default_rng(0)
    show = np.sort(rng.choice(len(sub), size=min(samples, len(sub)), replace=False))
    metrics, headline = task.report(pred, sub, meta, out, show, plots)
    if task.name == "keypoints":
        metrics.update(_nme_metrics(pred, sub, photo, meta))
        if "nme_mean" in metrics:
            headline += f", NME {metrics['nme_mean']:.4f} in {metrics['nme_pixels']} pixels"
    return metrics, headline
