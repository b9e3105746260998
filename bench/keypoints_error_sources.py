"""Benchmark: where the keypoint error on real photos comes from, framing or the model.

Two measurements on the person-disjoint dev split of ``ytf_frames`` (the split training and
``bench/keypoints_in_the_wild.py`` use):

* ``oracle``: the keypoint model on crops framed from the *labelled* points (``meta.json``
  ``box_from_points``, the framing training uses for faces the detector missed), without and with
  the training box noise. No detector error is left in the framing: what remains is the model's
  own error on these people. Compare with the job's NME from ``keypoints_in_the_wild.py``.
* ``--write-aligned DIR``: writes ``ytf15_training.csv.gz`` (the same photos as tightly aligned
  Kaggle-style 96x96 crops, row for row; checked here) split by the same people into
  ``DIR/train.csv.gz`` and ``DIR/val.csv.gz``, to train the Kaggle-crop recipe without these people
  and measure it on them (``jobs/train.py`` / ``jobs/evaluate.py``, which reports NME for crops).

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "keypoints"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", default=str(KP / "ytf_frames" / "ytf_frames_kaggle15.csv"), help="photo labels CSV (default: %(default)s)")
    p.add_argument("--images", default=str(KP / "ytf_frames" / "frames"), help="folder of the photos (default: %(default)s)")
    p.add_argument("--keypoints-model", default=None, help="keypoint model directory (default: the shipped one)")
    p.add_argument("--aligned", default=str(KP / "ytf15_training.csv.gz"), help="the photos' aligned crops, row for row (default: %(default)s)")
    p.add_argument("--write-aligned", default=None, metavar="DIR", help="write the aligned crops split by person into DIR")
    p.add_argument("--seed", type=int, default=0, help="jitter seed (default: %(default)s)")
    return p


def similarity_residual(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the mean residual (in ``b``'s pixels) of the best similarity transform ``a`` → ``b`` ``[N, K, 2]``."""
    out = np.empty(len(a))
    for i, (p, q) in enumerate(zip(a, b)):
        ok = np.isfinite(p).all(1) & np.isfinite(q).all(1)
        zp, zq = p[ok, 0] + 1j * p[ok, 1], q[ok, 0] + 1j * q[ok, 1]
        x = np.stack([zp, np.ones_like(zp)], 1)
        coef = np.linalg.lstsq(x, zq, rcond=None)[0]
        out[i] = np.abs(x @ coef - zq).mean()
    return out


def write_aligned(rows, aligned: str, out: Path) -> dict:
    """Split the aligned CSV by the photo rows' person split; refuse if its rows are not the same faces."""
    import pandas as pd

    a = pd.read_csv(aligned, dtype=str, keep_default_na=False)
    if len(a) != len(rows.raw.table):
        raise ValueError(f"{aligned}: {len(a)} rows, the photo labels {len(rows.raw.table)}: not the same faces")
    names = rows.names
    cols = [f"{n}_{c}" for n in names for c in "xy"]
    pts = a[cols].replace("", np.nan).astype(float).to_numpy().reshape(len(a), -1, 2)
    idx = rows.line - 2  # CSV line -> row (header is line 1)
    res = similarity_residual(rows.points.astype(np.float64), pts[idx])
    if not (res < 0.05).all():
        raise ValueError(f"{aligned}: rows are not the photo labels' faces in order (worst similarity residual {res.max():.2f} px)")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val"):
        part = a.iloc[idx[rows.split == split]]
        part.to_csv(out / f"{split}.csv.gz", index=False)
        counts[split] = len(part)
    return {"aligned_rows": counts, "aligned_max_residual_px": round(float(res.max()), 4), "aligned_dir": str(out)}


def main(args: argparse.Namespace) -> dict:
    import torch

    from facepipe.faces.crop import crop_to_image
    from facepipe.data.photos import crop_photos, model_split_rows, nme
    from facepipe.faces.framing import BoxModel, Framing
    from facepipe.model_dir import shipped_model
    from facepipe.predictor import Predictor

    torch.set_num_threads(1)
    model_dir = args.keypoints_model or shipped_model("keypoints")
    predictor = Predictor.load(model_dir, device="cpu")
    meta = predictor.meta
    framing = meta.get("framing", {})
    if "box_from_points" not in framing:
        raise ValueError(f"{model_dir}: meta.json has no framing.box_from_points (not trained on photo labels)")
    rows = model_split_rows(args.labels, args.images, meta)
    result = {"bench": "keypoints_error_sources", "keypoints_model": str(model_dir)}
    if args.write_aligned:
        result.update(write_aligned(rows, args.aligned, Path(args.write_aligned)))
    val = rows.select(rows.split == "val")
    pts = val.points.astype(np.float64)
    photos = np.array([Path(p).read_bytes() for p in val.abs_path], dtype=object)
    boxes = BoxModel(**framing["box_from_points"]).boxes(pts)
    noise = Framing(**framing["box_noise"])
    rng = np.random.default_rng(args.seed)
    for name, jitter in (("oracle", None), ("oracle_with_training_noise", rng)):
        c = crop_photos({"photo": photos, "box": boxes, "points": pts}, noise, meta["input_size"], rng=jitter)
        pred = predictor(c["image"])
        face, _ = nme(crop_to_image(pred, c["square"][:, None, :], meta["input_size"]), pts, val.names)
        result[name] = {"faces": int(np.isfinite(face).sum()), "nme_mean": round(float(np.nanmean(face)), 4),
                        "nme_median": round(float(np.nanmedian(face)), 4), "failure_rate": round(float(np.nanmean(face > 0.10)), 4)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
