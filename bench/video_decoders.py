"""Which decoder facepipe's video path uses: PyAV against OpenCV's bundled FFmpeg, both from pip wheels.

Measures, on test videos encoded here from real ytf_frames photos: decode speed of a 720p clip
(every frame, and sampled at 5 fps the way the annotation job samples), presentation times on a
variable-frame-rate file, and the display rotation of a phone-style file.

    python bench/video_decoders.py [--seconds 20] [--out bench/results/video_decoders.json]
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facepipe.faces.video import sample_frames, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "keypoints" / "ytf_frames" / "frames"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of the 720p test clip (30 fps)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    files = sorted(glob.glob(str(SHARED / "Wes_Craven_*.jpg")))
    if not files:
        raise SystemExit(f"no photos under {SHARED}")
    photos = [cv2.resize(cv2.imread(f), size) for f in files]
    return [photos[(k // 10) % len(photos)] for k in range(n)]


def _opencv(path: str, fps: float | None) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(path)
    times, last_bin = [], -1
    while cap.grab():
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        b = math.floor(t * fps + 1e-6) if fps else last_bin + 1
        if b > last_bin:  # decode (retrieve) only the frames kept, as the job does
            cap.retrieve()
            last_bin = b
            times.append(round(t, 6))
    cap.release()
    return times, time.perf_counter() - t0


def _pyav(path: str, fps: float | None) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    info, frames = sample_frames(path, fps)
    times = [f.timestamp_s for f in frames]
    return times, time.perf_counter() - t0


def main(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="facepipe-video-bench-"))
    n = int(args.seconds * 30)
    clip = str(tmp / "clip720.mp4")
    write_video(clip, _frames(n, (1280, 720)), fps=30)
    vfr_times = [round(0.2 * (k // 2) + (0.05 if k % 2 else 0.0), 3) for k in range(40)]  # 50 and 150 ms steps
    vfr = str(tmp / "vfr.mp4")
    write_video(vfr, _frames(40, (320, 240)), fps=10, times_s=vfr_times)
    rotated = str(tmp / "phone.mp4")
    write_video(rotated, [cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in _frames(10, (320, 240))], fps=10, rotation=90)

    res: dict = {"machine": f"{platform.machine()} {platform.python_version()} cv2 {cv2.__version__}", "clip_frames": n, "decoders": {}}
    import av

    res["pyav_version"] = av.__version__
    for name, fn in (("pyav", _pyav), ("opencv", _opencv)):
        d: dict = {}
        for fps in (None, 5.0):
            times, s = fn(clip, fps)
            d[f"720p_{'all' if fps is None else '5fps'}"] = {"frames": len(times), "seconds": round(s, 3), "frames_per_s": round(len(times) / s, 1)}
        got, _ = fn(vfr, None)
        d["vfr_exact"] = bool(len(got) == len(vfr_times) and np.allclose(got, vfr_times, atol=1e-3))
        d["vfr_max_error_s"] = round(float(np.max(np.abs(np.array(got[:len(vfr_times)]) - vfr_times))), 4) if got else None
        res["decoders"][name] = d
    info, frames = sample_frames(rotated)
    res["decoders"]["pyav"]["rotation"] = {"flag_deg": info.rotation, "upright_shape": list(next(frames).image.shape[:2])}
    cap = cv2.VideoCapture(rotated)
    ok, img = cap.read()
    res["decoders"]["opencv"]["rotation"] = {"flag_deg": cap.get(cv2.CAP_PROP_ORIENTATION_META), "upright_shape": list(img.shape[:2])}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main(get_args_parser().parse_args())
