"""Annotation building blocks without Ray: decoding by content, EXIF, crops, detection, schema,
atomic parts, and in-process ``predict``."""
from __future__ import annotations

import io
import json
import shutil
import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image  # matplotlib's own dependency: an encoder independent of OpenCV for test files

from facepipe.faces.crop import crop_resize, crop_to_image, image_to_crop, square_crop
from facepipe.faces.detect import HaarConfig, cascade_path, detect_faces
from facepipe.annotate.listing import list_files
from facepipe.faces.decode import ImageDecodeError, decode_image, exif_orientation, sniff_format
from facepipe.annotate.schema import SCHEMA_VERSION, build_schema, rows_to_table
from facepipe.annotate.writer import OutputLocked, PartWriter, output_lock
from facepipe.data.schema import EMOTIONS, KeypointSchema
from facepipe.data.synth import render_photos, write_image_folder


def _pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained keypoint ResNet18 and a small emotion CNN (the code path does not need training)."""
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 256x256 generated photo the Haar cascade finds one face in."""
    return render_photos(1, size=256, seed=7)[0][0]


@pytest.fixture(scope="module")
def asym() -> np.ndarray:
    """A small asymmetric BGR image: every flip/rotation of it is distinguishable."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)


# --- decoding by content ----------------------------------------------------------------------


def test_decode_modes_by_content_not_extension(face):
    gray = face
    rgb = Image.fromarray(gray).convert("RGB")
    rgba = np.dstack([np.repeat(gray[:, :, None], 3, 2), np.full_like(gray, 255)])
    rgba[:10, :10, 3] = 0  # transparent corner → white
    cases = {
        "L": (_pil_bytes(Image.fromarray(gray), "PNG"), "png", "gray"),
        "RGB jpeg": (_pil_bytes(rgb, "JPEG", quality=95), "jpeg", "bgr"),
        "RGBA": (_pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), "png", "bgra"),
        "LA": (_pil_bytes(Image.fromarray(gray).convert("LA"), "PNG"), "png", "bgra"),
        "P": (_pil_bytes(rgb.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG"), "png", "bgr"),
        "16-bit gray": (cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes(), "png", "gray16"),
        "16-bit BGR": (cv2.imencode(".png", np.repeat(gray[:, :, None], 3, 2).astype(np.uint16) * 257)[1].tobytes(), "png", "bgr16"),
        "BMP": (cv2.imencode(".bmp", gray)[1].tobytes(), "bmp", "gray"),
        "WebP": (_pil_bytes(rgb, "WEBP", lossless=True), "webp", "bgr"),
        "TIFF": (_pil_bytes(Image.fromarray(gray), "TIFF"), "tiff", "gray"),
    }
    for name, (data, fmt, mode) in cases.items():
        assert sniff_format(data) == fmt, name
        dec = decode_image(data)
        assert (dec.format, dec.mode, dec.width, dec.height) == (fmt, mode, 256, 256), name
        assert dec.image.dtype == np.uint8 and dec.gray.shape == (256, 256), name
        max_err, mean_err = {"RGB jpeg": (40, 3), "P": (60, 4)}.get(name, (0, 0))  # lossy: JPEG, 64 colours
        diff = np.abs(dec.gray[20:, 20:].astype(int) - gray[20:, 20:])
        assert diff.max() <= max_err and diff.mean() <= mean_err, (name, diff.max(), diff.mean())
    assert (decode_image(cases["RGBA"][0]).gray[:10, :10] == 255).all()  # composited over white


def test_decode_errors_have_one_line_reasons(face):
    jpeg = _pil_bytes(Image.fromarray(face), "JPEG")
    png = _pil_bytes(Image.fromarray(face), "PNG")
    bad = {
        b"": "empty file",
        b"hello, I am a text file pretending to be a JPEG\n": "not an image",
        jpeg[: len(jpeg) // 2]: "truncated JPEG",
        png[: len(png) // 2]: "png",
    }
    for data, expected in bad.items():
        with pytest.raises(ImageDecodeError) as e:
            decode_image(data)
        assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_matches_opencv(asym, fmt):
    """Our orientation (read ourselves for JPEG/PNG/WebP, by the TIFF decoder) equals OpenCV's own
    IMREAD_COLOR orientation handling, for all eight values."""
    base = Image.fromarray(asym[:, :, ::-1])
    for orientation in range(1, 9):
        exif = base.getexif()
        exif[0x0112] = orientation
        kw = {"quality": 95} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else {})
        data = _pil_bytes(base, fmt, exif=exif, **kw)
        if fmt != "TIFF":
            assert exif_orientation(data) == orientation
        ours = decode_image(data).image
        theirs = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert ours.shape == theirs.shape, (fmt, orientation)
        assert np.array_equal(ours, theirs), (fmt, orientation)
        if orientation in (5, 6, 7, 8):
            assert ours.shape[:2] == (40, 24)


def test_list_files(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for p in ("a/x.jpg", "a/y.png", "a/sub/z.jpg", "a/.dot.jpg", "a/.hidden/h.jpg"):
        (tmp_path / p).write_bytes(b"x")
    flat = [e.path for e in list_files([tmp_path / "a"])]
    assert flat == ["x.jpg", "y.png"]
    deep = [e.path for e in list_files([tmp_path / "a"], recursive=True, pattern="*.jpg")]
    assert deep == ["sub/z.jpg", "x.jpg"]
    assert len(list_files([tmp_path / "a"], recursive=True, include_hidden=True)) == 5
    b = tmp_path / "b" / "a"
    b.mkdir(parents=True)
    (b / "x.jpg").write_bytes(b"y")
    roots = {e.root for e in list_files([tmp_path / "a", b])}
    assert roots == {"a", "a~2"}  # two inputs named alike stay distinct


def test_list_files_takes_files_as_named_and_lists_each_file_once(tmp_path):
    (tmp_path / "a").mkdir()
    for p in ("a/x.jpg", "a/y.png", "a/.dot.jpg"):
        (tmp_path / p).write_bytes(b"x")
    one = list_files([tmp_path / "a" / ".dot.jpg"])  # a file named alone is taken, hidden or not
    assert [(e.root, e.path) for e in one] == [("a", ".dot.jpg")] and one[0].input_root == str((tmp_path / "a").resolve())
    # the same keys as when its folder is annotated, so incremental runs recognise it
    both = list_files([tmp_path / "a" / "x.jpg", tmp_path / "a", tmp_path / "a" / "y.png"])
    assert [(e.root, e.path) for e in both] == [("a", "x.jpg"), ("a", "y.png")]


# --- crops and the one mapping back to image pixels -----------------------------------------


def test_crop_mapping_roundtrip_and_dot():
    sq = square_crop((50.0, 40.0, 100.0, 120.0), 0.15)
    assert sq[2] == round(120 * 1.3)
    pts = np.array([[[0.0, 0.0], [95.0, 95.0], [47.5, 10.25]]])
    assert np.allclose(image_to_crop(crop_to_image(pts, np.array(sq)[None, None], 96), np.array(sq)[None, None], 96), pts)
    # A bright dot at a known image position is found by the model-side crop where the mapping says.
    img = np.zeros((400, 300), np.uint8)
    x, y = 131, 177
    cv2.circle(img, (x, y), 6, 255, -1)
    for square in [(60, 90, 180), (-40, 100, 260), (100, 150, 48)]:  # shrink, pad outside, enlarge
        for size in (96, 48):
            crop = crop_resize(img, square, size)
            m = cv2.moments(crop.astype(np.float32))
            back = crop_to_image(np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]]), square, size)
            assert np.abs(back - [x, y]).max() < 0.6, (square, size, back)


def test_detect_downscales_large_images(face):
    det = HaarConfig()
    small, _ = detect_faces(face, det)
    assert len(small) == 1
    big = cv2.resize(face, (6000, 6000), interpolation=cv2.INTER_LINEAR)
    boxes, scores = detect_faces(big, det)
    assert len(boxes) == 1 and scores[0] > 0
    assert np.abs(boxes[0] - small[0] * (6000 / 256)).max() < 0.04 * 6000
    assert len(detect_faces(np.full((10, 10), 128, np.uint8), det)[0]) == 0
    with pytest.raises(FileNotFoundError):
        cascade_path("no_such_cascade.xml")
    with pytest.raises(ValueError):
        HaarConfig(scale_factor=1.0)


# --- schema and atomic parts ---------------------------------------------------------------------


def _rows(keys: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """Pipeline rows for (path, num_faces, face_index) triples (face_index -1: a no_face row)."""
    n = len(keys)
    return {
        "root": np.array(["r"] * n, object),
        "input_root": np.array(["/in"] * n, object),
        "path": np.array([k[0] for k in keys], object),
        "abs_path": np.array(["/in/" + k[0] for k in keys], object),
        "sha256": np.array(["ab" * 32] * n, object),
        "status": np.array(["ok" if k[2] >= 0 else "no_face" for k in keys], object),
        "error": np.array([""] * n, object),
        "image_format": np.array(["png"] * n, object),
        "image_mode": np.array(["gray"] * n, object),
        "file_size": np.full(n, 10, np.int64),
        "file_mtime_ns": np.full(n, 5, np.int64),
        "exif_orientation": np.ones(n, np.int16),
        "image_width": np.full(n, 64, np.int32),
        "image_height": np.full(n, 48, np.int32),
        "num_faces": np.array([k[1] for k in keys], np.int32),
        "face_index": np.array([k[2] for k in keys], np.int32),
        "score": np.full(n, 2.5, np.float32),
        "bbox": np.tile(np.array([1, 2, 3, 4], np.float32), (n, 1)),
        "keypoints": np.zeros((n, 15, 2), np.float32),
        "probs": np.full((n, 7), 1 / 7, np.float32),
        "emotion": np.array(["Happy"] * n, object),
    }


def _table(schema, keys):
    return rows_to_table(_rows(keys), schema, run_id="run1", timestamp=None, keypoints_model_id="kp", emotion_model_id="em", detector="haar")


def test_schema_fields_and_nulls():
    schema = build_schema(KeypointSchema.kaggle().names, list(EMOTIONS))
    assert schema.metadata[b"facepipe.schema_version"] == str(SCHEMA_VERSION).encode()
    names = schema.names
    assert {"path", "sha256", "image_width", "image_height", "face_index", "bbox_x", "bbox_h", "detector_score", "emotion", "run_id", "timestamp", "status", "error"} <= set(names)
    assert "kp_left_eye_center_x" in names and "kp_mouth_center_bottom_lip_y" in names
    assert [n for n in names if n.startswith("prob_")] == [f"prob_{e.lower()}" for e in EMOTIONS]
    assert all(f.metadata and f.metadata.get(b"description") for f in schema)
    t = _table(schema, [("a.png", 1, 0), ("b.png", 0, -1)])
    d = t.to_pylist()
    assert d[0]["status"] == "ok" and d[0]["bbox_w"] == 3 and d[0]["emotion"] == "Happy"
    assert d[1]["status"] == "no_face" and d[1]["face_index"] is None and d[1]["bbox_x"] is None and d[1]["emotion"] is None and d[1]["prob_happy"] is None


def test_a_68_point_model_gets_lm_columns_and_the_kaggle_columns_derived_from_them():
    from facepipe.data.schema import IBUG68_NAMES, IBUG68_TO_KAGGLE15

    schema = build_schema(list(IBUG68_NAMES), list(EMOTIONS))
    kp = [n for n in schema.names if n.startswith(("kp_", "lm_"))]
    assert kp == [c for n in IBUG68_TO_KAGGLE15 for c in (f"kp_{n}_x", f"kp_{n}_y")] + [f"lm_{i:02d}_{a}" for i in range(68) for a in "xy"]
    rows = _rows([("a.png", 1, 0), ("b.png", 0, -1)])
    rng = np.random.default_rng(0)
    rows["keypoints"] = rng.uniform(0, 60, (2, 68, 2)).astype(np.float32)
    d = rows_to_table(rows, schema, run_id="r", timestamp=None, keypoints_model_id="kp", emotion_model_id="em", detector="haar").to_pylist()
    pts = rows["keypoints"][0]
    assert d[0]["lm_08_x"] == pts[8, 0] and d[0]["lm_67_y"] == pts[67, 1]
    assert d[0]["kp_nose_tip_x"] == pytest.approx(pts[30, 0]) and d[0]["kp_left_eye_center_y"] == pytest.approx(pts[42:48, 1].mean(), abs=1e-4)
    assert d[1]["lm_00_x"] is None and d[1]["kp_nose_tip_x"] is None  # no face, no points


def test_part_writer_commits_complete_images_atomically(tmp_path):
    schema = build_schema(KeypointSchema.kaggle().names, list(EMOTIONS))
    out = tmp_path / "out"
    ds_dir = out / "annotations"
    ds_dir.mkdir(parents=True)
    (ds_dir / ".part-old-00000.parquet.tmp").write_bytes(b"half a file from a killed run")
    with output_lock(out):
        with pytest.raises(OutputLocked):
            with output_lock(out):
                pass
        w = PartWriter(ds_dir, schema, "run1", part_images=2, part_seconds=1e9)
        assert not list(ds_dir.glob(".*.tmp"))  # stale temporaries removed under the lock
        # Image "m.png" has 3 faces whose rows arrive in two batches.
        assert w.add(_table(schema, [("m.png", 3, 0), ("a.png", 0, -1)])) == []
        parts = w.add(_table(schema, [("m.png", 3, 1), ("m.png", 3, 2)]))
        assert len(parts) == 1
        part = pq.read_table(parts[0])
        assert sorted(part.column("path").to_pylist()) == ["a.png", "m.png", "m.png", "m.png"]
        assert len(set(part.column("timestamp").to_pylist())) == 1
        w.add(_table(schema, [("z.png", 2, 0)]))  # incomplete image at the end
        with pytest.raises(RuntimeError, match="incomplete"):
            w.close()
    assert [p.name for p in ds_dir.glob("*.parquet")] == ["part-run1-00000.parquet"]
    (ds_dir / ".part-run2-00000.parquet.tmp").write_bytes(b"garbage")
    assert pads.dataset(str(ds_dir), format="parquet").to_table().num_rows == 4  # temporaries are invisible


# --- in-process predict ---------------------------------------------------------------------------


def test_predict_real_photo_arrays_bytes_and_crops(models, face):
    import matplotlib.cbook

    from facepipe.annotate import predict

    kp_dir, em_dir = models
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    res = predict(hopper, kp_dir, em_dir)
    assert res["status"] == "ok" and (res["width"], res["height"]) == (512, 600)
    assert len(res["faces"]) == 1
    f = res["faces"][0]
    x, y, w, h = f["bbox"]
    assert 100 < x < 250 and 50 < y < 200 and 150 < w < 300
    assert f["keypoints_array"].shape == (15, 2) and set(f["keypoints"]) == set(KeypointSchema.kaggle().names)
    assert f["emotion"] in EMOTIONS and abs(sum(f["probabilities"].values()) - 1) < 1e-4
    assert f["score"] is not None
    many = predict([face, _pil_bytes(Image.fromarray(face), "PNG"), np.zeros((10, 10), np.uint8), b"junk"], kp_dir, em_dir)
    assert [r["status"] for r in many] == ["ok", "ok", "no_face", "error"]
    np.testing.assert_allclose(many[0]["faces"][0]["keypoints_array"], many[1]["faces"][0]["keypoints_array"], atol=1e-3)
    crops = predict([face[60:200, 50:190]], kp_dir, em_dir, detect=False)
    assert crops[0]["status"] == "ok" and crops[0]["faces"][0]["bbox"] == (0.0, 0.0, 140.0, 140.0)


def test_predict_reads_arrays_in_the_colour_order_it_is_told(models):
    """An RGB photo held by PIL/matplotlib and the same photo as OpenCV's BGR give one answer."""
    import matplotlib.cbook

    from facepipe.annotate import predict

    kp_dir, em_dir = models
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    from_file = predict(str(path), kp_dir, em_dir)["faces"][0]
    for item, color in ((rgb, "rgb"), (bgr, "bgr"), (Image.open(path), "bgr")):  # PIL is RGB whatever color says
        got = predict(item, kp_dir, em_dir, color=color)["faces"][0]
        np.testing.assert_allclose(got["keypoints_array"], from_file["keypoints_array"], atol=1e-3)
        assert got["probabilities"] == pytest.approx(from_file["probabilities"], abs=1e-4)
    swapped = predict(bgr, kp_dir, em_dir, color="rgb")  # told the wrong order: a different grey image
    assert swapped["status"] != "ok" or not np.allclose(swapped["faces"][0]["keypoints_array"], from_file["keypoints_array"], atol=1e-3)
    with pytest.raises(ValueError, match="color must be one of"):
        predict(rgb, kp_dir, em_dir, color="hsv")


def test_predict_as_frame_has_the_parquet_columns(models, face):
    from facepipe.annotate import predict
    from facepipe.annotate.schema import build_schema

    kp_dir, em_dir = models
    df = predict([face, np.zeros((10, 10), np.uint8)], kp_dir, em_dir, as_frame=True)
    schema = build_schema(list(KeypointSchema.kaggle().names), list(EMOTIONS))
    assert list(df.columns) == schema.names
    assert list(df["status"]) == ["ok", "no_face"] and df.loc[0, "kp_nose_tip_x"] > 0 and np.isnan(df.loc[1, "kp_nose_tip_x"])


def test_summary_json_friendly():
    assert json.loads(json.dumps(HaarConfig().to_dict()))["cascade"].endswith(".xml")
    assert "haar:" in HaarConfig().describe()
    assert os.path.isfile(cascade_path(HaarConfig().cascade))


def test_prepare_stage_turns_every_failure_into_a_row(tmp_path, face):
    from facepipe.annotate.prepare import PrepareConfig, prepare_batch

    good = tmp_path / "good.png"
    good.write_bytes(_pil_bytes(Image.fromarray(face), "PNG"))
    big = tmp_path / "big.png"
    big.write_bytes(good.read_bytes() + b"\0" * 100)
    paths = [good, big, tmp_path / "vanished.png", good]
    batch = {
        "root": np.array(["r"] * 4, object), "input_root": np.array([str(tmp_path)] * 4, object),
        "path": np.array([p.name for p in paths], object), "abs_path": np.array([str(p) for p in paths], object),
        "file_size": np.full(4, -1), "file_mtime_ns": np.full(4, -1),
        "done_sha": np.array(["", "", "", __import__("hashlib").sha256(good.read_bytes()).hexdigest()], object),
    }
    out = prepare_batch(batch, PrepareConfig(max_file_bytes=good.stat().st_size + 50))
    assert list(out["status"]) == ["ok", "error", "error", "skipped"]
    assert "too large" in out["error"][1] and len(out["sha256"][1]) == 64
    assert "cannot read file" in out["error"][2] and out["sha256"][2] == ""
    assert out["crop_keypoints"].shape == (4, 96, 96) and out["crop_emotion"].shape == (4, 48, 48)
    assert out["file_size"][0] == good.stat().st_size


def test_annotation_driver_reads_model_dirs_without_importing_torch(tmp_path):
    """The driver only plans the run; torch + torchvision (~3 s to import on 2 cores) belong in the
    inference actors. Checked in a fresh interpreter, since this test process has torch loaded."""
    import subprocess
    import sys

    import hashlib

    sha = hashlib.sha256(b"").hexdigest()  # of the empty weights.pt below: the driver checks it, still without torch
    for task in ("keypoints", "emotion"):
        d = tmp_path / task
        d.mkdir()
        labels = {"keypoint_names" if task == "keypoints" else "class_names": ["a", "b"]}
        (d / "meta.json").write_text(json.dumps({"task": task, "arch": "x", "arch_args": {}, "input_size": 48,
                                                 "normalization": {"mean": 0.5, "std": 0.25}, **labels, "weights_sha256": sha}))
        (d / "weights.pt").write_bytes(b"")
    code = (
        "import sys\n"
        "import facepipe.annotate.job\n"
        "from facepipe.annotate.infer import load_models_meta\n"
        "from facepipe.model_dir import model_id\n"
        f"kp, em = load_models_meta({str(tmp_path / 'keypoints')!r}, {str(tmp_path / 'emotion')!r})\n"
        "print(model_id(kp), model_id(em), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["keypoints-x-" + sha[:12], "emotion-x-" + sha[:12], "False"]


# --- hostile inputs (issue probes): each is one error row, never a hang, a crash or 5 GB ----------


def _claims(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_a_decompression_bomb_is_refused_from_its_header():
    from facepipe.faces.decode import MAX_PIXELS

    for w, h in ((30000, 30000), (12000, 12000)):  # above Pillow's own limit, and above ours only
        with pytest.raises(ImageDecodeError, match=f"over the decode budget of {MAX_PIXELS:,} pixels"):
            decode_image(_claims(w, h))


def test_a_fifo_swapped_in_after_listing_is_an_error_row_not_a_hang(tmp_path, face):
    from facepipe.annotate.prepare import FILE_COLUMNS, PrepareConfig, prepare_batch

    good = tmp_path / "good.png"
    good.write_bytes(_pil_bytes(Image.fromarray(face), "PNG"))
    listed = list_files([tmp_path])
    os.mkfifo(tmp_path / "late.png")  # appears between listing and reading
    rec = {k: getattr(listed[0], {"abs_path": "abs_path", "input_root": "input_root", "root": "root", "path": "path"}.get(k, "path")) for k in FILE_COLUMNS}
    batch = {k: np.array([rec[k], rec[k]], dtype=object) for k in FILE_COLUMNS}
    batch["abs_path"][1] = str(tmp_path / "late.png")
    batch["file_size"] = np.array([-1, -1], dtype=object)
    batch["file_mtime_ns"] = np.array([-1, -1], dtype=object)
    batch["done_sha"] = np.array(["", ""], dtype=object)
    batch["segment"] = np.array(["", ""], dtype=object)  # files, not video segments
    out = prepare_batch(batch, PrepareConfig(cv2_threads=0))
    assert out["status"][0] == "ok" and out["status"][-1] == "error" and "not a regular file" in out["error"][-1]
    assert [e.path for e in list_files([tmp_path])] == ["good.png"]  # and listing skips FIFOs


def test_a_file_name_that_is_not_utf8_gets_a_lossless_text_name(tmp_path, face):
    import pyarrow as pa

    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as f:
        f.write(_pil_bytes(Image.fromarray(face), "PNG"))
    (tmp_path / "caf\\xe9.png").write_bytes(b"x")  # a file literally named like the escape
    entries = list_files([tmp_path])
    names = sorted(e.path for e in entries)
    assert names == ["caf\\\\xe9.png", "caf\\xe9.png"]  # its backslash doubled, the byte escaped: two names
    bad = next(e for e in entries if os.fsencode(e.abs_path).endswith(b"caf\xe9.png"))
    pa.array([bad.path], pa.string())  # Parquet can store it (a surrogate escape raised UnicodeEncodeError)
    assert open(bad.abs_path, "rb").read(4) == b"\x89PNG"  # and the file is still read by its real name
    from facepipe.annotate.listing import real_name

    for e in entries:  # the text maps back to the file (plots reopen files from the Parquet path)
        assert os.path.samefile(tmp_path / real_name(e.path), e.abs_path)


def test_a_symlink_loop_is_an_input_that_cannot_be_read(tmp_path, face):
    from facepipe.annotate.job import _inputs_only
    from facepipe.annotate.prepare import FILE_COLUMNS, PrepareConfig, prepare_batch

    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    entries = list_files([tmp_path])
    assert [e.path for e in entries] == ["a.jpg", "b.jpg"]
    assert _inputs_only(entries, tmp_path / "out") == entries  # resolving them raised "Symlink loop" before any work
    e = entries[0]
    rec = {"root": e.root, "input_root": e.input_root, "path": e.path, "abs_path": e.abs_path, "file_size": e.size, "file_mtime_ns": e.mtime_ns, "done_sha": "", "segment": ""}
    out = prepare_batch({k: np.array([rec[k]], dtype=object) for k in FILE_COLUMNS}, PrepareConfig(cv2_threads=0))
    assert out["status"][0] == "error" and "cannot read file" in out["error"][0]


def _pickled_code(meta: dict, d: Path) -> None:
    """weights.pt as a pickle that would run code when loaded without weights_only (meta.json's hash updated)."""
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/facepipe-pwned",))

    data = pickle.dumps({"x": Evil()})
    (d / "weights.pt").write_bytes(data)
    (d / "meta.json").write_text(json.dumps({**meta, "weights_sha256": hashlib.sha256(data).hexdigest()}))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta, d: (d / "meta.json").write_text("[1, 2]"), "holds a list"),
        (lambda meta, d: (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "input_size"})), "field 'input_size' is missing"),
        (lambda meta, d: (d / "meta.json").write_text(json.dumps({**meta, "input_size": 0})), "'input_size' is 0"),
        (lambda meta, d: (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "keypoint_names"})), "'keypoint_names' is missing"),
        (lambda meta, d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:-100]), "sha256 is not the weights_sha256"),
        (lambda meta, d: (d / "weights.pt").unlink(), "no weights.pt"),
        (lambda meta, d: (d / "meta.json").write_text(json.dumps({**meta, "keypoint_names": meta["keypoint_names"][:10]})),
         "weights.pt: does not fit the network"),
        (lambda meta, d: (d / "meta.json").write_text(json.dumps({**meta, "arch_args": {**meta["arch_args"], "width": 8}})),
         "weights.pt: does not fit the network"),
        (lambda meta, d: _pickled_code(meta, d), "weights.pt: not a plain state dict of tensors, refused"),
        (lambda meta, d: (d / "meta.json").write_text(json.dumps({**meta, "arch": "resnet9"})), "describes no network"),
    ],
)
def test_a_broken_model_directory_is_one_line_before_any_work(models, tmp_path, edit, message):
    from facepipe.annotate.job import AnnotateError, annotate

    kp_dir, em_dir = models
    broken = tmp_path / "kp"
    shutil.copytree(kp_dir, broken)
    edit(json.loads((kp_dir / "meta.json").read_text()), broken)
    (tmp_path / "in").mkdir()
    write_image_folder(tmp_path / "in", 1)
    with pytest.raises(AnnotateError, match=message) as raised:
        annotate(tmp_path / "in", tmp_path / "out", broken, em_dir, local=True)
    assert "\n" not in str(raised.value) and not (tmp_path / "out" / "annotations").exists()
    assert not os.path.exists("/tmp/facepipe-pwned")


def test_annotation_predict_and_evaluation_share_one_predictor(models, face, tmp_path):
    """A face's keypoints and probabilities from facepipe.predict (the job's stages) equal the
    Predictor's on the very crops annotation made; evaluation's metrics are that Predictor's too."""
    from facepipe.annotate import predict
    from facepipe.faces.crop import crop_to_image
    from facepipe.annotate.infer import Annotator
    from facepipe.annotate.prepare import PrepareConfig, prepare_items
    from facepipe.data.synth import write_fer_csv
    from facepipe.evaluate import evaluate
    from facepipe.predictor import Predictor

    kp_dir, em_dir = models
    got = predict(face, kp_dir, em_dir)["faces"][0]
    annotator = Annotator(kp_dir, em_dir)
    assert isinstance(annotator.kp, Predictor) and isinstance(annotator.em, Predictor)
    rows = prepare_items([face], PrepareConfig(cv2_threads=0, **annotator.crops))
    kp, em = Predictor.load(kp_dir, "cpu"), Predictor.load(em_dir, "cpu")
    square = np.asarray(rows["square"])[:, None, :]
    np.testing.assert_array_equal(got["keypoints_array"], crop_to_image(kp(rows["crop_keypoints"]), square, kp.size)[0].astype(np.float32))
    np.testing.assert_array_equal(np.array(list(got["probabilities"].values()), np.float32), em(rows["crop_emotion"])[0])

    fer = write_fer_csv(tmp_path / "fer.csv", 60, seed=3)
    from facepipe.data import read_table

    table = read_table(fer)
    public = table.select(table.usage == "PublicTest")
    for tta in (False, True):
        metrics = evaluate(em_dir, fer, tmp_path / f"eval{tta}", tta=tta)
        pred = Predictor.load(em_dir, "cpu", tta=tta)(public.images).argmax(1)
        assert metrics["images"] == len(public) and metrics["accuracy"] == pytest.approx(float(np.mean(pred == public.labels)))
