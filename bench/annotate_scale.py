"""Benchmark: what a scheduled annotation rerun costs as an output grows (listing and state, not faces).

For each ``--n`` and ``--store``: writes N tiny generated images (a few hundred bytes each: this
measures listing, state and start-up, not detection), annotates them once (``--local``, timed but
not the point), then times, each in a new process as a cron job would run it:

* ``noop``: a rerun with nothing new, ``--repeat`` times;
* ``plus100``: a rerun after 100 new files were added (new ones each repeat).

``store`` ``local`` is a folder under ``--tmp``; ``s3`` is a bucket on an S3-protocol server this
script starts on loopback (moto's server mode, ``pip install 'moto[server]'``), reached through
``AWS_ENDPOINT_URL`` like any S3; inputs and outputs both live there. For s3 the server's own
listing time of the N objects (boto3, measured alone) is reported beside the run, as the floor
the store sets.

Per run: driver wall seconds, driver peak RSS (the process's ``ru_maxrss``), the milliseconds per
listed file above a run over 100 files (the start-up every run pays), and whether torch was
imported (it must not be when nothing is new). Prints progress, then one JSON line last; with
``--markdown FILE`` also appends a table.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="files per output (default: %(default)s)")
    p.add_argument("--store", nargs="+", default=["local", "s3"], choices=["local", "s3"], help="default: %(default)s")
    p.add_argument("--repeat", type=int, default=2, help="timed reruns of each kind (default: %(default)s)")
    p.add_argument("--tmp", default=tempfile.gettempdir(), help="where the local folders go (default: %(default)s)")
    p.add_argument("--markdown", default=None, help="append a results table to this file")
    return p


def tiny_png(i: int) -> bytes:
    """A distinct 16x16 gray PNG (no face in it)."""
    import cv2
    import numpy as np

    img = np.full((16, 16), i % 251, np.uint8)
    img[i % 16, (i // 16) % 16] = 255
    return cv2.imencode(".png", img)[1].tobytes()


def start_s3() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import boto3

    for _ in range(600):
        try:
            boto3.client("s3").list_buckets()
            return proc, os.environ["AWS_ENDPOINT_URL"]
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise SystemExit("the S3 server did not start")


def write_files(store: str, root: str, start: int, count: int) -> None:
    names = [(f"d{i // 1000:04d}/img_{i:07d}.png", tiny_png(i)) for i in range(start, start + count)]
    if store == "local":
        for name, data in names:
            p = Path(root) / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return
    import boto3

    client = boto3.client("s3")
    bucket, _, prefix = root[len("s3://"):].partition("/")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda nd: client.put_object(Bucket=bucket, Key=f"{prefix}/{nd[0]}", Body=nd[1]), names))


def s3_listing_seconds(root: str) -> float:
    import boto3

    bucket, _, prefix = root[len("s3://"):].partition("/")
    t0 = time.perf_counter()
    n = 0
    for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        n += len(page.get("Contents", []))
    return time.perf_counter() - t0


#: Run inside the timed child: the job's CLI, then whether torch came in and the process's peak RSS (printed last).
_CHILD = """import resource, sys
rc = 0
try:
    from facepipe.cli import main
    rc = main(sys.argv[1:])
finally:
    print(f"TORCH_IMPORTED={'torch' in sys.modules} PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
sys.exit(rc)
"""


def run(inp: str, out: str, *extra: str) -> dict:
    """One cold annotate process: wall seconds, peak RSS (MB), summary numbers."""
    from facepipe import storage

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-c", _CHILD, "annotate", inp, "--recursive", "--output", out, "--plots", "none", "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"annotate failed ({proc.returncode}): {proc.stderr[-2000:]}")
    last = proc.stdout.strip().splitlines()[-1]
    rss_kb = int(last.split("PEAK_RSS_KB=")[1])
    s = json.loads(storage.read_bytes(storage.join(out, "summary.json")))
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(rss_kb / 1024), "listed": s["run"]["listed"], "annotated": s["run"]["annotated"],
            "already_done": s["run"]["already_done"], "torch": "TORCH_IMPORTED=True" in last}


def main(args: argparse.Namespace) -> list[dict]:
    results = []
    server = None
    try:
        for store in args.store:
            if store == "s3" and server is None:
                server, url = start_s3()
                print(f"S3 server at {url}", flush=True)
            for n in args.n:
                if store == "local":
                    base = tempfile.mkdtemp(prefix=f"ann_scale_{n}_", dir=args.tmp)
                    inp, out = f"{base}/in", f"{base}/out"
                else:
                    import boto3

                    bucket = f"scale-{uuid.uuid4().hex[:8]}"
                    boto3.client("s3").create_bucket(Bucket=bucket)
                    inp, out = f"s3://{bucket}/in", f"s3://{bucket}/out"
                t0 = time.perf_counter()
                write_files(store, inp, 0, n)
                print(f"[{store} N={n}] wrote {n} files in {time.perf_counter() - t0:.1f} s", flush=True)
                first = run(inp, out, "--local")
                print(f"[{store} N={n}] first run: {first}", flush=True)
                row = {"store": store, "n": n, "first": first, "noop": [], "plus100": []}
                if store == "s3":
                    row["server_listing_s"] = round(s3_listing_seconds(inp), 2)
                for _ in range(args.repeat):
                    r = run(inp, out)
                    row["noop"].append(r)
                    print(f"[{store} N={n}] no-op rerun: {r}", flush=True)
                for k in range(args.repeat):
                    write_files(store, inp, n + 100 * k, 100)
                    r = run(inp, out)
                    row["plus100"].append(r)
                    print(f"[{store} N={n}] +100 rerun: {r}", flush=True)
                results.append(row)
    finally:
        if server is not None:
            server.terminate()
    print(json.dumps(results))
    if args.markdown:
        _markdown(results, Path(args.markdown))
    return results


def _markdown(results: list[dict], path: Path) -> None:
    lines = ["| store | N | run | wall s | peak RSS MB | files listed | annotated | torch imported |", "|---|---:|---|---:|---:|---:|---:|---|"]
    for row in results:
        for kind in ("first", "noop", "plus100"):
            for r in (row[kind] if isinstance(row[kind], list) else [row[kind]]):
                lines.append(f"| {row['store']} | {row['n']:,} | {kind} | {r['wall_s']} | {r['peak_rss_mb']:.0f} | {r['listed']:,} | {r['annotated']} | {r['torch']} |")
        if "server_listing_s" in row:
            lines.append(f"| {row['store']} | {row['n']:,} | server's own listing (boto3, alone) | {row['server_listing_s']} | | | | |")
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
