"""Ray task-worker churn during training: distinct worker processes seen after start-up.

    python bench/worker_churn.py [--ray-default] [--epochs 8] [--rows 5000]

Trains the emotion CNN on generated data on an embedded Ray and, from ``--settle`` seconds on,
polls the task-worker processes (``ray::IDLE`` / ``ray::MapBatches``) twice a second. With
``--ray-default`` the embedded Ray keeps Ray's idle-worker killing (1 s) instead of
``facepipe.runtime.EMBEDDED_SYSTEM_CONFIG``'s minute, to compare. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ray-default", action="store_true", help="Ray's own idle-worker killing (1 s)")
    p.add_argument("--epochs", type=int, default=8, help="epochs (default: %(default)s)")
    p.add_argument("--rows", type=int, default=5000, help="generated rows (default: %(default)s)")
    p.add_argument("--settle", type=float, default=45.0, help="seconds before counting (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> dict:
    import facepipe.runtime as runtime
    from facepipe.data.synth import write_fer_csv
    from facepipe.train import TrainConfig, train

    if args.ray_default:
        runtime.EMBEDDED_SYSTEM_CONFIG = {k: v for k, v in runtime.EMBEDDED_SYSTEM_CONFIG.items() if k != "idle_worker_killing_time_threshold_ms"}
    tmp = tempfile.mkdtemp(prefix="fp_churn_")
    data = write_fer_csv(os.path.join(tmp, "gen.csv.gz"), args.rows, seed=0)
    runtime.init_ray()
    seen: set[str] = set()
    stop = threading.Event()
    watched = [0.0]

    def watch() -> None:
        if stop.wait(args.settle):
            return
        t0 = time.perf_counter()
        while not stop.is_set():
            out = subprocess.run(["pgrep", "-f", "ray::IDLE|ray::MapBatches"], capture_output=True, text=True).stdout
            seen.update(out.split())
            stop.wait(0.5)
        watched[0] = time.perf_counter() - t0

    th = threading.Thread(target=watch)
    th.start()
    res = train(TrainConfig(task="emotion", data=str(data), output=tmp, epochs=args.epochs, batch_size=128, name="churn"))
    stop.set()
    th.join()
    import ray

    ray.shutdown()  # flush Ray's forwarded worker logs before the JSON line, so it stays last
    result = {"ray_default": args.ray_default, "watched_s": round(watched[0], 1), "distinct_task_workers": len(seen),
              "epoch_img_s": [h["train_img_s"] for h in res.history]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
