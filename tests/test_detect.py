"""Face detectors: the registry and its errors, each detector's ``describe()`` text, Haar exactly as
before the registry, MTCNN on real faces (matplotlib's photo; ../shared frames when present),
``predict(detector=...)``, and ``jobs/annotate.py --detector haar|mtcnn`` on the odd-file corpus."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest

from facepipe.annotate import AnnotateConfig, AnnotateError, annotate, read_annotations
from facepipe.faces.detect import (
    DEFAULT_DETECTOR, DETECTORS, LANDMARK_NAMES, DetectorConfig, HaarConfig, MTCNNConfig, detect_faces, detector_config, get_detector,
)
from facepipe.faces.decode import decode_image
from facepipe.data.synth import render_photos
from tests.conftest import shared_file

REPO = Path(__file__).resolve().parents[1]
HAAR_DEFAULT = "haar:haarcascade_frontalface_default.xml sf=1.1 mn=5 min=30 max_side=640"
MTCNN_DEFAULT = "mtcnn:min=20 th=0.6,0.7,0.7 pf=0.709 max_side=640"


@pytest.fixture(scope="module")
def hopper() -> bytes:
    """matplotlib's real colour photo of Grace Hopper (600x512 JPEG, one face)."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return f.read()


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Generated gray photos the Haar cascade finds one face in."""
    return render_photos(3, size=256, seed=7)[0]


# --- the registry ---------------------------------------------------------------------------------


def test_registry_names_configs_and_errors():
    assert set(DETECTORS) == {"haar", "mtcnn"} and DEFAULT_DETECTOR == "haar"
    for name, cls in DETECTORS.items():
        assert cls.name == cls.Config.name == name and cls.summary
    assert detector_config() == HaarConfig() and detector_config("mtcnn") == MTCNNConfig()
    assert detector_config("mtcnn", min_size=40).min_size == 40
    assert detector_config(MTCNNConfig(), max_faces=2) == MTCNNConfig(max_faces=2)
    with pytest.raises(ValueError, match="unknown detector 'yolo'; known detectors: haar, mtcnn"):
        detector_config("yolo")
    with pytest.raises(ValueError, match="unknown detector"):
        detector_config({"name": "yolo"})
    with pytest.raises(ValueError, match="the mtcnn detector has no setting cascade"):
        detector_config("mtcnn", cascade="haarcascade_frontalface_default.xml")
    with pytest.raises(TypeError, match="shared settings only"):
        DetectorConfig()
    with pytest.raises(TypeError):
        detector_config(3.5)
    with pytest.raises(ValueError):
        HaarConfig(scale_factor=1.0)
    with pytest.raises(ValueError, match="three probabilities"):
        MTCNNConfig(thresholds=(0.6, 0.7))
    with pytest.raises(ValueError, match="pyramid_factor"):
        MTCNNConfig(pyramid_factor=1.0)
    with pytest.raises(ValueError):
        MTCNNConfig(min_size=0)
    # Configs round-trip through JSON (summary.json, meta.json, Ray task arguments) and stay hashable.
    for cfg in (HaarConfig(min_score=1.5, max_faces=2), MTCNNConfig(thresholds=[0.5, 0.6, 0.9], max_side=320)):
        back = detector_config(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg and hash(back) == hash(cfg) and type(back) is type(cfg)
    assert get_detector(MTCNNConfig()) is get_detector(detector_config("mtcnn"))  # built once per process


def test_describe_texts():
    assert HaarConfig().describe() == HAAR_DEFAULT
    assert HaarConfig(min_score=2.5, max_faces=3).describe() == HAAR_DEFAULT + " min_score=2.5 max_faces=3"
    assert HaarConfig(cascade="/somewhere/haarcascade_frontalface_alt2.xml").describe().startswith("haar:haarcascade_frontalface_alt2.xml ")
    assert MTCNNConfig().describe() == MTCNN_DEFAULT
    assert MTCNNConfig(min_size=40, thresholds=(0.5, 0.6, 0.95), pyramid_factor=0.5, max_side=1024, min_score=0.99).describe() == (
        "mtcnn:min=40 th=0.5,0.6,0.95 pf=0.5 max_side=1024 min_score=0.99")
    assert get_detector(MTCNNConfig()).describe() == MTCNN_DEFAULT


def test_old_meta_json_detector_loads_as_haar():
    """The shipped keypoint model's meta.json holds a Haar config dict without a name (written before
    the registry) next to the description it was trained with: both still agree."""
    from facepipe.model_dir import shipped_model

    framing = json.loads((Path(shipped_model("keypoints")) / "meta.json").read_text())["framing"]
    assert "name" not in framing["detector_config"]
    cfg = detector_config(framing["detector_config"])
    assert isinstance(cfg, HaarConfig) and cfg.describe() == framing["detector"] == HAAR_DEFAULT
    assert cfg.to_dict() == {"name": "haar", **framing["detector_config"]}


# --- Haar, as before the registry -----------------------------------------------------------------


def _haar_reference(gray: np.ndarray, scale_factor=1.1, min_neighbors=5, min_size=30, max_side=640):
    """The pre-registry ``detect_faces``, step by step with OpenCV directly."""
    h, w = gray.shape
    scale = min(1.0, max_side / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    clf = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    rects, _, weights = clf.detectMultiScale3(small, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size),
                                              outputRejectLevels=True)
    boxes = np.asarray(rects, np.float32).reshape(-1, 4)
    scores = np.asarray(weights, np.float32).reshape(-1)
    if scale != 1.0:
        sx, sy = w / small.shape[1], h / small.shape[0]
        boxes *= np.array([sx, sy, sx, sy], np.float32)
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    return boxes[order], scores[order]


def test_haar_gives_what_it_gave_before_the_registry(faces, hopper):
    group = np.hstack(list(faces))  # three faces side by side
    images = [*faces, group, cv2.resize(group, (2304, 768)), decode_image(hopper).gray]
    for gray in images:
        for kw in ({}, {"scale_factor": 1.2, "min_neighbors": 3, "min_size": 24, "max_side": 300}):
            want = _haar_reference(gray, **kw)
            got = get_detector(HaarConfig(**kw)).detect(gray)
            assert got.landmarks is None
            np.testing.assert_array_equal(got.boxes, want[0])
            np.testing.assert_array_equal(got.scores, want[1])
            assert got.boxes.dtype == np.float32 and got.scores.dtype == np.float32
    assert len(_haar_reference(group)[0]) == 3
    # A BGR image gives the same faces as its gray version (converted before the downscale).
    dec = decode_image(hopper)
    for a, b in zip(detect_faces(dec.image, HaarConfig()), detect_faces(dec.gray, HaarConfig())):
        np.testing.assert_array_equal(a, b)
    # The shared settings: the largest faces, then only those above a score.
    boxes, scores = detect_faces(group, HaarConfig())
    largest, _ = detect_faces(group, HaarConfig(max_faces=2))
    assert len(largest) == 2 and np.all(np.diff(largest[:, 0]) > 0)
    assert set(map(tuple, largest)) == set(map(tuple, boxes[np.argsort(-boxes[:, 2] * boxes[:, 3])[:2]]))
    middle = float(np.sort(scores)[1])
    np.testing.assert_array_equal(detect_faces(group, HaarConfig(min_score=middle))[1], scores[scores >= middle])


# --- MTCNN ----------------------------------------------------------------------------------------


def test_mtcnn_finds_the_face_and_its_landmarks_in_a_real_photo(hopper):
    dec = decode_image(hopper)
    det = get_detector(MTCNNConfig())
    assert det.wants_color and det.has_landmarks and len(LANDMARK_NAMES) == 5
    found = det.detect(dec.image)
    assert len(found.boxes) == 1 and found.scores[0] > 0.99 and found.landmarks.shape == (1, 5, 2)
    (x, y, w, h), pts = found.boxes[0], found.landmarks[0]
    assert 150 < w < 220 and 180 < h < 260  # the face, not the photo
    inside = (pts[:, 0] > x) & (pts[:, 0] < x + w) & (pts[:, 1] > y) & (pts[:, 1] < y + h)
    assert inside.all()
    eye_r, eye_l, nose, mouth_r, mouth_l = pts  # subject's right eye is on the image's left
    assert eye_r[0] < nose[0] < eye_l[0] and mouth_r[0] < mouth_l[0]
    assert max(eye_r[1], eye_l[1]) < nose[1] < min(mouth_r[1], mouth_l[1])
    # Gray gets three equal channels and still finds it; a 3x larger photo gives the same box
    # scaled (detection runs on the max_side downscale).
    gray = det.detect(dec.gray)
    assert len(gray.boxes) == 1 and np.abs(gray.boxes[0] - found.boxes[0]).max() < 0.1 * w
    big = det.detect(cv2.resize(dec.image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    assert len(big.boxes) == 1 and np.abs(big.boxes[0] / 3 - found.boxes[0]).max() < 0.1 * w
    assert np.abs(big.landmarks[0] / 3 - pts).max() < 0.1 * w


def test_mtcnn_on_images_without_a_face():
    det = get_detector(MTCNNConfig())
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for img in (np.zeros((200, 200, 3), np.uint8), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                ((xx + yy) % 256).astype(np.uint8), np.full((10, 10), 128, np.uint8)):
        found = det.detect(img)
        assert found.boxes.shape == (0, 4) and found.scores.shape == (0,) and found.landmarks.shape == (0, 5, 2)
    # Nearly every candidate passing: many odd boxes reach the later stages, and none breaks them.
    loose = get_detector(MTCNNConfig(thresholds=(0.05, 0.05, 0.05), min_size=12))
    clouds = cv2.normalize(cv2.GaussianBlur(rng.normal(128, 60, (160, 240, 3)).astype(np.float32), (0, 0), 2), None, 0, 255, cv2.NORM_MINMAX)
    for img in (clouds.astype(np.uint8), clouds[:, :40, 0].astype(np.uint8)):
        found = loose.detect(img)
        assert len(found.boxes) > 0 and np.isfinite(found.boxes).all() and np.isfinite(found.landmarks).all()


def test_mtcnn_suppression_keeps_indices_past_int16():
    """The package's NMS kept box indices in int16; ours must return the real index past 32,767."""
    from facepipe.faces.detect.mtcnn import _mtcnn_class

    nms = _mtcnn_class()._MTCNN__nms
    boxes = np.tile(np.array([[10.0, 10.0, 50.0, 50.0, 0.5]]), (33000, 1))
    boxes[32999, 4] = 0.9
    np.testing.assert_array_equal(nms(boxes, 0.5, "Union"), [32999])
    far = np.array([[0, 0, 10, 10, 0.9], [100, 100, 110, 110, 0.8], [1, 1, 11, 11, 0.7], [0, 0, 30, 30, 0.95]], float)
    assert nms(far, 0.5, "Union").tolist() == [3, 0, 1] and nms(far, 0.5, "Min").tolist() == [3, 1]


def test_mtcnn_finds_labelled_faces_in_real_frames():
    """Frames of ../shared's YouTube Faces set: the box holds both labelled eye centres (the face
    ``match_face`` picks, as training does), and MTCNN's eyes are near the labelled ones."""
    from facepipe.faces.framing import match_face

    labels = shared_file("keypoints/ytf_frames/ytf_frames_kaggle15.csv")
    rows = pd.read_csv(labels).iloc[::700][:5]
    det = get_detector(MTCNNConfig())
    for _, r in rows.iterrows():
        image = decode_image((labels.parent / "frames" / r["image"]).read_bytes()).image
        eyes = np.array([[r["right_eye_center_x"], r["right_eye_center_y"]], [r["left_eye_center_x"], r["left_eye_center_y"]]])
        found = det.detect(image)
        j = match_face(found.boxes, eyes)
        assert j is not None, r["image"]
        x, y, w, h = found.boxes[j]
        assert ((eyes[:, 0] >= x) & (eyes[:, 0] <= x + w) & (eyes[:, 1] >= y) & (eyes[:, 1] <= y + h)).all(), r["image"]
        iod = np.hypot(*(eyes[0] - eyes[1]))
        assert np.hypot(*(found.landmarks[j, :2] - eyes).T).max() < 0.35 * iod, r["image"]


# --- predict and the job ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def test_predict_with_each_detector(models, hopper):
    from facepipe.annotate import predict

    kp_dir, em_dir = models
    rgb = cv2.cvtColor(decode_image(hopper).image, cv2.COLOR_BGR2RGB)
    want = get_detector(MTCNNConfig()).detect(decode_image(hopper).image).boxes
    for item, color in ((hopper, "rgb"), (rgb, "rgb"), (rgb[:, :, ::-1].copy(), "bgr")):
        res = predict(item, kp_dir, em_dir, detector="mtcnn", color=color)
        assert res["status"] == "ok" and len(res["faces"]) == 1
        np.testing.assert_allclose(res["faces"][0]["bbox"], want[0], atol=1e-3)  # the colour image, in BGR order, reached MTCNN
    df = predict([hopper, np.zeros((64, 64), np.uint8)], kp_dir, em_dir, detector={"name": "mtcnn", "max_faces": 1}, as_frame=True)
    assert list(df["status"]) == ["ok", "no_face"] and set(df["detector"]) == {MTCNN_DEFAULT + " max_faces=1"}
    assert 0.99 < df["detector_score"].iloc[0] <= 1.0
    assert set(predict(hopper, kp_dir, em_dir, as_frame=True)["detector"]) == {HAAR_DEFAULT}


def test_annotate_config_and_overrides(models, tmp_path):
    kp_dir, em_dir = models
    with pytest.raises(TypeError, match="unknown annotate setting"):
        annotate(tmp_path, tmp_path / "out", kp_dir, em_dir, plotz="none")
    with pytest.raises(AnnotateError, match="plots must be one of"):
        AnnotateConfig(plots="some")
    with pytest.raises(AnnotateError, match="batch_size must be >= 1.*limit must be >= 0"):
        AnnotateConfig(batch_size=0, limit=-1)
    with pytest.raises(AnnotateError, match="unknown detector 'yolo'"):
        annotate(tmp_path, tmp_path / "out", kp_dir, em_dir, detector="yolo")
    assert AnnotateConfig().replace(plots="none", local=True) == AnnotateConfig(plots="none", local=True)


def test_mtcnn_on_ray_writes_what_it_writes_in_process(ray_session, models, hopper, faces, tmp_path):
    """The detector config travels to Ray Data's decode/detect tasks, which build MTCNN themselves."""
    kp_dir, em_dir = models
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "hopper.jpg").write_bytes(hopper)
    cv2.imwrite(str(inp / "gray.png"), faces[0])
    cv2.imwrite(str(inp / "blank.png"), np.full((120, 160), 90, np.uint8))
    frames = {}
    for local in (False, True):
        out = tmp_path / f"out_{local}"
        summary = annotate(inp, out, kp_dir, em_dir, detector="mtcnn", plots="none", num_cpus=2, verbose=False, local=local)
        assert summary["run"]["executor"] == ("in-process" if local else "ray") and summary["detector_description"] == MTCNN_DEFAULT
        frames[local] = read_annotations(out)[["path", "status", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "detector_score", "detector"]]
    pd.testing.assert_frame_equal(frames[False], frames[True])
    by = frames[True].groupby("path")["status"].first().to_dict()
    assert by["hopper.jpg"] == "ok" and by["blank.png"] == "no_face"


def _cli(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, str(REPO / "jobs" / "annotate.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_flags_come_from_the_configs():
    from facepipe.cli.annotate import get_args_parser

    h = _cli("--help")
    assert h.returncode == 0 and "(default: None)" not in h.stdout
    for flag in ("--detector", "--cascade", "--scale-factor", "--min-neighbors", "--min-face", "--detect-max-side", "--min-score", "--max-faces",
                 "--mtcnn-thresholds", "--mtcnn-pyramid-factor", "--margin", "--local", "--ray", "--quiet", "--part-images", "--torch-threads"):
        assert flag in h.stdout, flag
    assert "(default: haar 30, mtcnn 20)" in h.stdout and "(default: 0.6 0.7 0.7)" in h.stdout
    dests = {a.dest for a in get_args_parser()._actions}
    import dataclasses

    for cls in (AnnotateConfig, *(d.Config for d in DETECTORS.values())):
        documented = {f.name for f in dataclasses.fields(cls) if "help" in f.metadata}
        assert documented <= dests, (cls.__name__, documented - dests)
    assert {f.name for f in dataclasses.fields(AnnotateConfig) if "help" not in f.metadata} == {"verbose", "local"}  # --quiet, --local/--ray


def test_cli_bad_detector_arguments_exit_2(models, tmp_path):
    kp_dir, em_dir = models
    (tmp_path / "in").mkdir()
    base = ["--input", tmp_path / "in", "--output", tmp_path / "o", "--keypoints-model", kp_dir, "--emotion-model", em_dir]
    cases = [
        (["--detector", "mtcnn", "--cascade", "haarcascade_frontalface_alt.xml"], "--cascade is a setting of --detector haar"),
        (["--mtcnn-thresholds", "0.5", "0.5", "0.5"], "--mtcnn-thresholds is a setting of --detector mtcnn"),
        (["--detector", "mtcnn", "--mtcnn-thresholds", "0.6", "0.7"], "thresholds must be three probabilities"),
        (["--detector", "mtcnn", "--min-face", "0"], "min_size >= 1"),
        (["--limit", "-1"], "limit must be >= 0"),
    ]
    for args, reason in cases:
        r = _cli(*base, *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], r.stderr
    assert _cli(*base, "--detector", "yolo").returncode == 2  # argparse's choices


def test_cli_annotates_the_odd_corpus_with_each_detector(models, tmp_path):
    """Every file of the odd-file corpus is accounted for with either detector; a run with another
    detector annotates the folder again (its faces differ), and its rows then count as done."""
    from test_annotate_job import _write_corpus

    from facepipe.annotate.state import load_state
    from facepipe.model_dir import model_id

    kp_dir, em_dir = models
    inp, out = tmp_path / "photos", tmp_path / "out"
    expected = _write_corpus(inp)
    descriptions = {"haar": HAAR_DEFAULT, "mtcnn": MTCNN_DEFAULT + " max_faces=5"}
    for name in ("haar", "mtcnn"):
        extra = ["--max-faces", "5"] if name == "mtcnn" else []
        r = _cli("--input", inp, "--output", out, "--recursive", "--keypoints-model", kp_dir, "--emotion-model", em_dir,
                 "--plots", "none", "--local", "--detector", name, *extra)
        assert r.returncode == 0, r.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["run"]["annotated"] == len(expected) and summary["run"]["already_done"] == 0, summary["run"]
        assert summary["detector"]["name"] == name and summary["detector_description"] == descriptions[name]
        df = read_annotations(out)
        assert set(df["path"]) == set(expected) and set(df["detector"]) == {descriptions[name]}
        for path, status in expected.items():
            rows = df[df["path"] == path]
            got = set(rows["status"])
            if name == "haar" or status == "error" or path == "tiny.png":
                assert got == {status}, (name, path, rows[["status", "error"]].to_dict("records"))
            else:
                assert got in ({"ok"}, {"no_face"}), (name, path, got)
            if got == {"ok"}:
                assert len(rows) == rows["num_faces"].iloc[0] and sorted(rows["face_index"]) == list(range(len(rows)))
        if name == "mtcnn":
            ok = df[df["status"] == "ok"]
            assert ((ok["detector_score"] > 0.7) & (ok["detector_score"] <= 1)).all()
    kp_id = model_id(json.loads((kp_dir / "meta.json").read_text()))
    em_id = model_id(json.loads((em_dir / "meta.json").read_text()))
    errors = {p for p, st in expected.items() if st == "error"}
    for desc in descriptions.values():  # a rerun with either detector skips every file; error rows are retried (state.errors)
        state = load_state(out, kp_id, em_id, detector=desc)
        assert state.images == len(expected) - len(errors) and {p for _, p in state.errors} == errors
    assert load_state(out, kp_id, em_id, detector=MTCNN_DEFAULT).images == 0  # other settings: not done
