"""Tests for facepipe.augment on synthetic faces (bright dots at known keypoints on a dark image)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from facepipe.augment import (
    AugmentConfig,
    BatchAugmenter,
    augment_batch,
    hflip_batch,
    random_affine,
    transform_points,
    unflip_keypoints,
    warp_images,
)
from facepipe.data.schema import KeypointSchema

SCHEMA = KeypointSchema.kaggle()
PERM = SCHEMA.flip_permutation
IDX = {n: i for i, n in enumerate(SCHEMA.names)}
SIZE = 96

# A face layout with every pair of points >= 8 px apart, so each dot is unambiguous.
# "left" is the subject's left = image right side (larger x).
_LAYOUT = {
    "left_eye_center": (66.3, 38.2), "right_eye_center": (30.6, 37.7),
    "left_eye_inner_corner": (56.2, 40.4), "left_eye_outer_corner": (76.4, 40.1),
    "right_eye_inner_corner": (40.3, 40.6), "right_eye_outer_corner": (20.2, 39.8),
    "left_eyebrow_inner_end": (58.1, 26.3), "left_eyebrow_outer_end": (76.7, 26.2),
    "right_eyebrow_inner_end": (38.4, 26.6), "right_eyebrow_outer_end": (19.6, 26.1),
    "nose_tip": (48.3, 55.7),
    "mouth_left_corner": (64.2, 73.8), "mouth_right_corner": (32.1, 74.3),
    "mouth_center_top_lip": (48.4, 67.6), "mouth_center_bottom_lip": (47.8, 80.2),
}
BASE = np.array([_LAYOUT[n] for n in SCHEMA.names], dtype=np.float32)


def render(points: np.ndarray, size: int = SIZE, sigma: float = 0.8) -> np.ndarray:
    """Dark image with a Gaussian dot (peak ~230) at each finite point."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((size, size), 10.0)
    for x, y in points:
        if np.isfinite(x):
            img += 220.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_batch(B: int = 8, seed: int = 0, missing: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    kp = (BASE[None] + rng.uniform(-1.5, 1.5, (B, len(BASE), 2))).astype(np.float32)
    mask = np.ones((B, len(BASE)), dtype=bool)
    if missing:
        mask[::2, 2:10] = False  # Kaggle: most rows only have the 4 main points
        kp[~mask] = np.nan
    images = np.stack([render(k) for k in kp])
    return {
        "image": images,
        "keypoints": kp,
        "mask": mask,
        "row_id": np.arange(100, 100 + B, dtype=np.int64),
        "label": rng.integers(0, 7, B),
        "path": np.array([f"img_{i}.png" for i in range(B)], dtype=object),
    }


GEOM = AugmentConfig(hflip=0.5, vflip=0.0, rotate_deg=20.0, shift=0.1, scale=0.1,
                     brightness=0.0, contrast=0.0)


# ------------------------------------------------------------------ flips


def test_hflip_twice_is_identity():
    batch = make_batch()
    once = hflip_batch(batch, PERM)
    twice = hflip_batch(once, PERM)
    np.testing.assert_array_equal(once["image"], batch["image"][:, :, ::-1])
    np.testing.assert_array_equal(twice["image"], batch["image"])
    np.testing.assert_array_equal(twice["mask"], batch["mask"])
    np.testing.assert_allclose(twice["keypoints"], batch["keypoints"], atol=1e-4, equal_nan=True)
    assert twice["keypoints"].dtype == np.float32 and twice["mask"].dtype == bool

    # The random path with a certain flip and nothing else must agree with the deterministic one.
    flip_only = dataclasses.replace(AugmentConfig.none(), hflip=1.0)
    rnd = augment_batch(batch, flip_only, np.random.default_rng(1), PERM)
    np.testing.assert_array_equal(rnd["image"], once["image"])
    np.testing.assert_array_equal(rnd["keypoints"], once["keypoints"])
    back = augment_batch(rnd, flip_only, np.random.default_rng(2), PERM)
    np.testing.assert_array_equal(back["image"], batch["image"])
    np.testing.assert_allclose(back["keypoints"], batch["keypoints"], atol=1e-4, equal_nan=True)


def test_hflip_moves_left_eye_to_mirrored_right_eye():
    batch = make_batch(missing=False)
    out = hflip_batch(batch, PERM)
    W = batch["image"].shape[2]
    for a, b in (("left_eye_center", "right_eye_center"), ("mouth_left_corner", "mouth_right_corner")):
        new = out["keypoints"][:, IDX[a]]
        old = batch["keypoints"][:, IDX[b]]
        np.testing.assert_allclose(new[:, 0], W - 1 - old[:, 0], atol=1e-5)
        np.testing.assert_allclose(new[:, 1], old[:, 1], atol=1e-6)
    # Unpaired points stay themselves, mirrored.
    nose = IDX["nose_tip"]
    np.testing.assert_allclose(out["keypoints"][:, nose, 0], W - 1 - batch["keypoints"][:, nose, 0], atol=1e-5)
    # The subject's left eye is still on the image's right after the relabel.
    assert (out["keypoints"][:, IDX["left_eye_center"], 0] > W / 2).all()


def test_unflip_keypoints_undoes_flip():
    batch = make_batch()
    flipped = hflip_batch(batch, PERM)["keypoints"]
    back = unflip_keypoints(flipped, SIZE, PERM)
    np.testing.assert_allclose(back, batch["keypoints"], atol=1e-4, equal_nan=True)
    single = unflip_keypoints(flipped[0], SIZE, PERM)
    np.testing.assert_allclose(single, batch["keypoints"][0], atol=1e-4, equal_nan=True)


def test_hflip_plus_vflip_is_180_rotation_and_vflip_swaps_no_names():
    batch = make_batch(missing=False)
    both = dataclasses.replace(AugmentConfig.none(), hflip=1.0, vflip=1.0)
    out = augment_batch(batch, both, np.random.default_rng(0), PERM)
    np.testing.assert_array_equal(out["image"], np.rot90(batch["image"], 2, axes=(1, 2)))

    vonly = dataclasses.replace(AugmentConfig.none(), vflip=1.0)
    v = augment_batch(batch, vonly, np.random.default_rng(0), None)  # no permutation needed
    kp = batch["keypoints"]
    np.testing.assert_allclose(v["keypoints"][..., 0], kp[..., 0], atol=1e-5)
    np.testing.assert_allclose(v["keypoints"][..., 1], SIZE - 1 - kp[..., 1], atol=1e-5)
    # Eyes end up below the mouth: the reason vflip is off by default.
    assert (v["keypoints"][:, IDX["left_eye_center"], 1] > v["keypoints"][:, IDX["mouth_center_top_lip"], 1]).all()


def test_vflip_off_by_default():
    assert AugmentConfig().vflip == 0.0
    assert AugmentConfig.for_task("keypoints").vflip == 0.0
    assert AugmentConfig.for_task("emotion").vflip == 0.0
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(AugmentConfig)}["vflip"]
    assert "upside down" in help_text and "eyes below the mouth" in help_text
    assert "eyes below the mouth" in AugmentConfig.__doc__


# ------------------------------------------------------------------ identity / geometry


def test_identity_config_and_zero_rotation_change_nothing():
    batch = make_batch()
    none = AugmentConfig.none()
    assert none.is_identity
    out = augment_batch(batch, none, np.random.default_rng(0), PERM)
    assert out["image"].tobytes() == batch["image"].tobytes()
    np.testing.assert_array_equal(out["keypoints"], batch["keypoints"])
    np.testing.assert_array_equal(out["mask"], batch["mask"])

    m, flips = random_affine(8, SIZE, SIZE, none, np.random.default_rng(0))
    np.testing.assert_array_equal(m, np.broadcast_to(np.eye(2, 3), (8, 2, 3)))
    assert not flips.any()
    assert warp_images(batch["image"], m).tobytes() == batch["image"].tobytes()

    # Zero rotation/scale/shift with hflip off but photometric off too: byte-identical as well.
    zero_rot = AugmentConfig(hflip=0.0, rotate_deg=0.0, shift=0.0, scale=0.0, brightness=0.0, contrast=0.0)
    out = augment_batch(batch, zero_rot, np.random.default_rng(3), PERM)
    assert out["image"].tobytes() == batch["image"].tobytes()


def test_warp_and_points_agree_subpixel():
    """Bilinear warping is exact on a linear ramp, so any image/point offset shows up directly."""
    B, S = 16, SIZE
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    ramps = {"x": 2.5 * xx + 5, "y": 2.5 * yy + 5}
    m, _ = random_affine(B, S, S, GEOM, np.random.default_rng(7))
    A = np.concatenate([m, np.broadcast_to([[[0, 0, 1]]], (B, 1, 3))], axis=1)
    inv = np.linalg.inv(A)[:, :2]
    q = np.stack([xx.ravel(), yy.ravel()], -1)[None].repeat(B, 0)  # output pixel centres
    p = transform_points(q, inv)  # where each output pixel samples the input
    interior = ((p >= 1) & (p <= S - 2)).all(-1)
    for axis, ramp in ramps.items():
        img = np.rint(ramp).astype(np.uint8)[None].repeat(B, 0)
        out = warp_images(img, m).reshape(B, -1).astype(np.float64)
        expected = 2.5 * p[..., 0 if axis == "x" else 1] + 5
        err = (out - expected)[interior]
        # An offset of d px biases the mean error by 2.5*d grey levels.
        assert abs(err.mean()) / 2.5 < 0.02, (axis, err.mean())
        assert np.abs(err).max() < 1.0


def test_random_affine_keeps_keypoints_on_their_dots():
    batch = make_batch(B=16, seed=3)
    out = augment_batch(batch, GEOM, np.random.default_rng(11), PERM)
    img, kp, mask = out["image"], out["keypoints"], out["mask"]
    assert mask.sum() > 0.8 * batch["mask"].sum()
    checked = 0
    for b in range(len(img)):
        for k in np.flatnonzero(mask[b]):
            x, y = kp[b, k]
            cx, cy = int(round(x)), int(round(y))
            y0, y1, x0, x1 = max(cy - 2, 0), min(cy + 3, SIZE), max(cx - 2, 0), min(cx + 3, SIZE)
            win = img[b, y0:y1, x0:x1]
            py, px = np.unravel_index(np.argmax(win), win.shape)
            assert np.hypot(px + x0 - x, py + y0 - y) <= 1.0, (b, SCHEMA.names[k])
            assert win.max() > 100  # a dot is really there (not a relabelling mix-up)
            checked += 1
    assert checked > 100
    # Masked points are NaN, present ones finite and inside the frame.
    assert np.isnan(kp[~mask]).all()
    assert np.isfinite(kp[mask]).all()
    assert ((kp[mask] >= 0) & (kp[mask] <= SIZE - 1)).all()


def test_points_pushed_out_of_frame_are_masked_and_nan():
    batch = make_batch(B=32, seed=5)
    batch["keypoints"][:, IDX["nose_tip"]] = [1.0, 1.0]  # near the corner: many shifts push it out
    cfg = AugmentConfig(hflip=0.0, rotate_deg=0.0, scale=0.0, shift=0.2, brightness=0.0, contrast=0.0)
    out = augment_batch(batch, cfg, np.random.default_rng(9), PERM)
    m, _ = random_affine(32, SIZE, SIZE, cfg, np.random.default_rng(9))  # same draws as above
    moved = transform_points(batch["keypoints"], m)
    inside = ((moved >= 0) & (moved <= SIZE - 1)).all(-1)
    expected_mask = batch["mask"] & inside
    assert (~inside & batch["mask"]).sum() > 10  # the test really pushes points out
    np.testing.assert_array_equal(out["mask"], expected_mask)
    assert np.isnan(out["keypoints"][~expected_mask]).all()
    np.testing.assert_allclose(out["keypoints"][expected_mask], moved[expected_mask], atol=1e-4)
    # Points that were missing before stay missing.
    assert not out["mask"][~batch["mask"]].any()


def test_random_crop_cuts_the_augmented_image_and_moves_points_with_it():
    batch = make_batch(B=32, seed=7)
    side = 80
    geometry = AugmentConfig(hflip=0.5, rotate_deg=10.0, shift=0.05, scale=0.05, brightness=0.0, contrast=0.0)
    cropped = dataclasses.replace(geometry, crop=side)
    full = augment_batch(batch, geometry, np.random.default_rng(4), PERM)
    out = augment_batch(batch, cropped, np.random.default_rng(4), PERM)
    assert out["image"].shape == (32, side, side) and out["image"].dtype == np.uint8
    # The crop is drawn last: each output is a square window of the uncropped augmentation.
    offsets = []
    for b in range(32):
        hits = [(x, y) for y in range(SIZE - side + 1) for x in range(SIZE - side + 1)
                if np.array_equal(full["image"][b, y:y + side, x:x + side], out["image"][b])]
        assert hits, b
        offsets.append(hits[0])
        x, y = hits[0]
        moved = full["keypoints"][b] - np.array([x, y], np.float32)
        inside = full["mask"][b] & ((moved >= 0) & (moved <= side - 1)).all(-1)
        np.testing.assert_array_equal(out["mask"][b], inside)
        np.testing.assert_allclose(out["keypoints"][b][inside], moved[inside], atol=1e-4)
        assert np.isnan(out["keypoints"][b][~inside]).all()
    assert len(set(offsets)) > 8  # the windows really vary
    assert (out["mask"].sum() < full["mask"].sum())  # and some points really left the crop
    with pytest.raises(ValueError, match="crop"):
        augment_batch(batch, dataclasses.replace(geometry, crop=SIZE + 1), np.random.default_rng(0), PERM)


# ------------------------------------------------------------------ photometric


def test_photometric_keeps_dtype_and_shape_and_erases_partial_rectangles():
    batch = make_batch(B=16)
    cfg = AugmentConfig.for_task("keypoints", erase=1.0, noise_std=0.02)
    out = augment_batch(batch, cfg, np.random.default_rng(0), PERM)
    assert out["image"].dtype == np.uint8 and out["image"].shape == batch["image"].shape
    assert out["keypoints"].dtype == np.float32 and out["mask"].dtype == bool

    erase_only = dataclasses.replace(AugmentConfig.none(), erase=1.0)
    flat = {"image": np.full((16, 48, 48), 77, np.uint8)}
    out = augment_batch(flat, erase_only, np.random.default_rng(0))["image"]
    changed = out != 77
    for b in range(16):
        rows, cols = np.flatnonzero(changed[b].any(1)), np.flatnonzero(changed[b].any(0))
        if rows.size:  # a random grey equal to 77 would be invisible
            assert rows.size < 48 and cols.size < 48
            rect = out[b, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            assert (rect == rect[0, 0]).all()  # one solid rectangle
            assert changed[b].sum() == rect.size
    assert changed.any(axis=(1, 2)).sum() >= 14

    bc = dataclasses.replace(AugmentConfig.none(), brightness=0.3, contrast=0.3)
    out = augment_batch(batch, bc, np.random.default_rng(0), PERM)
    assert not np.array_equal(out["image"], batch["image"])
    np.testing.assert_array_equal(out["keypoints"], batch["keypoints"])  # photometric only


def test_brightness_contrast_match_float_reference_and_noise_changes_pixels():
    imgs = np.random.default_rng(4).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    cfg = dataclasses.replace(AugmentConfig.none(), brightness=0.4, contrast=0.4)
    out = augment_batch({"image": imgs}, cfg, np.random.default_rng(21))["image"]
    ref_rng = np.random.default_rng(21)  # no geometry: the photometric draws come first
    b = ref_rng.uniform(0.6, 1.4, 16)[:, None, None]
    c = ref_rng.uniform(0.6, 1.4, 16)[:, None, None]
    x = imgs.astype(np.float64) * b
    m = x.mean(axis=(1, 2), keepdims=True)
    ref = np.clip(np.rint((x - m) * c + m), 0, 255)
    assert np.abs(out.astype(np.float64) - ref).max() <= 1

    noisy = augment_batch({"image": np.full((8, 48, 48), 128, np.uint8)},
                          dataclasses.replace(AugmentConfig.none(), noise_std=0.05),
                          np.random.default_rng(0))["image"]
    assert noisy.dtype == np.uint8
    assert abs(noisy.astype(float).std() - 0.05 * 255) < 1.0


def test_emotion_preset_on_48px_without_keypoints():
    imgs = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    batch = {"image": imgs, "label": np.arange(8)}
    out = augment_batch(batch, AugmentConfig.for_task("emotion"), np.random.default_rng(0))  # no perm needed
    assert out["image"].shape == (8, 48, 48) and out["image"].dtype == np.uint8
    assert out["label"] is batch["label"]
    assert set(out) == {"image", "label"}
    empty = augment_batch({"image": np.zeros((0, 48, 48), np.uint8)}, AugmentConfig(), np.random.default_rng(0))
    assert empty["image"].shape == (0, 48, 48)


# ------------------------------------------------------------------ config validation


@pytest.mark.parametrize("name,value", [
    ("hflip", 1.5), ("hflip", -0.1), ("vflip", 2.0), ("erase", -1.0), ("hflip", float("nan")),
    ("rotate_deg", -5.0), ("shift", -0.1), ("scale", -0.1), ("brightness", -0.2),
    ("contrast", -0.2), ("noise_std", -0.01), ("scale", 1.0), ("shift", 0.9), ("rotate_deg", float("inf")),
    ("crop", -8), ("crop", 40.5), ("crop", True),
])
def test_invalid_config_raises_naming_the_field(name, value):
    with pytest.raises(ValueError, match=name):
        AugmentConfig(**{name: value})


def test_presets_and_overrides():
    kp = AugmentConfig.for_task("keypoints")
    emo = AugmentConfig.for_task("emotion", erase=0.25)
    assert kp.hflip == 0.5 and emo.hflip == 0.5 and emo.erase == 0.25
    assert emo.rotate_deg == 5.0 and emo.scale == 0.05 and emo.brightness == emo.contrast == 0.2
    assert kp.rotate_deg == 10.0 and AugmentConfig.for_task("emotion", rotate_deg=12).rotate_deg == 12
    assert AugmentConfig.from_dict(emo.to_dict()) == emo
    with pytest.raises(ValueError, match="unknown task"):
        AugmentConfig.for_task("pose")
    with pytest.raises(ValueError, match="hflip"):
        AugmentConfig.for_task("emotion", hflip=3)
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig.from_dict({"hflipp": 0.5})


def test_hflip_with_keypoints_but_no_permutation_raises():
    batch = make_batch()
    with pytest.raises(ValueError, match="flip_permutation"):
        augment_batch(batch, AugmentConfig(), np.random.default_rng(0), None)
    with pytest.raises(ValueError, match="flip_permutation"):
        BatchAugmenter(AugmentConfig(), None)(batch)
    with pytest.raises(ValueError, match="flip_permutation"):
        hflip_batch(batch, None)
    with pytest.raises(ValueError, match="permutation"):
        augment_batch(batch, AugmentConfig(), np.random.default_rng(0), PERM[:-1])


# ------------------------------------------------------------------ BatchAugmenter / seeding


def test_batch_augmenter_is_reproducible_from_row_ids():
    batch = make_batch(B=8)
    cfg = AugmentConfig.for_task("keypoints")
    a = BatchAugmenter(cfg, PERM.tolist(), seed=42)
    b = BatchAugmenter(cfg, PERM.tolist(), seed=42)  # e.g. another Ray worker
    out1, out2 = a(batch), b(batch)
    assert out1["image"].tobytes() == out2["image"].tobytes()
    np.testing.assert_array_equal(out1["keypoints"], out2["keypoints"])
    assert a(batch)["image"].tobytes() == out1["image"].tobytes()  # no hidden state

    other_rows = dict(batch, row_id=batch["row_id"] + 1000)
    assert a(other_rows)["image"].tobytes() != out1["image"].tobytes()
    other_seed = BatchAugmenter(cfg, PERM.tolist(), seed=43)(batch)
    assert other_seed["image"].tobytes() != out1["image"].tobytes()
    epoch1 = a(dict(batch, epoch=np.ones(8, np.int64)))
    assert epoch1["image"].tobytes() != out1["image"].tobytes()
    epoch0 = a(dict(batch, epoch=np.zeros(8, np.int64)))  # absent column == epoch 0
    assert epoch0["image"].tobytes() == out1["image"].tobytes()

    with pytest.raises(ValueError, match="row_id"):
        a(dict(batch, row_id=batch["row_id"].astype(float)))


def test_batch_augmenter_passes_unknown_columns_through():
    batch = make_batch(B=4)
    batch["epoch"] = np.full(4, 3, np.int64)
    out = BatchAugmenter(AugmentConfig.for_task("keypoints"), PERM.tolist(), seed=1)(batch)
    assert set(out) == set(batch)
    for key in ("row_id", "label", "path", "epoch"):
        assert out[key] is batch[key]
    # Constructor kwargs as Ray passes them (plain dict config) work too.
    out2 = BatchAugmenter(AugmentConfig.for_task("keypoints").to_dict(), PERM.tolist(), seed=1)(batch)
    assert out2["image"].tobytes() == out["image"].tobytes()


def test_inputs_are_not_modified():
    batch = make_batch()
    for v in batch.values():
        if isinstance(v, np.ndarray) and v.dtype != object:
            v.setflags(write=False)  # Ray hands out read-only arrow-backed arrays
    before = {k: v.copy() for k, v in batch.items()}
    augment_batch(batch, AugmentConfig.for_task("keypoints", erase=0.5, noise_std=0.01),
                  np.random.default_rng(0), PERM)
    for k in before:
        np.testing.assert_array_equal(batch[k], before[k])


# ------------------------------------------------------------------ timing (printed, not asserted)


def test_timing_print(capsys):
    rng = np.random.default_rng(0)
    lines = []
    for size, task in ((96, "keypoints"), (48, "emotion")):
        batch = {"image": rng.integers(0, 256, (64, size, size), dtype=np.uint8),
                 "row_id": np.arange(64, dtype=np.int64)}
        if task == "keypoints":
            batch["keypoints"] = rng.uniform(0, size - 1, (64, 15, 2)).astype(np.float32)
            batch["mask"] = np.ones((64, 15), bool)
        aug = BatchAugmenter(AugmentConfig.for_task(task), PERM.tolist() if task == "keypoints" else None)
        aug(batch)
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            aug(batch)
        lines.append(f"augment 64x{size}x{size} ({task}): {(time.perf_counter() - t0) / n * 1e3:.2f} ms/batch")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_keypoints_stay_on_generated_face_features(hflip):
    """On generated faces with exact keypoints, the pixel under each augmented keypoint is the pixel
    that was under the (mirrored, when flipped) original keypoint."""
    from facepipe.data.schema import KeypointSchema
    from facepipe.data.synth import render_faces

    imgs, kps, _ = render_faces(48, size=96, seed=5)
    perm = KeypointSchema.kaggle().flip_permutation
    cfg = AugmentConfig(hflip=hflip, rotate_deg=12, shift=0.06, scale=0.08, brightness=0, contrast=0)
    out = augment_batch({"image": imgs, "keypoints": kps, "mask": np.ones(kps.shape[:2], bool)}, cfg, np.random.default_rng(1), perm)
    src = perm if hflip else np.arange(15)

    def sample(images, pts):  # bilinear, so sub-pixel positions compare fairly
        x = np.clip(pts[..., 0], 0, 94.999)
        y = np.clip(pts[..., 1], 0, 94.999)
        x0, y0 = x.astype(int), y.astype(int)
        fx, fy = x - x0, y - y0
        b = np.arange(len(images))[:, None]
        im = images.astype(float)
        return ((1 - fx) * (1 - fy) * im[b, y0, x0] + fx * (1 - fy) * im[b, y0, x0 + 1]
                + (1 - fx) * fy * im[b, y0 + 1, x0] + fx * fy * im[b, y0 + 1, x0 + 1])

    ok = out["mask"]
    before = sample(imgs, kps[:, src])
    after = sample(out["image"], np.nan_to_num(out["keypoints"]))
    err = np.abs(after - before)[ok].mean()
    baseline = np.abs(after - sample(imgs, kps[:, src][::-1]))[ok].mean()  # other faces' points
    assert ok.mean() > 0.9
    print(f"pixel difference under keypoints: {err:.1f} vs {baseline:.1f} for unrelated points")
    assert err < 6 and err < baseline / 4, (err, baseline)
