"""Hostile and careless inputs (issue 32): one line and a clear exit code, never a traceback, never a
file lost without a row. Each test here failed on ab169d6."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe.data.synth import write_fer_csv, write_image_folder

REPO = Path(__file__).resolve().parents[1]

#: Runs a command as this user but without the capabilities that let root read any folder, so that
#: mode 000 means to it what it means to everyone else (CI runs as root).
_NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def facepipe(*args, timeout=300, cwd=REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "facepipe", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The command's stderr, checked to be one line without a traceback."""
    err = proc.stderr.strip()
    assert "Traceback" not in err, err[-3000:]
    assert len(err.splitlines()) == 1, err[-3000:]
    return err


def copy_model(src: Path, dst: Path, **meta_changes) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta.update(meta_changes)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


# --- 3. model directories: one validation, with bounds, for every entry point ------------------


@pytest.mark.parametrize("field,value", [("input_size", 100000), ("input_size", 4), ("crop", 500)])
def test_a_model_dir_with_an_unbounded_input_is_refused_by_predict_and_annotate(models, tmp_path, field, value):
    bad = copy_model(Path(models[0]), tmp_path / "kp", **{field: value})
    write_image_folder(tmp_path / "in", 1)
    image = next((tmp_path / "in").iterdir())
    for proc in (facepipe("predict", image, "--keypoints-model", bad, "--emotion-model", models[1]),
                 facepipe("annotate", tmp_path / "in", "--output", tmp_path / "out", "--keypoints-model", bad, "--emotion-model", models[1])):
        assert proc.returncode == 2
        err = one_line(proc)
        assert str(bad / "meta.json") in err and repr(field) in err


def test_too_many_classes_or_points_are_refused(models, tmp_path):
    from facepipe.model_dir import check_model_dir

    bad = copy_model(Path(models[1]), tmp_path / "em", class_names=[f"c{i}" for i in range(100_000)])
    with pytest.raises(ValueError, match="class_names"):
        check_model_dir(bad, "emotion")


def test_predict_names_the_file_of_a_meta_json_that_is_not_json(models, tmp_path):
    bad = copy_model(Path(models[1]), tmp_path / "em")
    (bad / "meta.json").write_text('{"task": "emotion", "arch": oops}')
    write_image_folder(tmp_path / "in", 1)
    proc = facepipe("predict", next((tmp_path / "in").iterdir()), "--keypoints-model", models[0], "--emotion-model", bad)
    assert proc.returncode == 2
    assert str(bad / "meta.json") in one_line(proc)


def test_the_python_api_checks_model_dirs_too(models, tmp_path):
    import facepipe as fp

    bad = copy_model(Path(models[0]), tmp_path / "kp", input_size=100000)
    with pytest.raises(ValueError, match="input_size"):
        fp.predict([], keypoints_model=bad, emotion_model=models[1])
    with pytest.raises(ValueError, match="input_size"):
        fp.load_model(bad)


# --- 4. CSVs that are one huge line, or one huge cell -----------------------------------------


@pytest.mark.timeout(120)
def test_a_50_mb_single_line_csv_is_refused_in_seconds(tmp_path):
    from facepipe.data import CSVFormatError, read_table

    path = tmp_path / "one_line.csv"
    with open(path, "w") as f:
        for i in range(50 * 1024 * 1024 // 8):
            f.write(f"c{i:06d},")
    with pytest.raises(CSVFormatError, match="line 1") as e:
        read_table(path)
    assert len(str(e.value).splitlines()) == 1 and len(str(e.value)) < 500


@pytest.mark.timeout(120)
def test_a_50_mb_cell_names_its_line_and_column(tmp_path):
    from facepipe.data import CSVFormatError, read_table

    path = tmp_path / "fer.csv"
    write_fer_csv(path, 5)
    with open(path, "a") as f:
        f.write("3," + "1 " * (25 * 1024 * 1024) + ",Training\n")
    with pytest.raises(CSVFormatError) as e:
        read_table(path)
    msg = str(e.value)
    assert "line 7" in msg and "pixels" in msg and "straddl" not in msg and len(msg) < 500


# --- 5. one line where a traceback was ----------------------------------------------------------


def test_predict_of_no_images_is_an_empty_result(models):
    import facepipe as fp

    assert fp.predict([], keypoints_model=models[0], emotion_model=models[1]) == []
    frame = fp.predict([], keypoints_model=models[0], emotion_model=models[1], as_frame=True)
    assert len(frame) == 0 and "emotion" in frame.columns


@pytest.mark.parametrize("rows", [1, 3])
def test_training_on_a_csv_of_a_few_rows_says_why_in_one_line(tmp_path, rows):
    path = tmp_path / "tiny.csv"
    write_fer_csv(path, rows)
    proc = facepipe("train", "--task", "emotion", "--data", path, "--output", tmp_path / "run", "--epochs", "1")
    assert proc.returncode != 0
    err = one_line(proc)
    assert str(path) in err and "val" in err


def test_an_output_below_a_file_is_one_line(models, tmp_path):
    write_image_folder(tmp_path / "in", 1)
    (tmp_path / "afile").write_text("x")
    proc = facepipe("annotate", tmp_path / "in", "--output", tmp_path / "afile" / "out", "--keypoints-model", models[0],
                    "--emotion-model", models[1])
    assert proc.returncode == 2
    assert "afile" in one_line(proc)


def test_an_output_under_a_read_only_folder_is_one_line(models, tmp_path):
    write_image_folder(tmp_path / "in", 1)
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        probe = subprocess.run([*_NO_DAC, sys.executable, "-c", f"import os; os.mkdir({str(locked / 'x')!r})"], capture_output=True)
        if shutil.which("setpriv") is None or probe.returncode == 0:
            pytest.skip("no way here to make a folder read-only to this process")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "facepipe", "annotate", str(tmp_path / "in"), "--output", str(locked / "out"),
                               "--keypoints-model", str(models[0]), "--emotion-model", str(models[1])],
                              capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
        assert proc.returncode == 2
        assert "readonly" in one_line(proc) and "write permission" in proc.stderr
    finally:
        locked.chmod(0o755)


# --- 2. nothing lost in listing ------------------------------------------------------------------


def test_names_that_are_not_utf8_or_hold_a_backslash_stay_in_the_current_view(models, tmp_path):
    from facepipe.annotate import annotate, read_annotations

    inp = tmp_path / "in"
    face = write_image_folder(inp, 1)[0]
    raw = os.fsdecode(b"\xff\xfe.png")
    shutil.copy(face, inp / raw)
    shutil.copy(face, inp / "back\\slash.png")
    annotate([inp], tmp_path / "out", *models, plots="none", local=True, verbose=False)
    view = read_annotations(tmp_path / "out")
    assert view.path.nunique() == 3, sorted(view.path.unique())



def test_an_unreadable_sub_folder_is_named_and_fails_the_run(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, 1)
    write_image_folder(inp / "locked", 1)
    (inp / "locked").chmod(0o000)
    try:
        probe = subprocess.run([*_NO_DAC, sys.executable, "-c", f"import os; os.listdir({str(inp / 'locked')!r})"], capture_output=True)
        if shutil.which("setpriv") is None or probe.returncode == 0:
            pytest.skip("no way here to make a folder unreadable to this process")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "facepipe", "annotate", str(inp), "--recursive", "--output", str(out),
                               "--local", "--plots", "none", "--quiet"], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
        assert proc.returncode == 5, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and "in/locked" in proc.stderr and "Permission denied" in proc.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["run"]["unreadable_folders"] == [{"root": "in", "path": "locked", "error": "Permission denied"}]
        assert summary["run"]["annotated"] == 1
    finally:
        (inp / "locked").chmod(0o755)


# --- 6. symlinks out of the input folder ---------------------------------------------------------


def test_an_error_row_never_echoes_a_file_outside_the_input(models, tmp_path):
    from facepipe.annotate import annotate, read_annotations

    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN=hunter2\n")
    inp = tmp_path / "in"
    write_image_folder(inp, 1)
    (inp / "link.jpg").symlink_to(secret)
    annotate([inp], tmp_path / "out", *models, plots="none", local=True, verbose=False)
    row = read_annotations(tmp_path / "out").set_index("path").loc["link.jpg"]
    assert row.status == "error"
    for leak in ("SECRET", b"SECRET".hex(" "), b"SECRET"[:4].hex(), "hunter2"):
        assert leak not in row.error


# --- 5. interrupts: one line, the right exit code, committed parts intact ------------------------


@pytest.mark.integration
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("where", ["--local", "--ray"])
def test_an_interrupted_run_is_one_line_and_its_rerun_completes_exactly_once(models, tmp_path, sig, code, where):
    import signal
    import time

    from facepipe.annotate import read_annotations

    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, 120, size=320)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # --ray: an embedded Ray of its own, whose driver set-up installs SIGTERM handlers (a Python one, exit 15; a C++ one, abort 134)
    cmd = [sys.executable, "-m", "facepipe", "annotate", str(inp), "--output", str(out), where, "--plots", "none", "--quiet",
           "--part-images", "10", "--keypoints-model", str(models[0]), "--emotion-model", str(models[1])]
    # A shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the child the default disposition a terminal's Ctrl-C meets.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list((out / "annotations").glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr[-3000:]
    committed = read_annotations(out, latest=False)
    assert 0 < committed.path.nunique() < 120
    rerun = facepipe(*[a if a != "--ray" else "--local" for a in cmd[3:]])  # the rerun's own executor does not matter here
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = read_annotations(out, latest=False)
    assert rows.path.nunique() == 120 and not rows.duplicated(["path", "face_index"]).any()


# --- 1. a damaged output is named, set aside and redone; stray files are ignored ---------------


def _annotated(models, tmp_path, n=3):
    from facepipe.annotate import annotate

    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, n)
    annotate([inp], out, *models, plots="none", local=True, verbose=False)
    parts = sorted((out / "annotations").glob("part-*.parquet"))
    assert len(parts) == 1
    return inp, out, parts[0]


def _truncate(part: Path) -> None:
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])


def _scramble_pages(part: Path) -> None:
    data = bytearray(part.read_bytes())
    for i in range(200, 600):  # inside the first column chunks' pages; the footer stays intact
        data[i] ^= 0x5A
    part.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _scramble_pages], ids=["truncated", "bytes-changed-in-pages"])
def test_a_damaged_part_is_named_quarantined_and_its_files_annotated_again(models, tmp_path, damage):
    from facepipe.annotate import read_annotations
    from facepipe.annotate.state import DamagedOutput

    inp, out, part = _annotated(models, tmp_path)
    damage(part)
    with pytest.raises(DamagedOutput, match=part.name) as e:
        read_annotations(out)
    assert "\n" not in str(e.value)
    proc = facepipe("annotate", inp, "--output", out, "--local", "--plots", "none", "--quiet",
                    "--keypoints-model", models[0], "--emotion-model", models[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and part.name in proc.stderr and "quarantine" in proc.stderr
    assert (out / "quarantine" / part.name).is_file()  # set aside, never deleted
    view = read_annotations(out)
    assert sorted(view.path.unique()) == sorted(p.name for p in inp.iterdir()) and not view.duplicated(["path", "face_index"]).any()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["annotated"] == 3


def test_compact_sets_a_damaged_part_aside_and_says_so(models, tmp_path):
    inp, out, part = _annotated(models, tmp_path)
    _scramble_pages(part)
    proc = facepipe("compact", out)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr and part.name in proc.stderr
    assert (out / "quarantine" / part.name).is_file()


def test_stray_files_in_the_parts_folder_are_ignored_and_kept(models, tmp_path):
    from facepipe.annotate import annotate, read_annotations

    inp, out, _ = _annotated(models, tmp_path)
    (out / "annotations" / "notes.txt").write_text("my notes")
    assert annotate([inp], out, *models, plots="none", local=True, verbose=False)["run"]["already_done"] == 3
    assert read_annotations(out).path.nunique() == 3
    proc = facepipe("compact", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "annotations" / "notes.txt").read_text() == "my notes"
    assert read_annotations(out).path.nunique() == 3


def test_an_output_inside_the_input_folder_is_not_annotated(models, tmp_path):
    from facepipe.annotate import annotate, read_annotations

    inp = tmp_path / "in"
    write_image_folder(inp, 2)
    (inp / "summary_of_my_trip.png").write_bytes((inp / "face_0000.png").read_bytes())  # the user's file, not ours
    for _ in range(2):
        s = annotate([inp], inp / "out", *models, plots="all", recursive=True, local=True, verbose=False)
    assert s["run"]["listed"] == 3 and s["run"]["already_done"] == 3
    assert sorted(read_annotations(inp / "out").path.unique()) == ["face_0000.png", "face_0001.png", "summary_of_my_trip.png"]
