"""Head pose (facepipe/faces/pose.py): the geometry a pose must obey, on the solver and on real photos.

No pose labels exist here, so the tests are what any pose must satisfy: angles survive a round
trip through a projection of the mean face; a mirrored photo negates yaw and roll and keeps pitch;
a photo turned in-plane by t degrees has its roll shifted by t; a frontal face reads near zero.
The photo tolerances are the measured spread of the shipped 15-point model through ``predict``
(its points on a mirrored or rotated photo are not exactly the mirrored or rotated points).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facepipe.faces import pose
from tests.conftest import shared_file

KAGGLE = ["left_eye_center", "right_eye_center", "left_eye_inner_corner", "left_eye_outer_corner", "right_eye_inner_corner",
          "right_eye_outer_corner", "left_eyebrow_inner_end", "left_eyebrow_outer_end", "right_eyebrow_inner_end",
          "right_eyebrow_outer_end", "nose_tip", "mouth_left_corner", "mouth_right_corner", "mouth_center_top_lip", "mouth_center_bottom_lip"]
IBUG = [f"p{i:02d}" for i in range(68)]


def _project(names, yaw, pitch, roll, size=(640, 480), distance=600.0):
    """The mean face's points seen at these angles by the camera head_pose assumes."""
    face = pose.mean_face()
    model = np.stack([face[n] for n in names])
    cam = pose.camera_matrix(*size)
    rvec = cv2.Rodrigues(pose.rotation_from_angles(yaw, pitch, roll))[0]
    return cv2.projectPoints(model, rvec, np.array([10.0, -5.0, distance]), cam, None)[0][:, 0]


@pytest.mark.parametrize("names", [KAGGLE, IBUG], ids=["kaggle15", "ibug68"])
def test_angles_come_back_from_a_projection_of_the_mean_face(names):
    for angles in [(0, 0, 0), (25, 0, 0), (0, -15, 0), (0, 0, 30), (-30, 12, -20)]:
        got = pose.head_pose(_project(names, *angles)[None], names, np.array([[640, 480]]))[0]
        np.testing.assert_allclose(got, angles, atol=0.05)


def test_rotation_and_angles_are_inverses_and_signs_read_as_documented():
    for a in [(10, 20, 30), (-40, 5, -70), (0, -30, 120)]:
        np.testing.assert_allclose(pose.angles_from_rotation(pose.rotation_from_angles(*a)), a, atol=1e-9)
    nose = pose.mean_face()["nose_tip"]
    # yaw > 0: the nose moves towards the image's right; pitch > 0: up (smaller y)
    assert (pose.rotation_from_angles(20, 0, 0) @ nose)[0] > nose[0] + 5
    assert (pose.rotation_from_angles(0, 20, 0) @ nose)[1] < nose[1] - 5
    # roll > 0: counter-clockwise in the image, as cv2.getRotationMatrix2D turns it (the left eye goes up)
    eye = pose.mean_face()["left_eye_center"]
    assert (pose.rotation_from_angles(0, 0, 20) @ eye)[1] < eye[1] - 5


def test_the_mean_face_is_symmetric_and_has_its_nose_in_front():
    face = pose.mean_face()
    np.testing.assert_allclose(face["p00"] * [-1, 1, 1], face["p16"], atol=1e-6)
    np.testing.assert_allclose(face["left_eye_center"] * [-1, 1, 1], face["right_eye_center"], atol=1e-6)
    assert face["nose_tip"][2] < face["left_eye_center"][2] - 20  # mm towards the camera
    assert abs(np.linalg.norm(face["left_eye_center"] - face["right_eye_center"]) - 63.0) < 1.0


def test_too_few_known_points_is_a_clear_error_and_a_missing_point_gives_nan():
    with pytest.raises(pose.PoseError, match="need 6"):
        pose.head_pose(np.zeros((1, 3, 2)), ["a", "b", "nose_tip"], np.array([[100, 100]]))
    pts = _project(KAGGLE, 0, 0, 0)[None].copy()
    pts[0, 3] = np.nan
    assert np.isnan(pose.head_pose(pts, KAGGLE, np.array([[640, 480]]))).all()


# --- real photos through predict() (shipped 15-point model) -------------------------------------

PHOTOS = ["Abdel_Aziz_Al-Hakim_00.jpg", "Abdel_Aziz_Al-Hakim_42.jpg", "Adam_Sandler_40.jpg", "Adrian_Nastase_42.jpg", "Abdullah_Gul_51.jpg"]


def _pose(image) -> np.ndarray:
    from facepipe import predict

    r = predict(image, color="bgr")
    assert r["faces"], "no face found"
    return np.array([r["faces"][0]["pose"][k] for k in pose.POSE_NAMES])


@pytest.fixture(scope="module")
def photos():
    folder = shared_file("keypoints/ytf_frames/frames")
    return {name: cv2.imread(str(folder / name)) for name in PHOTOS}


def test_a_mirrored_photo_negates_yaw_and_roll_and_keeps_pitch(photos):
    errors = []
    for img in photos.values():
        a, b = _pose(img), _pose(img[:, ::-1].copy())
        errors.append([a[0] + b[0], a[1] - b[1], a[2] + b[2]])
    errors = np.abs(errors)
    # measured on these photos: yaw 0.2-3.5, pitch 0.1-6.5, roll 0.4-2.6 degrees
    assert errors[:, 0].max() < 6 and errors[:, 2].max() < 5, errors
    assert errors[:, 1].max() < 10 and np.median(errors[:, 1]) < 5, errors


@pytest.mark.parametrize("turn", [10.0, -10.0])
def test_a_photo_turned_in_plane_shifts_roll_by_the_turn(photos, turn):
    shifts = []
    for img in list(photos.values())[:4]:
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), turn, 1.0)
        turned = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        shifts.append(_pose(turned)[2] - _pose(img)[2])
    # measured on these photos: +9.6..+10.6 and -10.1..-8.7 degrees
    assert np.abs(np.array(shifts) - turn).max() < 4, shifts
    assert abs(np.median(shifts) - turn) < 2, shifts


def test_a_frontal_face_reads_near_zero():
    """The dev photo whose labels solve closest to frontal: the model's points give a pose near zero too."""
    from facepipe.data.photos import read_photo_rows

    labels = shared_file("keypoints/ytf_frames/ytf_frames_kaggle15.csv")
    rows = read_photo_rows(labels, labels.parent / "frames")
    dev = np.flatnonzero(rows.split == "val")
    sizes = np.array([cv2.imread(str(rows.abs_path[i])).shape[1::-1] for i in dev[:60]])
    label_pose = pose.head_pose(rows.points[dev[:60]], rows.names, sizes)
    best = int(np.nanargmin(np.abs(label_pose).max(1)))
    assert np.abs(label_pose[best]).max() < 5  # there is a frontal face among them
    got = _pose(cv2.imread(str(rows.abs_path[dev[best]])))
    assert np.abs(got).max() < 8, (label_pose[best], got)


def test_pose_columns_in_the_parquet_rows_match_predict(photos):
    from facepipe import predict
    from facepipe.annotate.schema import POSE_COLUMNS

    img = photos[PHOTOS[0]]
    df = predict(img, color="bgr", as_frame=True)
    face = predict(img, color="bgr")["faces"][0]["pose"]
    assert list(POSE_COLUMNS) == ["yaw_deg", "pitch_deg", "roll_deg"]
    np.testing.assert_allclose(df[list(POSE_COLUMNS)].iloc[0].to_numpy(float), [face[k] for k in pose.POSE_NAMES], atol=1e-4)
