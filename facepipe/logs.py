"""facepipe's loggers: the library logs progress at INFO under ``facepipe.*``; whoever runs it
decides what shows. The commands (:mod:`facepipe.cli`) and Ray Train workers call
:func:`configure`, which prints the messages as plain lines on stdout (the jobs' progress lines);
a program that imports the library keeps its own logging set-up."""
from __future__ import annotations

import logging
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
