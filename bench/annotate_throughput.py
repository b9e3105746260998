"""Throughput of the batch annotation job against a naive loop and against the machine's ceiling.

    python bench/annotate_throughput.py [--input ../shared/data/images/faces] [--images 1000]

The input folder is replicated (hard links, else copies) to ``--images`` files in a temporary
folder; models are untrained networks of the default architectures (keypoint ResNet18, emotion
VGG-CNN 32-64-128-256): their cost does not depend on training. Three measurements, same detector
settings everywhere (the default detector, ``detector_config()``):

* ``naive_img_s``: one process, one image at a time: read, decode, detect, and each model on one
  face at a time (models loaded once; OpenCV and torch with their default thread counts), over
  the first ``--naive-images`` files; ``naive_1thread_img_s``: the same loop single-threaded
  (``speedup_vs_1thread``), a baseline that other processes on a shared machine hurt far less;
* ``ceiling_img_s``: what the stages' own costs allow: decode+detect time per image (one core,
  OpenCV single-threaded) spread over all cores, plus both models' batched time per face (batch
  ``--batch-size``, torch default threads) times the faces per image;
* ``img_s``: ``facepipe.annotate.annotate`` on the replicated folder (``--plots none``), timed
  around the call on an already started local Ray (``ray_init_s`` reported apart), whose workers
  run at the same priority as this process (``facepipe.runtime.init_ray`` sets Ray's
  ``worker_niceness`` to 0; Ray's default is 15).

``--warm-cluster`` first runs a tiny Ray Data job from a second driver, so that Ray Data's detached
helper actors are already running, as on a long-lived cluster after its first job
(``warm_cluster_s``); without it the call pays for them, as the embedded default does every run.

Also reported: ``first_result_s`` (pipeline start to the first annotated batch: Ray Data start-up,
worker and actor start, model loading), the stages' summed seconds inside the pipeline
(``pipeline_stage_s``: wall time per stage call, so it grows when stages share cores), and the
1-minute load average before and after (the machine may be shared).

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "faces"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=str(DEFAULT_INPUT), help="folder of face photos (default: %(default)s)")
    p.add_argument("--images", type=int, default=1000, help="replicate the input to this many files (default: %(default)s)")
    p.add_argument("--naive-images", type=int, default=100, help="files timed in the naive loop (default: %(default)s)")
    p.add_argument("--keypoints-model", help="keypoint model dir (default: an untrained ResNet18)")
    p.add_argument("--emotion-model", help="emotion model dir (default: an untrained default VGG-CNN)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per forward pass (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=1, help="inference actors (default: %(default)s)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--files-per-task", type=int, default=8, help="files per decode/detect task (default: %(default)s)")
    p.add_argument("--prepare-num-cpus", type=float, default=None, help="CPU request of a decode/detect task (default: the job's)")
    p.add_argument("--infer-num-cpus", type=float, default=None, help="CPU request of an inference actor (default: the job's)")
    p.add_argument("--warm-cluster", action="store_true", help="before timing, run a tiny Ray Data job from another driver (as on a cluster that ran a job before)")
    p.add_argument("--skip-naive", action="store_true", help="skip the naive loop and stage costs (tuning runs; no speedup/ceiling)")
    p.add_argument("--workdir", help="keep the replicated folder and output here (default: a temporary folder)")
    return p


def _models(workdir: Path, args) -> tuple[str, str]:
    if args.keypoints_model and args.emotion_model:
        return args.keypoints_model, args.emotion_model
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from untrained import write_untrained_models  # the tests' untrained networks: throughput does not depend on training

    kp, em = write_untrained_models(workdir / "models")
    return str(kp), str(em)


def _replicate(src: Path, dest: Path, n: int) -> list[Path]:
    files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"no files in {src}")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        f = files[i % len(files)]
        target = dest / f"r{i // len(files):03d}_{f.name}"
        if not target.exists():
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)
        out.append(target)
    return out


def _naive(files: list[Path], kp_dir: str, em_dir: str, threads: int | None = None) -> dict:
    """The loop a user writes first: one image, one face, one model call at a time.

    ``threads=None`` keeps OpenCV's and torch's default thread counts (all cores); ``1`` runs both
    single-threaded, which is slower on an idle machine but far less hurt by other processes.
    """
    import torch

    saved = (torch.get_num_threads(), cv2.getNumThreads())
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    try:
        return _naive_loop(files, kp_dir, em_dir)
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])


def _naive_loop(files: list[Path], kp_dir: str, em_dir: str) -> dict:
    import torch

    from facepipe.faces.crop import crop_resize, crop_to_image, square_crop
    from facepipe.faces.detect import detect_faces, detector_config
    from facepipe.faces.decode import decode_image
    from facepipe.faces.framing import DEFAULT_MARGIN
    from facepipe.coords import to_pixels
    from facepipe.models import load_model, preprocess

    kp, kp_meta = load_model(kp_dir)
    em, em_meta = load_model(em_dir)
    ks, es = kp_meta["input_size"], em_meta["input_size"]
    det = detector_config()  # the job's default detector
    faces = 0
    with torch.inference_mode():
        # warm-up (first calls allocate)
        x = np.zeros((1, ks, ks), np.uint8)
        kp(preprocess(x, kp_meta)), em(preprocess(np.zeros((1, es, es), np.uint8), em_meta))
        t0 = time.perf_counter()
        for f in files:
            gray = decode_image(f.read_bytes()).gray
            boxes, _ = detect_faces(gray, det)
            for box in boxes:
                sq = square_crop(box, DEFAULT_MARGIN)
                pts = kp(preprocess(crop_resize(gray, sq, ks)[None], kp_meta)).numpy()[0]
                crop_to_image(to_pixels(pts, ks), sq, ks)
                torch.softmax(em(preprocess(crop_resize(gray, sq, es)[None], em_meta)), 1)
                faces += 1
        dt = time.perf_counter() - t0
    return {"images": len(files), "faces": faces, "seconds": dt, "img_s": len(files) / dt, "torch_threads": torch.get_num_threads(), "cv2_threads": cv2.getNumThreads()}


def _stage_costs(files: list[Path], kp_dir: str, em_dir: str, batch_size: int) -> dict:
    """Per-stage costs measured in isolation: decode+detect on one core, models batched."""
    import torch

    from facepipe.faces.crop import crop_resize, square_crop
    from facepipe.faces.detect import detect_faces, detector_config
    from facepipe.faces.decode import decode_image
    from facepipe.faces.framing import DEFAULT_MARGIN
    from facepipe.models import load_model, preprocess

    det = detector_config()  # the job's default detector
    default_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        t_decode = t_detect = 0.0
        kp_crops, em_crops = [], []
        kp, kp_meta = load_model(kp_dir)
        em, em_meta = load_model(em_dir)
        ks, es = kp_meta["input_size"], em_meta["input_size"]
        for f in files:
            data = f.read_bytes()
            t0 = time.perf_counter()
            gray = decode_image(data).gray
            t1 = time.perf_counter()
            boxes, _ = detect_faces(gray, det)
            t2 = time.perf_counter()
            t_decode += t1 - t0
            t_detect += t2 - t1
            for box in boxes:
                sq = square_crop(box, DEFAULT_MARGIN)
                kp_crops.append(crop_resize(gray, sq, ks))
                em_crops.append(crop_resize(gray, sq, es))
    finally:
        cv2.setNumThreads(default_threads)
    faces_per_image = len(kp_crops) / len(files)
    reps = max(1, -(-256 // max(1, len(kp_crops))))
    kc = np.stack(kp_crops * reps)[: max(256, batch_size)]
    ec = np.stack(em_crops * reps)[: max(256, batch_size)]
    result = {}
    with torch.inference_mode():
        for name, model, meta, crops in (("keypoints", kp, kp_meta, kc), ("emotion", em, em_meta, ec)):
            model(preprocess(crops[:batch_size], meta))  # warm-up
            best = float("inf")
            for _ in range(3):  # best of three passes over the crops: the machine is shared
                t0 = time.perf_counter()
                for i in range(0, len(crops), batch_size):
                    model(preprocess(crops[i : i + batch_size], meta))
                best = min(best, (time.perf_counter() - t0) / len(crops))
            result[f"{name}_ms_per_face"] = best * 1000
    result.update(
        decode_ms=t_decode / len(files) * 1000,
        detect_ms=t_detect / len(files) * 1000,
        faces_per_image=faces_per_image,
        images=len(files),
        torch_threads=torch.get_num_threads(),
    )
    return result


_WARM_JOB = """
import logging, ray, sys
ray.init(address=sys.argv[1], logging_level=logging.WARNING)
ray.data.DataContext.get_current().enable_progress_bars = False
class Same:
    def __call__(self, batch):
        return batch
ray.data.range(4).map_batches(Same, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1).materialize()
"""


def _warm_cluster() -> float:
    """Run a tiny Ray Data job (with an actor pool) from a separate driver process, then wait a moment.

    Ray Data's helper actors (``_StatsActor``, ``_AutoscalingCoordinatorActor``,
    ``ActorLocationTracker``) are detached: on a long-lived cluster only its first Ray Data job
    starts them, and later jobs (a scheduled ``ray job submit``) find them running. A separate
    driver is a separate Ray job, so none of its worker processes serve the timed call.
    """
    import subprocess

    import ray

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _WARM_JOB, ray.get_runtime_context().gcs_address], check=True)
    time.sleep(2.0)  # let the finished job's workers exit before the clock starts
    return time.perf_counter() - t0


def main(args: argparse.Namespace) -> dict:
    src = Path(args.input)
    if not src.is_dir():
        raise SystemExit(f"input folder not found: {src} (pass --input)")
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="annotate_bench_"))
    try:
        kp_dir, em_dir = _models(tmp, args)
        files = _replicate(src, tmp / "images", args.images)
        unique = sorted({f.name.split("_", 1)[1]: f for f in files}.values())

        load_before = os.getloadavg()[0]
        cores = args.num_cpus or os.cpu_count() or 1
        if args.skip_naive:
            naive, naive1, stages, ceiling = {"img_s": float("nan")}, {"img_s": float("nan")}, {}, float("nan")
        else:
            naive = _naive(files[: args.naive_images], kp_dir, em_dir)
            naive1 = _naive(files[: args.naive_images], kp_dir, em_dir, threads=1)
            print(f"bench: naive loop {naive['img_s']:.1f} img/s (default threads), {naive1['img_s']:.1f} img/s (1 thread) over {naive['images']} images", flush=True)
            stages = _stage_costs(unique, kp_dir, em_dir, args.batch_size)
            per_image_s = (stages["decode_ms"] + stages["detect_ms"]) / 1000 / cores + stages["faces_per_image"] * (stages["keypoints_ms_per_face"] + stages["emotion_ms_per_face"]) / 1000
            ceiling = 1.0 / per_image_s
            print(
                f"bench: stages decode {stages['decode_ms']:.1f} ms + detect {stages['detect_ms']:.1f} ms per image (1 core), "
                f"models {stages['keypoints_ms_per_face']:.1f} + {stages['emotion_ms_per_face']:.1f} ms per face batched -> ceiling {ceiling:.1f} img/s on {cores} cores",
                flush=True,
            )

        from facepipe.annotate import annotate
        from facepipe.runtime import init_ray

        t0 = time.perf_counter()
        init_ray(num_cpus=args.num_cpus)
        ray_init_s = time.perf_counter() - t0
        warm_s = _warm_cluster() if args.warm_cluster else None
        out = tmp / "out"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        tuning = {k: v for k, v in (("prepare_num_cpus", args.prepare_num_cpus), ("infer_num_cpus", args.infer_num_cpus)) if v is not None}
        summary = annotate([tmp / "images"], out, kp_dir, em_dir, plots="none", batch_size=args.batch_size, concurrency=args.concurrency, files_per_task=args.files_per_task, **tuning)
        seconds = time.perf_counter() - t0
        run = summary["run"]
        if run["annotated"] != len(files):
            raise SystemExit(f"annotated {run['annotated']} of {len(files)} images")
        img_s = len(files) / seconds
        result = {
            "images": len(files),
            "seconds": round(seconds, 2),
            "img_s": round(img_s, 2),
            "naive_img_s": round(naive["img_s"], 2) if naive["img_s"] == naive["img_s"] else None,
            "speedup": round(img_s / naive["img_s"], 2) if naive["img_s"] == naive["img_s"] else None,
            "ceiling_img_s": round(ceiling, 2) if ceiling == ceiling else None,
            "naive_1thread_img_s": round(naive1["img_s"], 2) if naive1["img_s"] == naive1["img_s"] else None,
            "speedup_vs_1thread": round(img_s / naive1["img_s"], 2) if naive1["img_s"] == naive1["img_s"] else None,
            "of_ceiling": round(img_s / ceiling, 3) if ceiling == ceiling else None,
            "faces": run["faces"],
            "cores": cores,
            "batch_size": args.batch_size,
            "concurrency": args.concurrency,
            "ray_init_s": round(ray_init_s, 2),
            "warm_cluster_s": round(warm_s, 2) if warm_s is not None else None,
            "first_result_s": run["first_result_seconds"],
            "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "tuning": tuning | {"files_per_task": args.files_per_task},
            "stage_ms": {k: round(v, 2) for k, v in stages.items() if k.endswith("_ms") or k.endswith("_per_face") or k == "faces_per_image"},
            "pipeline_stage_s": run["stage_seconds"],
            "naive": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in naive.items()},
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
