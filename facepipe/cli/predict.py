"""Keypoints and emotion for the faces in a few images, in this process (no Ray), as a table or JSON.

Uses the models shipped in the package unless --keypoints-model / --emotion-model name others.
With --plot DIR each image is also written there with its faces drawn (box, keypoints, emotion).
For folders and many images, `facepipe annotate` writes Parquet incrementally instead.
Exit codes: 0 done (also when no face was found), 2 bad arguments or models.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepipe.cli import run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (decoded by content)")
    p.add_argument("--keypoints-model", default=None, metavar="MODEL_DIR", help="keypoint model directory (default: the shipped one)")
    p.add_argument("--emotion-model", default=None, metavar="MODEL_DIR", help="emotion model directory (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    p.add_argument("--plot", default=None, metavar="DIR", help="also write each image with its faces drawn into DIR (PNG)")
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
        lines.append(f"{path}\t{f['face_index']}\t{f['emotion']} {f['confidence']:.2f}\tbox {x},{y} {w}x{h}{eyes_txt}")
    return lines


def main(args: argparse.Namespace) -> int:
    from facepipe.annotate import predict

    try:
        results = predict(list(args.images), args.keypoints_model, args.emotion_model, detect=not args.no_detect)
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
        from facepipe.annotate.render import draw

        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        for path, res in zip(args.images, results):
            if res["status"] == "error":
                continue
            faces = [{"bbox": f["bbox"], "keypoints": f["keypoints_array"], "emotion": f["emotion"], "confidence": f["confidence"]} for f in res["faces"]]
            img = draw(decode_image(Path(path).read_bytes()).image, faces, status=res["status"])
            cv2.imwrite(str(out / (Path(path).stem + ".png")), img)
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("predict", get_args_parser, main, argv, prog, errors=())


if __name__ == "__main__":
    sys.exit(run())
