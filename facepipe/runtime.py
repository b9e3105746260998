"""Ray session set-up shared by every job: join a cluster when there is one, else start a local Ray."""
from __future__ import annotations

import logging
import os

import ray

#: System settings of the embedded Ray (a cluster keeps its own).
EMBEDDED_SYSTEM_CONFIG = {
    # Ray renices its workers to 15 so the control plane stays responsive on big nodes; on a
    # small machine that lets every wake-up of a nice-0 Ray daemon preempt a training thread
    # mid-step and stall its OpenMP peers (measured: 144 -> 154 img/s at nice 0).
    "worker_niceness": 0,
    # Ray kills idle task workers above one per CPU after 1 s. Ray Data's map tasks run in bursts
    # (backpressure pauses them for seconds), so on 2 CPUs training kept killing and respawning
    # worker processes, each re-importing numpy/pyarrow/cv2 (13-14 distinct ones in a minute of
    # epochs against 7 with this setting, and slower epochs: bench/worker_churn.py).
    "idle_worker_killing_time_threshold_ms": 60_000,
}


def init_ray(address: str | None = None, num_cpus: int | None = None, progress: bool = False) -> dict:
    """Connect to Ray and return its resources.

    Order: an explicit ``address``, then ``RAY_ADDRESS`` (set by ``ray job submit`` and on cluster
    nodes), else an embedded single-node Ray on this machine. Ray's own logging and Ray Data's
    progress bars stay quiet unless ``progress`` is set, so a job's own progress lines stay readable.
    """
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
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
