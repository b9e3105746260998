"""The models shipped inside the package: intact, within budget, loadable, and as good as their model cards say."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from facepipe.model_dir import SHIPPED, shipped_model

from conftest import shared_file

MAX_BYTES = 5 * 1024 * 1024


def card_number(task: str, key: str) -> float:
    """A number the model card states as ``<key>: <value>`` in its machine-readable line."""
    text = (SHIPPED / task / "README.md").read_text()
    m = re.search(rf"`{key}` = ([0-9.]+)", text)
    assert m, f"model card of {task} states no `{key}`"
    return float(m.group(1))


def test_shipped_keypoint_model_is_intact_small_and_documented():
    d = shipped_model("keypoints")
    assert d is not None, "no keypoint model ships in facepipe/weights/keypoints"
    meta = json.loads((d / "meta.json").read_text())
    assert hashlib.sha256((d / "weights.pt").read_bytes()).hexdigest() == meta["weights_sha256"]
    assert sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".pt") <= MAX_BYTES
    assert meta["task"] == "keypoints" and meta["framing"]["margin"] >= 0 and len(meta["mean_shape"]) == len(meta["keypoint_names"])
    card = (d / "README.md").read_text()
    for must in ("research", "jobs/train.py", "ytf_frames", meta["weights_sha256"]):
        assert must in card


def test_shipped_keypoint_model_loads_safely_and_predicts_a_face(tmp_path):
    import torch

    from facepipe.models import load_model

    d = shipped_model("keypoints")
    torch.load(d / "weights.pt", map_location="cpu", weights_only=True)  # plain tensors, no pickled code
    model, meta = load_model(d)
    out = model(torch.zeros(1, 1, meta["input_size"], meta["input_size"]))
    assert out.shape == (1, len(meta["keypoint_names"]), 2) and torch.isfinite(out).all()


def test_shipped_keypoint_model_matches_its_card_on_the_dev_split(tmp_path):
    """``jobs/evaluate.py`` on the person-disjoint dev split reproduces the model card's NME."""
    from facepipe.evaluate import evaluate

    labels = shared_file("keypoints/ytf_frames/ytf_frames_kaggle15.csv")
    metrics = evaluate(shipped_model("keypoints"), labels, tmp_path, images=labels.parent / "frames", tta=False)
    assert metrics["nme_mean"] == pytest.approx(card_number("keypoints", "evaluate_nme_mean"), abs=5e-4)
    assert np.isfinite(metrics["rmse_px"])
