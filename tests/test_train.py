"""Training on Ray Train with generated data: 1 and 2 workers, resume, model directory, losses, evaluation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from facepipe import models
from facepipe.data import read_table
from facepipe.data.synth import write_fer_csv, write_keypoints_csv
from facepipe.evaluate import evaluate
from facepipe.predictor import Predictor
from facepipe.tasks import classification_report
from facepipe.tasks import masked_mse, parse_point_weights

ROOT = Path(__file__).resolve().parents[1]
TINY_CNN = {"widths": [8, 16], "convs_per_block": 1, "dropout": 0.1}


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    return {"keypoints": str(write_keypoints_csv(d / "kp.csv.gz", 240, seed=1)), "emotion": str(write_fer_csv(d / "fer.csv", 420, seed=1))}


def config(task, data, out, **kw):
    from facepipe.train import TrainConfig

    base = {"epochs": 3, "batch_size": 32, "lr": 3e-3}
    if task == "emotion":
        base["arch_args"] = TINY_CNN
    return TrainConfig(task=task, data=data, output=str(out), **{**base, **kw})


def last_state(run_path: str) -> dict:
    """The training state in a run's newest checkpoint."""
    last = max((p for p in Path(run_path).glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return torch.load(last / "state.pt", map_location="cpu", weights_only=True)


def test_masked_mse_ignores_missing_points():
    pred = torch.zeros(2, 3, 2, requires_grad=True)
    target = torch.tensor([[[1.0, 1.0], [float("nan"), float("nan")], [0.5, 0.5]], [[0.2, 0.2], [0.3, 0.3], [float("nan"), float("nan")]]])
    mask = ~torch.isnan(target[..., 0])
    loss = masked_mse(pred, target, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask] != 0).all()
    # equals the plain MSE over the present coordinates only
    assert loss.item() == pytest.approx(float((target[mask] ** 2).mean()))


def test_point_weights_scale_each_points_share_of_the_loss_and_bad_specs_name_the_point():
    names = [f"p{i:02d}" for i in range(5)]
    w = parse_point_weights("p01..p03=0.25,p04=2", names)
    assert w.tolist() == [1.0, 0.25, 0.25, 0.25, 2.0]
    assert parse_point_weights("p03..p01=0", names).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]  # a range either way round
    assert parse_point_weights(None, names) is None
    for spec, words in [("p09=1", "no point 'p09'"), ("p01", "expected NAME=W"), ("p01=-1", "W >= 0"), ("p00..p04=0", "every point at weight 0")]:
        with pytest.raises(ValueError, match=words):
            parse_point_weights(spec, names)
    # the loss: each point's squared error times its weight, over the present points' weights
    pred = torch.zeros(1, 5, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [float("nan"), float("nan")], [1.0, 1.0], [3.0, 3.0]]])
    mask = ~torch.isnan(target[..., 0])
    loss = masked_mse(pred, target, mask, torch.tensor(w))
    present = [0, 1, 3, 4]
    expected = sum(w[i] * 2 * float(target[0, i, 0]) ** 2 for i in present) / (2 * sum(w[i] for i in present))
    assert loss.item() == pytest.approx(expected)
    assert masked_mse(pred, target, mask, torch.ones(5)).item() == pytest.approx(masked_mse(pred, target, mask).item())


def test_keypoint_weights_fail_before_training_for_a_name_not_in_the_data_or_a_task_without_points(gen_data, tmp_path):
    from facepipe.train import train

    with pytest.raises(ValueError, match="the emotion task has none"):
        train(config("emotion", gen_data["emotion"], tmp_path / "e", keypoint_weights="p00=0.5"))
    with pytest.raises(ValueError, match="no point 'p00'"):
        train(config("keypoints", gen_data["keypoints"], tmp_path / "k", keypoint_weights="p00=0.5"))


def test_training_batches_are_mixed_even_from_a_sorted_file(ray_session):
    from facepipe.train import LOCAL_SHUFFLE_ROWS, SHUFFLE_BLOCK_ROWS, shuffled_blocks

    n = 4000
    ds = shuffled_blocks(ray.data.range(n), seed=0)  # "id" 0..n-1 stands for a file's sorted rows
    rows_per_block = [m.num_rows for b in ds.iter_internal_ref_bundles() for m in b.metadata]
    assert sum(rows_per_block) == n and max(rows_per_block) <= SHUFFLE_BLOCK_ROWS

    def first_batches(epoch_ds, epoch):
        # as in train_loop_per_worker: the local shuffle is seeded by the epoch
        it = epoch_ds.iter_batches(batch_size=64, local_shuffle_buffer_size=LOCAL_SHUFFLE_ROWS, local_shuffle_seed=epoch)
        return [b["id"] for b, _ in zip(it, range(3))]

    epoch = ds.randomize_block_order(seed=0)
    a, b = first_batches(epoch, 1), first_batches(epoch, 2)
    for batch in a:
        # a sorted read would give 64 consecutive ids; these come from all over the file
        assert np.ptp(batch) > n / 2 and len(set((batch // (n // 4)).tolist())) == 4
    assert not np.array_equal(np.concatenate(a), np.concatenate(b))
    # nothing lost or duplicated by the shuffle
    assert sorted(r["id"] for r in ds.take_all()) == list(range(n))


def test_augmentation_stage_is_not_held_by_the_resource_budget_and_loses_no_rows(ray_session):
    from ray.data._internal.execution.backpressure_policy import ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY as KEY

    from facepipe.train import without_resource_budget_backpressure

    ds = ray.data.range(3000, override_num_blocks=12).map_batches(lambda b: {"id": b["id"] * 2}, batch_size=100)
    without_resource_budget_backpressure(ds)
    names = [p.__name__ for p in ds.context.get_config(KEY)]
    assert "ResourceBudgetBackpressurePolicy" not in names
    assert {"ConcurrencyCapBackpressurePolicy", "DownstreamCapacityBackpressurePolicy"} <= set(names)
    # only this dataset's context changes; datasets made afterwards keep Ray's defaults
    assert ray.data.DataContext.get_current().get_config(KEY, None) is None
    # a split consumed by two readers, as Train workers read it: every row exactly once
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # split readers must read side by side
        parts = list(pool.map(lambda it: [r["id"] for r in it.iter_rows()], ds.streaming_split(2, equal=True)))
    assert sorted(parts[0] + parts[1]) == [2 * i for i in range(3000)]


def test_two_workers_keypoints_loss_falls_and_model_dir_reloads(gen_data, tmp_path, ray_session):
    from facepipe.train import train

    res = train(config("keypoints", gen_data["keypoints"], tmp_path, num_workers=2, epochs=3))
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    meta = json.loads((res.model_dir / "meta.json").read_text())
    assert meta["task"] == "keypoints" and meta["input_size"] == 96 and len(meta["keypoint_names"]) == 15
    assert meta["train_config"]["num_workers"] == 2 and meta["data"]["sha256"] and meta["facepipe_version"]
    # weights load without pickled code, and the reloaded model predicts identically to the checkpoint's
    state = torch.load(res.model_dir / "weights.pt", weights_only=True)
    a, _ = models.load_model(res.model_dir)
    b = models.build_model("keypoints", "resnet18", {}, 15)
    b.load_state_dict(state)
    imgs = read_table(gen_data["keypoints"]).images[:8]
    pa, pb = Predictor(a, meta)(imgs), Predictor(b, meta)(imgs)
    assert np.array_equal(pa, pb) and pa.shape == (8, 15, 2)
    assert (res.model_dir.parent / "training_curves.png").stat().st_size > 0


def test_one_worker_emotion_stop_and_resume(gen_data, tmp_path, ray_session):
    from facepipe.train import train

    first = train(config("emotion", gen_data["emotion"], tmp_path, num_workers=1, stop_after_epoch=1, ema=0.9))
    assert [h["epoch"] for h in first.history] == [1]
    with pytest.raises(FileExistsError, match="--resume"):
        train(config("emotion", gen_data["emotion"], tmp_path))
    with pytest.raises(ValueError, match=r"cannot resume with other settings \(epochs 3 -> 5, lr 0.003 -> 0.01\)"):
        train(config("emotion", gen_data["emotion"], tmp_path, resume=True, epochs=5, lr=0.01))
    with pytest.raises(ValueError, match=r"cannot resume with another network \(members 1 -> 2\)"):
        train(config("emotion", gen_data["emotion"], tmp_path, resume=True, members=2))
    with pytest.raises(ValueError, match="--input-size sets the crop side of photo labels"):
        train(config("emotion", gen_data["emotion"], tmp_path / "other", input_size=64))
    with pytest.raises(ValueError, match=r"cannot resume on other data \(train_fraction 1.0 -> 0.5\)"):
        train(config("emotion", gen_data["emotion"], tmp_path, resume=True, train_fraction=0.5))
    resumed = train(config("emotion", gen_data["emotion"], tmp_path, resume=True, ema=0.9))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first.history[0]  # the history came back from the checkpoint
    # the weight average came back too: it has seen every step of the three epochs, not only the last two
    train_rows = json.loads((resumed.model_dir / "meta.json").read_text())["data"]["train_rows"]
    steps = last_state(resumed.run_path)["ema"]["n_averaged"]
    assert int(steps) == 3 * -(-train_rows // 32)
    from facepipe.data.kaggle import FER_FRAME_MARGIN

    # annotation crops this model's input with FER2013's framing (facepipe.faces.framing.model_margins)
    assert json.loads((resumed.model_dir / "meta.json").read_text())["framing"]["margin"] == FER_FRAME_MARGIN
    losses = [h["train_loss"] for h in resumed.history]
    assert losses[-1] < losses[0]

    out = evaluate(resumed.model_dir, gen_data["emotion"], tmp_path / "eval")
    cm = np.asarray(out["confusion_matrix"])
    assert out["split"] == "PublicTest" and cm.sum() == out["images"] and out["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for f in ("metrics.json", "classification_report.csv", "confusion_matrix.png", "confusion_matrix_counts.png", "emotion_predictions.png"):
        assert (tmp_path / "eval" / f).stat().st_size > 0


def test_evaluate_keypoints_writes_per_keypoint_rmse(gen_data, tmp_path):
    # an untrained model directory is enough to check the evaluation's arithmetic and files
    meta = models.make_meta("keypoints", "resnet18", {}, 96, [n for n in read_table(gen_data["keypoints"]).schema.names], 0.5, 0.25)
    d = models.save_model_dir(tmp_path / "m", models.build_model("keypoints", "resnet18", {}, 15), meta)
    out = evaluate(d, gen_data["keypoints"], tmp_path / "eval", split="all", tta=False)
    t = read_table(gen_data["keypoints"])
    pred = Predictor.load(d, "cpu")(t.images)
    err = (pred - t.keypoints) ** 2
    expected = float(np.sqrt(np.nanmean(err)))
    assert out["rmse_px"] == pytest.approx(expected, rel=1e-4)
    # NME in the crop's pixels: mean point distance over the distance between the labelled eye centres
    names = list(t.schema.names)
    eyes = t.keypoints[:, names.index("left_eye_center")] - t.keypoints[:, names.index("right_eye_center")]
    per_face = np.nanmean(np.hypot(*(pred - t.keypoints).transpose(2, 0, 1)), axis=1) / np.hypot(*eyes.T)
    has_eyes = np.isfinite(per_face)
    assert out["nme_pixels"] == "crop" and out["nme_faces"] == has_eyes.sum() and out["nme_faces_without_eye_centres"] == (~has_eyes).sum()
    assert out["nme_mean"] == pytest.approx(float(per_face[has_eyes].mean()), rel=1e-4)
    lines = (tmp_path / "eval" / "per_keypoint_rmse.csv").read_text().splitlines()
    assert lines[0] == "keypoint,rmse_px,present" and len(lines) == 16


def test_classification_report_matches_hand_computation():
    cm = np.array([[5, 1], [2, 2]])
    rep = {r["class"]: r for r in classification_report(cm, ["a", "b"])}
    assert rep["a"]["precision"] == pytest.approx(5 / 7) and rep["a"]["recall"] == pytest.approx(5 / 6)
    assert rep["b"]["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert rep["weighted avg"]["recall"] == pytest.approx((5 / 6) * 0.6 + 0.5 * 0.4)
    assert rep["macro avg"]["support"] == 10


def test_train_help_documents_flags_and_rejects_bad_choices():
    out = subprocess.run([sys.executable, "jobs/train.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for flag in ("--task", "--data", "--epochs", "--num-workers", "--cpus-per-worker", "--use-gpu", "--resume", "--vflip", "--storage-path"):
        assert flag in out
    assert "upside down" in out and "(default: 1)" in out
    # every flag shows its real default, per task where the tasks differ (flags come from the configs)
    flat = " ".join(out.split())  # help lines wrap
    assert "(default: None)" not in flat and "(default: keypoints 100, emotion 40)" in flat and "(default: 32 64 128 256)" in flat
    bad = subprocess.run([sys.executable, "jobs/train.py", "--task", "faces"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'faces'" in bad.stderr
    bad = subprocess.run([sys.executable, "jobs/train.py", "--vflip", "1.5", "--output", "/nonexistent/x"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "vflip" in bad.stderr


def test_mixed_precision_only_where_bf16_is_native(monkeypatch):
    # oneDNN emulates bf16 on CPUs without AVX512-BF16/AMX, where autocast would be slower than fp32.
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"})
    assert not models.native_bf16("cpu")
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert models.native_bf16("cpu")
    monkeypatch.setattr(models, "cpu_flags", lambda: {"amx_bf16", "amx_tile"})
    assert models.native_bf16(torch.device("cpu"))
    assert not models.native_bf16("meta")


def test_keypoints_without_any_label_refuse_to_train(tmp_path, ray_session):
    """Masked MSE over no labels is 0: a file with every point missing must not train to "RMSE 0.00 px"."""
    from facepipe.train import train

    src = write_keypoints_csv(tmp_path / "kp.csv", 40, seed=4)
    lines = Path(src).read_text().splitlines()
    blank = [lines[0]] + [",".join([""] * 30 + [line.split(",")[-1]]) for line in lines[1:]]
    (tmp_path / "unlabelled.csv").write_text("\n".join(blank) + "\n")
    with pytest.raises(ValueError, match="no labelled keypoint in the train split"):
        train(config("keypoints", str(tmp_path / "unlabelled.csv"), tmp_path / "out"))
    from facepipe.tasks import get_task

    empty = {"sq_err": np.zeros(15), "count": np.zeros(15), "n": np.array([3.0])}
    assert get_task("keypoints").finalize(empty, {"keypoint_names": [str(i) for i in range(15)]})["rmse_px"] is None


def test_evaluation_splits_exactly_as_training_did_around_skipped_rows(tmp_path, ray_session):
    """A bad pixel row skipped with --skip-bad-rows keeps its place in the seeded split."""
    from facepipe.data.ray_datasets import load_splits
    from facepipe.evaluate import select_split

    src = write_keypoints_csv(tmp_path / "kp.csv", 60, seed=6)
    lines = Path(src).read_text().splitlines()
    cells = lines[4].split(",")
    cells[-1] = "1 2 3"  # too few pixels
    lines[4] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    trained = load_splits(bad, skip_bad_rows=True, val_fraction=0.2, seed=3)
    val_lines = sorted(int(v) for v in trained["val"].to_pandas()["line"])
    table = read_table(bad, skip_bad_rows=True)
    assert [b.line for b in table.skipped] == [5]
    mask, name = select_split(table, {"train_config": {"val_fraction": 0.2, "seed": 3}}, "val")
    assert name == "val" and sorted(table.lines[mask].tolist()) == val_lines


def test_members_loss_adds_each_members_pull_towards_the_others():
    from facepipe.tasks import get_task

    task = get_task("emotion")
    torch.manual_seed(0)
    batch = {"label": torch.tensor([0, 3, 6, 2])}
    a, b = torch.randn(4, 7), torch.randn(4, 7)
    ce = lambda o: task.loss(o, batch, {}, train=True)  # noqa: E731
    assert task.members_loss([a, b], batch, {}, 0.0).item() == pytest.approx(((ce(a) + ce(b)) / 2).item())
    assert task.members_loss([a, a.clone()], batch, {}, 1.0).item() == pytest.approx(ce(a).item(), abs=1e-6)  # agreeing: no pull
    pa, pb = a.softmax(1), b.softmax(1)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()  # noqa: E731  KL(p || q)
    want = (ce(a) + ce(b) + 0.5 * (kl(pb, pa) + kl(pa, pb))) / 2
    assert task.members_loss([a, b], batch, {}, 0.5).item() == pytest.approx(want.item(), rel=1e-5)


def test_networks_trained_together_export_one_ensemble_scored_as_validated(gen_data, tmp_path, ray_session):
    from facepipe.models import load_model
    from facepipe.train import TrainConfig, train

    with pytest.raises(ValueError, match="--members 2"):
        TrainConfig(task="emotion", data=gen_data["emotion"], output=str(tmp_path), mutual=1.0)
    with pytest.raises(ValueError, match="not defined for the keypoints task"):
        TrainConfig(task="keypoints", data=gen_data["keypoints"], output=str(tmp_path), members=2, mutual=1.0)
    with pytest.raises(ValueError, match=r"ema is a decay and must be in \[0, 1\)"):
        TrainConfig(task="emotion", data=gen_data["emotion"], output=str(tmp_path), ema=1.0)
    with pytest.raises(ValueError, match="emotion task only"):
        TrainConfig(task="keypoints", data=gen_data["keypoints"], output=str(tmp_path), augment={"crop": 80})
    with pytest.raises(ValueError, match="smaller than the 48-px input"):
        TrainConfig(task="emotion", data=gen_data["emotion"], output=str(tmp_path), augment={"crop": 48})
    # One epoch, so the best epoch is the last checkpoint's; with --ema the average is what is validated and exported.
    # Trained on random 40-px crops, validated and evaluated on the centre 40-px window of the 48-px faces.
    result = train(config("emotion", gen_data["emotion"], tmp_path, epochs=1, members=2, mutual=1.0, ema=0.9, augment={"crop": 40}))
    meta = json.loads((result.model_dir / "meta.json").read_text())
    assert meta["input_size"] == 48 and meta["augment"]["crop"] == 40
    assert meta["arch"] == "ensemble" and [m["arch_args"] for m in meta["arch_args"]["members"]] == [TINY_CNN, TINY_CNN]
    net, _ = load_model(result.model_dir)
    assert len(net.members) == 2 and not torch.equal(next(net.members[0].parameters()), next(net.members[1].parameters()))
    state = last_state(result.run_path)
    name = "members.0.head.3.weight"
    assert not torch.equal(state["ema"]["module." + name], state["model"][name])  # the average lags the trained weights
    assert torch.equal(net.state_dict()[name], state["ema"]["module." + name])
    out = evaluate(result.model_dir, gen_data["emotion"], tmp_path / "eval", tta=False)
    best = next(h for h in result.history if h["epoch"] == meta["best_epoch"])
    assert out["accuracy"] == pytest.approx(best["val_accuracy"], abs=0.5 / out["images"])  # the averaged output is what was validated
