"""Ray session set-up shared by every job: join a cluster when there is one, else start a local Ray."""
from __future__ import annotations

import contextlib
import logging
import os

import ray

from facepipe.ray_compat import EMBEDDED_SYSTEM_CONFIG

#: Ray's own Python warnings that every run would print and no user can act on: that token
#: authentication is on (it is, as it should be), and that Ray Data's progress bars are off (we
#: turned them off, for the job's own progress lines). Shown again with ``progress``.
_NOISE_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")


@contextlib.contextmanager
def _keep_signal_handlers():
    """Ray's driver set-up replaces SIGTERM's handler twice (a Python one that exits 15, and its
    core worker's C++ one that prints a stack and aborts, exit 134): put back the handlers set
    before ``ray.init`` (the CLI's one line and exit 143, :func:`facepipe.cli.run_main`)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:  # None: set outside Python, nothing to put back
                signal.signal(sig, handler)


def init_ray(address: str | None = None, num_cpus: int | None = None, progress: bool = False, quiet: bool = False) -> dict:
    """Connect to Ray and return its resources.

    Order: an explicit ``address``, then ``RAY_ADDRESS`` (set by ``ray job submit`` and on cluster
    nodes), else an embedded single-node Ray on this machine. Ray's own logging and Ray Data's
    progress bars stay quiet unless ``progress`` is set, so a job's own progress lines stay readable;
    ``quiet`` also keeps the workers' lines in Ray's log files instead of forwarding them here.
    """
    for name in _NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if progress else logging.ERROR)
    if not ray.is_initialized():
        if not progress:
            # Read by the driver when it prints worker lines (no ANSI colour codes in job logs) and,
            # through the environment the embedded Ray's workers inherit, by Ray Data in every
            # process (no per-dataset INFO lines from the coordinators beside our progress lines).
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")
            os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": not quiet}
        with _keep_signal_handlers():
            if address:
                ray.init(address=address, **kwargs)
            else:
                # The dashboard serves Ray's state API, which Ray Train's clean-up polls; local only.
                ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                         _system_config=EMBEDDED_SYSTEM_CONFIG, **kwargs)
    ctx = ray.data.DataContext.get_current()
    if not progress:
        # After ray.data is imported: it configures its own loggers on import.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx.enable_progress_bars = progress
    ctx.enable_operator_progress_bars = progress
    ctx.print_on_execution_start = progress
    ctx.enable_auto_log_stats = False
    return ray.cluster_resources()
