"""Photos + point labels as a keypoint source: reader errors, framing shared with annotation, training on Ray."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from facepipe.faces.crop import crop_resize, square_crop
from facepipe.annotate.prepare import PrepareConfig, prepare_items
from facepipe.data import CSVFormatError, detect_format
from facepipe.data.kaggle import PHOTO_POINTS
from facepipe.data.photos import crop_photos, detect_batch, group_split, interocular, nme, read_photo_rows
from facepipe.faces.framing import Framing, fit_box_model, model_margins
from facepipe.data.synth import write_photo_labels

from conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photo_labels(tmp_path_factory.mktemp("photos"), 60, seed=3)


@pytest.fixture(scope="module")
def face_photo(photos) -> str:
    """A generated photo in which the detector finds the face."""
    rows = read_photo_rows(photos)
    found = detect_batch({"line": rows.line, "abs_path": rows.abs_path, "points": rows.points})
    return str(rows.abs_path[int(np.flatnonzero(found["num_faces"] == 1)[0])])


def _edit(csv: Path, out: Path, line: int, column: str, value: str) -> Path:
    rows = [r.split(",") for r in csv.read_text().splitlines()]
    rows[line - 1][rows[0].index(column)] = value
    out.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return out


def test_photo_labels_are_detected_by_header(photos):
    fmt = detect_format(photos)
    assert fmt.name == PHOTO_POINTS and fmt.task == "keypoints" and fmt.has_labels
    assert fmt.schema.num_points == 15 and ("left_eye_center", "right_eye_center") in fmt.schema.flip_pairs


@pytest.mark.parametrize(
    "line, column, value, message",
    [
        (4, "image", "nowhere.png", "image file not found"),
        (5, "nose_tip_x", "abc", "is not a number"),
        (6, "width", "-3", "is not a positive integer"),
        (7, "image", "", "no image file name"),
    ],
)
def test_reader_names_file_line_and_column_of_a_bad_row(photos, tmp_path, line, column, value, message):
    bad = _edit(photos, photos.parent / f"bad_{line}.csv", line, column, value)
    with pytest.raises(CSVFormatError) as e:
        read_photo_rows(bad)
    assert e.value.line == line and e.value.column == column and message in str(e.value) and str(bad) in str(e.value)
    rows = read_photo_rows(bad, skip_bad_rows=True)  # skipped instead, and listed
    assert len(rows) == 59 and [b.line for b in rows.skipped] == [line]


def test_reader_rejects_a_row_without_points_and_a_missing_images_folder(photos, tmp_path):
    rows = [r.split(",") for r in photos.read_text().splitlines()]
    rows[2][3:] = [""] * (len(rows[2]) - 3)
    bad = photos.parent / "no_points.csv"
    bad.write_text("\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(CSVFormatError, match="line 3.*no labelled point"):
        read_photo_rows(bad)
    with pytest.raises(FileNotFoundError, match="images folder not found"):
        read_photo_rows(photos, tmp_path / "missing")


def test_a_photo_that_cannot_be_decoded_is_reported_not_dropped(photos, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    out = detect_batch({"line": np.array([2]), "abs_path": np.array([str(tmp_path / "broken.png")], dtype=object),
                        "points": np.full((1, 15, 2), 50.0, np.float32)})
    assert out["error"][0].startswith("image|") and "not an image" in out["error"][0]


def test_split_keeps_each_person_on_one_side(photos):
    rows = read_photo_rows(photos, val_fraction=0.2, seed=1)
    people = {}
    for name, split in zip(rows.image, rows.split):
        people.setdefault(name.rsplit("_", 1)[0], set()).add(split)
    assert all(len(s) == 1 for s in people.values())
    assert sum(s == {"val"} for s in people.values()) == 4  # 20 people, 20%
    assert (group_split(np.array(["a", "a", "b"]), 0.5, 0) == group_split(np.array(["a", "a", "b"]), 0.5, 0)).all()


def test_train_fraction_keeps_the_dev_people_and_nests_the_training_people(photos):
    """A learning curve's runs: same dev people at every fraction, and each fraction's training
    people are a subset of a larger fraction's."""
    def people(rows, split):
        return {n.rsplit("_", 1)[0] for n, s in zip(rows.image, rows.split) if s == split}

    full, half, quarter = (read_photo_rows(photos, val_fraction=0.2, seed=1, train_fraction=f) for f in (1.0, 0.5, 0.25))
    assert people(full, "val") == people(half, "val") == people(quarter, "val")
    assert (len(people(full, "train")), len(people(half, "train")), len(people(quarter, "train"))) == (16, 8, 4)
    assert people(quarter, "train") < people(half, "train") < people(full, "train")
    assert set(half.split) == {"train", "val"} and len(half) == 3 * (8 + 4)  # the people left out are not read back
    with pytest.raises(ValueError, match="train_fraction"):
        read_photo_rows(photos, train_fraction=0.0)


def test_train_fraction_of_csv_rows_and_of_fer_training():
    from facepipe.data.ray_datasets import assign_splits

    full, half = assign_splits(100, None, 0.2, 3), assign_splits(100, None, 0.2, 3, train_fraction=0.5)
    assert ((full == "val") == (half == "val")).all()
    assert (half == "train").sum() == 40 and ((half == "train") <= (full == "train")).all()
    usage = np.array(["Training"] * 10 + ["PublicTest"] * 4, dtype=object)
    fer = assign_splits(14, usage, train_fraction=0.3)
    assert (fer[10:] == "PublicTest").all() and (fer == "Training").sum() == 3 and (fer == "unused").sum() == 7


def test_training_crops_and_annotation_crops_are_the_same_crop(photos):
    """Same photo, same box, same margin: the training crop is annotation's crop, byte for byte."""
    rows = read_photo_rows(photos)
    margin = 0.1
    checked = 0
    for i in range(len(rows)):
        found = detect_batch({"line": rows.line[i : i + 1], "abs_path": rows.abs_path[i : i + 1], "points": rows.points[i : i + 1]})
        ann = prepare_items([rows.abs_path[i]], PrepareConfig(crop_sizes=(("keypoints", 96),), crop_margins=(("keypoints", margin),), cv2_threads=0))
        if found["num_faces"][0] == 0:
            assert ann["status"][0] == "no_face"  # the same detector misses the same photos
            continue
        checked += 1
        assert ann["status"][0] == "ok" and ann["num_faces"][0] == 1
        np.testing.assert_array_equal(found["det_box"][0], ann["bbox"][0])  # the same detector, the same face
        crop = crop_photos({**found, "box": found["det_box"]}, Framing(margin=margin), 96)
        np.testing.assert_array_equal(crop["image"][0], ann["crop_keypoints"][0])
        np.testing.assert_array_equal(crop["square"][0], ann["square"][0])
        np.testing.assert_array_equal(crop["square"][0], square_crop(found["det_box"][0], margin))
        if checked == 5:
            break
    assert checked == 5


def test_crop_keypoints_follow_the_crop_and_leave_the_frame_masked():
    img = np.zeros((100, 100), np.uint8)
    img[40, 60] = 255
    import cv2

    ok, png = cv2.imencode(".png", img)
    batch = {"photo": np.array([png.tobytes()], dtype=object), "box": np.array([[20.0, 20.0, 60.0, 60.0]]),
             "points": np.array([[[60.0, 40.0], [1.0, 1.0]]])}
    out = crop_photos(batch, Framing(margin=0.0), 60)  # the box is the crop: 1 px = 1 px
    np.testing.assert_allclose(out["keypoints"][0, 0], [40.0, 20.0])
    assert out["image"][0][20, 40] == 255 and np.array_equal(out["image"][0], crop_resize(img, (20, 20, 60), 60))
    assert out["mask"].tolist() == [[True, False]] and np.isnan(out["keypoints"][0, 1]).all()


def test_box_jitter_draws_the_measured_noise():
    rng = np.random.default_rng(0)
    boxes = np.tile([100.0, 100.0, 50.0, 50.0], (20000, 1))
    assert np.array_equal(Framing().jitter(boxes, rng), boxes)  # no noise: the box itself
    j = Framing(shift_x=0.04, shift_y=0.02, scale=0.1, aspect=0.0).jitter(boxes, rng)
    cx = (j[:, 0] + j[:, 2] / 2 - 125) / 50
    cy = (j[:, 1] + j[:, 3] / 2 - 125) / 50
    # A standard normal clipped at ±2 keeps ~96% of its std.
    assert cx.std() == pytest.approx(0.04 * 0.96, rel=0.05) and cy.std() == pytest.approx(0.02 * 0.96, rel=0.05)
    assert np.log(j[:, 2] / 50).std() == pytest.approx(0.1 * 0.96, rel=0.05)
    assert np.allclose(j[:, 2], j[:, 3]) and np.abs(cx).max() <= 0.08 + 1e-9


def test_box_model_recovers_where_the_detector_puts_its_box():
    rng = np.random.default_rng(1)
    pts = rng.normal(0, 10, (400, 15, 2)) + rng.uniform(100, 200, (400, 1, 2))
    centre = pts.mean(1)
    spread = np.sqrt(((pts - centre[:, None]) ** 2).sum(-1).mean(1))
    side = 3.6 * spread * np.exp(rng.normal(0, 0.05, 400))
    cx, cy = centre[:, 0] + 0.1 * spread, centre[:, 1] - 0.2 * spread
    boxes = np.stack([cx - side / 2, cy - side / 2, side, side], 1)
    model, framing = fit_box_model(boxes, pts, margin=0.15)
    assert model.side == pytest.approx(3.6, rel=0.02) and model.offset_x == pytest.approx(0.1, abs=0.02) and model.offset_y == pytest.approx(-0.2, abs=0.02)
    assert framing.scale == pytest.approx(0.05, rel=0.2) and framing.margin == 0.15 and framing.aspect == 0.0
    np.testing.assert_allclose(model.boxes(pts)[:, 2], model.side * spread)
    with pytest.raises(ValueError, match="too few"):
        fit_box_model(boxes[:5], pts[:5], 0.15)


def test_nme_is_relative_to_the_eye_distance():
    from facepipe.data.schema import KeypointSchema

    names = list(KeypointSchema.kaggle().names)
    true = np.zeros((1, 15, 2))
    true[0, 0], true[0, 1] = [60, 40], [40, 40]  # eyes 20 px apart
    assert interocular(true, names)[0] == 20
    face, per_point = nme(true + [3.0, 4.0], true, names)  # every point 5 px off
    assert face[0] == pytest.approx(0.25) and per_point.shape == (1, 15)


def test_a_second_pass_crops_the_wider_view_as_it_would_crop_the_photo():
    from facepipe.faces.crop import context_square, crop_to_image, square_in_crop

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (300, 320), dtype=np.uint8)
    first = (100, 90, 96)
    outer = context_square(first, 2.0)
    assert outer == (52, 42, 192)
    view = crop_resize(gray, outer, 192)  # one view pixel per photo pixel: every re-crop is exact
    for square in [(120, 70, 96), (60, 50, 96), (30, 20, 96)]:  # the last reaches past the view's edge
        inner = square_in_crop(square, outer, 192)
        if inner[0] >= 0 and inner[1] >= 0:
            np.testing.assert_array_equal(crop_resize(view, inner, 96), crop_resize(gray, square, 96))
        pts = rng.uniform(0, 96, (15, 2))
        np.testing.assert_allclose(crop_to_image(crop_to_image(pts, inner, 96), outer, 192), crop_to_image(pts, square, 96))


def test_annotation_crops_each_model_with_the_margin_its_meta_records(face_photo):
    metas = {"keypoints": {"framing": {"margin": 0.05}}, "emotion": {}}
    margins = model_margins(metas)
    assert margins == (("keypoints", 0.05),)
    cfg = PrepareConfig(margin=0.3, crop_sizes=(("keypoints", 96), ("emotion", 48)), crop_margins=margins, cv2_threads=0)
    out = prepare_items([face_photo], cfg)
    box = out["bbox"][0]
    import cv2

    gray = cv2.imread(face_photo, cv2.IMREAD_GRAYSCALE)
    assert tuple(out["square"][0]) == square_crop(box, 0.05)  # the keypoint model's framing
    np.testing.assert_array_equal(out["crop_keypoints"][0], crop_resize(gray, square_crop(box, 0.05), 96))
    np.testing.assert_array_equal(out["crop_emotion"][0], crop_resize(gray, square_crop(box, 0.3), 48))  # no framing: the job's margin


def test_a_photo_source_trains_evaluates_and_annotates_with_its_framing(photos, face_photo, tmp_path, ray_session):
    import facepipe
    from untrained import write_untrained_models
    from facepipe.evaluate import evaluate
    from facepipe.train import TrainConfig, train

    # A 64-px input (not the default 96): every stage below must take the side from meta.json.
    cfg = TrainConfig(task="keypoints", data=str(photos), output=str(tmp_path), epochs=2, batch_size=16, arch_args={"width": 16},
                      margin=0.1, weights_dtype="float16", input_size=64)
    result = train(cfg)
    meta = json.loads((result.model_dir / "meta.json").read_text())
    assert meta["input_size"] == 64 and max(v for p in meta["mean_shape"] for v in p if v is not None) < 64
    assert meta["framing"]["margin"] == 0.1 and meta["framing"]["box_noise"]["scale"] > 0
    assert meta["data"]["faces"]["train"]["photos"] + meta["data"]["faces"]["val"]["photos"] == 60
    assert meta["data"]["train_rows"] + meta["data"]["val_rows"] == 60 and meta["data"]["val_rows"] > 0
    assert meta["weights_dtype"] == "float16" and meta["best_epoch"] in (1, 2) and len(meta["mean_shape"]) == 15
    assert hashlib.sha256((result.model_dir / "weights.pt").read_bytes()).hexdigest() == meta["weights_sha256"]
    metrics = evaluate(result.model_dir, photos, tmp_path / "eval")
    assert metrics["images"] == meta["data"]["val_rows"] and np.isfinite(metrics["nme_mean"]) and np.isfinite(metrics["rmse_px"])
    assert metrics["faces"]["detected"] + metrics["faces"]["framed_from_labels"] == metrics["images"]
    # predict() with this model crops the keypoint input with the model's own margin.
    _, em = write_untrained_models(tmp_path / "untrained", small_emotion=True)
    res = facepipe.predict(face_photo, result.model_dir, em, refine=0)
    assert res["status"] == "ok" and res["faces"][0]["keypoints_array"].shape == (15, 2)

    # The second pass (the default) moves the points (tests/test_shipped.py checks where to, on a real photo).
    refined = facepipe.predict(face_photo, result.model_dir, em)["faces"][0]["keypoints_array"]
    assert np.abs(refined - res["faces"][0]["keypoints_array"]).max() > 1e-3
    # Annotation rows name the passes in the model id, so files annotated without them are redone.
    from facepipe.annotate import annotate, read_annotations

    one = Path(face_photo).parent / "one"
    one.mkdir(exist_ok=True)
    (one / "face.png").write_bytes(Path(face_photo).read_bytes())
    runs = [annotate(one, tmp_path / "ann", result.model_dir, em, plots="none", local=True, verbose=False, refine=r) for r in (0, 1, 1)]
    assert [r["run"]["annotated"] for r in runs] == [1, 1, 0]
    rows = read_annotations(tmp_path / "ann", latest=False)
    assert sorted(set(rows["keypoints_model_id"])) == [meta["model_id"], meta["model_id"] + "+refine1"]


def test_ibug68_points_flip_to_their_mirror_twins():
    from facepipe.data.schema import KeypointSchema

    schema = KeypointSchema.from_names([f"p{i:02d}" for i in range(68)])
    perm = schema.flip_permutation
    assert (perm[perm] == np.arange(68)).all()  # an involution
    for a, b in ((0, 16), (8, 8), (36, 45), (39, 42), (30, 30), (48, 54), (62, 62), (65, 67)):
        assert perm[a] == b and perm[b] == a


def test_ibug68_mirror_on_real_labels_keeps_the_face_layout():
    """Mirrored real faces, relabelled by the permutation, look like faces: every left/right pair keeps its side."""
    import pandas as pd

    from facepipe.data.schema import KeypointSchema

    df = pd.read_csv(shared_file("keypoints/ytf_frames/ytf_frames_68.csv"), nrows=200)
    pts = np.stack([df[[f"p{i:02d}_x", f"p{i:02d}_y"]].to_numpy() for i in range(68)], axis=1)
    perm = KeypointSchema.from_names([f"p{i:02d}" for i in range(68)]).flip_permutation
    mirrored = pts.copy()
    mirrored[..., 0] = df["width"].to_numpy()[:, None] - 1 - pts[..., 0]
    mirrored = mirrored[:, perm]
    for a, b in ((36, 45), (48, 54), (0, 16), (17, 26)):  # image-left point stays left of its twin
        assert (pts[:, a, 0] < pts[:, b, 0]).mean() > 0.95 and (mirrored[:, a, 0] < mirrored[:, b, 0]).mean() > 0.95


def test_kaggle15_from_ibug68_reproduces_the_15_point_labels_of_the_same_photos():
    import pandas as pd

    from facepipe.data.schema import KAGGLE_KEYPOINT_COLUMNS, kaggle15_from_ibug68

    d68 = pd.read_csv(shared_file("keypoints/ytf_frames/ytf_frames_68.csv"), nrows=300)
    d15 = pd.read_csv(shared_file("keypoints/ytf_frames/ytf_frames_kaggle15.csv"), nrows=300)
    assert (d68["image"] == d15["image"]).all()
    names = [f"p{i:02d}" for i in range(68)][::-1]  # any order of the 68 names
    pts = np.stack([d68[[f"{n}_x", f"{n}_y"]].to_numpy() for n in names], axis=1)
    want = d15[list(KAGGLE_KEYPOINT_COLUMNS)].to_numpy().reshape(-1, 15, 2)
    np.testing.assert_allclose(kaggle15_from_ibug68(pts, names), want, atol=0.01)  # the CSV rounds to 0.01 px
    with pytest.raises(ValueError, match="p67"):
        kaggle15_from_ibug68(pts[:, 1:], names[1:])
