"""Benchmark: training images/second, plain PyTorch loop vs facepipe's Ray Train path (1 and 2 workers).

Same model, data, batch size and augmentation in every case; each runs ``--epochs`` epochs and the
last epoch's rate counts (the first warms up). Plain = one process, all cores, the batches augmented
in-process with the same ``BatchAugmenter``; Ray = ``facepipe.train.train`` (Ray Data parse +
augmentation tasks, Train workers, per-epoch validation and checkpoint excluded from the rate).
Prints progress, then one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="emotion", choices=["emotion", "keypoints"], help="which model")
    p.add_argument("--data", default=None, help="CSV to train on (default: generated data of --rows rows)")
    p.add_argument("--rows", type=int, default=3000, help="rows of generated data")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (per worker for Ray)")
    return p


def plain_loop(task: str, data: str, epochs: int, batch_size: int, threads: int, amp: bool) -> float:
    """The usual single-process loop: in-memory arrays, augment each batch, forward/backward/step.

    ``amp``: bf16 autocast, as the Train loop uses where the CPU computes bf16 natively.
    """
    from facepipe import models
    from facepipe.augment import AugmentConfig, BatchAugmenter
    from facepipe.data import read_table
    from facepipe.data.ray_datasets import assign_splits
    from facepipe.tasks import get_task

    import cv2

    torch.set_num_threads(threads)
    cv2.setNumThreads(1)  # a fair baseline: OpenCV's own pool would fight torch's threads for the cores
    table = read_table(data)
    split = assign_splits(len(table), table.columns.get("usage"), 0.1, 0)
    tr = table.select(split == ("Training" if task == "emotion" else "train"))
    t = get_task(task)
    labels = t.labels(tr.format)
    meta = models.make_meta(task, t.arch, t.arch_args, t.input_size, labels, tr.images.mean() / 255, tr.images.std() / 255)
    model = models.build_model(task, t.arch, t.arch_args, len(labels))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    flip = t.flip_permutation(labels)
    aug = BatchAugmenter(asdict(AugmentConfig.for_task(task)), flip, seed=0)
    cols = ["image", "line", *t.label_columns]
    rate = 0.0
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(tr))
        t0, seen = time.perf_counter(), 0
        model.train()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            batch = aug({**{c: tr.columns[c][idx] for c in cols}, "row_id": tr.columns["line"][idx]})
            tb = {c: torch.as_tensor(batch[c]) for c in t.label_columns}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = model(models.preprocess(batch["image"], meta))
            loss = t.loss(out, tb, meta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
        rate = seen / (time.perf_counter() - t0)
        print(f"plain epoch {epoch + 1}: {rate:.1f} img/s ({'bf16' if amp else 'fp32'})", flush=True)
    return rate


def ray_run(task: str, data: str, epochs: int, batch_size: int, workers: int, out: str) -> float:
    from facepipe.train import TrainConfig, train

    res = train(TrainConfig(task=task, data=data, output=out, epochs=epochs, batch_size=batch_size, num_workers=workers, name=f"bench{workers}"))
    rate = res.history[-1]["train_img_s"]
    print(f"ray {workers} worker(s): {rate:.1f} img/s", flush=True)
    return rate


def main(args: argparse.Namespace) -> dict:
    from facepipe import models
    from facepipe.data.synth import write_fer_csv, write_keypoints_csv
    from facepipe.runtime import init_ray

    tmp = tempfile.mkdtemp(prefix="fp_bench_")
    data = args.data
    if data is None:
        data = os.path.join(tmp, "gen.csv.gz")
        (write_fer_csv if args.task == "emotion" else write_keypoints_csv)(data, args.rows, seed=0)
    threads = os.cpu_count() or 1
    amp = models.native_bf16("cpu")  # the precision the Train loop picks on this CPU
    plain = plain_loop(args.task, data, args.epochs, args.batch_size, threads, amp)
    init_ray()
    r1 = ray_run(args.task, data, args.epochs, args.batch_size, 1, tmp)
    r2 = ray_run(args.task, data, args.epochs, args.batch_size, 2, tmp)
    result = {"task": args.task, "data": os.path.basename(data), "batch_size": args.batch_size, "cores": threads,
              "precision": "bf16" if amp else "fp32",
              "plain_img_s": round(plain, 1), "ray_1w_img_s": round(r1, 1), "ray_2w_img_s": round(r2, 1),
              "ratio_best": round(max(r1, r2) / plain, 3)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
