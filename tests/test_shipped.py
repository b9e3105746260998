"""The models shipped inside the package: intact, within budget, loadable, and as good as their model cards say."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from facepipe.model_dir import SHIPPED, SHIPPED_LANDMARKS, shipped_model

from conftest import shared_file

MAX_BYTES = 5 * 1024 * 1024
#: Each shipped keypoint model: its points, its directory and the labels its card was measured on.
KEYPOINT_MODELS = {15: ("keypoints", "ytf_frames_kaggle15.csv"), 68: ("landmarks68", "ytf_frames_68.csv")}


def card_number(task: str, key: str) -> float:
    """A number the model card states as ``<key>: <value>`` in its machine-readable line."""
    text = (SHIPPED / task / "README.md").read_text()
    m = re.search(rf"`{key}` = ([0-9.]+)", text)
    assert m, f"model card of {task} states no `{key}`"
    return float(m.group(1))


def test_every_landmark_set_has_its_shipped_model():
    assert {n: d for n, (d, _) in KEYPOINT_MODELS.items()} == SHIPPED_LANDMARKS
    assert shipped_model("keypoints") == shipped_model("keypoints", 15) == SHIPPED / "keypoints"
    with pytest.raises(ValueError, match="landmarks must be one of"):
        shipped_model("keypoints", 5)


@pytest.mark.parametrize("landmarks", sorted(KEYPOINT_MODELS))
def test_shipped_keypoint_model_is_intact_small_and_documented(landmarks):
    d = shipped_model("keypoints", landmarks)
    assert d is not None, f"no {landmarks}-point keypoint model ships in facepipe/weights/{KEYPOINT_MODELS[landmarks][0]}"
    meta = json.loads((d / "meta.json").read_text())
    assert len(meta["keypoint_names"]) == landmarks
    assert hashlib.sha256((d / "weights.pt").read_bytes()).hexdigest() == meta["weights_sha256"]
    assert sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".pt") <= MAX_BYTES
    assert meta["task"] == "keypoints" and meta["framing"]["margin"] >= 0 and len(meta["mean_shape"]) == len(meta["keypoint_names"])
    card = (d / "README.md").read_text()
    for must in ("research", "jobs/train.py", KEYPOINT_MODELS[landmarks][1], "make weights-", meta["weights_sha256"]):
        assert must in card


@pytest.mark.parametrize("landmarks", sorted(KEYPOINT_MODELS))
def test_shipped_keypoint_model_loads_safely_and_predicts_a_face(tmp_path, landmarks):
    import torch

    from facepipe.models import load_model

    d = shipped_model("keypoints", landmarks)
    torch.load(d / "weights.pt", map_location="cpu", weights_only=True)  # plain tensors, no pickled code
    model, meta = load_model(d)
    out = model(torch.zeros(1, 1, meta["input_size"], meta["input_size"]))
    assert out.shape == (1, len(meta["keypoint_names"]), 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("landmarks", sorted(KEYPOINT_MODELS))
def test_shipped_keypoint_model_matches_its_card_on_the_dev_split(tmp_path, landmarks):
    """``jobs/evaluate.py`` on the person-disjoint dev split reproduces the model card's NME."""
    from facepipe.evaluate import evaluate

    name, csv = KEYPOINT_MODELS[landmarks]
    labels = shared_file(f"keypoints/ytf_frames/{csv}")
    metrics = evaluate(shipped_model("keypoints", landmarks), labels, tmp_path, images=labels.parent / "frames", tta=False)
    assert metrics["nme_mean"] == pytest.approx(card_number(name, "evaluate_nme_mean"), abs=5e-4)
    assert np.isfinite(metrics["rmse_px"])


def test_shipped_emotion_model_is_intact_small_and_framed_like_fer2013():
    from facepipe.data.kaggle import FER_FRAME_MARGIN

    d = shipped_model("emotion")
    assert d is not None, "no emotion model ships in facepipe/weights/emotion"
    meta = json.loads((d / "meta.json").read_text())
    assert hashlib.sha256((d / "weights.pt").read_bytes()).hexdigest() == meta["weights_sha256"]
    assert sum(f.stat().st_size for f in d.iterdir()) <= MAX_BYTES
    assert meta["task"] == "emotion" and meta["framing"]["margin"] == FER_FRAME_MARGIN
    card = (d / "README.md").read_text()
    for must in ("research", "jobs/train.py", "PublicTest", meta["weights_sha256"], "confusion_matrix.png"):
        assert must in card
    assert (d / "confusion_matrix.png").stat().st_size > 0


def test_shipped_emotion_model_matches_its_card_on_publictest(tmp_path):
    """``jobs/evaluate.py`` on FER2013 PublicTest reproduces the model card's accuracy (no TTA, as annotation runs it)."""
    from facepipe.evaluate import evaluate

    data = shared_file("fer2013/fer2013_trainval.csv.gz")
    metrics = evaluate(shipped_model("emotion"), data, tmp_path, split="PublicTest", tta=False)
    assert metrics["images"] == 3589
    assert metrics["accuracy"] == pytest.approx(card_number("emotion", "evaluate_accuracy"), abs=6e-4)


def test_predict_and_annotate_need_no_model_arguments(tmp_path):
    """With the shipped models, a user names only the photos."""
    import facepipe
    from facepipe.annotate import annotate, read_annotations
    from facepipe.data.synth import write_image_folder
    from facepipe.model_dir import model_id, read_meta

    photos = write_image_folder(tmp_path / "photos", 3, seed=5)
    res = facepipe.predict([str(p) for p in photos])
    faces = [f for r in res for f in r["faces"]]
    assert faces and all(f["keypoints_array"].shape == (15, 2) and abs(sum(f["probabilities"].values()) - 1) < 1e-4 for f in faces)
    summary = annotate(photos[0], tmp_path / "out", plots="none", verbose=False, local=True)  # a single file
    assert summary["run"]["executor"] == "in-process" and summary["images"] == 1
    df = read_annotations(tmp_path / "out")
    # The shipped keypoint model makes the job's default second pass, which its id names.
    assert set(df["keypoints_model_id"]) == {model_id(read_meta(shipped_model("keypoints"))) + "+refine1"}
    assert set(df["emotion_model_id"]) == {model_id(read_meta(shipped_model("emotion")))}


def test_the_second_pass_recrops_a_real_photo_where_a_crop_of_the_photo_itself_would_be(tmp_path):
    """The job re-crops from the wider view its decode stage keeps; cropping the photo there gives the same points."""
    import cv2
    import matplotlib.cbook

    import facepipe
    from facepipe.faces.crop import crop_resize, crop_to_image, square_crop
    from facepipe.faces.framing import BoxModel
    from facepipe.model_dir import read_meta
    from facepipe.predictor import Predictor

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = tmp_path / "grace_hopper.jpg"
        photo.write_bytes(f.read())
    model = shipped_model("keypoints")
    meta = read_meta(model)
    first = facepipe.predict(str(photo), tasks=("keypoints",), refine=0)["faces"][0]["keypoints_array"]
    square = square_crop(BoxModel(**meta["framing"]["box_from_points"]).boxes(first[None].astype(np.float64))[0], meta["framing"]["margin"])
    gray = cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE)
    by_hand = crop_to_image(Predictor.load(model, "cpu")(crop_resize(gray, square, 96)[None]), square, 96)[0]
    refined = facepipe.predict(str(photo), tasks=("keypoints",))["faces"][0]["keypoints_array"]
    side = square[2]
    assert np.abs(refined - by_hand).mean() < 0.005 * side and np.abs(refined - by_hand).max() < 0.015 * side, (refined, by_hand)
    assert np.abs(refined - first).mean() > 0.001 * side  # the pass moved the points


def test_landmarks_68_gives_the_ibug_points_and_the_kaggle_points_from_them(tmp_path):
    """``--landmarks 68``: predict's faces and the job's Parquet carry the 68 points (lm_ columns), the
    15 Kaggle columns derived from them, and a head pose; the points sit on the face."""
    import matplotlib.cbook

    import facepipe
    from facepipe.annotate import annotate, read_annotations
    from facepipe.annotate.render import plot_path
    from facepipe.data.schema import IBUG68_TO_KAGGLE15, kaggle15_from_ibug68
    from facepipe.model_dir import model_id, read_meta

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = tmp_path / "photos" / "grace_hopper.jpg"
        photo.parent.mkdir()
        photo.write_bytes(f.read())
    face = facepipe.predict(str(photo), landmarks=68)["faces"][0]
    pts = face["keypoints_array"]
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    x, y, w, h = face["bbox"]
    inside = (pts[:, 0] > x - 0.2 * w) & (pts[:, 0] < x + 1.2 * w) & (pts[:, 1] > y - 0.2 * h) & (pts[:, 1] < y + 1.3 * h)
    assert inside.all()
    assert list(face["keypoints"])[:15] == list(IBUG68_TO_KAGGLE15) and len(face["keypoints"]) == 15 + 68
    assert face["pose"] is not None and abs(face["pose"]["yaw"]) < 30
    # the subject's left eye (p42-p47) is on the image's right of the right eye (p36-p41)
    assert pts[42:48, 0].mean() > pts[36:42, 0].mean() + 0.2 * w

    annotate(photo.parent, tmp_path / "out", landmarks=68, plots="all", verbose=False, local=True)
    df = read_annotations(tmp_path / "out")
    row = df[df["status"] == "ok"].iloc[0]
    lm = np.array([[row[f"lm_{i:02d}_x"], row[f"lm_{i:02d}_y"]] for i in range(68)])
    np.testing.assert_allclose(lm, pts, atol=1e-3)
    names = [f"p{i:02d}" for i in range(68)]
    kp = np.array([[row[f"kp_{n}_x"], row[f"kp_{n}_y"]] for n in IBUG68_TO_KAGGLE15])
    np.testing.assert_allclose(kp, kaggle15_from_ibug68(pts, names), atol=1e-3)
    assert np.isfinite([row["yaw_deg"], row["pitch_deg"], row["roll_deg"]]).all()
    assert row["keypoints_model_id"] == model_id(read_meta(shipped_model("keypoints", 68))) + "+refine1"
    assert Path(plot_path(tmp_path / "out", row["root"], row["path"])).stat().st_size > 0


def test_landmarks_conflicting_with_the_given_model_is_refused_before_any_work(tmp_path):
    from facepipe.annotate import AnnotateConfig, AnnotateError, annotate

    with pytest.raises(AnnotateError, match="15 points, but 68 landmarks"):
        annotate(tmp_path, tmp_path / "out", shipped_model("keypoints"), landmarks=68, verbose=False)
    with pytest.raises(AnnotateError, match="landmarks must be one of"):
        AnnotateConfig(landmarks=5)
    assert not (tmp_path / "out").exists()
