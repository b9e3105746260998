"""Train the keypoints ResNet and/or the emotion CNN on Ray Train.

Runs on an embedded local Ray by default, or on the cluster in RAY_ADDRESS (``ray job submit``).
With no --data it trains on generated data (written once under OUTPUT/data). For each task it
writes OUTPUT/<task>/model (weights.pt + meta.json: all that inference needs), history.json,
training_curves.png and, unless --no-evaluate, OUTPUT/<task>/eval (metrics.json, reports, plots).
Checkpoints go to --storage-path/<name>; rerun with --resume to continue an interrupted run.
--data, --output and --storage-path may be object-store URIs (s3://, gs://): a CSV is fetched once,
an OUTPUT URI gets the files above uploaded at the end, checkpoints go to the store directly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepipe import storage
from facepipe.augment import AugmentConfig
from facepipe.cli import run_main
from facepipe.flags import add_config_flags, config_kwargs, per_name_default
from facepipe.data import CSVFormatError, detect_format
from facepipe.tasks import TASKS
from facepipe.train_config import TrainConfig, TrainingFailed

#: ``--task`` value that trains every task in turn.
ALL = "all"


def _per_task(value_of) -> str:
    """``"keypoints 100, emotion 40"`` (or the one value when every task has the same)."""
    return per_name_default({name: value_of(task) for name, task in TASKS.items()})


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default=ALL, choices=[*TASKS, ALL], help=f"what to train (default: {ALL})")
    p.add_argument("--data", nargs="+", default=None, metavar="CSV",
                   help="Kaggle CSV(s): FER2013 for emotion, Facial Keypoints training.csv for keypoints, or photo labels "
                        "(image,<point>_x,<point>_y,... in image pixels; see --images) for keypoints framed as annotation frames them; "
                        f"with --task {ALL} give one of each (matched by header) (default: generated data, written once under OUTPUT/data)")
    p.add_argument("--output", default="runs/train", help="output folder (default: %(default)s)")
    add_config_flags(p, TrainConfig, only=("images", "margin", "input_size"))
    g = p.add_argument_group("model and optimisation (defaults per task)")
    task_default = {k: _per_task(lambda t, k=k: t.defaults[k]) for k in ("epochs", "batch_size", "lr", "weight_decay")}
    task_default["arch"] = _per_task(lambda t: t.arch)
    task_default["label_smoothing"] = _per_task(lambda t: getattr(t, "label_smoothing", "none"))
    add_config_flags(g, TrainConfig, only=("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "arch"), default_text=task_default)
    add_config_flags(g, TrainConfig, only=("members", "mutual", "ema", "keypoint_weights"))
    for task in TASKS.values():
        for f in task.arch_flags:
            g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=f.type, default=None, nargs=f.nargs, choices=f.choices,
                           help=f"{f.help} (default: {' '.join(map(str, f.default)) if isinstance(f.default, list) else f.default})")
    a = p.add_argument_group("augmentation (training split only; probabilities in 0..1; defaults per task)")
    presets = {name: AugmentConfig.for_task(name) for name in TASKS}
    add_config_flags(a, AugmentConfig, defaults={f: None for f in AugmentConfig.__dataclass_fields__},
                     default_text={f: _per_task(lambda t, f=f: getattr(presets[t.name], f)) for f in AugmentConfig.__dataclass_fields__})
    a.add_argument("--no-augment", action="store_true", help="train without augmentation")
    s = p.add_argument_group("scaling (Ray Train)")
    add_config_flags(s, TrainConfig, only=("num_workers", "cpus_per_worker", "threads_per_worker", "use_gpu", "amp"))
    s.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    s.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    r = p.add_argument_group("runs, checkpoints, data")
    add_config_flags(r, TrainConfig, only=("storage_path", "name", "resume", "max_failures", "stop_after_epoch", "val_fraction", "train_fraction", "seed",
                                          "skip_bad_rows", "weights_dtype"))
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


def build_config(args: argparse.Namespace, task: str, data: str, several: bool = False) -> TrainConfig:
    """The run's TrainConfig from parsed flags (``several``: one of several tasks, so the run name gets the task)."""
    augment = (AugmentConfig.none().to_dict() if args.no_augment
               else {k: v for k, v in config_kwargs(args, AugmentConfig).items() if v is not None})
    spec = TASKS[task]
    given = {f.name: getattr(args, f.name) for f in spec.arch_flags if getattr(args, f.name) is not None}
    arch_args = {**spec.arch_args, **given} if given else None
    kwargs = config_kwargs(args, TrainConfig)
    if several and args.name:
        kwargs["name"] = f"{args.name}-{task}"
    return TrainConfig(task=task, data=data, output=args.output, arch_args=arch_args, augment=augment, **kwargs)


def main(args: argparse.Namespace) -> dict:
    if storage.is_uri(args.output):
        return _main_to_store(args)
    from facepipe.evaluate import evaluate
    from facepipe.runtime import init_ray
    from facepipe.train import train

    tasks = [args.task] if args.task in TASKS else list(TASKS)
    if args.arch and len(tasks) > 1:
        raise ValueError("--arch applies to one task: use it with --task keypoints or --task emotion")
    data = resolve_data(args, tasks)
    configs = [build_config(args, t, data[t], several=len(tasks) > 1) for t in tasks]  # validate every argument before starting Ray
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
        parts.append(f"{t}: " + (TASKS[t].summary(ev) if ev else f"{e['epochs']} epochs"))
    print("train: done — " + "; ".join(parts) + f" -> {args.output}", flush=True)
    return summary


def _main_to_store(args: argparse.Namespace) -> dict:
    """``--output`` on an object store: train into a local staging folder, then upload what it
    holds (model directories, evaluation, history, curves) under the URI. Checkpoints go straight
    to the store (``--storage-path``, default ``OUTPUT/ray_results``), so ``--resume`` works from
    any machine."""
    uri = storage.absolute(args.output)
    if args.storage_path is None:
        args.storage_path = storage.join(uri, "ray_results")
    with storage.staged_output(uri, prefix="facepipe-train-") as staging:
        summary = main(argparse.Namespace(**{**vars(args), "output": staging}))
        listed = Path(staging) / "train_summary.json"  # it names the model directories: where they go
        listed.write_bytes(listed.read_bytes().replace(staging.encode(), uri.encode()))
    print(f"train: uploaded to {uri}", flush=True)
    return summary


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("train", get_args_parser, main, argv, prog,
                    errors=(CSVFormatError, FileNotFoundError, FileExistsError, ValueError, TrainingFailed))  # StorageError is a ValueError


if __name__ == "__main__":
    sys.exit(run())
