"""The ``facepipe`` command and the ``jobs/*.py`` entry points: one parser per command, real runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facepipe.data.synth import write_image_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def facepipe(*args, timeout=180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "facepipe", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_every_subcommand_has_the_jobs_parser():
    from facepipe.cli import COMMANDS

    top = facepipe("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in COMMANDS)
    for command in COMMANDS:
        res = facepipe(command, "--help")
        assert res.returncode == 0 and res.stdout.startswith(f"usage: facepipe {command}"), command
    job = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert job.returncode == 0 and "--weights-dtype" in job.stdout and "--weights-dtype" in facepipe("train", "--help").stdout
    assert facepipe("nonsense").returncode == 2


def test_predict_prints_the_faces_and_draws_them(models, tmp_path):
    kp, em = models
    photos = write_image_folder(tmp_path / "photos", 2, seed=4)
    res = facepipe("predict", *photos, "--keypoints-model", kp, "--emotion-model", em, "--plot", tmp_path / "drawn")
    assert res.returncode == 0, res.stderr
    rows = res.stdout.strip().splitlines()
    assert rows[0].startswith("image\tface") and all(str(p) in res.stdout for p in photos)
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(p.stem + ".png" for p in photos)
    as_json = facepipe("predict", photos[0], "--keypoints-model", kp, "--emotion-model", em, "--json")
    record = json.loads(as_json.stdout)
    assert record["path"] == str(photos[0]) and record["status"] in ("ok", "no_face")
    bad = facepipe("predict", photos[0], "--keypoints-model", tmp_path / "nowhere", "--emotion-model", em)
    assert bad.returncode == 2 and "not a model directory" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_annotate_takes_files_and_folders_as_positional_paths(models, tmp_path):
    kp, em = models
    photos = write_image_folder(tmp_path / "photos", 3, seed=6)
    res = facepipe("annotate", photos[0], tmp_path / "photos", "--output", tmp_path / "out", "--keypoints-model", kp,
                   "--emotion-model", em, "--plots", "none")
    assert res.returncode == 0, res.stderr
    t = pq.read_table(tmp_path / "out" / "annotations")
    assert sorted(set(t.column("path").to_pylist())) == sorted(p.name for p in photos)  # the file named twice, once
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["run"]["executor"] == "in-process"


def test_a_wheel_carries_the_command_and_the_shipped_weights(tmp_path):
    """``pip install .`` gives the facepipe command and the models (built without touching the network)."""
    import shutil

    # Built from a copy: setuptools leaves build/ and *.egg-info/ in the source folder.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "demo_output", "runs", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("facepipe-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "facepipe = facepipe.cli:main" in entry_points
    for task in ("keypoints", "emotion"):
        assert {f"facepipe/weights/{task}/weights.pt", f"facepipe/weights/{task}/meta.json", f"facepipe/weights/{task}/README.md"} <= names
    assert "facepipe/cli/annotate.py" in names

    # Installed (not editable) into its own folder, run from elsewhere: the command and the shipped
    # models work with no model argument.
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(site)}
    photos = write_image_folder(tmp_path / "photos", 3, seed=8)

    def run(*args):
        return subprocess.run([str(site / "bin" / "facepipe"), *map(str, args)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    where = subprocess.run([sys.executable, "-c", "import facepipe; print(facepipe.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(site))
    res = run("annotate", tmp_path / "photos", "--output", tmp_path / "out", "--plots", "none")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert all(Path(m["dir"]).is_relative_to(site) for m in summary["models"].values())  # the installed package's weights
    assert sorted(set(pq.read_table(tmp_path / "out" / "annotations").column("path").to_pylist())) == sorted(p.name for p in photos)
    res = run("predict", photos[0])
    assert res.returncode == 0 and str(photos[0]) in res.stdout, res.stderr
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_quiet_annotate_on_ray_prints_nothing(models, tmp_path):
    """--quiet on Ray: no progress lines and no line of Ray's (its token, progress-bar and C++ core worker warnings)."""
    kp, em = models
    write_image_folder(tmp_path / "photos", 2, seed=9)
    res = facepipe("annotate", tmp_path / "photos", "--output", tmp_path / "out", "--keypoints-model", kp, "--emotion-model", em,
                   "--plots", "none", "--ray", "--num-cpus", "2", "--quiet", timeout=300)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["run"]["executor"] == "ray"
    bad = facepipe("annotate", tmp_path / "nowhere", "--output", tmp_path / "out2", "--quiet")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == ""


def test_models_trained_on_generated_faces_are_named_once(models, tmp_path, capsys):
    import shutil

    from facepipe.cli import main

    gen = tmp_path / "kp"
    shutil.copytree(models[0], gen)
    meta = json.loads((gen / "meta.json").read_text())
    meta["data"] = {"file": "generated_keypoints_2000_s0.csv.gz", "generated": True}
    (gen / "meta.json").write_text(json.dumps(meta))
    write_image_folder(tmp_path / "photos", 3, seed=10)
    assert main(["annotate", str(tmp_path / "photos"), "--output", str(tmp_path / "out"), "--keypoints-model", str(gen),
                 "--emotion-model", str(models[1]), "--plots", "none", "--files-per-task", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("trained on generated faces") == 1 and "keypoint model was" in out
    assert main(["annotate", str(tmp_path / "photos"), "--output", str(tmp_path / "out2"), "--keypoints-model", str(models[0]),
                 "--emotion-model", str(models[1]), "--plots", "none"]) == 0
    assert "generated" not in capsys.readouterr().out
