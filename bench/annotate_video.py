"""Frames per second through the video path against the photo path on the same frames.

    python bench/annotate_video.py [--seconds 60] [--fps 5] [--repeats 2] [--ray] [--out FILE.json]

Builds a ``--seconds`` long 1280x720 30 fps test video from real ytf_frames photos (one person,
consecutive frames of their clips, pasted at 360 px high on a grey background that drifts
sideways), then annotates, in the same process and with the shipped models and the default
detector, (a) the video at ``--fps`` as the job cuts it (segments of ``--segment-seconds``, the
job's default), (b) the same video decoded whole (``segment_seconds=0``) and (c) the frames the
video path samples, decoded once and written as JPEG files (quality 95, what a frame dump gives),
as a photo folder. In-process (``local=True``: the same stages Ray runs) or, with ``--ray``, on an
embedded Ray started once before the runs; ``--plots none``, each repeated ``--repeats`` times in
rotating order, after one warm-up call on a single photo. Reported: frames per second of each
(sampled frames / the call's wall time), and the ratio video / photos (the issue's target: >= 0.8).

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import glob
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facepipe.annotate import annotate
from facepipe.annotate.config import AnnotateConfig
from facepipe.faces.video import sample_frames, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "keypoints" / "ytf_frames" / "frames"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the test video (30 fps, 1280x720)")
    p.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of video (the job's --fps)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path, alternating")
    p.add_argument("--segment-seconds", type=float, default=None,
                   help="the segmented video run's --segment-seconds (default: the job's default)")
    p.add_argument("--ray", action="store_true", help="run the three on an embedded Ray instead of in-process")
    p.add_argument("--person", default="Wes_Craven", help="whose ytf_frames photos make the video")
    p.add_argument("--out", default=None, help="also write the JSON result here")
    return p


def _video_frames(person: str, n: int):
    files = sorted(glob.glob(str(SHARED / f"{person}_*.jpg")))
    if not files:
        raise SystemExit(f"no photos of {person} under {SHARED}")
    photos = [cv2.imread(f) for f in files]
    for k in range(n):
        photo = photos[(k // 10) % len(photos)]  # a new photo every third of a second
        h = 360
        w = int(round(photo.shape[1] * h / photo.shape[0]))
        frame = np.full((720, 1280, 3), 110, np.uint8)
        x = 200 + int(600 * (0.5 + 0.5 * np.sin(k / 90.0)))
        frame[180:180 + h, x:x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC)
        yield frame


def main(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="facepipe-video-bench-"))
    try:
        video_dir, photo_dir = tmp / "video", tmp / "photos"
        video_dir.mkdir()
        photo_dir.mkdir()
        t0 = time.perf_counter()
        n = int(args.seconds * 30)
        write_video(video_dir / "clip.mp4", _video_frames(args.person, n), fps=30)
        encode_s = time.perf_counter() - t0
        _, frames = sample_frames(str(video_dir / "clip.mp4"), args.fps)
        sampled = 0
        for f in frames:
            cv2.imwrite(str(photo_dir / f"{f.index:06d}.jpg"), f.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            sampled += 1
        # one-time costs of the process (imports, model loading, torch's first call) kept out of both
        warm = tmp / "warm"
        warm.mkdir()
        shutil.copy(next(photo_dir.iterdir()), warm / "one.jpg")
        local = not args.ray
        if args.ray:
            import ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        annotate([warm], tmp / "out-warm", plots="none", local=local, verbose=False)
        segment_s = AnnotateConfig().segment_seconds if args.segment_seconds is None else args.segment_seconds
        variants = {"video": (video_dir, segment_s), "video_whole": (video_dir, 0.0), "photos": (photo_dir, segment_s)}
        names = list(variants)
        runs: dict[str, list] = {k: [] for k in names}
        for r in range(args.repeats):
            for name in names[r % 3:] + names[:r % 3]:
                src, seg = variants[name]
                out = tmp / f"out-{name}-{r}"
                t = time.perf_counter()
                summary = annotate([src], out, plots="none", local=local, fps=args.fps, segment_seconds=seg, verbose=False)
                wall = time.perf_counter() - t
                run = summary["run"]
                frames_done = run["annotated"] if name == "photos" else run["video_frames"]
                assert frames_done == sampled, (name, frames_done, sampled)
                runs[name].append({"seconds": round(wall, 2), "frames_per_s": round(sampled / wall, 2), "faces": run["faces"],
                                   "segments": run.get("video_segments"), "stage_seconds": run["stage_seconds"]})
        best = {k: max(x["frames_per_s"] for x in v) for k, v in runs.items()}
        res = {
            "machine": f"{platform.machine()} {platform.python_version()}",
            "video": {"seconds": args.seconds, "size": [1280, 720], "fps": 30, "encode_s": round(encode_s, 1), "sampled_frames": sampled},
            "fps": args.fps,
            "mode": "ray" if args.ray else "in-process",
            "segment_seconds": segment_s,
            "runs": runs,
            "ratio_video_over_photos": [round(v["frames_per_s"] / p["frames_per_s"], 3) for v, p in zip(runs["video"], runs["photos"])],
            "ratio_whole_video_over_photos": [round(v["frames_per_s"] / p["frames_per_s"], 3)
                                              for v, p in zip(runs["video_whole"], runs["photos"])],
            "best_ratio": round(best["video"] / best["photos"], 3),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main(get_args_parser().parse_args())
