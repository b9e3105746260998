"""The ``facepipe`` command: one subcommand per job, each with the very parser its ``jobs/*.py``
entry point (for ``ray job submit``) uses.

    facepipe annotate PATH... --output OUT     facepipe predict IMAGE...
    facepipe train --task ... --data ...       facepipe evaluate --model ... --data ...
    facepipe explore --data ...                facepipe demo
    facepipe compact OUT                       facepipe ensemble MODEL... --output DIR
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

#: Subcommand (a module under facepipe.cli with get_args_parser, main and run) → one-line help.
COMMANDS = {
    "annotate": "annotate image files and folders into Parquet + plots (incremental)",
    "predict": "print the faces, keypoints and emotions of a few images",
    "compact": "rewrite an annotate output to its current view (drop older and deleted files' rows)",
    "train": "train the keypoint and/or emotion model (Ray Train)",
    "evaluate": "evaluate a model directory on a split (metrics, reports, plots)",
    "ensemble": "combine trained model directories of one task into one that averages them",
    "explore": "summarise and plot a Kaggle CSV",
    "demo": "the whole pipeline end to end on generated data",
}


def main(argv: list[str] | None = None) -> int:
    """Run ``facepipe <command> ...``; the command's exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    top = argparse.ArgumentParser(prog="facepipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"facepipe {__import__('facepipe').__version__}")
    top.add_argument("command", choices=list(COMMANDS), help="; ".join(f"{k}: {v}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help", "--version"):
        top.parse_args(argv or ["--help"])
        return 0
    command, rest = top.parse_args(argv[:1]).command, argv[1:]
    module = importlib.import_module(f"facepipe.cli.{command}")
    if command == "annotate":
        rest = _inputs_positional(rest)
    return module.run(rest, prog=f"facepipe {command}")


def run_main(name: str, get_args_parser, main, argv: list[str] | None = None, prog: str | None = None,
             errors: tuple[type[BaseException], ...] | dict[type[BaseException], int] = ()) -> int:
    """Parse ``argv`` with the command's parser (named ``prog``) and run ``main``; the exit code:
    ``main``'s own when it returns one; for an exception listed in ``errors`` a one-line reason on
    stderr and 1 (a tuple) or the code it maps to (a dict, checked in order); else 0."""
    from facepipe.logs import configure

    codes = dict(errors) if isinstance(errors, dict) else dict.fromkeys(errors, 1)
    parser = get_args_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    configure()  # the library's progress lines, as plain lines on stdout
    previous = _terminate_as_exception()
    try:
        result = main(args)
    except tuple(codes) as e:
        code = next(c for t, c in codes.items() if isinstance(e, t))
        print(f"{name}: {'error: ' if code != 1 else ''}{e}", file=sys.stderr)
        return code
    except (KeyboardInterrupt, Terminated) as e:
        # Work already committed stays (annotation parts, training checkpoints): say so, in one line.
        how, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted (Ctrl-C)", 130)
        print(f"{name}: {how}; what was committed is kept, run the same command again to go on", file=sys.stderr, flush=True)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) else 0


class Terminated(BaseException):
    """SIGTERM arrived: unwinds the command like Ctrl-C does (locks released, temporaries left to the next run)."""


def _terminate_as_exception():
    """Make SIGTERM raise :class:`Terminated` in the main thread; the previous handler (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _inputs_positional(rest: list[str]) -> list[str]:
    """``facepipe annotate PATH... --output OUT``: leading paths are the ``--input`` list."""
    paths = []
    while rest and not rest[0].startswith("-"):
        paths.append(rest.pop(0))
    return (["--input", *paths] if paths else []) + rest
