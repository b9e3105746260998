"""Object storage (issue 29): annotate reads and writes s3:// as it does local folders, exactly once,
against a real S3-protocol server on loopback (moto's server mode, tests/conftest.py ``s3_server``),
reached through AWS_ENDPOINT_URL as a user's S3 would be: nothing in facepipe is patched."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facepipe import storage
from facepipe.data.synth import write_image_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("models"), small_emotion=True)


def upload_folder(folder: Path, uri: str) -> list[str]:
    """Every file under ``folder`` as an object under ``uri`` (through facepipe.storage); their keys."""
    names = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            storage.write_bytes(storage.join(uri, rel), p.read_bytes())
            names.append(rel)
    return names


def facepipe(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "facepipe", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


# --- the storage layer itself ----------------------------------------------------------------------


def test_whole_writes_listing_and_moves_on_s3(bucket):
    storage.write_bytes(f"{bucket}/a/x.bin", b"one")
    storage.write_bytes(f"{bucket}/a/b/y.bin", b"two!")
    storage.write_bytes(f"{bucket}/a/.hidden", b"h")
    entries, unreadable = storage.list_tree(f"{bucket}/a", include_hidden=False)
    assert [(e.path, e.size) for e in entries] == [("b/y.bin", 4), ("x.bin", 3)] and unreadable == []
    assert all(e.mtime_ns > 0 and e.ctime_ns == -1 for e in entries)
    assert [e.path for e in storage.list_tree(f"{bucket}/a", recursive=False)[0]] == [".hidden", "x.bin"]
    assert storage.read_bytes(f"{bucket}/a/b/y.bin") == b"two!" and storage.stat(f"{bucket}/a/b/y.bin").size == 4
    storage.move(f"{bucket}/a/x.bin", f"{bucket}/q/x.bin")
    assert not storage.exists(f"{bucket}/a/x.bin") and storage.read_bytes(f"{bucket}/q/x.bin") == b"one"
    assert storage.info(f"{bucket}/a")[0] == "dir" and storage.info(f"{bucket}/nothing") is None


@pytest.mark.parametrize("uri,words", [("foo://bucket/x", "unknown storage scheme 'foo'"), ("s3://facepipe-no-such-bucket/x", "bucket does not exist")])
def test_a_bad_location_is_one_line(s3_server, uri, words):
    with pytest.raises(storage.StorageError, match=words) as e:
        storage.list_tree(uri)
    assert "\n" not in str(e.value) and uri.split("/x")[0] in str(e.value)


def test_the_s3_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(bucket):
    lock = f"{bucket}/out/.annotate.lock"
    with storage.exclusive(lock):
        holder = json.loads(storage.read_bytes(lock))
        assert holder["pid"] == os.getpid()
        with pytest.raises(storage.StorageLocked, match="another run holds"):
            with storage.exclusive(lock):
                pass
    assert not storage.exists(lock)  # released
    # A lock left by a process of this host that has ended (kill -9) is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage.write_bytes(lock, json.dumps({"token": "x", "host": holder["host"], "pid": dead.pid, "heartbeat": time.time()}).encode())
    with storage.exclusive(lock):
        assert json.loads(storage.read_bytes(lock))["pid"] == os.getpid()
    # One of another host is taken over only when its heartbeat is older than the TTL.
    storage.write_bytes(lock, json.dumps({"token": "y", "host": "elsewhere", "pid": 1, "heartbeat": time.time()}).encode())
    with pytest.raises(storage.StorageLocked, match="host elsewhere"):
        with storage.exclusive(lock):
            pass
    storage.write_bytes(lock, json.dumps({"token": "y", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}).encode())
    with storage.exclusive(lock):
        pass


# --- annotation on object storage ------------------------------------------------------------------


def test_annotate_s3_to_s3_in_process_then_a_rerun_does_nothing_and_a_changed_object_is_redone(models, bucket, tmp_path):
    from facepipe.annotate import annotate, read_annotations

    write_image_folder(tmp_path / "in", 4)
    names = upload_folder(tmp_path / "in", f"{bucket}/photos")
    out = f"{bucket}/out"
    s = annotate([f"{bucket}/photos"], out, *models, plots="all", local=True, verbose=False)
    assert s["run"]["annotated"] == 4 and s["run"]["parts_written"] >= 1
    view = read_annotations(out)
    assert sorted(view.path.unique()) == sorted(names) and set(view.input_root) == {f"{bucket}/photos"}
    assert not view.duplicated(["path", "face_index"]).any()
    listed = {e.path for e in storage.list_tree(out)[0]}
    assert "summary.json" in listed and "summary_status.png" in listed
    assert {f"plots/photos/{n}.jpg" for n in names} <= listed
    assert not any(p.split("/")[-1].startswith(".tmp-") for p in listed)  # an object store keeps no temporaries
    assert json.loads(storage.read_bytes(f"{out}/summary.json"))["dataset"]["images"] == 4
    # The README's duckdb query on the bucket, through a pyarrow dataset (no duckdb extension to download)
    import duckdb
    import pyarrow.dataset as pads

    fs, inside = storage.resolve(f"{out}/annotations")
    parts = pads.dataset(inside, filesystem=fs, format="parquet")  # noqa: F841 - duckdb finds it by name
    images = duckdb.sql("SELECT count(DISTINCT path) FROM parts WHERE status IN ('ok', 'no_face')").fetchall()[0][0]
    assert images == 4

    again = annotate([f"{bucket}/photos"], out, *models, plots="all", local=True, verbose=False)
    assert again["run"]["already_done"] == 4 and again["run"]["annotated"] == 0 and again["run"]["parts_written"] == 0

    storage.write_bytes(f"{bucket}/photos/{names[0]}", (tmp_path / "in" / names[1]).read_bytes())  # new content (and time)
    storage.delete(f"{bucket}/photos/{names[2]}")
    third = annotate([f"{bucket}/photos"], out, *models, plots="none", local=True, verbose=False)
    assert third["run"]["annotated"] + third["run"]["skipped_same_content"] == 1 and third["run"]["already_done"] == 2
    view = read_annotations(out)
    assert sorted(view.path.unique()) == sorted(set(names) - {names[2]})  # the deleted object leaves the current view


def test_annotate_gcs_to_gcs_then_a_rerun_does_nothing_and_compaction_keeps_the_view(models, gcs_server, tmp_path):
    """gs:// through the same storage layer, on a GCS-protocol server (pyarrow's GcsFileSystem)."""
    from facepipe.annotate import annotate, read_annotations
    from facepipe.annotate.compact import compact

    gs = gcs_server()
    write_image_folder(tmp_path / "in", 3)
    names = upload_folder(tmp_path / "in", f"{gs}/photos")
    out = f"{gs}/out"
    s = annotate([f"{gs}/photos"], out, *models, plots="all", local=True, verbose=False)
    assert s["run"]["annotated"] == 3 and s["run"]["parts_written"] >= 1
    view = read_annotations(out)
    assert sorted(view.path.unique()) == sorted(names) and set(view.input_root) == {f"{gs}/photos"}
    listed = {e.path for e in storage.list_tree(out)[0]}
    assert "summary.json" in listed and {f"plots/photos/{n}.jpg" for n in names} <= listed
    again = annotate([f"{gs}/photos"], out, *models, plots="all", local=True, verbose=False)
    assert again["run"]["already_done"] == 3 and again["run"]["annotated"] == 0 and again["run"]["parts_written"] == 0
    storage.write_bytes(f"{gs}/photos/{names[0]}", (tmp_path / "in" / names[1]).read_bytes())
    third = annotate([f"{gs}/photos"], out, *models, plots="none", local=True, verbose=False)
    assert third["run"]["annotated"] + third["run"]["skipped_same_content"] == 1 and third["run"]["already_done"] == 2
    before = read_annotations(out).sort_values(["path", "face_index"]).reset_index(drop=True)
    compact(out)
    after = read_annotations(out).sort_values(["path", "face_index"]).reset_index(drop=True)
    assert list(after["sha256"]) == list(before["sha256"]) and len(after) == len(before)
    with pytest.raises(storage.StorageError):
        storage.list_tree("gs://facepipe-no-such-bucket/in")


@pytest.mark.integration
def test_annotate_on_ray_reads_objects_in_tasks_and_writes_parts_to_s3(models, bucket, tmp_path, ray_session):
    from facepipe.annotate import annotate, read_annotations

    write_image_folder(tmp_path / "in", 6)
    names = upload_folder(tmp_path / "in", f"{bucket}/in")
    s = annotate([f"{bucket}/in", tmp_path / "in"], f"{bucket}/out", *models, plots="sample", local=False, verbose=False, part_images=2)
    assert s["run"]["executor"] == "ray" and s["run"]["annotated"] == 12
    view = read_annotations(f"{bucket}/out")
    assert view.groupby("input_root").path.nunique().to_dict() == {f"{bucket}/in": 6, str((tmp_path / "in").resolve()): 6}
    import pandas as pd

    remote = view[view.input_root == f"{bucket}/in"].set_index(["path", "face_index"]).sort_index()
    local = view[view.input_root != f"{bucket}/in"].set_index(["path", "face_index"]).sort_index()
    assert sorted(remote.index.get_level_values(0).unique()) == sorted(names)
    # The same bytes give the same rows whichever store they were read from.
    cols = ["sha256", "status", "num_faces", "bbox_x", "bbox_w", "emotion", "emotion_confidence"]
    pd.testing.assert_frame_equal(remote[cols], local[cols])


def test_a_long_video_on_s3_is_read_by_ranges_segment_by_segment_as_it_is_whole(models, bucket, tmp_path):
    import numpy as np

    from facepipe.annotate import annotate, read_annotations
    from facepipe.faces.video import write_video

    frames = [np.full((64, 96, 3), 40 + (k * 7) % 200, np.uint8) for k in range(90)]
    write_video(tmp_path / "clip.mkv", frames, fps=15, fmt="mkv")  # 6 s
    storage.write_bytes(f"{bucket}/clips/clip.mkv", (tmp_path / "clip.mkv").read_bytes())
    cut = annotate([f"{bucket}/clips"], f"{bucket}/cut", *models, plots="none", local=True, verbose=False, fps=5, segment_seconds=1.5)
    whole = annotate([f"{bucket}/clips"], f"{bucket}/whole", *models, plots="none", local=True, verbose=False, fps=5, segment_seconds=0)
    assert (cut["run"]["video_segments"], whole["run"]["video_segments"]) == (4, 0)
    a, b = read_annotations(f"{bucket}/cut"), read_annotations(f"{bucket}/whole")
    cols = ["frame_index", "timestamp_s", "status"]
    assert len(a) == 30 and a[cols].equals(b[cols]) and a["segment_index"].tolist() == sorted(a["segment_index"].tolist())


def test_an_object_deleted_after_listing_is_an_error_row(models, bucket):
    from facepipe.annotate.prepare import FILE_COLUMNS, PrepareConfig, prepare_batch

    rec = {"root": "in", "input_root": f"{bucket}/in", "path": "gone.jpg", "abs_path": f"{bucket}/in/gone.jpg", "file_size": 10,
           "file_mtime_ns": 1, "done_sha": "", "segment": ""}
    rows = prepare_batch({k: np.array([rec[k]], dtype=object) for k in FILE_COLUMNS}, PrepareConfig())
    assert list(rows["status"]) == ["error"] and "cannot read file" in rows["error"][0] and "\n" not in rows["error"][0]


def test_a_missing_bucket_or_scheme_is_exit_2_in_one_line(models, s3_server, tmp_path):
    write_image_folder(tmp_path / "in", 1)
    for out, words in (("s3://facepipe-no-such-bucket/out", "bucket does not exist"), ("nope://b/out", "unknown storage scheme")):
        proc = facepipe("annotate", tmp_path / "in", "--output", out, "--keypoints-model", models[0], "--emotion-model", models[1], "--local")
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr[-2000:]


def test_a_second_run_on_the_same_s3_output_is_refused_with_exit_3(models, bucket, tmp_path):
    write_image_folder(tmp_path / "in", 1)
    with storage.exclusive(f"{bucket}/out/.annotate.lock"):  # a run in progress (this process)
        proc = facepipe("annotate", tmp_path / "in", "--output", f"{bucket}/out", "--keypoints-model", models[0],
                        "--emotion-model", models[1], "--local")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "another annotate run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_kill_9_mid_run_on_s3_then_a_rerun_gives_every_object_exactly_once(models, bucket, tmp_path, s3_server):
    from facepipe.annotate import read_annotations

    write_image_folder(tmp_path / "in", 80, size=320)
    upload_folder(tmp_path / "in", f"{bucket}/in")
    out = f"{bucket}/out"
    cmd = [sys.executable, "-m", "facepipe", "annotate", f"{bucket}/in", "--output", out, "--local", "--plots", "none", "--quiet",
           "--part-images", "5", "--keypoints-model", str(models[0]), "--emotion-model", str(models[1])]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = bucket.split("//")[1]
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        keys = [o["Key"] for o in s3_server.list_objects_v2(Bucket=name, Prefix="out/annotations/").get("Contents", [])]
        if sum(k.endswith(".parquet") for k in keys) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert storage.exists(f"{out}/.annotate.lock")  # left behind by the killed run
    before = read_annotations(out, latest=False)
    assert 0 < before.path.nunique() < 80
    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "taking over the lock" in rerun.stderr
    rows = read_annotations(out, latest=False)
    assert rows.path.nunique() == 80 and not rows.duplicated(["path", "face_index"]).any()


def test_compaction_on_s3_switches_a_manifest_and_a_compaction_killed_midway_leaves_a_whole_dataset(models, bucket, tmp_path):
    import pyarrow.parquet as pq

    from facepipe.annotate import annotate, read_annotations
    from facepipe.annotate.compact import compact

    write_image_folder(tmp_path / "in", 3)
    names = upload_folder(tmp_path / "in", f"{bucket}/in")
    out = f"{bucket}/out"
    annotate([f"{bucket}/in"], out, *models, plots="none", local=True, verbose=False)
    storage.write_bytes(f"{bucket}/in/{names[0]}", (tmp_path / "in" / names[1]).read_bytes())
    storage.delete(f"{bucket}/in/{names[2]}")
    annotate([f"{bucket}/in"], out, *models, plots="none", local=True, verbose=False)
    view = read_annotations(out)
    history = read_annotations(out, latest=False)
    assert len(history) > len(view)

    # Killed after writing its generation, before the switch: an orphan nobody reads.
    parts = [e.path for e in storage.list_tree(f"{out}/annotations")[0] if e.path.startswith("part-")]
    orphan = f"{out}/annotations/compact-killed.parquet"
    storage.write_bytes(orphan, storage.read_bytes(f"{out}/annotations/{parts[0]}"))
    assert len(read_annotations(out, latest=False)) == len(history)

    s = compact(out)
    assert s["rows_before"] == len(history) and s["rows_after"] == len(view) and s["files_after"] == 2 and s["parts_after"] == 1
    assert "interrupted compaction" in s["recovered"] and not storage.exists(orphan)
    listed = sorted(e.path for e in storage.list_tree(f"{out}/annotations")[0])
    assert [p for p in listed if p.endswith(".parquet")] == [json.loads(storage.read_bytes(f"{out}/annotations/_manifest.json"))["generation"]]
    after = read_annotations(out, latest=False)
    assert len(after) == len(view)
    cols = ["path", "face_index", "sha256", "timestamp"]
    assert after[cols].sort_values(cols[:2]).reset_index(drop=True).equals(view[cols].sort_values(cols[:2]).reset_index(drop=True))

    # Killed after the switch, before deleting the replaced parts: they are not read again.
    generation = json.loads(storage.read_bytes(f"{out}/annotations/_manifest.json"))["generation"]
    table = pq.read_table(storage.resolve(f"{out}/annotations/{generation}")[1], filesystem=storage.resolve(out)[0])
    assert table.num_rows == len(view)
    storage.write_bytes(f"{out}/annotations/{parts[0]}", b"a replaced part not yet deleted")  # named in replaces
    assert len(read_annotations(out, latest=False)) == len(view)
    again = annotate([f"{bucket}/in"], out, *models, plots="none", local=True, verbose=False)
    assert again["run"]["annotated"] == 0 and again["run"]["already_done"] == 2
    assert compact(out)["recovered"]  # the replaced part is deleted now
    assert not storage.exists(f"{out}/annotations/{parts[0]}")


# --- training from and into object storage ---------------------------------------------------------


@pytest.mark.integration
def test_train_from_an_s3_csv_with_checkpoints_on_s3_and_resume(bucket, tmp_path, ray_session):
    from facepipe.data.synth import write_fer_csv
    from facepipe.train import TrainConfig, train

    local = write_fer_csv(tmp_path / "fer.csv", 300, seed=2)
    data = f"{bucket}/data/fer.csv"
    storage.write_bytes(data, Path(local).read_bytes())
    runs = f"{bucket}/runs"

    def config(**kw):
        return TrainConfig(task="emotion", data=data, output=str(tmp_path / "out"), storage_path=runs, epochs=2, batch_size=32, lr=3e-3,
                           arch_args={"widths": [8, 16], "convs_per_block": 1, "dropout": 0.1}, **kw)

    first = train(config(stop_after_epoch=1))
    assert [h["epoch"] for h in first.history] == [1]
    checkpoints = {e.path.split("/")[0] for e in storage.list_tree(f"{runs}/emotion")[0] if e.path.startswith("checkpoint_")}
    assert checkpoints, "no checkpoint on the object store"
    with pytest.raises(FileExistsError, match="--resume"):
        train(config())
    with pytest.raises(ValueError, match=r"cannot resume with other settings \(epochs 2 -> 3"):  # read from the checkpoint on S3
        train(TrainConfig(**{**config(resume=True).__dict__, "epochs": 3}))
    resumed = train(config(resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2] and resumed.history[0] == first.history[0]
    meta = json.loads((resumed.model_dir / "meta.json").read_text())
    assert meta["data"]["file"] == "fer.csv" and meta["data"]["bytes"] == Path(local).stat().st_size


def test_explore_and_evaluate_read_and_write_s3(models, bucket, tmp_path):
    from facepipe.data.synth import write_fer_csv, write_photo_labels

    kp, em = (f"{bucket}/models/{name}" for name in ("keypoints", "emotion"))
    upload_folder(Path(models[0]), kp)
    upload_folder(Path(models[1]), em)
    fer = f"{bucket}/data/fer.csv"
    storage.write_bytes(fer, write_fer_csv(tmp_path / "fer.csv", 200, seed=3).read_bytes())
    photos = write_photo_labels(tmp_path / "photos", 9, seed=5)
    upload_folder(photos.parent, f"{bucket}/photos")  # labels.csv beside its images: they are found from the CSV's prefix

    res = facepipe("explore", "--data", fer, "--output", f"{bucket}/explore")
    assert res.returncode == 0, res.stderr
    summary = json.loads(storage.read_bytes(f"{bucket}/explore/summary.json"))
    assert summary["rows"] == 200 and all(storage.exists(f"{bucket}/explore/{p}") for p in summary["plots"])

    res = facepipe("evaluate", "--model", em, "--data", fer, "--output", f"{bucket}/eval/emotion")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(storage.read_bytes(f"{bucket}/eval/emotion/metrics.json"))
    assert metrics["split"] == "PublicTest" and metrics["images"] == 20 and storage.exists(f"{bucket}/eval/emotion/confusion_matrix.png")

    res = facepipe("evaluate", "--model", kp, "--data", f"{bucket}/photos/labels.csv", "--split", "all", "--output", f"{bucket}/eval/kp")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(storage.read_bytes(f"{bucket}/eval/kp/metrics.json"))
    assert metrics["images"] + metrics["faces"]["bad_photos"] == 9 and storage.exists(f"{bucket}/eval/kp/per_keypoint_rmse.csv")
    missing = facepipe("evaluate", "--model", f"{bucket}/models/none", "--data", fer, "--output", f"{bucket}/eval/x")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1 and "nothing there" in missing.stderr
    assert not storage.list_tree(f"{bucket}/eval/x")[0]  # a failed evaluation uploads nothing


def test_predict_reads_an_image_and_model_directories_from_s3(models, bucket, tmp_path):
    from facepipe.annotate import predict

    write_image_folder(tmp_path / "in", 1)
    upload_folder(tmp_path / "in", f"{bucket}/in")
    for task, d in zip(("kp", "em"), models):
        upload_folder(Path(d), f"{bucket}/models/{task}")
    remote = predict(f"{bucket}/in/face_0000.png", keypoints_model=f"{bucket}/models/kp", emotion_model=f"{bucket}/models/em", as_frame=True)
    local = predict(tmp_path / "in" / "face_0000.png", keypoints_model=models[0], emotion_model=models[1], as_frame=True)
    cols = ["status", "sha256", "bbox_x", "bbox_y", "emotion", "emotion_confidence"]
    assert remote[cols].equals(local[cols]) and remote.status.iloc[0] == "ok"


# --- credentials and a store that refuses: a second server that checks them (moto with IAM on) -------


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory):
    """An S3 server that enforces IAM, with a bucket and three users' keys: ``writer`` (s3:*),
    ``reader`` (Get/List/Head only) and ``no_parts`` (s3:* but PutObject denied under
    ``out/annotations/``, a store that refuses the parts' writes)."""
    import boto3
    from conftest import start_moto, stop_moto

    pytest.importorskip("moto", reason="moto[server] (a dev dependency) is not installed")
    users = {"writer": (["s3:*"], None), "reader": (["s3:Get*", "s3:List*", "s3:Head*"], None), "no_parts": (["s3:*"], "out/annotations/*")}
    # moto checks credentials after this many unauthenticated calls: the set-up below, exactly
    proc, url, log = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(1 + 3 * len(users))})
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
    name = "facepipe-iam"
    boto3.client("s3", **kw).create_bucket(Bucket=name)
    iam, keys = boto3.client("iam", **kw), {}
    for user, (actions, denied) in users.items():
        iam.create_user(UserName=user)
        statements = [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
        if denied:
            statements.append({"Effect": "Deny", "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{name}/{denied}"})
        iam.put_user_policy(UserName=user, PolicyName="facepipe", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
        k = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {"AWS_ACCESS_KEY_ID": k["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"]}
    keys["nobody"] = {}
    keys["unknown"] = {"AWS_ACCESS_KEY_ID": "AKIANOTAKEY", "AWS_SECRET_ACCESS_KEY": "not-a-secret"}
    yield url, f"s3://{name}", keys
    stop_moto(proc, log)


def test_missing_credentials_and_refused_writes_are_one_line_and_keep_committed_parts(models, iam_s3, tmp_path):
    url, bucket, keys = iam_s3
    first, more = write_image_folder(tmp_path / "first", 3, seed=1, size=64), write_image_folder(tmp_path / "more", 2, seed=2, size=64)
    out = f"{bucket}/out"

    def annotate_as(user: str, folder: Path) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
        env.update(AWS_ENDPOINT_URL=url, AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",  # no instance role to find
                   AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"), **keys[user])
        km, em = models
        return subprocess.run([sys.executable, "-m", "facepipe", "annotate", folder, "--output", out, "--keypoints-model", km,
                               "--emotion-model", em, "--local", "--quiet", "--plots", "none"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)

    def parts() -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=keys["writer"]["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=keys["writer"]["AWS_SECRET_ACCESS_KEY"])
        listed = client.list_objects_v2(Bucket=bucket[len("s3://"):], Prefix="out/")
        return sorted(o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".parquet"))

    ok = annotate_as("writer", first[0].parent)
    assert ok.returncode == 0, ok.stderr
    committed = parts()
    assert len(committed) == 1
    expected = {
        "reader": "access denied (create the lock)",  # may read, may not write: refused before any work
        "no_parts": "access denied (write)",  # the lock is taken, the first part's PUT is refused
        "nobody": "no AWS credentials found",
        "unknown": "access denied",  # a key the store does not know
    }
    for user, words in expected.items():
        res = annotate_as(user, more[0].parent)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in res.stderr, (user, res.stderr)
        assert parts() == committed, user  # what was committed is kept; nothing half-written is left
    again = annotate_as("writer", more[0].parent)  # the lock the refused runs took is gone
    assert again.returncode == 0, again.stderr
    assert len(parts()) == 2
