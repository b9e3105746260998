"""Keypoints and emotion for the faces in a few images or videos, in this process (no Ray), as a table or JSON.

Uses the models shipped in the package unless --keypoints-model / --emotion-model name others.
With --plot DIR each image is also written there with its faces drawn (box, keypoints, emotion),
and each video's emotion timeline per face track. A video is sampled at --fps; its faces say the
time and track, and each track gets a line: its dominant emotion and seconds per emotion.
For folders and many images, `facepipe annotate` writes Parquet incrementally instead.
Exit codes: 0 done (also when no face was found), 2 bad arguments or models.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepipe.cli import run_main
from facepipe.model_dir import SHIPPED_LANDMARKS


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="FILE", help="image or video files (recognised by content)")
    p.add_argument("--keypoints-model", default=None, metavar="MODEL_DIR", help="keypoint model directory (default: the shipped one)")
    p.add_argument("--emotion-model", default=None, metavar="MODEL_DIR", help="emotion model directory (default: the shipped one)")
    p.add_argument("--landmarks", type=int, choices=sorted(SHIPPED_LANDMARKS), default=None,
                   help="the shipped keypoint model: 15 Kaggle points or 68 iBUG points (default: 15; with --keypoints-model its count must match)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    p.add_argument("--plot", default=None, metavar="DIR", help="also write each image with its faces drawn into DIR (PNG)")
    p.add_argument("--fps", type=float, default=5.0, help="videos: frames analysed per second (0: every frame; default 5)")
    p.add_argument("--no-detect", action="store_true", help="each image is one face crop already (like FER2013 / Kaggle images)")
    return p


def _table(path: str, res: dict) -> list[str]:
    if res["status"] != "ok":
        return [f"{path}\t-\t{res['status']}" + (f": {res['error']}" if res["error"] else "")]
    lines = []
    for f in res["faces"]:
        x, y, w, h = (round(v) for v in f["bbox"])
        eyes = [f["keypoints"].get(n) for n in ("left_eye_center", "right_eye_center")]
        eyes_txt = " eyes " + " ".join(f"({px:.0f},{py:.0f})" for px, py in eyes) if all(eyes) else ""
        at = f"t={f['timestamp_s']:.2f}s track {f['track_id']} " if "track_id" in f else ""
        lines.append(f"{path}\t{f['face_index']}\t{f['emotion']} {f['confidence']:.2f}\t{at}box {x},{y} {w}x{h}{eyes_txt}")
    if res["status"] == "ok" and res.get("error"):  # a video that broke after some frames
        lines.append(f"{path}\t-\terror\t{res['error']}")
    for t in res.get("tracks", []):
        times = ", ".join(f"{e} {s:.1f} s" for e, s in t["seconds_per_emotion"].items())
        lines.append(f"{path}\ttrack {t['track_id']}\t{t['dominant_emotion']}\t{t['first_s']:.2f}-{t['last_s']:.2f} s, {t['frames']} frames: {times}")
    return lines


def main(args: argparse.Namespace) -> int:
    from facepipe.annotate import predict

    try:
        if args.fps < 0:
            raise ValueError(f"--fps must be >= 0, got {args.fps}")
        results = predict(list(args.images), args.keypoints_model, args.emotion_model, detect=not args.no_detect, fps=args.fps,
                          landmarks=args.landmarks)
    except (FileNotFoundError, ValueError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        for path, res in zip(args.images, results):
            faces = [{k: v for k, v in f.items() if k != "keypoints_array"} for f in res["faces"]]
            print(json.dumps({"path": path, **{k: v for k, v in res.items() if k != "faces"}, "faces": faces}))
    else:
        print("image\tface\temotion\twhere")
        for path, res in zip(args.images, results):
            print("\n".join(_table(path, res)))
    if args.plot:
        import cv2

        from facepipe.faces.decode import decode_image
        from facepipe.faces.pose import POSE_NAMES
        from facepipe.annotate.render import draw

        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        for path, res in zip(args.images, results):
            if res["status"] == "error":
                continue
            if "tracks" in res:  # a video: its timeline
                import pandas as pd

                from facepipe.annotate.schema import prob_column
                from facepipe.plots import emotion_timeline

                df = pd.DataFrame([{"timestamp_s": f["timestamp_s"], "track_id": f["track_id"],
                                    **{prob_column(c): p for c, p in f["probabilities"].items()}} for f in res["faces"]])
                if len(df) and res["faces"][0]["probabilities"]:
                    emotion_timeline(df, out / (Path(path).name + ".timeline.png"), path)
                continue
            faces = [{"bbox": f["bbox"], "keypoints": f["keypoints_array"], "emotion": f["emotion"], "confidence": f["confidence"],
                      "pose": [f["pose"][k] for k in POSE_NAMES] if f.get("pose") else None} for f in res["faces"]]
            img = draw(decode_image(Path(path).read_bytes()).image, faces, status=res["status"])
            cv2.imwrite(str(out / (Path(path).stem + ".png")), img)
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("predict", get_args_parser, main, argv, prog, errors=())


if __name__ == "__main__":
    sys.exit(run())
