"""Tests for the procedural face generator (facepipe.data.synth).

CSV outputs are read back with pandas / gzip + csv on purpose (not with facepipe's readers).
"""
from __future__ import annotations

import csv
import gzip
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from facepipe.data.schema import EMOTIONS, KAGGLE_KEYPOINT_COLUMNS
from facepipe.data.synth import (
    POINT_NAMES,
    render_faces,
    render_photos,
    write_fer_csv,
    write_image_folder,
    write_keypoints_csv,
)

P = {name: i for i, name in enumerate(POINT_NAMES)}
HAPPY, SAD, SURPRISE, NEUTRAL, ANGRY = (EMOTIONS.index(e) for e in ("Happy", "Sad", "Surprise", "Neutral", "Angry"))


@pytest.fixture(scope="module")
def faces96():
    return render_faces(210, size=96, seed=0)


@pytest.fixture(scope="module")
def faces48():
    return render_faces(210, size=48, seed=0)


def _sample(images: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Nearest-pixel intensities at points [n, k, 2] (x, y) -> [n, k]."""
    n, size = images.shape[0], images.shape[1]
    j = np.clip(np.rint(pts[..., 0]).astype(int), 0, size - 1)
    i = np.clip(np.rint(pts[..., 1]).astype(int), 0, size - 1)
    return images[np.arange(n)[:, None], i, j].astype(float)


# ---------------------------------------------------------------------------- basics
def test_point_names_follow_kaggle_order():
    assert len(POINT_NAMES) == 15
    assert [f"{p}_{a}" for p in POINT_NAMES for a in "xy"] == list(KAGGLE_KEYPOINT_COLUMNS)


def test_shapes_and_dtypes(faces96):
    images, kps, labels = faces96
    assert images.shape == (210, 96, 96) and images.dtype == np.uint8
    assert kps.shape == (210, 15, 2) and kps.dtype == np.float32
    assert labels.shape == (210,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(EMOTIONS)
    # balanced when not given
    assert np.bincount(labels, minlength=7).tolist() == [30] * 7
    # images are not flat: faces have contrast
    assert images.reshape(210, -1).std(1).min() > 10


def test_same_seed_identical_different_seed_differs():
    a = render_faces(12, size=48, seed=5)
    b = render_faces(12, size=48, seed=5)
    c = render_faces(12, size=48, seed=6)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    assert not np.allclose(a[1], c[1])


def test_labels_are_respected_and_validated():
    labels = np.array([3, 3, 0, 6, 5], dtype=np.int64)
    _, _, out = render_faces(5, size=48, seed=1, labels=labels)
    assert out.tolist() == labels.tolist()
    with pytest.raises(ValueError):
        render_faces(3, size=48, labels=np.array([0, 7, 1]))
    with pytest.raises(ValueError):
        render_faces(3, size=48, labels=np.array([0, 1]))


def test_zero_faces():
    images, kps, labels = render_faces(0, size=48)
    assert images.shape == (0, 48, 48) and kps.shape == (0, 15, 2) and labels.shape == (0,)


@pytest.mark.parametrize("size", [32, 48, 64, 96, 150, 256])
def test_any_size_keypoints_inside(size):
    images, kps, _ = render_faces(14, size=size, seed=2)
    assert images.shape == (14, size, size)
    assert np.isfinite(kps).all()
    assert kps.min() >= 0 and kps.max() <= size - 1


def test_keypoints_inside_image(faces96, faces48):
    for images, kps, _ in (faces96, faces48):
        size = images.shape[1]
        assert kps.min() >= 0 and kps.max() <= size - 1


def test_keypoints_scale_exactly_with_size():
    """Same seed -> same faces; keypoints rescale with the pixel-centre convention."""
    _, k96, l96 = render_faces(20, size=96, seed=3)
    _, k48, l48 = render_faces(20, size=48, seed=3)
    assert l96.tolist() == l48.tolist()
    np.testing.assert_allclose(k48, (k96 + 0.5) * 0.5 - 0.5, atol=1e-3)


def test_kaggle_left_is_image_right(faces96):
    _, kps, _ = faces96
    x = kps[..., 0]
    for left, right in [("left_eye_center", "right_eye_center"),
                        ("left_eye_outer_corner", "right_eye_outer_corner"),
                        ("left_eyebrow_outer_end", "right_eyebrow_outer_end"),
                        ("mouth_left_corner", "mouth_right_corner")]:
        assert (x[:, P[left]] > x[:, P[right]]).all(), (left, right)
    # each eye: the outer corner is farther from the midline than the inner one
    assert (x[:, P["left_eye_outer_corner"]] > x[:, P["left_eye_inner_corner"]]).all()
    assert (x[:, P["right_eye_outer_corner"]] < x[:, P["right_eye_inner_corner"]]).all()
    # rough layout: eyes above nose above mouth; positions near the Kaggle means
    y = kps[..., 1]
    assert (y[:, P["left_eye_center"]] < y[:, P["nose_tip"]]).all()
    assert (y[:, P["nose_tip"]] < y[:, P["mouth_center_bottom_lip"]]).all()
    mean = kps.mean(0)
    np.testing.assert_allclose(mean[P["left_eye_center"]], [66.4, 37.7], atol=4)
    np.testing.assert_allclose(mean[P["right_eye_center"]], [30.3, 37.6], atol=4)
    np.testing.assert_allclose(mean[P["nose_tip"]], [48.4, 62.7], atol=4)


def test_keypoints_sit_on_features(faces96, faces48):
    for images, kps, _ in (faces96, faces48):
        eyes = _sample(images, kps[:, [P["left_eye_center"], P["right_eye_center"]]]).mean(1)
        # cheeks: below each eye at the height of the nose tip
        cheek_pts = np.stack([kps[:, [0, 1], 0], np.repeat(kps[:, [P["nose_tip"]], 1], 2, axis=1)], axis=-1)
        cheeks = _sample(images, cheek_pts).mean(1)
        assert (eyes < cheeks).mean() >= 0.9
        assert (cheeks - eyes).mean() > 30
        # the mouth line between the lip centres is dark too
        mouth = _sample(images, ((kps[:, P["mouth_center_top_lip"]] + kps[:, P["mouth_center_bottom_lip"]]) / 2)[:, None])
        assert (mouth[:, 0] < cheeks).mean() >= 0.95


# ---------------------------------------------------------------------------- expressions
def test_expression_geometry(faces96):
    _, kps, labels = faces96
    y = kps[..., 1]
    corner_y = (y[:, P["mouth_left_corner"]] + y[:, P["mouth_right_corner"]]) / 2
    lip_y = (y[:, P["mouth_center_top_lip"]] + y[:, P["mouth_center_bottom_lip"]]) / 2
    rel = corner_y - lip_y  # < 0: corners up (smile)
    m = {c: rel[labels == c].mean() for c in range(7)}
    assert m[HAPPY] < m[NEUTRAL] - 1.5
    assert m[SAD] > m[NEUTRAL] + 1.0
    # surprise: open mouth (tall), narrow; high brows; wide eyes
    opening = y[:, P["mouth_center_bottom_lip"]] - y[:, P["mouth_center_top_lip"]]
    assert opening[labels == SURPRISE].mean() > opening[labels == NEUTRAL].mean() + 3
    width = kps[:, P["mouth_left_corner"], 0] - kps[:, P["mouth_right_corner"], 0]
    assert width[labels == SURPRISE].mean() < width[labels == NEUTRAL].mean() - 5
    assert width[labels == HAPPY].mean() > width[labels == NEUTRAL].mean() + 2
    brow_gap = ((y[:, P["left_eye_center"]] - y[:, P["left_eyebrow_inner_end"]])
                + (y[:, P["right_eye_center"]] - y[:, P["right_eyebrow_inner_end"]])) / 2
    assert brow_gap[labels == SURPRISE].mean() > brow_gap[labels == NEUTRAL].mean() + 2
    assert brow_gap[labels == ANGRY].mean() < brow_gap[labels == NEUTRAL].mean() - 3
    # sad: inner brow ends raised above the outer ends; angry: lowered below them
    slant = ((y[:, P["left_eyebrow_inner_end"]] - y[:, P["left_eyebrow_outer_end"]])
             + (y[:, P["right_eyebrow_inner_end"]] - y[:, P["right_eyebrow_outer_end"]])) / 2
    assert slant[labels == SAD].mean() < slant[labels == NEUTRAL].mean() - 2
    assert slant[labels == ANGRY].mean() > slant[labels == NEUTRAL].mean() + 2


def _normalised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32)
    return (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-6)


def test_expression_images_differ():
    images, _, labels = render_faces(700, size=48, seed=0)
    flat = _normalised(images)
    means = np.stack([flat[labels == c].mean(0) for c in range(7)])
    d = np.abs(means[:, None] - means[None]).mean(-1)
    assert d[~np.eye(7, dtype=bool)].min() > 0.05
    # a nearest-class-mean classifier on fresh faces clearly beats chance (1/7)
    test_images, _, test_labels = render_faces(210, size=48, seed=99)
    t = _normalised(test_images)
    pred = ((t[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == test_labels).mean() > 0.28


def test_render_is_fast():
    t0 = time.perf_counter()
    render_faces(500, size=96, seed=4)
    # ~0.5 s on one slow core; generous bound for loaded machines
    assert time.perf_counter() - t0 < 8.0


# ---------------------------------------------------------------------------- writers
def _read_csv_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return list(csv.reader(f))


def test_keypoints_csv_layout(tmp_path):
    n = 60
    path = write_keypoints_csv(tmp_path / "training.csv", n, seed=7, missing_fraction=0.4)
    assert path == tmp_path / "training.csv" and path.exists()
    rows = _read_csv_rows(path)
    assert rows[0] == list(KAGGLE_KEYPOINT_COLUMNS) + ["Image"]
    assert len(rows) == n + 1
    images, kps, _ = render_faces(n, size=96, seed=7)
    incomplete = 0
    for i, row in enumerate(rows[1:]):
        assert len(row) == 31
        pixels = row[-1].split(" ")
        assert len(pixels) == 96 * 96
        np.testing.assert_array_equal(np.array(pixels, dtype=np.uint8).reshape(96, 96), images[i])
        cells = row[:30]
        blank = [c == "" for c in cells]
        assert blank[0::2] == blank[1::2]  # x and y are blank together
        incomplete += any(blank)
        for j in range(15):
            if not blank[2 * j]:
                assert abs(float(cells[2 * j]) - kps[i, j, 0]) < 1e-3
                assert abs(float(cells[2 * j + 1]) - kps[i, j, 1]) < 1e-3
    assert 0.15 * n <= incomplete <= 0.65 * n

    df = pd.read_csv(path)
    assert list(df.columns) == list(KAGGLE_KEYPOINT_COLUMNS) + ["Image"]
    counts = df[list(KAGGLE_KEYPOINT_COLUMNS)].notna().sum(axis=1)
    incomplete_counts = counts[counts < 30]
    # like Kaggle: most incomplete rows keep exactly the 4 core points (8 columns)
    assert (incomplete_counts == 8).mean() >= 0.6
    core = ["left_eye_center_x", "right_eye_center_y", "nose_tip_x", "mouth_center_bottom_lip_y"]
    four = df[counts == 8]
    assert four[core].notna().all().all()


def test_keypoints_csv_no_missing_and_gz(tmp_path):
    plain = write_keypoints_csv(tmp_path / "a.csv", 8, seed=2, missing_fraction=0.0, size=48)
    gz = write_keypoints_csv(tmp_path / "a.csv.gz", 8, seed=2, missing_fraction=0.0, size=48)
    with open(gz, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # gzip magic
    assert _read_csv_rows(gz) == _read_csv_rows(plain)
    df = pd.read_csv(gz)
    assert df[list(KAGGLE_KEYPOINT_COLUMNS)].notna().all().all()
    assert len(df["Image"][0].split()) == 48 * 48
    # deterministic bytes, gzip included
    again = write_keypoints_csv(tmp_path / "b.csv.gz", 8, seed=2, missing_fraction=0.0, size=48)
    assert gz.read_bytes() == again.read_bytes()


def test_fer_csv_layout(tmp_path):
    n = 50
    path = write_fer_csv(tmp_path / "fer2013.csv", n, seed=3)
    rows = _read_csv_rows(path)
    assert rows[0] == ["emotion", "pixels", "Usage"]
    assert len(rows) == n + 1
    images, _, labels = render_faces(n, size=48, seed=3)
    usages = [r[2] for r in rows[1:]]
    assert usages == ["Training"] * 40 + ["PublicTest"] * 5 + ["PrivateTest"] * 5
    for i, (emotion, pixels, _) in enumerate(rows[1:]):
        assert int(emotion) == labels[i] and 0 <= int(emotion) <= 6
        px = np.array(pixels.split(" "), dtype=np.int64)
        assert px.size == 48 * 48 and px.min() >= 0 and px.max() <= 255
        np.testing.assert_array_equal(px.reshape(48, 48), images[i])


def test_fer_csv_gz_and_fractions(tmp_path):
    path = write_fer_csv(tmp_path / "fer.csv.gz", 20, seed=1, size=32, usage_fractions=(0.5, 0.25, 0.25))
    df = pd.read_csv(path)
    assert list(df.columns) == ["emotion", "pixels", "Usage"]
    assert df["Usage"].value_counts().to_dict() == {"Training": 10, "PublicTest": 5, "PrivateTest": 5}
    assert df["pixels"].str.split().map(len).eq(32 * 32).all()
    assert df["emotion"].between(0, 6).all()


# ---------------------------------------------------------------------------- photos
def test_render_photos_boxes_contain_keypoints():
    images, boxes, kps, labels = render_photos(10, size=128, seed=0)
    assert images.shape == (10, 128, 128) and boxes.shape == (10, 4) and kps.shape == (10, 15, 2)
    inside = ((kps[..., 0] >= boxes[:, None, 0] - 8) & (kps[..., 0] <= boxes[:, None, 2] + 8)
              & (kps[..., 1] >= boxes[:, None, 1] - 8) & (kps[..., 1] <= boxes[:, None, 3] + 8))
    assert inside.all()
    # the face fills roughly half the image height
    h = boxes[:, 3] - boxes[:, 1]
    assert (h > 0.3 * 128).all() and (h < 0.8 * 128).all()


def test_image_folder_detected_by_haar(tmp_path):
    n = 48
    paths = write_image_folder(tmp_path / "photos", n, seed=0, size=256)
    assert [p.name for p in paths] == [f"face_{i:04d}.png" for i in range(n)]
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty()
    _, _, kps, _ = render_photos(n, size=256, seed=0)
    found = 0
    for i, p in enumerate(paths):
        gray = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        assert gray is not None and gray.shape == (256, 256)
        dets = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        pts = kps[i, [P["left_eye_center"], P["right_eye_center"], P["nose_tip"]]]
        # count a detection only if it covers both eyes and the nose (the actual face)
        found += any(((pts[:, 0] > x) & (pts[:, 0] < x + w) & (pts[:, 1] > y) & (pts[:, 1] < y + h)).all()
                     for x, y, w, h in dets)
    # measured ~0.9 on 1,000+ photos; conservative bound
    assert found / n >= 0.7
