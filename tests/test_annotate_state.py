"""What a rerun counts as done, and the plots it owes: error rows, input folders that share a name,
content changes that keep size and mtime, plots lost to a failed plot stage, plot names that
collide or are long, and a full disk. In-process runs (``local=True``): the same stages and state
as on Ray (test_annotate_job.py checks that the two write the same rows)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe.annotate import annotate, read_annotations
from facepipe.annotate.render import plot_path
from facepipe.data.synth import write_image_folder

KW = dict(plots="none", local=True, verbose=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def _rows(out: Path, name: str) -> int:
    df = read_annotations(out, latest=False)
    return int((df["path"] == name).sum())


def test_error_rows_are_retried_and_written_once(models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, 1, seed=1)
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (inp / "later.png").symlink_to(tmp_path / "not_there_yet.png")
    first = annotate([inp], out, *models, **KW)
    assert first["run"]["error"] == 2 and first["run"]["annotated"] == 3
    for _ in range(2):  # still broken, the same way: tried again, no new rows
        again = annotate([inp], out, *models, **KW)
        assert again["run"]["error_repeated"] == 2 and again["run"]["error"] == 0 and again["run"]["already_done"] == 1
        assert again["run"]["parts_written"] == 0
    assert _rows(out, "broken.jpg") == 1 and _rows(out, "later.png") == 1
    # the cause goes away without the file changing (here: the link's target appears): annotated
    shutil.copy(next(inp.glob("face_*.png")), tmp_path / "not_there_yet.png")
    fixed = annotate([inp], out, *models, **KW)
    assert fixed["run"]["annotated"] == 1 and fixed["run"]["error_repeated"] == 1
    view = read_annotations(out).drop_duplicates("path").set_index("path")["status"]
    assert view["later.png"] != "error" and view["broken.jpg"] == "error"
    assert annotate([inp], out, *models, **KW)["run"]["already_done"] == 2


def test_input_folders_of_one_name_never_share_rows_whatever_the_order(models, tmp_path):
    a, b, out = tmp_path / "a" / "photos", tmp_path / "b" / "photos", tmp_path / "out"
    write_image_folder(a, 2, seed=1)
    write_image_folder(b, 2, seed=2)  # the same file names, other faces
    assert annotate([a], out, *models, **KW)["run"]["annotated"] == 2
    second = annotate([b], out, *models, **KW)  # another folder of the same name, in its own run
    assert second["run"]["annotated"] == 2 and second["run"]["already_done"] == 0
    view = read_annotations(out).drop_duplicates(["root", "path"])
    assert dict(view.groupby("root")["input_root"].first()) == {"photos": str(a.resolve()), "photos~2": str(b.resolve())}
    for inputs in ([b, a], [a, b], [a, a, b]):  # order and repeats do not change what a folder is called
        again = annotate(inputs, out, *models, **KW)
        assert again["run"]["annotated"] == 0 and again["run"]["already_done"] == again["run"]["listed"] == 4


def test_a_content_change_that_keeps_size_and_mtime_is_annotated_again(models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    faces = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in write_image_folder(tmp_path / "src", 2, seed=4)]
    target = inp / "face.bmp"  # BMP: the same size for any content of the same shape
    cv2.imwrite(str(target), faces[0])
    annotate([inp], out, *models, **KW)
    st = target.stat()
    cv2.imwrite(str(target), faces[1])
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -d` or `cp -p` leave behind
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    again = annotate([inp], out, *models, **KW)
    assert again["run"]["annotated"] == 1
    assert read_annotations(out, latest=False)["sha256"].nunique() == 2


def test_plots_are_redrawn_when_lost_and_never_collide(models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    (p0, p1) = write_image_folder(inp, 2, seed=5)
    shutil.copy(p0, inp / (p1.name + ".jpg"))  # face_0001.png and face_0001.png.jpg
    long_name = "l" * (253 - len(".png")) + ".png"  # a legal name (253 bytes) whose plot name would pass 255
    shutil.copy(p0, inp / long_name)
    first = annotate([inp], out, *models, **{**KW, "plots": "all"})
    plots = {plot_path(out, "in", p.name) for p in inp.iterdir()}
    assert len(plots) == 4 and all(p.is_file() and p.stat().st_size > 0 for p in plots)
    assert sorted(first["plots"]) == sorted(os.path.relpath(p, out) for p in plots)
    assert all(len(os.fsencode(p.name)) <= 255 for p in plots)
    # a plot stage that died: one plot missing, a temporary left behind; the next run makes it good
    lost = plot_path(out, "in", p0.name)
    lost.unlink()
    (lost.parent / ".tmp-0123456789ab").write_bytes(b"")
    again = annotate([inp], out, *models, **{**KW, "plots": "all"})
    assert again["run"]["annotated"] == 0 and again["plots"] == [os.path.relpath(lost, out)] and lost.stat().st_size > 0
    assert not list(lost.parent.glob(".tmp-*"))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (skipped where this process may not mount one)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_a_rerun_finishes_every_file_once(models, tmp_path, small_disk):
    inp = tmp_path / "in"
    files = write_image_folder(inp, 24, seed=6, size=320)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3 * 2**20 - 120 * 2**10))  # leaves room for a few plots, not for all
    out = small_disk / "out"
    cmd = [sys.executable, "-m", "facepipe", "annotate", str(inp), "--output", str(out), "--keypoints-model", str(models[0]),
           "--emotion-model", str(models[1]), "--plots", "all", "--part-images", "4", "--local"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 4, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "Traceback" not in r.stderr
    filler.unlink()
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    df = read_annotations(out, latest=False)
    assert df.drop_duplicates(["path", "run_id"])["path"].value_counts().max() == 1  # each file in one run only
    assert sorted(df["path"].unique()) == sorted(p.name for p in files)
    assert all(plot_path(out, "in", p.name).stat().st_size > 0 for p in files)


def test_one_task_alone_keeps_the_schema_and_counts_as_done_only_for_itself(models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, 3, seed=7)
    first = annotate([inp], out, *models, **{**KW, "tasks": ["keypoints"]})
    assert first["run"]["annotated"] == 3 and first["models"]["emotion"]["id"] is None
    df = read_annotations(out)
    ok = df[df["status"] == "ok"]
    assert len(ok) and ok[[c for c in df.columns if c.startswith("kp_")]].notna().all().all()
    assert ok["emotion"].isna().all() and ok[[c for c in df.columns if c.startswith("prob_")]].isna().all().all()
    assert df["emotion_model_id"].isna().all()
    # both tasks: the emotion is missing, so every file is done again; then keypoints alone finds them done
    both = annotate([inp], out, *models, **KW)
    assert both["run"]["annotated"] == 3
    view = read_annotations(out)
    assert view.loc[view["status"] == "ok", "emotion"].notna().all() and view["emotion_model_id"].notna().all()
    assert annotate([inp], out, *models, **{**KW, "tasks": ["keypoints"]})["run"]["already_done"] == 3
    assert annotate([inp], out, *models, **{**KW, "tasks": ["emotion"]})["run"]["already_done"] == 3
