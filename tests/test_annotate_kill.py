"""kill -9 of the job's driver part-way through a folder, then a rerun: every image exactly once.

The job runs as a subprocess (``jobs/annotate.py``) with its own embedded Ray, in its own session
and with its own ``RAY_TMPDIR``, so that after the SIGKILL its leftover Ray processes can be found
and ended by pid without touching the test session's Ray (no ``ray stop``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from facepipe.data.synth import write_image_folder
from raynodes import kill_node, processes_under

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 30


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def _ours(ray_tmp: str) -> list[int]:
    """Pids of processes started with our RAY_TMPDIR (the killed job's Ray), never anything else."""
    return processes_under(ray_tmp, env_var="RAY_TMPDIR")


def _end_job_processes(proc: subprocess.Popen, ray_tmp: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's own session / process group
    except ProcessLookupError:
        pass
    kill_node(ray_tmp, timeout=20, env_var="RAY_TMPDIR")


def _committed(out: Path):
    d = out / "annotations"
    if not any(d.glob("*.parquet")):
        return None
    return pads.dataset(str(d), format="parquet").to_table(columns=["path", "status", "num_faces", "face_index", "run_id"]).to_pandas()


def _job(inp: Path, out: Path, kp: Path, em: Path, ray_tmp: str, log: Path, executor: str) -> tuple[list[str], dict, object]:
    cmd = [
        sys.executable, str(REPO / "jobs" / "annotate.py"), executor,
        "--input", str(inp), "--output", str(out),
        "--keypoints-model", str(kp), "--emotion-model", str(em),
        "--num-cpus", "2", "--plots", "none",
        "--files-per-task", "2", "--batch-size", "8", "--part-images", "3",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    return cmd, env, open(log, "w")


@pytest.mark.parametrize("executor", ["--ray", "--local"])
def test_sigkill_midway_then_rerun_has_every_image_exactly_once(models, tmp_path, executor):
    kp, em = models
    inp, out = tmp_path / "in", tmp_path / "out"
    files = write_image_folder(inp, N_IMAGES, seed=21)
    names = sorted(p.name for p in files)

    ray_tmp = tempfile.mkdtemp(prefix="fpk", dir="/tmp")  # short: Ray's socket paths must fit
    cmd, env, log = _job(inp, out, kp, em, ray_tmp, tmp_path / "first.log", executor)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            if any((out / "annotations").glob("part-*.parquet")) if (out / "annotations").is_dir() else False:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before any part was committed:\n" + (tmp_path / "first.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the driver, at an arbitrary moment of its work
        proc.wait(timeout=30)
    finally:
        log.close()
        _end_job_processes(proc, ray_tmp)
    assert _ours(ray_tmp) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)

    before = _committed(out)
    done_before = set(before["path"])
    assert 0 < len(done_before) < N_IMAGES, f"kill did not land part-way ({len(done_before)} of {N_IMAGES} committed)"
    for path, g in before.groupby("path"):  # committed images are complete
        assert len(g) == (g["num_faces"].iloc[0] if g["status"].iloc[0] == "ok" else 1), path

    ray_tmp2 = tempfile.mkdtemp(prefix="fpk", dir="/tmp")
    cmd, env, log = _job(inp, out, kp, em, ray_tmp2, tmp_path / "second.log", executor)
    proc2 = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc2.wait(timeout=300)
    finally:
        log.close()
        _end_job_processes(proc2, ray_tmp2)
        shutil.rmtree(ray_tmp2, ignore_errors=True)
    assert rc == 0, (tmp_path / "second.log").read_text()[-3000:]

    after = _committed(out)
    assert sorted(after["path"].unique()) == names  # nothing missing
    for path, g in after.groupby("path"):  # nothing twice: one run, complete, face indices unique
        assert g["run_id"].nunique() == 1, path
        want = g["num_faces"].iloc[0] if g["status"].iloc[0] == "ok" else 1
        assert len(g) == want and g["face_index"].fillna(-1).is_unique, path
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["annotated"] == N_IMAGES - len(done_before)
    assert summary["run"]["already_done"] == len(done_before)
    assert not list((out / "annotations").glob(".*.tmp"))  # the killed run's temporaries are gone
