"""facepipe's loggers: the library logs progress at INFO under ``facepipe.*``; whoever runs it
decides what shows. The commands (:mod:`facepipe.cli`) and Ray Train workers call
:func:`configure`, which prints the messages as plain lines on stdout (the jobs' progress lines);
a program that imports the library keeps its own logging set-up."""
from __future__ import annotations

import contextlib
import logging
import os
import sys

ROOT = "facepipe"


def get_logger(name: str) -> logging.Logger:
    """The logger for module ``name`` (under ``facepipe``)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def configure(level: int = logging.INFO) -> None:
    """Print ``facepipe`` messages at ``level`` and above as bare lines on stdout (once per process)."""
    root = logging.getLogger(ROOT)
    if not any(getattr(h, "_facepipe", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._facepipe = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # the lines are printed once, not again by a root handler


def eta(done: float, total: float, elapsed_s: float) -> str:
    """``"ETA 3m20s"`` for ``done`` of ``total`` units after ``elapsed_s`` seconds (at the rate so far); "" before any unit."""
    if done <= 0 or elapsed_s <= 0:
        return ""
    left = max(0.0, (total - done) * elapsed_s / done)
    m, s = divmod(int(round(left)), 60)
    h, m = divmod(m, 60)
    return "ETA " + (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s")


@contextlib.contextmanager
def native_stderr_to(path: str | os.PathLike):
    """Send what native code writes to file descriptor 2 (Ray's C++ core worker logs its own
    warnings there, at error level) into the file ``path``, while Python's ``sys.stderr`` (the
    commands' one-line errors, tracebacks) still reaches the terminal. For ``--quiet``."""
    sys.stderr.flush()
    terminal = os.dup(2)
    old = sys.stderr
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding=old.encoding, errors="backslashreplace")
        yield
    finally:
        if sys.stderr is not old:
            sys.stderr.flush()
            sys.stderr.close()
        sys.stderr = old
        os.dup2(terminal, 2)
        os.close(terminal)


@contextlib.contextmanager
def native_lines_aside(enabled: bool, command: str):
    """Ray's C++ core worker prints its own warnings (at error level) straight to file descriptor 2:
    with ``enabled``, keep them in a temporary file (:func:`native_stderr_to`), named on stderr only
    when the command fails."""
    if not enabled:
        yield
        return
    import tempfile

    fd, native = tempfile.mkstemp(prefix=f"facepipe-{command}-", suffix=".log")
    os.close(fd)
    try:
        with native_stderr_to(native):
            yield
    except Exception:
        if os.path.getsize(native):
            print(f"{command}: Ray's own log lines of this run are in {native}", file=sys.stderr)
            raise
        os.unlink(native)
        raise
    except BaseException:  # Ctrl-C, SIGTERM: not a failure to look into, and the command says so in one line
        os.unlink(native)
        raise
    os.unlink(native)
