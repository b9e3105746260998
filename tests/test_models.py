"""Keypoint networks: narrow ResNets, the integral (heatmap) head, float16 model directories."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from facepipe import models
from facepipe.coords import to_pixels
from facepipe.data.schema import KeypointSchema


def test_width_scales_every_stage_of_the_resnet():
    full = models.KeypointResNet(15, "resnet18")
    narrow = models.KeypointResNet(15, "resnet18", width=24)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)][-1] == 8 * 24
    assert models.count_parameters(narrow) < models.count_parameters(full) / 6
    for net in (full, narrow, models.KeypointResNet(15, "resnet34", width=16)):
        assert net(torch.zeros(2, 1, 96, 96)).shape == (2, 15, 2)
    with pytest.raises(ValueError, match="multiple of 8"):
        models.KeypointResNet(15, width=20)
    with pytest.raises(ValueError, match="unknown keypoint head"):
        models.KeypointResNet(15, head="dense")


def test_integral_head_reads_a_peak_as_its_cell_centre_in_input_pixels():
    head = models.IntegralHead(8, 2)

    class Peaks(nn.Module):
        def forward(self, features):
            hm = torch.full((1, 2, 24, 24), -1e4)
            hm[0, 0, 5, 10] = 0.0  # row 5, column 10 of a stride-4 map over a 96-px input
            hm[0, 1, 23, 0] = 0.0
            return hm

    head.layers = Peaks()
    xy = to_pixels(head(torch.zeros(1, 8, 3, 3)), 96)
    # Cell j covers pixels [4j, 4j+4): its centre is x = 4j + 1.5 (pixel-centre convention).
    torch.testing.assert_close(xy[0], torch.tensor([[41.5, 21.5], [1.5, 93.5]]))


def test_integral_head_model_trains_and_flips_like_the_pooled_one():
    torch.manual_seed(0)
    net = models.build_model("keypoints", "resnet18", {"width": 16, "head": "integral"}, 15)
    x = torch.rand(8, 1, 96, 96).contiguous(memory_format=torch.channels_last)
    target = torch.rand(8, 15, 2) * 2 - 1
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(30):
        loss = ((net(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # the gradient reaches the backbone through the softmax


def test_float16_model_directory_loads_back_into_fp32(tmp_path):
    names = list(KeypointSchema.kaggle().names)
    net = models.build_model("keypoints", "resnet18", {"width": 16, "head": "integral"}, 15)
    meta = models.make_meta("keypoints", "resnet18", {"width": 16, "head": "integral"}, 96, names, 0.5, 0.25)
    d32 = models.save_model_dir(tmp_path / "fp32", net, meta)
    d16 = models.save_model_dir(tmp_path / "fp16", net, meta, dtype=torch.float16)
    assert (d16 / "weights.pt").stat().st_size < 0.6 * (d32 / "weights.pt").stat().st_size
    m16 = json.loads((d16 / "meta.json").read_text())
    assert m16["weights_dtype"] == "float16" and hashlib.sha256((d16 / "weights.pt").read_bytes()).hexdigest() == m16["weights_sha256"]
    loaded, _ = models.load_model(d16)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype  # fp32 network, fp16-rounded values
        if a.is_floating_point():
            torch.testing.assert_close(b, a.to(torch.float16).to(a.dtype), rtol=0, atol=0)


def test_int8_model_directory_is_a_quarter_of_fp32_and_predicts_like_it(tmp_path):
    names = list(KeypointSchema.kaggle().names)
    torch.manual_seed(0)
    net = models.build_model("keypoints", "resnet18", {"width": 16, "head": "integral"}, 15).eval()
    meta = models.make_meta("keypoints", "resnet18", {"width": 16, "head": "integral"}, 96, names, 0.5, 0.25)
    d32 = models.save_model_dir(tmp_path / "fp32", net, meta)
    d8 = models.save_model_dir(tmp_path / "int8", net, meta, dtype="int8")
    assert (d8 / "weights.pt").stat().st_size < 0.3 * (d32 / "weights.pt").stat().st_size
    m8 = json.loads((d8 / "meta.json").read_text())
    assert m8["weights_dtype"] == "int8" and m8["model_id"] != json.loads((d32 / "meta.json").read_text())["model_id"]
    stored = torch.load(d8 / "weights.pt", weights_only=True)
    conv = "head.layers.0.weight"
    assert stored[conv].dtype == torch.int8 and stored[conv + "@int8_scale"].shape[0] == stored[conv].shape[0]
    loaded, _ = models.load_model(d8)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, k
        if a.is_floating_point() and a.dim() >= 2:  # each weight within half a step of its channel's scale
            step = a.abs().amax(dim=tuple(range(1, a.dim())), keepdim=True) / 127
            assert ((b - a).abs() <= 0.51 * step + 1e-3 * step.max()).all(), k
    x = torch.rand(3, 1, 96, 96)
    with torch.no_grad():
        assert (loaded(x) - net(x)).abs().max() < 0.02  # [-1, 1] coordinates: < 1 px of a 96-px crop
    with pytest.raises(ValueError, match="int4"):
        models.save_model_dir(tmp_path / "bad", net, meta, dtype="int4")


class _BrightestPoint(torch.nn.Module):
    """Every keypoint at the image's brightest spot (soft-argmax), in the models' [-1, 1] scale."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        n, _, h, w = x.shape
        p = (x.float().flatten(1) * 200).softmax(-1).view(n, h, w)
        xs = (p.sum(1) * torch.arange(w, dtype=torch.float32)).sum(-1)
        ys = (p.sum(2) * torch.arange(h, dtype=torch.float32)).sum(-1)
        xy = torch.stack([xs, ys], -1) / ((w - 1) / 2) - 1
        return xy[:, None, :].expand(n, self.k, 2)


@pytest.mark.parametrize("tta", ["none", "flip", "crops"])
def test_predictor_maps_every_tta_view_back(tta):
    """A bright dot is found where it is through every view: shifts are subtracted and mirrored
    points mirrored back, so TTA averages agreeing answers instead of blurring them."""
    from facepipe.data.schema import KeypointSchema
    from facepipe.predictor import Predictor

    names = list(KeypointSchema.kaggle().names)
    meta = models.make_meta("keypoints", "resnet18", {}, 96, names, 0.0, 1.0)
    img = np.zeros((2, 96, 96), np.uint8)
    img[0, 40, 30] = img[1, 70, 20] = 255
    pred = Predictor(_BrightestPoint(len(names)), meta, tta=tta)(img)
    assert pred.shape == (2, 15, 2)
    np.testing.assert_allclose(pred[:, 0], [[30, 40], [20, 70]], atol=0.05)
    with pytest.raises(ValueError, match="tta must be one of"):
        Predictor(_BrightestPoint(len(names)), meta, tta="ten")


@pytest.mark.parametrize("task", ["emotion", "keypoints"])
def test_ensemble_directory_predicts_the_members_average(tmp_path, task):
    from untrained import write_untrained_models

    from facepipe.cli import main as cli
    from facepipe.predictor import Predictor

    members = [write_untrained_models(tmp_path / f"m{seed}", small_emotion=True, seed=seed)[task == "emotion"] for seed in (1, 2)]
    assert cli(["ensemble", *map(str, members), "--output", str(tmp_path / "ens")]) == 0
    meta = json.loads((tmp_path / "ens" / "meta.json").read_text())
    assert meta["arch"] == "ensemble" and [m["model_dir"] for m in meta["members"]] == list(map(str, members))
    images = np.random.default_rng(0).integers(0, 256, (5, meta["input_size"], meta["input_size"]), dtype=np.uint8)
    each = [Predictor.load(m, device="cpu", tta="flip")(images) for m in members]
    both = Predictor.load(tmp_path / "ens", device="cpu", tta="flip")(images)
    assert not np.allclose(each[0], each[1])  # the members differ, so the average is a real test
    np.testing.assert_allclose(both, (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-5)


def test_ensemble_refuses_members_that_see_different_inputs(tmp_path, capsys):
    from untrained import write_untrained_models

    from facepipe.cli import main as cli

    a = write_untrained_models(tmp_path / "a", small_emotion=True)[1]
    b = write_untrained_models(tmp_path / "b", small_emotion=True, seed=1)[1]
    meta = json.loads((b / "meta.json").read_text())
    meta["normalization"]["mean"] = 0.4
    (b / "meta.json").write_text(json.dumps(meta))
    assert cli(["ensemble", str(a), str(b), "--output", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err
    assert "'normalization'" in err and str(b) in err and not (tmp_path / "ens").exists()
    assert cli(["ensemble", str(a), "--output", str(tmp_path / "ens")]) == 2


class _Recorder(torch.nn.Module):
    """Seven equal logits for every input; keeps each view it was given."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(len(x), 7)


@pytest.mark.parametrize("tta", ["none", "crops"])
def test_a_model_trained_on_crops_sees_windows_of_its_crop_side_inside_the_image(tta):
    """meta["crop"] (training on random 40-px crops): the centre window without TTA, and the
    shifted views are real 40-px windows of the 48-px face, not padded ones."""
    from facepipe.data.schema import EMOTIONS
    from facepipe.predictor import Predictor

    meta = {**models.make_meta("emotion", "vgg_cnn", {}, 48, list(EMOTIONS), 0.0, 1.0), "crop": 40}
    img = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    full = models.preprocess(img, meta, centre=False)
    torch.testing.assert_close(models.preprocess(img, meta), full[..., 4:44, 4:44])
    assert models.preprocess(img[:, :40, :40], meta).shape[-1] == 40  # training batches are already cut
    net = _Recorder()
    Predictor(net, meta, tta=tta)(img)
    views = net.seen[::2] if tta == "crops" else net.seen  # every second one is the mirror image
    corners = set()
    for v in views:
        assert v.shape[-2:] == (40, 40)
        found = [(t, l) for t in range(9) for l in range(9) if torch.equal(full[..., t:t + 40, l:l + 40], v)]
        assert found, "a view is not a window of the image"
        corners.add(found[0])
    assert corners == ({(4, 4)} if tta == "none" else {(4, 4), (4, 2), (4, 6), (2, 4), (6, 4)})
