"""Rewrite an annotate output's Parquet dataset to its current view, atomically.

Keeps, per input file, the rows of its most recent annotation, and drops files that no longer
exist (unless --keep-deleted): what `facepipe.read_annotations(OUT)` shows, now also what any
Parquet reader (pandas, duckdb, Spark) sees in OUT/annotations. Safe to kill at any moment.
Exit codes: 0 done, 2 not an annotate output, 3 another run is writing to OUT, 5 done, but damaged parts
were set aside in OUT/quarantine (their files are redone by the next annotate run).
"""
from __future__ import annotations

import argparse
import json
import sys

from facepipe.cli import run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", metavar="OUT", help="an output folder of `facepipe annotate`")
    p.add_argument("--keep-deleted", action="store_true", help="keep the latest rows of files that no longer exist (default: drop them)")
    return p


def main(args: argparse.Namespace) -> int:
    from facepipe.annotate.compact import compact

    s = compact(args.output, existing=not args.keep_deleted)
    for line in s["quarantined"]:
        print(f"compact: {line}", file=sys.stderr)
    print(f"compact: {s['rows_before']} rows in {s['parts_before']} parts -> {s['rows_after']} rows of {s['files_after']} files in "
          f"{s['parts_after']} part" + (f" (finished an interrupted compaction: {s['recovered']})" if s["recovered"] else ""))
    print(json.dumps(s))
    if s["quarantined"]:
        print(f"compact: {len(s['quarantined'])} damaged part(s) set aside, their rows are not in the view: run annotate on "
              f"{args.output} again to redo their files", file=sys.stderr)
        return 5
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    from facepipe.annotate.writer import OutputLocked
    from facepipe.storage import StorageError

    return run_main("compact", get_args_parser, main, argv, prog, errors={FileNotFoundError: 2, StorageError: 2, OutputLocked: 3})


if __name__ == "__main__":
    sys.exit(run())
