"""Benchmark: parse a FER2013-style CSV into a uint8 array, against the notebook way and the I/O floor.

Prints progress, then one JSON line last. Timings are the best of ``--repeat`` runs, all in this
process: ``floor`` = pyarrow reading the file with pixels left as strings (decompression + I/O);
``naive`` = pandas read_csv + ``np.array(s.split(), dtype=float)`` per row (run once: it is slow);
``facepipe`` = :func:`facepipe.data.read_table` (read, validate, parse). ``peak_rss_mb`` is the
process's peak RSS after the facepipe runs and before the naive one.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fer2013" / "fer2013_trainval.csv.gz"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT.resolve()), help="FER2013 CSV (.csv or .csv.gz) (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=2, help="runs of floor and facepipe; the best counts (default: %(default)s)")
    p.add_argument("--skip-naive", action="store_true", help="skip the slow naive baseline")
    return p


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(args: argparse.Namespace) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from facepipe.data import read_table
    from facepipe.data.pixels import warm_up

    path = args.data
    t = time.perf_counter()
    warm_up()
    jit = time.perf_counter() - t

    def floor():
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"pixels": pa.string()}))

    floor_s, _ = best(floor, args.repeat)
    print(f"floor (pyarrow read, pixels as strings): {floor_s:.2f} s", flush=True)
    ours_s, table = best(lambda: read_table(path), args.repeat)
    rows = len(table)
    assert table.images.dtype == np.uint8
    print(f"facepipe read_table: {ours_s:.2f} s for {rows} rows, images {table.images.shape}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    naive_s = None
    if not args.skip_naive:
        import pandas as pd

        def naive():
            df = pd.read_csv(path)
            return np.stack([np.array(s.split(), dtype=float) for s in df["pixels"]]).astype(np.uint8)

        naive_s, ref = best(naive, 1)
        same = bool(np.array_equal(ref.reshape(table.images.shape), table.images))
        print(f"naive pandas + split loop: {naive_s:.2f} s (identical pixels: {same})", flush=True)
        if not same:
            raise SystemExit("facepipe and naive parse disagree")
    result = {
        "rows": rows,
        "seconds": round(ours_s, 3),
        "naive_seconds": round(naive_s, 3) if naive_s else None,
        "floor_seconds": round(floor_s, 3),
        "speedup": round(naive_s / ours_s, 2) if naive_s else None,
        "vs_floor": round(ours_s / floor_s, 2),
        "jit_seconds": round(jit, 3),
        "peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
