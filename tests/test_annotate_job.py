"""The annotation job on the session's real local Ray: a corpus of bad and odd files, incremental
reruns, plots and summary, the CLI's argument errors. (Kill -9 and rerun: test_annotate_kill.py.)"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image  # matplotlib's dependency: writes palette PNGs and EXIF JPEGs independently of OpenCV

from facepipe.annotate import SCHEMA_VERSION, annotate, read_annotations
from facepipe.data.synth import render_photos, write_image_folder

REPO = Path(__file__).resolve().parents[1]
KP_NAMES_X = [f"kp_{n}_x" for n in ("left_eye_center", "right_eye_center", "nose_tip")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained keypoint ResNet18 and a small emotion CNN (the code path does not need training)."""
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def _png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _jpeg(img, quality=92) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _exif_jpeg(stored: np.ndarray, orientation: int) -> bytes:
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def _write_corpus(folder: Path) -> dict[str, str]:
    """The odd files of the issue; returns {relative path: expected status}."""
    photos = render_photos(5, size=256, seed=7)[0]  # the cascade finds one face in each of 0, 1, 2, 4
    face, face2, face3 = photos[0], photos[1], photos[2]
    folder.mkdir(parents=True)
    (folder / "odd").mkdir()
    expected = {}

    def put(name, data, status):
        (folder / name).write_bytes(data)
        expected[name] = status

    put("empty.jpg", b"", "error")
    jpeg = _jpeg(face)
    put("truncated.jpg", jpeg[: len(jpeg) * 2 // 3], "error")
    put("notes.jpg", b"shopping list: eggs, milk\nnot an image at all\n", "error")
    put("png_named.jpg", _png(face), "ok")
    rgba = np.dstack([cv2.cvtColor(face2, cv2.COLOR_GRAY2BGR), np.full_like(face2, 255)])
    rgba[:20, :20, 3] = 0
    put("rgba.png", _png(rgba), "ok")
    put("gray16.png", _png(face3.astype(np.uint16) * 257), "ok")
    pal = io.BytesIO()
    Image.fromarray(face).convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=64).save(pal, "PNG")
    put("odd/palette.png", pal.getvalue(), "ok")
    # Upright face 256 high x 320 wide; stored rotated 90° counter-clockwise with EXIF 6 ("rotate
    # 90° clockwise to display"): only an EXIF-aware decoder sees an upright (detectable) face.
    upright = cv2.copyMakeBorder(face2, 0, 0, 32, 32, cv2.BORDER_REPLICATE)
    put("odd/upright.jpg", _exif_jpeg(upright, 1), "ok")
    put("odd/rotated.jpg", _exif_jpeg(cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE), 6), "ok")
    put("tiny.png", _png(np.full((10, 10), 128, np.uint8)), "no_face")
    put("huge.jpg", _jpeg(cv2.resize(photos[4], (6000, 6000), interpolation=cv2.INTER_LINEAR), 80), "ok")
    yy, xx = np.mgrid[0:240, 0:320]
    put("landscape.png", _png(((xx + yy) % 256).astype(np.uint8)), "no_face")
    put("odd/group.png", _png(np.hstack([face, face2, face3])), "ok")
    return expected


def test_odd_corpus_every_file_accounted_for(ray_session, models, tmp_path):
    kp_dir, em_dir = models
    inp = tmp_path / "photos"
    expected = _write_corpus(inp)
    # A second input root: real photos (PNG named .jpg) when ../shared is present.
    extra = tmp_path / "real"
    real_src = REPO.parent / "shared" / "data" / "images" / "faces"
    inputs = [inp]
    if real_src.is_dir():
        extra.mkdir()
        for f in sorted(real_src.iterdir())[:4]:
            shutil.copyfile(f, extra / f.name)
        inputs.append(extra)
    out = tmp_path / "out"
    summary = annotate(inputs, out, kp_dir, em_dir, recursive=True, plots="all", part_images=4, num_cpus=2)

    df = pd.read_parquet(out / "annotations")  # pandas reads the folder of parts
    assert len(list((out / "annotations").glob("part-*.parquet"))) >= 2
    assert int(df["schema_version"].iloc[0]) == SCHEMA_VERSION
    mine = df[df["root"] == "photos"]
    assert set(mine["path"]) == set(expected)  # every input file appears
    for path, status in expected.items():
        rows = mine[mine["path"] == path]
        assert set(rows["status"]) == {status}, (path, rows[["status", "error"]].to_dict("records"))
        if status == "ok":
            assert len(rows) == rows["num_faces"].iloc[0] and sorted(rows["face_index"]) == list(range(len(rows)))
        else:
            assert len(rows) == 1 and rows["face_index"].isna().all()
    by = {p: g for p, g in mine.groupby("path")}
    assert "empty" in by["empty.jpg"]["error"].iloc[0]
    assert "truncated JPEG" in by["truncated.jpg"]["error"].iloc[0]
    assert "not an image" in by["notes.jpg"]["error"].iloc[0]
    assert by["png_named.jpg"]["image_format"].iloc[0] == "png"
    assert by["rgba.png"]["image_mode"].iloc[0] == "bgra"
    assert by["gray16.png"]["image_mode"].iloc[0] == "gray16"
    assert by["odd/group.png"]["num_faces"].iloc[0] == 3
    huge = by["huge.jpg"].iloc[0]
    assert (huge["image_width"], huge["image_height"]) == (6000, 6000) and huge["bbox_w"] > 2000
    # EXIF: the rotated file is annotated as its upright picture, keypoints on the same face.
    rot, up = by["odd/rotated.jpg"].iloc[0], by["odd/upright.jpg"].iloc[0]
    assert (rot["image_width"], rot["image_height"], rot["exif_orientation"]) == (320, 256, 6)
    box = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    assert np.abs(rot[box].to_numpy(float) - up[box].to_numpy(float)).max() <= 4
    kx = [c for c in df.columns if c.startswith("kp_") and c.endswith("_x")]
    ky = [c[:-2] + "_y" for c in kx]
    pts_rot = np.stack([rot[kx].to_numpy(float), rot[ky].to_numpy(float)], 1)
    pts_up = np.stack([up[kx].to_numpy(float), up[ky].to_numpy(float)], 1)
    assert np.abs(pts_rot - pts_up).mean() < 0.05 * up["bbox_w"]
    # Face rows are complete: box, probabilities summing to 1, model ids, run id.
    ok = df[df["status"] == "ok"]
    probs = ok[[c for c in df.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape[1] == 7 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert ok[box + kx + ["emotion", "keypoints_model_id", "emotion_model_id", "sha256", "run_id", "timestamp"]].notna().all().all()
    assert (ok["emotion"] == ok[[c for c in df.columns if c.startswith("prob_")]].idxmax(axis=1).str[5:].str.capitalize()).all()
    if len(inputs) == 2:
        real = df[df["root"] == "real"]
        assert len(real.drop_duplicates("path")) == 4 and set(real["image_format"]) == {"png"}
        assert (real["status"] == "ok").sum() >= 3
    # pyarrow reads it too, with the documented schema metadata.
    t = pads.dataset(str(out / "annotations"), format="parquet").to_table()
    assert t.schema.metadata[b"facepipe.schema_version"] == str(SCHEMA_VERSION).encode()
    assert t.num_rows == len(df)
    # Plots mirror the input tree; summary plots and summary.json.
    for path, status in expected.items():
        assert (out / "plots" / "photos" / (path + ".jpg")).is_file() == (status != "error"), path
    plot = cv2.imread(str(out / "plots" / "photos" / "odd" / "group.png.jpg"))
    assert plot.shape[:2] == (256, 768)
    for name in ("summary_status.png", "summary_faces_per_image.png", "summary_emotions.png"):
        assert (out / name).stat().st_size > 1000
    saved = json.loads((out / "summary.json").read_text())
    assert saved["run"]["annotated"] == len(df.drop_duplicates(["root", "path"]))
    assert saved["run"]["error"] == 3 and saved["run"]["no_face"] == 2
    assert saved["dataset"]["status_counts"]["error"] == 3
    assert summary["run"]["faces"] == len(ok)


def test_in_process_run_writes_the_same_rows_as_the_ray_run(ray_session, models, tmp_path):
    """``local=True`` runs the same two stages without Ray: same rows, same exactly-once state."""
    kp_dir, em_dir = models
    inp = tmp_path / "photos"
    expected = _write_corpus(inp)
    runs = {}
    for local in (False, True):
        out = tmp_path / f"out_{local}"
        summary = annotate([inp], out, kp_dir, em_dir, recursive=True, plots="sample", plot_samples=3, part_images=4, num_cpus=2, local=local)
        assert summary["run"]["executor"] == ("in-process" if local else "ray") and summary["run"]["annotated"] == len(expected)
        assert len(summary["plots"]) == 3
        again = annotate([inp], out, kp_dir, em_dir, recursive=True, plots="none", local=local)
        errors = sum(st == "error" for st in expected.values())  # tried again, failed as before: no new row
        assert again["run"]["annotated"] == 0 and again["run"]["error_repeated"] == errors
        assert again["run"]["already_done"] == len(expected) - errors and again["run"]["parts_written"] == 0
        df = read_annotations(out).drop(columns=["run_id", "timestamp", "file_mtime_ns"])
        runs[local] = df.sort_values(["path", "face_index"], na_position="first").reset_index(drop=True)
    ray_rows, local_rows = runs[False], runs[True]
    assert list(ray_rows["path"]) == list(local_rows["path"]) and list(ray_rows["status"]) == list(local_rows["status"])
    numeric = ray_rows.select_dtypes("number").columns
    np.testing.assert_allclose(ray_rows[numeric].to_numpy(float), local_rows[numeric].to_numpy(float), atol=1e-4, equal_nan=True)
    other = [c for c in ray_rows.columns if c not in numeric]
    assert ray_rows[other].fillna("").astype(str).equals(local_rows[other].fillna("").astype(str))


def test_rerun_annotates_only_new_or_changed_files(ray_session, models, tmp_path):
    kp_dir, em_dir = models
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, 6, seed=3)
    kw = dict(plots="none", num_cpus=2, verbose=False)
    first = annotate([inp], out, kp_dir, em_dir, **kw)
    assert first["run"]["annotated"] == 6 and first["run"]["parts_written"] == 1
    parts = sorted((out / "annotations").glob("*.parquet"))

    second = annotate([inp], out, kp_dir, em_dir, **kw)
    assert second["run"]["annotated"] == 0 and second["run"]["already_done"] == 6
    assert sorted((out / "annotations").glob("*.parquet")) == parts  # nothing written

    new = write_image_folder(tmp_path / "more", 3, seed=11)
    for p in new:
        shutil.move(p, inp / f"new_{p.name}")
    third = annotate([inp], out, kp_dir, em_dir, **kw)
    assert third["run"]["annotated"] == 3 and third["run"]["already_done"] == 6
    t = pq.read_table(sorted(set((out / "annotations").glob("*.parquet")) - set(parts))[0])
    assert sorted(set(t.column("path").to_pylist())) == sorted(f"new_{p.name}" for p in new)

    # Touched but unchanged: hashed again, recognised, nothing written. Changed: annotated again.
    os.utime(inp / "face_0000.png", ns=(1, 1))
    img = cv2.imread(str(inp / "face_0001.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(inp / "face_0001.png"), cv2.flip(img, 1))
    fourth = annotate([inp], out, kp_dir, em_dir, **kw)
    assert fourth["run"]["skipped_same_content"] == 1 and fourth["run"]["annotated"] == 1

    everything = read_annotations(out, latest=False)
    latest = read_annotations(out)
    assert latest.groupby("path")["sha256"].nunique().max() == 1
    assert len(latest.drop_duplicates("path")) == 9
    assert everything[everything["path"] == "face_0001.png"]["sha256"].nunique() == 2  # history kept
    # each (file, content) annotated exactly once
    images = everything.drop_duplicates(["root", "path", "sha256", "run_id"])
    assert not images.duplicated(["root", "path", "sha256"]).any()
    # a deleted file leaves the current view (its rows stay in the history)
    (inp / "face_0002.png").unlink()
    current = read_annotations(out)
    assert current["path"].nunique() == 8 and "face_0002.png" not in set(current["path"])
    assert "face_0002.png" in set(read_annotations(out, existing=False)["path"]) and "face_0002.png" in set(read_annotations(out, latest=False)["path"])
    assert len(current[current["status"] == "ok"]) == current.drop_duplicates("path")["num_faces"].sum()  # one row per face, once

    # `facepipe compact` rewrites the dataset to that view, so any Parquet reader counts right; reruns still skip
    r = subprocess.run([sys.executable, "-m", "facepipe", "compact", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.splitlines()[-1])
    assert (s["rows_before"], s["rows_after"], s["files_after"], s["parts_after"]) == (len(everything), len(current), 8, 1)
    compacted = pd.read_parquet(out / "annotations")
    assert len(compacted) == len(current) and compacted["path"].nunique() == 8
    pd.testing.assert_frame_equal(read_annotations(out, latest=False), current)
    fifth = annotate([inp], out, kp_dir, em_dir, **kw)
    assert fifth["run"]["annotated"] == 0 and fifth["run"]["already_done"] + fifth["run"]["skipped_same_content"] == 8

    # killed between its two renames: readers see the whole new copy, the next run completes the swap
    from facepipe.annotate.compact import compact, finish_interrupted_compaction

    shutil.copytree(out / "annotations", out / "annotations.compact")
    os.replace(out / "annotations", out / "annotations.old")
    assert len(read_annotations(out, latest=False)) == len(current)
    assert finish_interrupted_compaction(out) == "completed"
    assert not (out / "annotations.old").exists() and not (out / "annotations.compact").exists()
    # killed while writing the new copy: undone, the dataset untouched
    (out / "annotations.compact").mkdir()
    (out / "annotations.compact" / ".part-x.parquet.tmp").write_bytes(b"half")
    assert compact(out)["recovered"] == "undone" and len(read_annotations(out, latest=False)) == len(current)


def test_limit_then_other_models_reannotate(ray_session, models, tmp_path):
    kp_dir, em_dir = models
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image_folder(inp, 5, seed=5)
    kw = dict(plots="sample", plot_samples=1, num_cpus=2, verbose=False)
    s1 = annotate([inp], out, kp_dir, em_dir, limit=2, **kw)
    assert s1["run"]["annotated"] == 2 and s1["run"]["left_by_limit"] == 3
    assert len(s1["plots"]) == 1  # --plots sample draws at most N
    from untrained import write_untrained_models

    kp2, em2 = write_untrained_models(tmp_path / "models2", small_emotion=True, seed=1)
    s2 = annotate([inp], out, kp2, em2, **kw)
    assert s2["run"]["annotated"] == 5 and s2["run"]["already_done"] == 0  # other models: every file
    latest = read_annotations(out)
    assert set(latest["emotion_model_id"]) == {json.loads((em2 / "meta.json").read_text())["model_id"]}
    assert latest["path"].nunique() == 5


def _cli(*args, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, str(REPO / "jobs" / "annotate.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_help_and_bad_arguments(models, tmp_path):
    kp_dir, em_dir = models
    h = _cli("--help")
    assert h.returncode == 0
    for flag in ("--input", "--output", "--keypoints-model", "--emotion-model", "--recursive", "--glob", "--batch-size", "--concurrency", "--plots", "--limit", "--progress"):
        assert flag in h.stdout
    assert "(default: 64)" in h.stdout and "(default: sample)" in h.stdout
    (tmp_path / "in").mkdir()
    cases = [
        (["--input", tmp_path / "missing", "--output", tmp_path / "o", "--keypoints-model", kp_dir, "--emotion-model", em_dir], "input not found (no such file or folder)"),
        (["--input", tmp_path / "in", "--output", tmp_path / "o", "--keypoints-model", em_dir, "--emotion-model", em_dir], "expected a 'keypoints' model"),
        (["--input", tmp_path / "in", "--output", tmp_path / "o", "--keypoints-model", kp_dir, "--emotion-model", em_dir, "--cascade", "nope.xml"], "no Haar cascade"),
    ]
    for args, reason in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], r.stderr


def test_demo_folder_with_the_real_photo(ray_session, models, tmp_path):
    from facepipe.annotate import annotate_demo

    kp_dir, em_dir = models
    summary = annotate_demo(tmp_path / "demo", kp_dir, em_dir, n_generated=3, num_cpus=2, verbose=False)
    df = read_annotations(tmp_path / "demo")
    assert sorted(df["path"].unique()) == ["face_0000.png", "face_0001.png", "face_0002.png", "grace_hopper.jpg"]
    hopper = df[df["path"] == "grace_hopper.jpg"]
    assert list(hopper["status"]) == ["ok"] and hopper["image_format"].iloc[0] == "jpeg"
    assert (tmp_path / "demo" / "plots" / "images" / "grace_hopper.jpg.jpg").is_file()
    assert summary["run"]["annotated"] == 4
