"""Training on Ray Train: one ``train_loop_per_worker`` for both tasks, checkpoints every epoch, resume.

Data flow: :func:`facepipe.data.ray_datasets.load_splits` parses the CSV in Ray tasks; the
training split is augmented in Ray Data ``map_batches`` tasks (re-run every epoch, seeded by
row and epoch); ``TorchTrainer`` workers pull batches from their shard, train, evaluate their
validation shard (sums all-reduced across workers) and report metrics with a checkpoint holding
everything needed to resume. A run started again with the same ``name``/``storage_path`` and
``resume=True`` (``--resume``) resumes from its last checkpoint (Ray Train V2), continuing the
epoch count and the metrics history; without it an existing run is refused, never overwritten.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import ray
import torch

from facepipe import models
from facepipe import storage
from facepipe.augment import AugmentConfig
from facepipe.data.kaggle import FER, FER_FRAME_MARGIN, PHOTO_POINTS, detect_format
from facepipe.data.ray_datasets import DATA_TASK_CPUS, FER_TRAIN, FER_VAL, PHOTO_COLUMNS, EpochClock, augment_train_batch, load_splits
from facepipe.logs import configure as configure_logging, eta, get_logger
from facepipe.ray_compat import quiet_train_report_logs, without_resource_budget_backpressure
from facepipe.tasks import add_sums, get_task
from facepipe.train_config import TrainConfig, TrainingFailed, TrainResult

log = get_logger(__name__)

STATE = "state.pt"
#: Rows per block of the shuffled training split: each batch mixes rows from several random blocks.
SHUFFLE_BLOCK_ROWS = 256
LOCAL_SHUFFLE_ROWS = 4 * SHUFFLE_BLOCK_ROWS
#: Rows per augmentation task. Augmenting is cheap (~3 ms per 256 rows at 48 px), so a task's
#: fixed cost (scheduling, worker wake-ups beside the training threads) dominated: 1,024-row
#: tasks trained at 703-750 img/s on 2 cores against 524-618 with 256 (bench/train_throughput.md).
AUGMENT_BATCH_ROWS = 1024

# --- the loop that runs on every Train worker ------------------------------------------------


def _all_reduce(sums: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        keys = sorted(sums)
        flat = torch.cat([sums[k].double().cpu().reshape(-1) for k in keys])
        torch.distributed.all_reduce(flat)
        out, i = {}, 0
        for k in keys:
            n = sums[k].numel()
            out[k] = flat[i : i + n].reshape(sums[k].shape).numpy()
            i += n
        return out
    return {k: v.double().cpu().numpy() for k, v in sums.items()}


def train_loop_per_worker(config: dict) -> None:
    """Train one task on this worker's shards; report metrics and a checkpoint every epoch."""
    import ray.train
    import ray.train.torch

    quiet_train_report_logs()
    configure_logging()  # this worker's epoch lines reach the job's output through its stdout
    torch.set_num_threads(config["threads_per_worker"])
    torch.manual_seed(config["seed"])
    task = get_task(config["task"]).configure(config)
    meta = config["meta"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    # bf16 autocast wherever the hardware computes bf16 natively (GPUs, and CPUs with AVX512-BF16
    # or AMX); weights, optimizer state, loss and evaluation stay fp32.
    use_amp = config["amp"] and models.native_bf16(device)
    if rank == 0:
        log.info(f"[{config['task']}] device {device}, {'bf16 mixed precision' if use_amp else 'fp32'}")

    model = models.build_model(meta["task"], meta["arch"], meta["arch_args"], len(meta[task.label_key]))
    together = config["members"] > 1  # an ensemble's members learn side by side (one loss for all; one network: its own loss)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    steps_per_epoch = max(1, math.ceil(config["n_train"] / world / config["batch_size"]))
    total_steps = config["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=total_steps + world, pct_start=0.25)

    # The average lives beside the trained weights, on every worker alike (DDP keeps the
    # weights equal), so each rank evaluates its validation shard with the same averaged model.
    ema = None
    if config["ema"]:
        ema = torch.optim.swa_utils.AveragedModel(models.unwrap(model), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config["ema"]),
                                                  use_buffers=True)
    start_epoch, history, best = 1, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
        models.unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:  # else the average starts from the resumed weights
            ema.load_state_dict(state["ema"])
        start_epoch, history, best = state["epoch"] + 1, list(state["history"]), state.get("best")
        if rank == 0:
            log.info(f"[{config['task']}] resumed from checkpoint of epoch {state['epoch']}")

    clock = config["clock"]
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    bs = config["batch_size"]

    def open_epoch(epoch: int):
        """Start ``epoch``'s augmented stream and fetch its first batch (Ray Data start-up latency)."""
        ray.get(clock.set.remote(epoch))
        it = iter(train_shard.iter_torch_batches(batch_size=bs, device=device, local_shuffle_buffer_size=max(4 * bs, LOCAL_SHUFFLE_ROWS),
                                                 local_shuffle_seed=config["seed"] + epoch))
        first = next(it, None)
        return it if first is None else itertools.chain([first], it)

    last_epoch = min(config["epochs"], config.get("stop_after_epoch") or config["epochs"])  # of this invocation
    # The next epoch's stream starts while this one validates and checkpoints: starting it is
    # mostly waiting (coordinator round trips, the first augmentation task), ~0.1-0.2 s per epoch.
    prefetch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="next-epoch")
    pending = None
    for epoch in range(start_epoch, config["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        # Time spent waiting for the data pipeline, reported so a slow input stage shows up.
        batches = (pending or prefetch.submit(open_epoch, epoch)).result()
        pending = None
        wait = time.perf_counter() - t0
        while True:
            tw = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - tw
            if batch is None:
                break
            x = models.preprocess(batch["image"], meta, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                outs = model(x, each=True) if together else [model(x)]
            loss = task.members_loss(outs, batch, meta, config["mutual"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(models.unwrap(model))
            if sched.last_epoch < sched.total_steps - 1:
                sched.step()
            loss_sum += float(loss.detach()) * len(x)
            seen += len(x)
        train_time = time.perf_counter() - t0
        if epoch < last_epoch:
            pending = prefetch.submit(open_epoch, epoch + 1)

        evaluated = model if ema is None else ema.module
        evaluated.eval()
        sums, vloss = None, torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for batch in val_shard.iter_torch_batches(batch_size=512, device=device):
                x = models.preprocess(batch["image"], meta, device)
                out = evaluated(x)
                vloss += torch.tensor([float(task.loss(out, batch, meta, train=False)) * len(x), len(x)], dtype=torch.float64)
                sums = add_sums(sums, {k: v.cpu() for k, v in task.metric_sums(out, batch, meta).items()})
        totals = _all_reduce({**(sums or {}), "vloss": vloss, "train": torch.tensor([loss_sum, seen], dtype=torch.float64)})
        val = task.finalize(totals, meta) if sums is not None else {}
        entry = {
            "epoch": epoch,
            "train_loss": float(totals["train"][0] / max(totals["train"][1], 1)),
            "val_loss": float(totals["vloss"][0] / max(totals["vloss"][1], 1)),
            "lr": float(sched.get_last_lr()[0]),
            "seconds": round(time.perf_counter() - t0, 2),
            "train_img_s": round(float(totals["train"][1]) / max(train_time, 1e-9), 1),
            "data_wait_s": round(wait, 2),
        }
        entry.update(task.history_entry(val))
        history.append(entry)
        value = entry.get(task.primary_metric)
        if rank == 0 and value is not None and (best is None or (value > best["value"] if task.higher_is_better else value < best["value"])):
            # The exported model is the best epoch by the validation metric (timm's habit), kept
            # in the checkpoint so a resumed run still knows it.
            best = {"epoch": epoch, "value": value, "model": {k: v.detach().cpu().clone() for k, v in models.unwrap(evaluated).state_dict().items()}}
        if rank == 0:
            shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items() if k != "epoch")
            ran = [h["seconds"] for h in history[len(history) - (epoch - start_epoch + 1):]]  # this process's epochs
            left = eta(len(ran), len(ran) + config["epochs"] - epoch, sum(ran))
            log.info(f"[{config['task']}] epoch {epoch}/{config['epochs']} {shown}" + (f", {left}" if epoch < config["epochs"] else ""))

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save(
                    {"model": models.unwrap(model).state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch, "history": history, "config": config["public_config"], "best": best,
                     **({"ema": ema.state_dict()} if ema is not None else {})},
                    Path(tmp) / STATE,
                )
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(entry, checkpoint=ckpt)
        if epoch >= last_epoch:  # stop_after_epoch ends this invocation early
            break
    prefetch.shutdown()


# --- the driver side ---------------------------------------------------------------------------


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_stats(ds: ray.data.Dataset) -> tuple[float, float]:
    """Mean and std of pixel values in [0, 1] over a dataset's ``image`` column."""
    s = ss = n = 0.0
    for b in ds.select_columns(["image"]).iter_batches(batch_size=4096, batch_format="numpy"):
        x = b["image"].astype(np.float64) / 255.0
        s, ss, n = s + x.sum(), ss + (x * x).sum(), n + x.size
    mean = s / n
    return mean, math.sqrt(max(ss / n - mean * mean, 1e-12))


def shuffled_blocks(ds: ray.data.Dataset, seed: int) -> ray.data.Dataset:
    """Rows shuffled once (seeded) into blocks of ``SHUFFLE_BLOCK_ROWS``, materialized.

    Each epoch then reads these blocks through a local shuffle buffer of ``LOCAL_SHUFFLE_ROWS``
    seeded by the epoch (a seeded ``randomize_block_order`` gave the same block order every epoch
    in the test), so every batch mixes rows from several random blocks even when the file
    is sorted (Kaggle's training.csv lists its complete rows first), without an all-to-all shuffle
    competing with training every epoch.
    """
    return ds.random_shuffle(seed=seed, num_cpus=DATA_TASK_CPUS).repartition(target_num_rows_per_block=SHUFFLE_BLOCK_ROWS).materialize()


def default_resources(num_workers: int, cpus_per_worker: float | None, threads: int | None) -> tuple[float, int]:
    """CPUs to reserve per worker and torch threads per worker.

    Whole-CPU asks for every worker leave nothing for Ray Data's tasks on a small machine and
    training then waits forever; so by default workers leave half a CPU free for data tasks.
    Torch threads fill the node's cores (CPU reservations are only bookkeeping to Ray).
    """
    total = ray.cluster_resources().get("CPU", 1.0)
    if cpus_per_worker is None:
        cpus_per_worker = round(min(1.0, max(0.1, (total - 0.5) / num_workers)), 3)
    if threads is None:
        node_cpus = max((n["Resources"].get("CPU", 1.0) for n in ray.nodes() if n.get("Alive")), default=total)
        # One node: the workers share its cores. Several: assume one worker per reserved CPU.
        threads = max(1, int(node_cpus) // num_workers) if total <= node_cpus else max(1, math.ceil(cpus_per_worker))
    return cpus_per_worker, threads


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.task`` on Ray Train and write the model directory ``<output>/<task>/model``."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    task = get_task(cfg.task)
    run_dir = storage.join(cfg.storage_path, cfg.name)
    if storage.exists(run_dir) and not cfg.resume:
        raise FileExistsError(f"run {run_dir} exists: pass --resume to continue it, or choose another --name/--output")
    if cfg.resume:
        check_resume_matches(cfg, run_dir)

    if cfg.input_size is not None and detect_format(cfg.data).name != PHOTO_POINTS:
        raise ValueError(f"{cfg.data}: --input-size sets the crop side of photo labels; this file's pixel images fix their own side")
    t0 = time.perf_counter()
    splits = load_splits(cfg.data, skip_bad_rows=cfg.skip_bad_rows, val_fraction=cfg.val_fraction, seed=cfg.seed,
                         images=cfg.images, margin=cfg.margin, train_fraction=cfg.train_fraction,
                         image_size=cfg.input_size)
    fmt = splits.format
    photo = splits.photo_info
    if fmt.task != cfg.task or not fmt.has_labels:
        raise ValueError(f"{cfg.data}: a {fmt.name} file cannot train the {cfg.task} task")
    train_split = cfg.train_split or (FER_TRAIN if fmt.name == FER else "train")
    val_split = cfg.val_split or (FER_VAL if fmt.name == FER else "val")
    for role, name in (("training", train_split), ("validation", val_split)):
        if not splits.counts.get(name):
            have = ", ".join(f"{k} {v}" for k, v in sorted(splits.counts.items())) or "none"
            hint = (f"FER2013 validates on its {FER_VAL} rows" if fmt.name == FER and role == "validation"
                    else f"with --val-fraction {cfg.val_fraction:g} the split leaves it empty" if fmt.name != FER else "")
            raise ValueError(f"{cfg.data}: no rows for the {role} split {name!r} (rows per split: {have}){'; ' + hint if hint else ''}")
    train_ds, val_ds = splits[train_split], splits[val_split]
    n_train, n_val = splits.counts[train_split], splits.counts[val_split]
    notes = f", {len(splits.skipped)} bad rows skipped" if splits.skipped else ""
    if cfg.train_fraction != 1.0:
        notes += f", training on a {cfg.train_fraction:g} fraction of the training {'people' if photo else 'rows'}"
    log.info(f"[{cfg.task}] data: {n_train} train / {n_val} val rows from {cfg.data}{notes} ({time.perf_counter() - t0:.1f} s)")
    if photo:
        f = photo["faces"]
        log.info(f"[{cfg.task}] faces framed by the detector: train {f['train']['detected']}/{f['train']['photos']}, val "
              f"{f['val']['detected']}/{f['val']['photos']}; framed from the labels: no face found "
              f"{f['train']['no_face'] + f['val']['no_face']}, only other faces {f['train']['wrong_face'] + f['val']['wrong_face']}; "
              f"box noise {json.dumps({k: round(v, 3) for k, v in photo['framing'].items()})}")

    mean, std = image_stats(train_ds)
    labels = task.labels(fmt)
    if cfg.keypoint_weights:
        task.configure(asdict(cfg)).point_weights(labels)  # a name not in this data fails here, not in the workers
    size = fmt.image_size
    arch, arch_args = models.ensemble_spec(cfg.arch, cfg.arch_args, cfg.members)
    meta = models.make_meta(cfg.task, arch, arch_args, size, labels, mean, std)
    label_batches = train_ds.select_columns(list(task.label_columns)).iter_batches(batch_size=4096, batch_format="numpy")
    meta.update(task.data_meta(label_batches, cfg.data, train_split))
    # Photo sources draw shift and zoom from the detector's measured box noise instead.
    aug = {**asdict(AugmentConfig.for_task(cfg.task, **({"shift": 0.0, "scale": 0.0} if photo else {}))), **cfg.augment}
    if aug["crop"]:
        meta["crop"] = int(aug["crop"])  # every later use of the model sees the centre window of this side
    if photo:
        # Annotation crops this model's input with exactly this framing (facepipe.annotate.prepare).
        meta["framing"] = {"margin": photo["framing"]["margin"], "detector": photo["detector_description"], "detector_config": photo["detector"],
                           "box_noise": photo["framing"], "box_from_points": photo["box_model"]}
    elif fmt.name == FER:
        meta["framing"] = {"margin": FER_FRAME_MARGIN if cfg.margin is None else cfg.margin,
                           "measured": "FER2013's frame against the Haar box: bench/results/emotion_framing.md"}

    columns = ["image", "line", *task.label_columns]
    train_columns = list(PHOTO_COLUMNS) if photo else columns
    flip = task.flip_permutation(labels) if aug["hflip"] > 0 else None
    # Prepared here, while every CPU is free: only the fractional-CPU augmentation tasks below
    # have to share the machine with the Train workers.
    train_ds = shuffled_blocks(train_ds.select_columns(train_columns, num_cpus=DATA_TASK_CPUS), cfg.seed)
    val_ds = val_ds.select_columns(columns, num_cpus=DATA_TASK_CPUS).materialize()
    # On the driver's node, where Ray Train keeps its controller and dataset coordinators: on any
    # other node (Ray's default placement), losing that node would fail every retry of the run.
    clock = EpochClock.options(scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote()
    train_aug = (
        train_ds.randomize_block_order(seed=cfg.seed)
        .map_batches(augment_train_batch, fn_kwargs={"config": aug, "flip_permutation": flip, "seed": cfg.seed, "clock": clock,
                                                     **({"framing": photo["framing"], "size": size} if photo else {})},
                     batch_size=AUGMENT_BATCH_ROWS, num_cpus=DATA_TASK_CPUS)
    )
    without_resource_budget_backpressure(train_aug)
    cpus, threads = default_resources(cfg.num_workers, cfg.cpus_per_worker, cfg.threads_per_worker)
    public = asdict(cfg)
    loop_config = {
        **public, "augment": aug, "meta": meta, "n_train": n_train, "threads_per_worker": threads,
        "clock": clock, "public_config": json.dumps(public),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # our own epoch lines are the progress
            # Worker output once, not twice (Train V2 also copies print() into its logger).
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
        datasets={"train": train_aug, "val": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train", "val"]),
    )
    log.info(f"[{cfg.task}] training {cfg.arch}{f' x {cfg.members} together' if cfg.members > 1 else ''}{f' (mutual {cfg.mutual:g})' if cfg.mutual else ''} for {cfg.epochs} epochs on {cfg.num_workers} worker(s) x {cpus} CPU, "
          f"{threads} torch threads each{', GPU' if cfg.use_gpu else ''}; run {run_dir}")
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        # Ray's message lists every rank's error (~15 lines each): keep its first line, and say how to go on.
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise TrainingFailed(f"[{cfg.task}] training failed: {type(e).__name__}: {first} (details above; checkpoints in {run_dir}); after fixing the cause, "
                             "rerun the same command with --resume to continue from the last checkpoint") from None
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
    model = models.build_model(cfg.task, arch, arch_args, len(labels))
    history = list(state["history"])
    last = state["model"] if "ema" not in state else {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    best = state.get("best") or {"epoch": state["epoch"], "model": last}
    model.load_state_dict(best["model"])
    from facepipe.data.synth import is_generated

    chosen = next(h for h in history if h["epoch"] == best["epoch"])
    local_data = storage.local_copy(cfg.data)  # a CSV on an object store: the copy its loading fetched
    meta.update({
        "trained_epochs": state["epoch"],
        "best_epoch": best["epoch"],
        "train_config": public,
        "augment": aug,
        "data": {"file": storage.name_of(cfg.data), "generated": is_generated(local_data), "bytes": os.path.getsize(local_data), "sha256": file_sha256(local_data),
                 "format": fmt.name, "train_split": train_split, "val_split": val_split, "train_rows": n_train,
                 "val_rows": n_val, "skipped_rows": len(splits.skipped),
                 **({"images": photo["images"], "split_by": photo["split_by"], "faces": photo["faces"]} if photo else {})},
        "metrics": {k: v for k, v in chosen.items() if k.startswith("val_")},
    })
    model_dir = models.save_model_dir(Path(cfg.output) / cfg.task / "model", model, meta, dtype=cfg.weights_dtype)
    (model_dir.parent / "history.json").write_text(json.dumps(history, indent=2))
    from facepipe import plots

    plots.training_curves(history, model_dir.parent / "training_curves.png", metric=task.primary_metric)
    log.info(f"[{cfg.task}] done in {time.perf_counter() - t0:.0f} s: {task.primary_metric} {chosen.get(task.primary_metric):.4g} "
          f"(best epoch {best['epoch']} of {state['epoch']}) -> {model_dir}")
    return TrainResult(model_dir, history, meta["metrics"], result.path)


#: Settings that fix a run's learning-rate schedule (and its data shards): a resumed run keeps them.
SCHEDULE_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "num_workers")
#: Settings that choose what the network is trained on: a resumed run must see the same.
DATA_FIELDS = ("input_size", "train_fraction", "val_fraction", "seed")
#: Settings that fix the network's shape: the checkpoint's weights only fit the network they came from.
NETWORK_FIELDS = ("arch", "arch_args", "members")


def check_resume_matches(cfg: TrainConfig, run_dir: str) -> None:
    """Refuse ``--resume`` with other schedule or network settings than the run was started with.

    The OneCycle schedule is built from the schedule's: resumed with more epochs, the extra epochs
    would run at the schedule's final ~1e-8 learning rate while meta.json recorded the new values.
    The checkpoint's weights fit only the network they were saved from.
    """
    import io

    found = sorted(e.path for e in storage.list_tree(run_dir)[0] if e.path.startswith("checkpoint_") and e.path.count("/") == 1
                   and e.path.endswith("/" + STATE))
    if not found:
        return
    state = torch.load(io.BytesIO(storage.read_bytes(storage.join(run_dir, found[-1]))), map_location="cpu", weights_only=True)
    saved = json.loads(state["config"])
    # compared as the checkpoint stored them (tuples become lists); fields older runs lack are not compared
    now = json.loads(json.dumps(asdict(cfg), default=str))
    changed = [f"{k} {saved.get(k)} -> {now[k]}" for k in NETWORK_FIELDS if k in saved and saved[k] != now[k]]
    if changed:
        raise ValueError(f"run {run_dir} cannot resume with another network ({', '.join(changed)}): its checkpoint holds "
                         "the weights of the old one; resume with its settings, or start a new run (another --name/--output)")
    changed = [f"{k} {saved.get(k)} -> {now[k]}" for k in DATA_FIELDS if k in saved and saved[k] != now[k]]
    if changed:
        raise ValueError(f"run {run_dir} cannot resume on other data ({', '.join(changed)}): its weights were trained on the "
                         "old split and crops; resume with its settings, or start a new run (another --name/--output)")
    changed = [f"{k} {saved.get(k)} -> {now[k]}" for k in SCHEDULE_FIELDS if saved.get(k) != now[k]]
    if changed:
        raise ValueError(f"run {run_dir} cannot resume with other settings ({', '.join(changed)}): its learning-rate schedule "
                         "was built for the old ones; resume with them, or start a new run (another --name/--output)")


def remove_run(cfg: TrainConfig) -> None:
    """Delete a local run directory (for --overwrite)."""
    run_dir = os.path.join(cfg.storage_path, cfg.name)
    if not storage.is_uri(run_dir) and os.path.exists(run_dir):
        shutil.rmtree(run_dir)
