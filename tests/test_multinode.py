"""A real two-node Ray cluster on this machine, and what a lost node does to training and annotation.

The head (2 CPUs) and a second node (2 CPUs) are separate ``ray start`` processes with their own
temp dirs and ports (tests/raynodes.py); the jobs are the real ``python jobs/*.py`` drivers with
``RAY_ADDRESS`` set to the head. "Losing a node" is SIGKILL of every process of the second node (its
raylet, agents and workers) at once; "a replacement joins" is a new ``ray start --address``, as an
autoscaler would add. The nodes share no folder: the CSV, the photos, checkpoints and outputs all
live in a bucket on the session's S3-protocol server (tests/conftest.py ``s3_server``), as on a
cluster without a shared volume; the drivers keep only their logs locally.

Training places one worker per node: each asks for 1.2 CPUs, so two never fit on one 2-CPU node
(the other 0.8 CPU of each node is left to the Ray Data tasks). The tests share one head; each
brings the worker nodes it loses.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from facepipe import storage
from raynodes import LocalCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
N_PHOTOS = 120


class Job:
    """A job's driver (``python jobs/X.py ...``) in its own session, its output collected line by line."""

    def __init__(self, argv: list[str], env: dict, log: Path):
        self.lines: list[str] = []
        self.log = log
        self.proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log, "w") as f:
            for line in self.proc.stdout:
                self.lines.append(line)
                f.write(f"{time.strftime('%H:%M:%S')} {line}")
                f.flush()

    def text(self) -> str:
        return "".join(self.lines)

    def tail(self, n: int = 4000) -> str:
        return f"--- {self.log} ---\n" + self.text()[-n:]

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"job still running after {timeout} s:\n{self.tail()}") from None
        self._reader.join(timeout=10)
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


@pytest.fixture(scope="module")
def cluster(s3_server):
    """The head, started once the S3 server's AWS_* variables are set (every node inherits them)."""
    c = LocalCluster(head_cpus=2)
    try:
        c.start_head()
        yield c
    finally:
        c.stop()
    assert not c.leftovers()


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    """This module's bucket (every node reaches it through AWS_ENDPOINT_URL)."""
    import uuid

    name = f"facepipe-nodes-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def keypoints_csv(tmp_path_factory, bucket):
    from facepipe.data.synth import write_keypoints_csv

    local = write_keypoints_csv(tmp_path_factory.mktemp("kpdata") / "kp.csv.gz", 600, seed=2)
    storage.write_bytes(f"{bucket}/data/kp.csv.gz", Path(local).read_bytes())
    return f"{bucket}/data/kp.csv.gz"


def checkpoints(out: str) -> str:
    """The ``--storage-path`` every node reaches: beside the output, in the bucket."""
    return out.rsplit("/", 1)[0] + "/checkpoints"


def train_argv(data: str, out: str, *extra: str) -> list[str]:
    # Small and quick: 540 training rows, ~17 steps of 16 per worker and epoch (a few seconds).
    return ["jobs/train.py", "--task", "keypoints", "--data", data, "--output", out, "--storage-path", checkpoints(out),
            "--num-workers", "2", "--cpus-per-worker", "1.2", "--threads-per-worker", "1", "--epochs", str(EPOCHS),
            "--batch-size", "16", "--width", "16", "--no-evaluate", *extra]


def registered_epoch(run_dir: str) -> int:
    """The epoch of the run's latest checkpoint that Ray Train has registered (0: none yet).

    A checkpoint counts once the controller has collected every worker's report of it, and records
    it in ``checkpoint_manager_snapshot.json``; one written to storage but not yet registered when a
    node is lost is not used (the retry starts from the registered one before it).
    """
    try:
        snapshot = json.loads(storage.read_bytes(f"{run_dir}/checkpoint_manager_snapshot.json"))
        return int(snapshot["latest_checkpoint_result"]["metrics"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def kill_mid_epoch(job: Job, node, run_dir: str, after: int = 0) -> tuple[int, list[tuple[int, str]]]:
    """SIGKILL ``node`` as soon as a checkpoint later than epoch ``after`` is registered: part-way
    into the next epoch. Returns that checkpoint's epoch and what was killed."""
    deadline = time.time() + 180
    while (epoch := registered_epoch(run_dir)) <= after:
        assert job.proc.poll() is None and time.time() < deadline, f"no checkpoint after epoch {after} registered:\n" + job.tail()
        time.sleep(0.05)
    assert epoch < EPOCHS and job.proc.poll() is None, job.tail()
    killed = node.kill()
    assert any("TrainWorker" in cmd for _, cmd in killed), f"no Train worker ran on the killed node: {killed}"
    return epoch, killed


def assert_every_epoch_once(out: str) -> None:
    history = json.loads(storage.read_bytes(f"{out}/keypoints/history.json"))
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1)), history
    meta = json.loads(storage.read_bytes(f"{out}/keypoints/model/meta.json"))
    assert meta["trained_epochs"] == EPOCHS


def test_training_survives_node_losses_and_every_epoch_is_trained_once(cluster, keypoints_csv, bucket, tmp_path):
    """Two lost nodes in one run's life, each part-way through an epoch, each replaced by a new node:

    1. without ``--max-failures`` the job fails (exit 1) with one last line that names Ray's
       WorkerGroupError and says to rerun with ``--resume``;
    2. rerun with ``--resume --max-failures 1``: it continues from the last registered checkpoint,
       loses its second node, restarts its workers on the replacement from the checkpoint of
       then, and finishes. Its history has every epoch exactly once.
    """
    out = f"{bucket}/{tmp_path.name}/out"
    run_dir = checkpoints(out) + "/keypoints"
    env = cluster.driver_env()
    node_b = cluster.add_node(2)
    first = Job(train_argv(keypoints_csv, out), env, tmp_path / "1-fails.log")
    try:
        epoch1, _ = kill_mid_epoch(first, node_b, run_dir)
        node_c = cluster.add_node_soon(2)  # a replacement, as an autoscaler would start one
        rc = first.wait(timeout=120)
    finally:
        first.stop()
    assert rc == 1, first.tail()
    reason = re.search(r"^train: \[keypoints\] training failed: WorkerGroupError: Training failed due to worker errors.*$", first.text(), re.M)
    assert reason and "rerun the same command with --resume" in reason.group(0), first.tail()
    assert not storage.exists(f"{out}/keypoints/history.json")
    print(f"node lost after the checkpoint of epoch {epoch1}, no retries; the job ends with:\n" + "".join(first.lines[-12:]))

    second = Job(train_argv(keypoints_csv, out, "--resume", "--max-failures", "1"), env, tmp_path / "2-resumes-recovers.log")
    try:
        epoch2, _ = kill_mid_epoch(second, node_c.result(), run_dir, after=epoch1)
        node_d = cluster.add_node_soon(2)
        rc = second.wait(timeout=240)
    finally:
        second.stop()
    assert rc == 0, second.tail()
    # The workers log "resumed from checkpoint of epoch N"; the first of these lines comes from the
    # node killed next, whose log monitor may die before forwarding it, so it can be missing here.
    # The last one (on the replacement node) cannot; every epoch once in the history is the proof.
    resumed = re.findall(r"resumed from checkpoint of epoch (\d+)", second.text())
    assert resumed and resumed[-1] == str(epoch2) and set(resumed) <= {str(epoch1), str(epoch2)}, second.tail()
    assert_every_epoch_once(out)
    node_d.result().stop()  # the annotation test brings its own


@pytest.fixture(scope="module")
def untrained_models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def test_annotation_survives_node_loss_every_file_exactly_once(cluster, untrained_models, bucket, tmp_path):
    """The second node is lost once the first part file is committed (60 two-file tasks, spread over
    both nodes; the model actor on either). Ray Data retries the lost tasks and restarts the actor;
    should the job fail instead, a rerun does the rest. Either way every file is annotated once."""
    import pyarrow.dataset as pads

    from facepipe.annotate import read_annotations
    from facepipe.data.synth import write_image_folder

    kp, em = untrained_models
    local = tmp_path / "photos"
    names = sorted(p.name for p in write_image_folder(local, N_PHOTOS, seed=5))
    inp, out = f"{bucket}/{tmp_path.name}/photos", f"{bucket}/{tmp_path.name}/ann"
    for n in names:
        storage.write_bytes(f"{inp}/{n}", (local / n).read_bytes())
    for task, d in (("kp", kp), ("em", em)):  # the models too: nothing of the job is on a local folder
        for f in Path(d).iterdir():
            storage.write_bytes(f"{bucket}/models/{task}/{f.name}", f.read_bytes())
    kp, em = f"{bucket}/models/kp", f"{bucket}/models/em"
    argv = ["jobs/annotate.py", "--ray", "--input", inp, "--output", out, "--keypoints-model", kp, "--emotion-model", em,
            "--plots", "none", "--files-per-task", "2", "--batch-size", "8", "--part-images", "10"]
    node_b = cluster.add_node(2)
    job = Job(argv, cluster.driver_env(), tmp_path / "annotate.log")
    parts = f"{out}/annotations"

    def committed() -> list[str]:
        return [e.path for e in storage.list_tree(parts, recursive=False)[0] if e.path.startswith("part-")]

    try:
        deadline = time.time() + 180
        while time.time() < deadline and job.proc.poll() is None and not committed():
            time.sleep(0.05)
        assert job.proc.poll() is None, "the job ended before the node was lost:\n" + job.tail()
        killed = node_b.kill()
        committed_parts = len(committed())
        rc = job.wait(timeout=180)
    finally:
        job.stop()
        node_b.stop()
    assert killed and committed_parts * 10 < N_PHOTOS  # lost part-way: most files were still to do
    runs = 1
    if rc != 0:  # a clean failure: the rerun does the rest
        runs = 2
        again = Job(argv, cluster.driver_env(), tmp_path / "annotate2.log")
        try:
            rc = again.wait(timeout=180)
        finally:
            again.stop()
        assert rc == 0, job.tail() + again.tail()

    fs, inside = storage.resolve(parts)
    rows = pads.dataset([f"{inside}/{p}" for p in committed()], format="parquet", filesystem=fs).to_table(
        columns=["path", "status", "num_faces", "face_index", "run_id"]).to_pandas()
    assert sorted(rows["path"].unique()) == names  # every file
    assert set(rows["status"]) <= {"ok", "no_face"}
    for path, g in rows.groupby("path"):  # once: one run's rows, complete, no face twice
        assert g["run_id"].nunique() == 1, path
        assert len(g) == (g["num_faces"].iloc[0] if g["status"].iloc[0] == "ok" else 1) and g["face_index"].fillna(-1).is_unique, path
    current = read_annotations(out)
    assert sorted(current["path"].unique()) == names and len(current) == len(rows)
    summary = json.loads(storage.read_bytes(f"{out}/summary.json"))
    assert summary["images"] == N_PHOTOS
    ray_workers = sorted({cmd.split()[0] for _, cmd in killed if cmd.startswith("ray::")})
    print(f"annotation: node lost after {committed_parts} of {N_PHOTOS // 10} parts, running {ray_workers}; {runs} run(s)")
