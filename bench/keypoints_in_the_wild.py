"""Benchmark: keypoints as users get them, through the real annotation job, on labelled photos.

Takes the person-disjoint dev split of a photo-labels CSV (by default ``ytf_frames_kaggle15.csv``
in ../shared, split with the keypoint model's own ``val_fraction``/``seed``, so none of these people
were trained on), annotates those photos with :func:`facepipe.annotate` (decode → detector → crop
→ model, exactly as a user's run) and compares the keypoints in the Parquet rows with the labels.

Error: NME = mean point distance / distance between the eye centres, both in original image
pixels. A photo counts as detected when one of its faces' boxes holds the labelled face's centre
(the nearest such face is the one measured). ``failure_rate``: share of detected faces with NME >
0.10; ``nme_p90``: the 90th percentile of the faces' NME (a few near-profile faces with NME near
1 move the mean; the median and p90 show the rest). ``baseline_box_only``: the model's mean
training shape (``meta.json`` ``mean_shape``) placed in the same detected box with the same crop:
what the detector alone gives.

With ``--landmarks 68`` it measures the shipped 68-point model on ``ytf_frames_68.csv``: NME over
the 68 iBUG points, per region (``per_region_nme``: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
mouth 48-67; same interocular normalisation), and ``as_kaggle15``: the job's derived ``kp_``
columns against the 15-point labels of the same photos.

Prints progress, then one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "keypoints" / "ytf_frames"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--landmarks", type=int, choices=[15, 68], default=15,
                   help="the shipped model and labels to measure: 15 Kaggle or 68 iBUG points (default: %(default)s)")
    p.add_argument("--labels", default=None, help="photo labels CSV (default: ytf_frames_kaggle15.csv, or ytf_frames_68.csv with --landmarks 68, in ../shared)")
    p.add_argument("--images", default=str(SHARED / "frames"), help="folder of the photos (default: %(default)s)")
    p.add_argument("--keypoints-model", default=None, help="keypoint model directory (default: the shipped one)")
    p.add_argument("--emotion-model", default=None,
                   help="emotion model directory (annotation runs both; default: the shipped one, else an untrained placeholder: emotion is not measured here)")
    p.add_argument("--split", default="val", choices=["val", "train", "all"], help="which part of the person split (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=None, help="split fraction (default: the model's train_config, else 0.1)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the model's train_config, else 0)")
    p.add_argument("--limit", type=int, default=None, help="at most this many photos")
    p.add_argument("--output", default=None, help="keep the annotation output here (default: a temporary folder)")
    p.add_argument("--max-failure-nme", type=float, default=0.10, help="a face with a larger NME is a failure (default: %(default)s)")
    p.add_argument("--refine", type=int, default=None,
                   help="the job's second passes of the keypoint model (annotate --refine; default: the job's default)")
    p.add_argument("--kaggle15-labels", default=str(SHARED / "ytf_frames_kaggle15.csv"),
                   help="for an iBUG-68 model: also score its Kaggle-15 points (mapped as the labels were) against these labels "
                        "(default: %(default)s)")
    return p


def match_faces(df, rows, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each labelled photo, the annotated face holding its labelled centre (nearest box centre).

    Returns ``found`` bool ``[N]``, predicted points ``[N, K, 2]`` and boxes ``[N, 4]`` (NaN when not found).
    """
    from facepipe.annotate.schema import keypoint_columns
    from facepipe.faces.framing import match_face

    cols = [c for pair in keypoint_columns(names) for c in pair]
    ok = df[df["status"] == "ok"]
    by_path = {p: g for p, g in ok.groupby("path")}
    n, k = len(rows), len(names)
    found = np.zeros(n, bool)
    pred = np.full((n, k, 2), np.nan)
    boxes = np.full((n, 4), np.nan)
    for i, (name, pts) in enumerate(zip(rows.image, rows.points)):
        g = by_path.get(Path(name).name)
        if g is None:
            continue
        b = g[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].to_numpy(np.float64)
        j = match_face(b, pts)  # the rule training used to pick the labelled face
        if j is None:
            continue
        found[i] = True
        pred[i] = g[cols].to_numpy(np.float64)[j].reshape(k, 2)
        boxes[i] = b[j]
    return found, pred, boxes


#: iBUG-68 regions, point index ranges.
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68)}


def as_kaggle15(args: argparse.Namespace, df, rows) -> dict:
    """NME of the Kaggle-15 ``kp_`` columns the job derives from an iBUG-68 model's points against
    the 15-point labels of the same photos."""
    from facepipe.annotate.schema import derived_keypoints
    from facepipe.data.photos import nme, read_photo_rows

    labels = read_photo_rows(args.kaggle15_labels, args.images)
    found, pred, _ = match_faces(df, rows, derived_keypoints(rows.names))
    by_image = {str(name): i for i, name in enumerate(labels.image)}
    take = [by_image[str(name)] for name in rows.image[found]]
    face, point = nme(pred[found], labels.points[take].astype(np.float64), labels.names)
    return {"as_kaggle15": summarise(face, args.max_failure_nme)
            | {"per_point_nme": {n: round(float(v), 4) for n, v in zip(labels.names, np.nanmean(point, axis=0))}}}


def per_region(point_nme: np.ndarray, names: list[str]) -> dict:
    """Mean NME of each iBUG-68 region's points."""
    col = {n: i for i, n in enumerate(names)}
    return {r: round(float(np.nanmean(point_nme[:, [col[f"p{i:02d}"] for i in idx]])), 4) for r, idx in REGIONS.items()}


def summarise(nme_face: np.ndarray, threshold: float) -> dict:
    return {"nme_mean": round(float(np.mean(nme_face)), 4), "nme_median": round(float(np.median(nme_face)), 4),
            "nme_p90": round(float(np.percentile(nme_face, 90)), 4), "failure_rate": round(float(np.mean(nme_face > threshold)), 4)}


def main(args: argparse.Namespace) -> dict:
    from facepipe.annotate import annotate, read_annotations
    from facepipe.faces.crop import crop_to_image, square_crop
    from facepipe.faces.framing import DEFAULT_MARGIN
    from facepipe.data.photos import model_split_rows, nme
    from facepipe.data.schema import is_ibug68
    from facepipe.model_dir import read_meta, shipped_model

    args.labels = args.labels or str(SHARED / ("ytf_frames_68.csv" if args.landmarks == 68 else "ytf_frames_kaggle15.csv"))
    kp_model = args.keypoints_model or shipped_model("keypoints", args.landmarks)
    if kp_model is None:
        raise SystemExit("no --keypoints-model given and no shipped keypoint model in this installation")
    meta = read_meta(kp_model)
    rows = model_split_rows(args.labels, args.images, meta, val_fraction=args.val_fraction, seed=args.seed)
    if args.split != "all":
        rows = rows.select(rows.split == args.split)
    if args.limit:
        rows = rows.select(np.arange(len(rows)) < args.limit)
    names = rows.names
    if list(meta["keypoint_names"]) != names:
        raise SystemExit(f"{kp_model}: the model's points differ from the labels' ({len(meta['keypoint_names'])} vs {len(names)})")
    print(f"keypoints_in_the_wild: {len(rows)} photos of {len(set(map(str, rows.image)))} files, split {args.split} "
          f"(the model's person split{', with --val-fraction/--seed' if args.val_fraction is not None or args.seed is not None else ''}), model {kp_model}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kp_wild_") as tmp:
        inp = Path(tmp) / "photos"
        inp.mkdir()
        for name, src in zip(rows.image, rows.abs_path):
            os.symlink(src, inp / Path(name).name)
        out = Path(args.output) if args.output else Path(tmp) / "out"
        em_model = args.emotion_model or shipped_model("emotion")
        em_note = "given" if args.emotion_model else "shipped"
        if em_model is None:
            raise SystemExit("no emotion model given and none shipped: pass --emotion-model (its output is not measured here)")
        t0 = time.perf_counter()
        annotate(inp, out, kp_model, em_model, plots="none", verbose=False, **({"refine": args.refine} if args.refine is not None else {}))
        seconds = time.perf_counter() - t0
        df = read_annotations(out)

    found, pred, boxes = match_faces(df, rows, names)
    true = rows.points[found].astype(np.float64)
    face_nme, point_nme = nme(pred[found], true, names)
    margin = float((meta.get("framing") or {}).get("margin", DEFAULT_MARGIN))
    size = int(meta["input_size"])
    squares = np.array([square_crop(b, margin) for b in boxes[found]], np.float64).reshape(-1, 3)
    mean_shape = np.asarray(meta["mean_shape"], np.float64)
    base = crop_to_image(np.broadcast_to(mean_shape, (len(squares), *mean_shape.shape)), squares[:, None, :], size)
    base_nme, _ = nme(base, true, names)
    result = {
        "bench": "keypoints_in_the_wild",
        "labels": str(args.labels),
        "split": args.split,
        "images": len(rows),
        "detected": int(found.sum()),
        "detection_rate": round(float(found.mean()), 4),
        **summarise(face_nme, args.max_failure_nme),
        "failure_rate_counting_missed": round(float((np.sum(face_nme > args.max_failure_nme) + np.sum(~found)) / max(len(rows), 1)), 4),
        "baseline_box_only": summarise(base_nme, args.max_failure_nme),
        "per_point_nme": {n: round(float(v), 4) for n, v in zip(names, np.nanmean(point_nme, axis=0))},
        **({"per_region_nme": per_region(point_nme, names), "baseline_per_region_nme": per_region(nme(base, true, names)[1], names),
            **as_kaggle15(args, df, rows)} if is_ibug68(names) else {}),
        "keypoints_model": str(kp_model),
        "keypoints_model_id": str(df["keypoints_model_id"].dropna().iloc[0]) if df["keypoints_model_id"].notna().any() else None,
        "emotion_model": em_note,
        "annotate_seconds": round(seconds, 1),
    }
    return result


if __name__ == "__main__":
    res = main(get_args_parser().parse_args())
    print(json.dumps(res))
