"""Real Ray nodes for tests, started and stopped by their own processes only (never ``ray stop``,
which would end every Ray on the machine).

Each node gets its own short temp dir (Ray's socket paths must stay short), its own free port for
every port it opens, and its temp dir in the environment of everything it starts
(:data:`NODE_ENV`), so that :func:`processes_under` finds its raylet, agents *and* workers (whose
command lines Ray rewrites to ``ray::...``) and nothing else. Imported as ``from raynodes import
...``: pytest puts this folder on the path.
"""
from __future__ import annotations

import concurrent.futures
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY_BIN = str(Path(sys.executable).parent / "ray")
#: Set to a node's temp dir in the environment of ``ray start``: its raylet and workers inherit it.
NODE_ENV = "FACEPIPE_TEST_RAY_NODE"
#: A killed node is declared dead after ~5 s instead of Ray's ~15 s (health check every 1 s, 5 misses).
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "3000", "RAY_health_check_failure_threshold": "5"}
#: Ray Train's default 60 s for a (replacement) worker group to start was once too short on 2
#: loaded cores, while a new node's workers were still importing torch: a flake, not a failure.
SLOW_MACHINE = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_under(marker: str, env_var: str = NODE_ENV) -> list[int]:
    """PIDs whose command line, or whose environment's ``env_var`` (default :data:`NODE_ENV`),
    names ``marker`` (one node's own temp dir): that node's processes, never other Rays."""
    pids, env_entry = [], f"{env_var}={marker}".encode()
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if marker in (p / "cmdline").read_bytes().decode(errors="replace") or env_entry in (p / "environ").read_bytes().split(b"\0"):
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def stop_head(marker: str) -> None:
    """SIGTERM, then SIGKILL, every process of the node (or head) with temp dir ``marker``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_under(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while processes_under(marker) and time.time() < deadline:
            time.sleep(0.3)


def kill_node(marker: str, timeout: float = 20, env_var: str = NODE_ENV) -> list[tuple[int, str]]:
    """SIGKILL every process of one node at once, as a lost machine would vanish; returns what it
    killed as (pid, command line) pairs (a Ray worker's command line names its actor: ``ray::RayTrainWorker...``)."""
    killed: dict[int, str] = {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = processes_under(marker, env_var)
        if not pids:
            return sorted(killed.items())
        for pid in pids:  # what each one was, read before any is killed
            try:
                killed.setdefault(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                killed.setdefault(pid, "?")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"processes of node {marker} still alive after {timeout} s: {processes_under(marker, env_var)}")


@dataclass
class Node:
    temp_dir: str
    num_cpus: float
    head: bool = False
    log: str = ""

    def kill(self) -> list[tuple[int, str]]:
        return kill_node(self.temp_dir)

    def stop(self) -> None:
        stop_head(self.temp_dir)


@dataclass
class LocalCluster:
    """A head and any number of worker nodes on this machine, with token auth (dashboard on loopback).

    ``driver_env()`` is the environment a job's driver needs to join it (``RAY_ADDRESS`` = the GCS
    address: run ``python jobs/X.py`` with it; the driver attaches to the head node).
    """

    head_cpus: float = 2
    object_store_bytes: int = 300 * 1024 * 1024
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[Node] = field(default_factory=list)
    pending: list[concurrent.futures.Future] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def _env(self) -> dict:
        env = {**os.environ, **SLOW_MACHINE, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for k in ("RAY_ADDRESS", "RAY_RUNTIME_ENV_HOOK", NODE_ENV):
            env.pop(k, None)
        return env

    def driver_env(self) -> dict:
        return {**self._env(), "RAY_ADDRESS": self.gcs_address}

    def _start(self, args: list[str], num_cpus: float, head: bool) -> Node:
        temp_dir = tempfile.mkdtemp(prefix="/tmp/fpm")  # short: Ray's socket paths must stay short
        node = Node(temp_dir, num_cpus, head)
        self.nodes.append(node)  # registered first: stop() ends it even when its start fails half-way
        ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                                                        "runtime-env-agent-port")]
        cmd = [RAY_BIN, "start", *args, *ports, "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus:g}", f"--temp-dir={temp_dir}",
               f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"]
        # RAY_ADDRESS for what runs there: with two Rays on one machine (this one and any other), Ray's
        # state API cannot tell which to use (Ray Train's PlacementGroupCleaner uses it).
        env = {**self._env(), **FAST_NODE_DEATH, NODE_ENV: temp_dir, "RAY_ADDRESS": self.gcs_address}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        node.log = r.stdout[-2000:] + r.stderr[-2000:]
        if r.returncode != 0:
            raise RuntimeError(f"ray start failed ({r.returncode}): {node.log}")
        return node

    def start_head(self) -> Node:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        # The dashboard serves the state API, which Ray Train's clean-up polls.
        return self._start(["--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                            f"--ray-client-server-port={free_port()}", "--include-dashboard=true"], self.head_cpus, head=True)

    def add_node(self, num_cpus: float = 2) -> Node:
        """A worker node joining the head, as an autoscaler would add one."""
        return self._start([f"--address={self.gcs_address}"], num_cpus, head=False)

    def add_node_soon(self, num_cpus: float = 2) -> concurrent.futures.Future:
        """:meth:`add_node` in the background (``.result()`` is the node): a job can start meanwhile,
        as one resubmitted while the autoscaler brings up a replacement does."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        future = pool.submit(self.add_node, num_cpus)
        pool.shutdown(wait=False)
        self.pending.append(future)
        return future

    def stop(self) -> None:
        """Worker nodes first, then the head; each by its own processes; temp dirs removed."""
        concurrent.futures.wait(self.pending, timeout=200)  # no node may still be starting
        for node in sorted(self.nodes, key=lambda n: n.head):
            node.stop()
            shutil.rmtree(node.temp_dir, ignore_errors=True)

    def leftovers(self) -> list[int]:
        return [pid for n in self.nodes for pid in processes_under(n.temp_dir)]
