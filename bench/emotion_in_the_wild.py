"""Benchmark: emotion as users get it, through the real annotation job, on FER2013 faces made photos.

Each FER2013 ``PublicTest`` face becomes a photo as a user would have it (3x cubic upscale inside a
grey border: :func:`emotion_framing.make_photo`), the folder is annotated by :func:`facepipe.annotate`
(decode → detector → crop with the emotion model's framing from its meta.json → model), and the
emotion in the Parquet rows is compared with the label. ``direct_accuracy`` is the same model on the
same (detected) faces in FER2013's own 48x48 framing, no TTA, as annotation runs it: the gap between
the two is what the framing costs. A face counts as detected when the job found at least one face
in its photo (the largest is taken).

Prints progress, then one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from emotion_framing import DEFAULT, make_photo  # noqa: E402  (the same photos the framing was measured on)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT.resolve()), help="FER2013 CSV (default: %(default)s)")
    p.add_argument("--split", default="PublicTest", help="Usage value to take (default: %(default)s)")
    p.add_argument("--emotion-model", default=None, help="emotion model directory (default: the shipped one)")
    p.add_argument("--keypoints-model", default=None, help="keypoint model directory (default: the shipped one)")
    p.add_argument("--margin", type=float, default=None,
                   help="annotation --margin, for emotion models whose meta.json records no framing (default: the job's)")
    p.add_argument("--limit", type=int, default=0, help="first N faces only (0 = all) (default: %(default)s)")
    p.add_argument("--detector", default=None, help="annotation --detector, with its default settings (default: the job's, haar)")
    return p


def main(args: argparse.Namespace) -> dict:
    import cv2

    from facepipe.annotate import annotate, detector_config, read_annotations
    from facepipe.annotate.infer import default_model
    from facepipe.faces.framing import DEFAULT_MARGIN
    from facepipe.data import read_table
    from facepipe.models import model_id
    from facepipe.predictor import Predictor

    em_dir = default_model("emotion", args.emotion_model)
    kp_dir = default_model("keypoints", args.keypoints_model)
    table = read_table(args.data)
    sel = np.flatnonzero(table.usage == args.split)
    if args.limit:
        sel = sel[: args.limit]
    faces, labels = table.images[sel], table.labels[sel]
    predictor = Predictor.load(em_dir, "cpu")
    meta = predictor.meta
    classes = list(meta["class_names"])
    print(f"emotion_in_the_wild: {len(sel)} {args.split} faces, model {em_dir} (framing {meta.get('framing')})", flush=True)
    with tempfile.TemporaryDirectory(prefix="em_wild_") as tmp:
        inp = Path(tmp) / "photos"
        inp.mkdir()
        for i, face in enumerate(faces):
            cv2.imwrite(str(inp / f"{i:05d}.png"), make_photo(face))
        t0 = time.perf_counter()
        kw = {} if args.margin is None else {"margin": args.margin}
        annotate(inp, Path(tmp) / "out", kp_dir, em_dir, plots="none", verbose=False, detector=detector_config(args.detector), **kw)
        seconds = time.perf_counter() - t0
        df = read_annotations(Path(tmp) / "out", columns=["status", "bbox_w", "bbox_h", "emotion"])
    ok = df[df["status"] == "ok"].copy()
    ok["area"] = ok["bbox_w"] * ok["bbox_h"]
    largest = ok.sort_values("area").groupby("path").tail(1)
    idx = np.array([int(Path(p).stem) for p in largest["path"]], dtype=np.int64)
    job_pred = np.array([classes.index(e) for e in largest["emotion"]], dtype=np.int64)
    direct = predictor(faces[idx]).argmax(1)
    truth = labels[idx]
    result = {
        "bench": "emotion_in_the_wild",
        "split": args.split,
        "faces": len(sel),
        "detector": detector_config(args.detector).describe(),
        "detected": int(len(idx)),
        "detection_rate": round(len(idx) / max(len(sel), 1), 4),
        "job_accuracy": round(float((job_pred == truth).mean()), 4),
        "direct_accuracy": round(float((direct == truth).mean()), 4),
        "emotion_margin": (meta.get("framing") or {}).get("margin", DEFAULT_MARGIN if args.margin is None else args.margin),
        "emotion_model_id": model_id(meta),
        "annotate_seconds": round(seconds, 1),
    }
    result["gap_points"] = round(100 * (result["direct_accuracy"] - result["job_accuracy"]), 2)
    return result


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args())))
