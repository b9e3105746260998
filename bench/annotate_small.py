"""Benchmark: a small scheduled annotation run, wall clock from a cold process, in-process vs on Ray.

Copies ``--images`` photos (default 50 of the real face photos in ../shared/data/images/faces) into a
temporary folder and runs ``jobs/annotate.py`` on it as a user's cron job would: a new Python
process each time, no Ray running, the shipped models (or ``--keypoints-model``/``--emotion-model``),
``--plots none``. Each executor runs ``--repeat`` times into a fresh output folder; the best and all
times are reported. ``local_s`` is the in-process path (``--local``, what the job picks by itself
for small runs), ``ray_s`` the Ray path (``--ray``: embedded Ray start, Ray Data tasks and actor).

Prints progress, then one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "images" / "faces"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(FACES), help="folder of photos to copy from (default: %(default)s)")
    p.add_argument("--images", type=int, default=50, help="photos per run (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=2, help="runs per executor (default: %(default)s)")
    p.add_argument("--keypoints-model", default=None, help="default: the shipped one")
    p.add_argument("--emotion-model", default=None, help="default: the shipped one")
    return p


def run_job(executor: str, inp: Path, out: Path, models: list[str]) -> tuple[float, dict]:
    """One cold job process; its wall time and summary."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, str(REPO / "jobs" / "annotate.py"), executor, "--input", str(inp), "--output", str(out), "--plots", "none", "--quiet", *models]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{executor} run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, json.loads((out / "summary.json").read_text())


def main(args: argparse.Namespace) -> dict:
    files = sorted(p for p in Path(args.source).iterdir() if p.is_file())[: args.images]
    if len(files) < args.images:
        raise SystemExit(f"{args.source}: only {len(files)} files, {args.images} asked for")
    models = [f for flag, v in (("--keypoints-model", args.keypoints_model), ("--emotion-model", args.emotion_model)) if v for f in (flag, v)]
    times: dict[str, list[float]] = {"--local": [], "--ray": []}
    faces = {}
    with tempfile.TemporaryDirectory(prefix="ann_small_") as tmp:
        inp = Path(tmp) / "photos"
        inp.mkdir()
        for f in files:
            shutil.copyfile(f, inp / f.name)
        for i in range(args.repeat):
            for executor in times:  # interleaved, so both see the same machine state
                out = Path(tmp) / f"out{executor}{i}"
                seconds, summary = run_job(executor, inp, out, models)
                times[executor].append(round(seconds, 2))
                faces[executor] = summary["run"]["faces"]
                print(f"annotate_small: {executor} run {i + 1}: {seconds:.1f} s ({summary['run']['executor']}, {summary['run']['annotated']} images)", flush=True)
    if faces["--local"] != faces["--ray"]:
        raise SystemExit(f"the two paths found different faces: {faces}")
    return {
        "bench": "annotate_small",
        "images": len(files),
        "faces": faces["--local"],
        "local_s": min(times["--local"]),
        "ray_s": min(times["--ray"]),
        "local_runs_s": times["--local"],
        "ray_runs_s": times["--ray"],
        "target_s": 10.0,
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args())))
