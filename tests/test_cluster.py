"""cluster/: every YAML parses and names real jobs and flags; a real `ray job submit` round trip."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from raynodes import free_port, processes_under, stop_head

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))


def job_parser(script: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"job_{Path(script).stem}", ROOT / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_args_parser()


def check_entrypoint(argv: list[str]) -> None:
    """``python jobs/X.py ...``: the script exists and its own parser accepts the flags."""
    assert argv[0] == "python" and argv[1].startswith("jobs/"), argv
    assert (ROOT / argv[1]).exists(), f"{argv[1]} does not exist"
    job_parser(argv[1]).parse_args(argv[2:])


def test_cluster_has_the_documented_files():
    names = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*") if p.is_file()}
    for f in ("README.md", "runtime_env.yaml", "aws-cluster.yaml", "kuberay/rayjob-train.yaml", "kuberay/raycluster-annotate.yaml",
              "kuberay/cronjob-annotate.yaml", "kuberay/pvc/rayjob-train.yaml", "kuberay/pvc/raycluster-annotate.yaml",
              "kuberay/pvc/cronjob-annotate.yaml", "local/crontab", "local/facepipe-annotate.service", "local/facepipe-annotate.timer"):
        assert f in names


@pytest.mark.parametrize("name", ["rayjob-train.yaml", "raycluster-annotate.yaml", "cronjob-annotate.yaml"])
def test_the_kuberay_manifests_keep_their_data_on_object_storage(name):
    """No shared volume: inputs, outputs and checkpoints are s3:// URIs, and the Ray pods get credentials."""
    text = (CLUSTER / "kuberay" / name).read_text()
    assert "persistentVolumeClaim" not in text and "volumeMounts" not in text
    d = yaml.safe_load(text)
    if d["kind"] == "RayJob":
        argv = shlex.split(d["spec"]["entrypoint"])
        paths = [argv[argv.index(f) + 1] for f in ("--data", "--output", "--storage-path")]
        cluster = d["spec"]["rayClusterSpec"]
    elif d["kind"] == "CronJob":
        argv = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        paths = [argv[argv.index(f) + 1] for f in ("--input", "--output")]
        cluster = None
    else:
        paths, cluster = [], d["spec"]
    assert all(p.startswith("s3://") for p in paths), paths
    if cluster is not None:
        for c in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            env = {e["name"] for e in c["template"]["spec"]["containers"][0]["env"]}
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_yaml_structure(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) for d in docs)
    d = docs[0]
    if d.get("kind") in ("RayJob", "RayCluster"):
        assert d["apiVersion"] == "ray.io/v1"
        cluster = d["spec"]["rayClusterSpec"] if d["kind"] == "RayJob" else d["spec"]
        assert cluster["rayVersion"] == "2.60.0"
        assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
        assert cluster["workerGroupSpecs"] and all(g["template"]["spec"]["containers"] for g in cluster["workerGroupSpecs"])
        for c in [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]]:
            env = {e["name"]: e for e in c.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token"  # the secure default is kept
        if d["kind"] == "RayJob":
            assert d["spec"]["shutdownAfterJobFinishes"] is True
            check_entrypoint(shlex.split(d["spec"]["entrypoint"]))
    elif d.get("kind") == "CronJob":
        assert d["apiVersion"] == "batch/v1" and d["spec"]["concurrencyPolicy"] == "Forbid"
        cmd = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert cmd[:3] == ["ray", "job", "submit"]
        check_entrypoint(cmd[cmd.index("--") + 1 :])
    elif path.name == "runtime_env.yaml":
        assert d["working_dir"] == "." and ".venv/" in d["excludes"]
    elif path.name == "aws-cluster.yaml":
        assert {"head", "cpu_worker", "gpu_worker"} <= set(d["available_node_types"])
        assert d["available_node_types"]["gpu_worker"]["min_workers"] == 0
        assert all("0.0.0.0" not in c for c in d["head_start_ray_commands"])


def test_local_schedule_recipes_call_real_flags():
    for f in ("local/crontab", "local/facepipe-annotate.service"):
        text = (CLUSTER / f).read_text()
        line = next(ln for ln in text.splitlines() if "jobs/annotate.py" in ln and not ln.startswith("#"))
        argv = shlex.split(line.split("python", 1)[1].split(">>")[0])
        job_parser(argv[0]).parse_args(argv[1:])


@pytest.mark.parametrize("script", ["jobs/train.py", "jobs/annotate.py", "jobs/evaluate.py", "jobs/explore.py"])
def test_every_flag_is_documented(script):
    p = job_parser(script)
    for action in p._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{script} {action.option_strings} has no help"


# --- a real Ray head and the real `ray job submit` CLI -------------------------------------------


@pytest.mark.integration
def test_ray_job_submit_train_then_annotate(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="/tmp/fpj")  # short: Ray's socket paths must stay short
    dash, gcs = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_ADDRESS": f"http://127.0.0.1:{dash}"}
    env.pop("RAY_RUNTIME_ENV_HOOK", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        # Every port of its own: the test session's Ray (or any other) already holds the default agent
        # ports, and a head whose job agent cannot bind answers "No available agent to submit job".
        ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port")]
        subprocess.run([ray_bin, "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", *ports,
                        "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=true"],
                       env={k: v for k, v in env.items() if k != "RAY_ADDRESS"}, check=True, capture_output=True, timeout=120)

        def submit(*argv: str) -> subprocess.CompletedProcess:
            cmd = [ray_bin, "job", "submit", "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--", "python", *argv]
            for _ in range(20):  # a fresh head's job agent can take a while to register on a busy machine
                r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
                if "No available agent to submit job" not in r.stdout + r.stderr:
                    break
                time.sleep(3)
            assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
            return r

        from facepipe.data.synth import write_keypoints_csv

        data = write_keypoints_csv(tmp_path / "kp.csv", 200, seed=1)  # small: this tests the submission, not the training
        out = tmp_path / "train"
        submit("jobs/train.py", "--task", "keypoints", "--data", str(data), "--epochs", "1", "--batch-size", "32", "--output", str(out), "--no-evaluate")
        meta = json.loads((out / "keypoints" / "model" / "meta.json").read_text())
        assert meta["task"] == "keypoints" and meta["trained_epochs"] == 1

        from untrained import write_untrained_models

        _, emo = write_untrained_models(tmp_path / "untrained", small_emotion=True)  # the trained keypoint model is used
        from facepipe.data.synth import write_image_folder

        photos = tmp_path / "photos"
        files = write_image_folder(photos, 4, seed=3)
        ann = tmp_path / "ann"
        submit("jobs/annotate.py", "--input", str(photos), "--output", str(ann), "--keypoints-model", str(out / "keypoints" / "model"),
               "--emotion-model", str(emo), "--plots", "none")
        import pandas as pd

        df = pd.read_parquet(ann / "annotations")
        assert set(Path(p).name for p in df["path"]) == {f.name for f in files}
        assert set(df["status"]) <= {"ok", "no_face"}
    finally:
        stop_head(temp_dir)
    assert not processes_under(temp_dir)
