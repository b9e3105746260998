"""Train the keypoints ResNet and/or the emotion CNN on Ray Train.

Runs on an embedded local Ray by default, or on the cluster in RAY_ADDRESS (``ray job submit``).
With no --data it trains on generated data (written once under OUTPUT/data). For each task it
writes OUTPUT/<task>/model (weights.pt + meta.json: all that inference needs), history.json,
training_curves.png and, unless --no-evaluate, OUTPUT/<task>/eval (metrics.json, reports, plots).
Checkpoints go to --storage-path/<name>; rerun with --resume to continue an interrupted run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepipe.augment import AugmentConfig
from facepipe.data import CSVFormatError, detect_format
from facepipe.cli import run_main

TASKS = ("keypoints", "emotion")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="what to train")
    p.add_argument("--data", nargs="+", default=None, metavar="CSV",
                   help="Kaggle CSV(s): FER2013 for emotion, Facial Keypoints training.csv for keypoints, or photo labels "
                        "(image,<point>_x,<point>_y,... in image pixels; see --images) for keypoints framed as annotation frames them; "
                        "with --task all give one of each (matched by header). Default: generated data")
    p.add_argument("--images", default=None, help="photo labels: the folder their image names are relative to (default: the CSV's folder)")
    p.add_argument("--margin", type=float, default=None,
                   help="crop margin around the detector's box at annotation, as a fraction of its side, recorded in meta.json "
                        "(default: photo labels 0.15, annotation's; FER2013 0.02, which reproduces FER's framing)")
    p.add_argument("--output", default="runs/train", help="output folder")
    g = p.add_argument_group("optimisation (defaults per task: keypoints 100 epochs, batch 64, lr 2e-3; emotion 40, 128, 3e-3)")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default: per task)")
    g.add_argument("--batch-size", type=int, default=None, help="batch size per worker (default: per task)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate of the OneCycle schedule (default: per task)")
    g.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: per task)")
    g.add_argument("--label-smoothing", type=float, default=0.1, help="emotion cross-entropy label smoothing")
    g.add_argument("--arch", default=None, help="keypoints: resnet18|resnet34|resnet50; emotion: vgg_cnn (default: resnet18 / vgg_cnn)")
    g.add_argument("--width", type=int, default=None, help="keypoints ResNet: channels of the first stage, doubled per stage (default: 64, the standard ResNet)")
    g.add_argument("--head", default=None, choices=["pool", "integral"],
                   help="keypoints ResNet head: pool (global pooling + linear) or integral (heatmaps read out by their expectation) (default: pool)")
    g.add_argument("--widths", type=int, nargs="+", default=None, help="emotion CNN channels per block (default: 32 64 128 256)")
    g.add_argument("--convs-per-block", type=int, default=None, help="emotion CNN convs per block (default: 2)")
    g.add_argument("--dropout", type=float, default=None, help="emotion CNN dropout before the head (default: 0.3)")
    g.add_argument("--block-dropout", type=float, default=None, help="emotion CNN channel dropout after each block (default: 0)")
    a = p.add_argument_group("augmentation (training split only; default per task; probabilities in 0..1)")
    for f, h in [("hflip", "horizontal flip probability; keypoints swap left/right points by name"),
                 ("vflip", "vertical flip probability; off by default: faces are never upside down at inference, and a flipped face puts the eyes below the mouth"),
                 ("rotate", "max rotation in degrees"), ("shift", "max shift as a fraction of the image size"),
                 ("scale", "max relative zoom"), ("brightness", "max brightness change"), ("contrast", "max contrast change"),
                 ("erase", "random erasing probability"), ("noise", "Gaussian noise std in grey levels")]:
        a.add_argument(f"--{f}", type=float, default=None, help=h)
    a.add_argument("--no-augment", action="store_true", help="train without augmentation")
    s = p.add_argument_group("scaling (Ray Train)")
    s.add_argument("--num-workers", type=int, default=1, help="Train workers (data-parallel, DDP)")
    s.add_argument("--cpus-per-worker", type=float, default=None, help="CPUs reserved per worker (default: up to 1, leaving 0.5 CPU for Ray Data tasks)")
    s.add_argument("--threads-per-worker", type=int, default=None, help="torch threads per worker (default: the node's cores / workers)")
    s.add_argument("--use-gpu", action="store_true", help="one GPU per worker (DDP via prepare_model)")
    s.add_argument("--no-amp", action="store_true", help="train in fp32 only (default: bf16 mixed precision where the GPU or CPU computes bf16 natively: CUDA, AVX512-BF16, AMX)")
    s.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    s.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    r = p.add_argument_group("runs, checkpoints, data")
    r.add_argument("--storage-path", default=None, help="where checkpoints go: local path or URI (s3://, gs://); multi-node needs shared storage (default: OUTPUT/ray_results)")
    r.add_argument("--name", default=None, help="run name (default: the task)")
    r.add_argument("--resume", action="store_true", help="continue the run with this name from its last checkpoint")
    r.add_argument("--max-failures", type=int, default=0, help="worker failures to recover from (from the last checkpoint)")
    r.add_argument("--stop-after-epoch", type=int, default=None, help="stop after this epoch, as an interruption would (resume later with --resume)")
    r.add_argument("--val-fraction", type=float, default=0.1, help="keypoints: seeded hold-out fraction (FER2013 uses Usage)")
    r.add_argument("--seed", type=int, default=0, help="seed for splits, augmentation and initialisation")
    r.add_argument("--skip-bad-rows", action="store_true", help="skip malformed CSV rows (listed) instead of failing")
    r.add_argument("--weights-dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="store the exported weights in this type (float16 halves the file; default: float32)")
    r.add_argument("--no-evaluate", action="store_true", help="skip the evaluation after training")
    r.add_argument("--no-tta", action="store_true", help="evaluate without flip test-time augmentation")
    r.add_argument("--progress", action="store_true", help="show Ray Data progress bars")
    return p


def resolve_data(args: argparse.Namespace, tasks: list[str]) -> dict[str, str]:
    """Map each task to its CSV: given files are matched by their header; no files → generated data."""
    if not args.data:
        from facepipe.data.synth import default_data

        paths = default_data(Path(args.output) / "data")
        print(f"train: no --data given, using generated data in {Path(args.output) / 'data'}", flush=True)
        return {t: str(paths[t]) for t in tasks}
    by_task: dict[str, str] = {}
    for path in args.data:
        task = detect_format(path).task
        if task in by_task:
            raise ValueError(f"two {task} files given: {by_task[task]} and {path}")
        by_task[task] = path
    missing = [t for t in tasks if t not in by_task]
    if missing:
        raise ValueError(f"no CSV for task(s) {missing} among --data {args.data}")
    return {t: by_task[t] for t in tasks}


def build_config(args: argparse.Namespace, task: str, data: str):
    from facepipe.models import DEFAULT_ARCH
    from facepipe.train import TrainConfig

    aug_fields = {"hflip": "hflip", "vflip": "vflip", "rotate": "rotate_deg", "shift": "shift", "scale": "scale",
                  "brightness": "brightness", "contrast": "contrast", "erase": "erase", "noise": "noise_std"}
    augment = AugmentConfig.none().to_dict() if args.no_augment else {v: getattr(args, k) for k, v in aug_fields.items() if getattr(args, k) is not None}
    arch_flags = {"widths": args.widths, "convs_per_block": args.convs_per_block, "dropout": args.dropout, "block_dropout": args.block_dropout}
    given = {k: v for k, v in arch_flags.items() if v is not None} if task == "emotion" else {}
    if task == "keypoints":
        given = {k: v for k, v in (("width", args.width), ("head", args.head)) if v is not None}
    arch_args = {**DEFAULT_ARCH[task][1], **given} if given else None
    return TrainConfig(
        task=task, data=data, output=args.output, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, arch=args.arch if args.arch else None, arch_args=arch_args, augment=augment,
        num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker, threads_per_worker=args.threads_per_worker,
        use_gpu=args.use_gpu, amp=not args.no_amp, resume=args.resume, storage_path=args.storage_path,
        name=(f"{args.name}-{task}" if args.name and args.task == "all" else args.name), val_fraction=args.val_fraction,
        seed=args.seed, skip_bad_rows=args.skip_bad_rows, max_failures=args.max_failures,
        stop_after_epoch=args.stop_after_epoch, label_smoothing=args.label_smoothing,
        images=args.images, margin=args.margin, weights_dtype=args.weights_dtype,
    )


def main(args: argparse.Namespace) -> dict:
    from facepipe.evaluate import evaluate
    from facepipe.runtime import init_ray
    from facepipe.train import train

    tasks = list(TASKS) if args.task == "all" else [args.task]
    if args.arch and len(tasks) > 1:
        raise ValueError("--arch applies to one task: use it with --task keypoints or --task emotion")
    data = resolve_data(args, tasks)
    configs = [build_config(args, t, data[t]) for t in tasks]  # validate every argument before starting Ray
    init_ray(address=args.address, num_cpus=args.num_cpus, progress=args.progress)
    summary = {}
    for cfg in configs:
        result = train(cfg)
        entry = {"model_dir": str(result.model_dir), "epochs": len(result.history), **result.metrics}
        if not args.no_evaluate and (cfg.stop_after_epoch is None or len(result.history) >= cfg.epochs):
            entry["eval"] = evaluate(result.model_dir, cfg.data, Path(cfg.output) / cfg.task / "eval", tta=not args.no_tta, images=cfg.images)
        summary[cfg.task] = entry
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    parts = []
    for t, e in summary.items():
        ev = e.get("eval", {})
        parts.append(f"{t}: " + (f"RMSE {ev['rmse_px']:.2f} px" if "rmse_px" in ev else f"accuracy {ev['accuracy']:.3f}" if "accuracy" in ev else f"{e['epochs']} epochs"))
    print("train: done — " + "; ".join(parts) + f" -> {args.output}", flush=True)
    return summary


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("train", get_args_parser, main, argv, prog, errors=(CSVFormatError, FileNotFoundError, FileExistsError, ValueError))


if __name__ == "__main__":
    sys.exit(run())
