"""Every place facepipe reaches past Ray's public API, in one module.

Each workaround names what it fixes and was measured on :data:`MEASURED_ON`. On another Ray
version a moved internal is skipped (the job runs with Ray's defaults: slower or noisier, never
wrong); re-measure with the benchmarks named below before relying on them.
"""
from __future__ import annotations

import logging

import ray

#: The Ray version these workarounds were measured on.
MEASURED_ON = "2.60.0"

#: System settings of the embedded Ray (a cluster keeps its own; ``ray.init(_system_config=...)``).
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


def quiet_train_report_logs() -> None:
    """Keep Ray Train's per-report INFO lines out of a job's log (our epoch lines are the progress).

    Train V2 logs every report on a logger named by its file path, outside ``ray.train``.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as _train_context
    except ImportError:
        return
    logging.getLogger(_train_context.__file__).setLevel(logging.WARNING)


def without_resource_budget_backpressure(ds: ray.data.Dataset) -> None:
    """Let ``ds`` run ahead of its consumers instead of being held by Ray Data's resource budget.

    Under Ray Train that budget kept the augmentation stage throttled with no task in flight for
    much of each epoch, and Ray Data's scheduling loop only blocks (in ``ray.wait``) while a task
    is in flight: the SplitCoordinator then polled at ~0.65 of a core for the first half of every
    20,000-row epoch, beside the Train workers (2 workers: 627-636 -> 762 img/s without the budget
    policy, bench/results/train_throughput.md). The other two policies (concurrency cap,
    downstream capacity) stay. What can run ahead is bounded anyway: one epoch of augmented rows
    is the size of the training split, which is already materialized.
    Set on this dataset's own context, so other datasets in the process keep the default.
    """
    try:
        from ray.data._internal.execution.backpressure_policy import (
            ENABLED_BACKPRESSURE_POLICIES,
            ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
            ResourceBudgetBackpressurePolicy,
        )
    except ImportError:
        return
    keep = [p for p in ENABLED_BACKPRESSURE_POLICIES if p is not ResourceBudgetBackpressurePolicy]
    ds.context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, keep)


def without_operator_reservation(ds: ray.data.Dataset) -> None:
    """Turn off Ray Data's per-operator CPU reservation for ``ds`` (and the stages built on it).

    With the model actors holding their CPUs for the whole run, that reservation kept the
    decode/detect tasks at one at a time on 2 CPUs (the actor idle ~70% of the time; 1,000 photos
    in 22.5 s against 16.6 s without it, bench/results/annotate_throughput.md). The actor pool's
    size is fixed and the job leaves room for the tasks, so nothing can starve.
    """
    ds.context.op_resource_reservation_enabled = False


def unfused_cpus(task_cpus: float, actor_cpus: float) -> float:
    """``actor_cpus``, nudged when equal to ``task_cpus`` so Ray Data keeps the two stages apart.

    Ray Data fuses a task map into the next actor map when their resource requests are equal;
    that would run every decode/detect inside the few model actors, one image at a time.
    """
    return actor_cpus + 0.01 if abs(task_cpus - actor_cpus) < 1e-6 else actor_cpus
