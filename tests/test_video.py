"""Video files: decoding and sampling (every container we recognise, variable frame rate, phone
rotation, damaged files), and the annotation job on videos built at test time from consecutive
real ytf_frames photos (one person; two people side by side), exactly once on reruns."""
from __future__ import annotations

import glob
import io
import json

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import shared_file
from facepipe.annotate import annotate, read_annotations
from facepipe.faces.video import VIDEO_FORMATS, VideoError, plan_segments, sample_frames, sample_segment, sniff_video, write_video

SIZE = (160, 176)  # width, height of each person's frames in the test videos


def _pattern_frames(n: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Frames that differ visibly: a bar moving across, and a red corner marking "up"."""
    out = []
    for k in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[:, (k * 5) % (w - 8):(k * 5) % (w - 8) + 8] = 230
        img[:12, :12] = (0, 0, 255)
        out.append(img)
    return out


def _person_frames(person: str) -> list[np.ndarray]:
    """The person's ytf_frames photos in order (consecutive frames of a few clips), all one size."""
    folder = shared_file("keypoints/ytf_frames/frames")
    files = sorted(glob.glob(str(folder / f"{person}_*.jpg")))
    assert len(files) >= 9, person
    return [cv2.resize(cv2.imread(f), SIZE, interpolation=cv2.INTER_AREA) for f in files]


def _timestamps(data: bytes, fps: float | None) -> list[float]:
    info, frames = sample_frames(data, fps)
    return [f.timestamp_s for f in frames]


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
def test_each_container_is_recognised_by_content_and_sampled_at_the_asked_rate(fmt, tmp_path):
    path = tmp_path / f"clip.{fmt}"
    assert write_video(path, _pattern_frames(30), fps=10, fmt=fmt) == 30
    data = path.read_bytes()
    assert sniff_video(data[:64]) == fmt
    info, frames = sample_frames(data, fps=5, fmt=fmt)
    got = list(frames)
    assert (info.width, info.height, info.rotation) == (96, 64, 0)
    assert [f.timestamp_s for f in got] == pytest.approx([0.2 * k for k in range(15)], abs=1e-6)
    assert [f.index for f in got] == list(range(0, 30, 2))
    assert _timestamps(data, None) == pytest.approx([0.1 * k for k in range(30)], abs=1e-6)
    # the frames are the written ones, in order (lossy codecs: close, and far from the neighbours)
    src = _pattern_frames(30)
    for f in got:
        errs = [np.abs(f.image.astype(int) - s.astype(int)).mean() for s in src]
        assert int(np.argmin(errs)) == f.index


def test_still_images_and_heif_are_not_taken_for_videos():
    assert sniff_video(cv2.imencode(".png", _pattern_frames(1)[0])[1].tobytes()[:64]) is None
    assert sniff_video(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") is None
    assert sniff_video(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00") == "mov"


def test_variable_frame_rate_gives_the_presentation_times_and_samples_by_time(tmp_path):
    times = [round(0.05 * k + (0.1 if k % 2 else 0.0) + 0.2 * (k // 2), 3) for k in range(20)]  # steps of 150 and 50 ms
    times = sorted(set(times))
    path = tmp_path / "vfr.mp4"
    write_video(path, _pattern_frames(len(times)), fps=10, times_s=times)
    data = path.read_bytes()
    assert _timestamps(data, None) == pytest.approx(times, abs=1e-6)
    # at 5 fps: the first frame shown in each 0.2 s interval
    expected = [next(t for t in times if t >= b * 0.2 - 1e-9) for b in range(int(times[-1] / 0.2) + 1)
                if any(b * 0.2 - 1e-9 <= t < (b + 1) * 0.2 - 1e-9 for t in times)]
    assert _timestamps(data, 5) == pytest.approx(expected, abs=1e-6)


def test_a_phone_rotation_flag_gives_upright_frames(tmp_path):
    upright = _pattern_frames(6)
    stored = [cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in upright]  # how a phone held upright stores them
    path = tmp_path / "phone.mp4"
    write_video(path, stored, fps=10, rotation=90)
    info, frames = sample_frames(path.read_bytes())
    got = list(frames)
    assert (info.rotation, info.width, info.height) == (90, 96, 64)
    assert got[0].image.shape == upright[0].shape
    assert np.abs(got[3].image.astype(int) - upright[3].astype(int)).mean() < 6
    assert got[3].image[:12, :12, 2].mean() > 200  # the red corner is top-left again


def test_max_frames_stops_the_iterator():
    buf = io.BytesIO()
    write_video(buf, _pattern_frames(30), fps=10, fmt="mkv")
    assert len(_timestamps(buf.getvalue(), None)) == 30
    info, frames = sample_frames(buf.getvalue(), None, max_frames=4)
    assert [f.index for f in frames] == [0, 1, 2, 3]


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
@pytest.mark.parametrize("fps,max_frames", [(5, None), (None, 100), (7.3, None)])
def test_segments_decoded_apart_give_the_frames_of_the_whole_file(fmt, fps, max_frames):
    """Each segment seeks to its start on its own: together they give exactly the frames (index,
    time, pixels) that sampling the whole file gives, on every container, at any rate, with a limit."""
    buf = io.BytesIO()
    times = [k / 30 + (0.013 if k % 7 == 0 else 0.0) for k in range(240)] if fmt == "mp4" else None  # variable frame rate
    write_video(buf, _pattern_frames(240), fps=30, fmt=fmt, times_s=times)
    data = buf.getvalue()
    whole = [(f.index, f.timestamp_s, f.image.tobytes()) for f in sample_frames(data, fps, max_frames)[1]]
    plan = plan_segments(data, fps, max_frames, 1.5)
    assert plan is not None and len(plan.segments) >= 3 and plan.sampled == len(whole)
    apart = [(f.index, f.timestamp_s, f.image.tobytes()) for k in range(len(plan.segments)) for f in sample_segment(io.BytesIO(data), plan, k, fps)]
    assert [w[:2] for w in apart] == [w[:2] for w in whole]
    assert apart == whole
    assert plan.limited == (max_frames is not None)


def test_short_or_damaged_videos_are_not_cut():
    buf = io.BytesIO()
    write_video(buf, _pattern_frames(60), fps=30, fmt="mkv")  # 2 s
    assert plan_segments(buf.getvalue(), 5, None, 1.5) is None  # not 1.5 segments long
    assert plan_segments(buf.getvalue(), 5, None, 0.5) is not None
    assert plan_segments(buf.getvalue()[: len(buf.getvalue()) // 2], 5, None, 0.5) is None  # truncated: decoded whole, where it is reported


def _damaged(tmp_path, fmt: str, how: str) -> bytes:
    path = tmp_path / f"d.{fmt}"
    rng = np.random.default_rng(1)  # noise: the frames' data outweighs the container's index by far
    write_video(path, [f + rng.integers(0, 40, f.shape, dtype=np.uint8) for f in _pattern_frames(60)], fps=10, fmt=fmt)
    data = bytearray(path.read_bytes())
    if how == "truncated":
        return bytes(data[: len(data) // 2])
    at = len(data) // 2
    data[at:at + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return bytes(data)


@pytest.mark.parametrize("fmt,how", [("mp4", "truncated"), ("mkv", "truncated"), ("mp4", "corrupt"), ("webm", "corrupt")])
def test_a_damaged_video_gives_its_good_frames_then_says_where_it_broke(fmt, how, tmp_path):
    info, frames = sample_frames(_damaged(tmp_path, fmt, how), fps=5)
    got = []
    with pytest.raises(VideoError) as e:
        for f in frames:
            got.append(f.timestamp_s)
    assert len(got) >= 5
    assert 0 < e.value.at_s < 6.0
    assert got[:5] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-6)
    assert f"{e.value.at_s:.3f} s" in str(e.value) and "\n" not in str(e.value)


def test_files_with_no_video_stream_or_no_frames_are_one_line(tmp_path):
    audio = tmp_path / "audio.mp4"
    c = av.open(str(audio), "w")
    s = c.add_stream("aac", rate=16000)
    for i in range(8):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        c.mux(s.encode(frame))
    c.mux(s.encode())
    c.close()
    with pytest.raises(VideoError, match="no video stream"):
        sample_frames(audio.read_bytes())
    empty = tmp_path / "empty.avi"
    c = av.open(str(empty), "w", format="avi")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    c.start_encoding()
    c.close()
    with pytest.raises(VideoError, match="has no frames"):
        sample_frames(empty.read_bytes())
    with pytest.raises(VideoError, match="cannot open video"):
        sample_frames(b"\x1a\x45\xdf\xa3" + b"\x00" * 100)


# --- the annotation job on real faces ---------------------------------------------------------

def _face_columns(df):
    return [c for c in df.columns if c.startswith(("bbox_", "kp_", "prob_"))] + ["emotion", "num_faces", "face_index"]


@pytest.mark.shared
def test_keypoints_decide_between_tracks_whose_boxes_are_alike_and_a_continued_tracker_goes_on_the_same():
    from facepipe.faces.track import Tracker, track_rows

    layout = np.array([[30, 35], [70, 35], [50, 55], [38, 75], [62, 75]], np.float64)  # eyes, nose, mouth corners
    box_a, box_b = np.array([100, 100, 100, 100.0]), np.array([104, 100, 100, 100.0])
    points_a, points_b = layout + [100, 100], layout * 0.6 + [124, 110]  # one face fills its box, the other sits smaller in its own
    for first in ("a", "b"):  # the order the two tracks started in must not matter
        tracker = Tracker()
        order = [(box_a, points_a), (box_b, points_b)] if first == "a" else [(box_b, points_b), (box_a, points_a)]
        ids = tracker.update(np.stack([b for b, _ in order]), 0.0, np.stack([p for _, p in order]))
        id_b = ids[[b is box_b for b, _ in order].index(True)]
        # 0.2 s later one face is found, in a box equally close to both: its keypoints are those of b
        assert tracker.update(np.array([[102, 100, 100, 100.0]]), 0.2, (points_b + 1)[None]) == [id_b]
    assert tracker.update(np.zeros((0, 4)), 0.4, np.zeros((0, 5, 2))) == []  # a frame without faces
    # a face seen without keypoints (e.g. only emotion runs) is matched by its box, as before
    tracker = Tracker()
    tracker.update(box_a[None], 0.0)
    assert tracker.update(np.array([[110, 104, 100, 100.0]]), 0.2) == [0]
    assert tracker.update(np.array([[400, 104, 100, 100.0]]), 0.4) == [1]  # far away: another face

    # rows of a video frame by frame: the same ids whether tracked in one go or continued from the
    # state its first frames left (how a resumed segmented video goes on)
    frames = np.repeat(np.arange(6), 2)
    times = frames * 0.2
    status = np.array(["ok"] * 12)
    boxes = np.array([[100 + 4 * f, 100, 100, 100] if i % 2 == 0 else [300 - 4 * f, 100, 90, 90] for i, f in enumerate(frames)], np.float64)
    points = np.stack([layout + b[:2] for b in boxes])
    whole = track_rows(Tracker(), frames, times, status, boxes, points)
    assert whole.tolist() == [0, 1] * 6
    head = track_rows(Tracker(), frames[:6], times[:6], status[:6], boxes[:6], points[:6])
    last = {int(t): (boxes[i], float(times[i]), points[i]) for i, t in enumerate(head)}
    tail = track_rows(Tracker.continuing(last), frames[6:], times[6:], status[6:], boxes[6:], points[6:])
    assert np.concatenate([head, tail]).tolist() == whole.tolist()


def test_a_video_of_one_person_gives_a_row_per_sampled_frame_one_track_and_the_rows_its_frames_give_as_files(tmp_path):
    frames = [f for f in _person_frames("Wes_Craven") for _ in range(3)]  # 36 frames at 10 fps: 3.6 s
    inp = tmp_path / "in"
    (inp / "frames").mkdir(parents=True)
    write_video(inp / "clip.mp4", frames, fps=10)
    # the sampled frames as the video path decodes them, written as lossless files: the photo path's input
    info, sampled = sample_frames((inp / "clip.mp4").read_bytes(), fps=5)
    sampled = list(sampled)
    for f in sampled:
        cv2.imwrite(str(inp / "frames" / f"{f.index:03d}.png"), f.image)
    out = tmp_path / "out"
    summary = annotate([inp], out, recursive=True, plots="none", local=True, fps=5)
    run = summary["run"]
    assert (run["videos"], run["video_frames"], run["listed"]) == (1, 18, 19)
    df = read_annotations(out)
    video = df[df["path"] == "clip.mp4"]
    assert sorted(video["frame_index"].unique()) == [f.index for f in sampled] == list(range(0, 36, 2))
    assert sorted(video["timestamp_s"].unique()) == pytest.approx([0.2 * k for k in range(18)], abs=1e-6)
    assert set(video["status"]) <= {"ok", "no_face"}
    ok = video[video["status"] == "ok"]
    assert len(ok) >= 15, video[["frame_index", "status", "num_faces"]]
    assert ok["track_id"].nunique() == 1  # one person, always near the same place
    assert video["image_format"].eq("mp4").all() and (video["image_width"] == 160).all()
    # summary.json: the track's time per emotion adds up to its sampled frames' time (0.2 s each)
    (track,) = summary["tracks"]
    assert (track["path"], track["frames"]) == ("clip.mp4", len(ok))
    assert sum(track["seconds_per_emotion"].values()) == pytest.approx(0.2 * len(ok), abs=1e-6)
    assert track["dominant_emotion"] == ok["emotion"].value_counts().idxmax()
    assert (track["first_s"], track["last_s"]) == (ok["timestamp_s"].min(), ok["timestamp_s"].max())
    # the same frame as a file and inside the video: the same row values
    files = df[df["path"].str.startswith("frames/")].copy()
    files["frame_index"] = files["path"].str.slice(7, 10).astype(int)
    assert files["timestamp_s"].isna().all() and files["track_id"].isna().all()
    a = video.set_index(["frame_index", "face_index"]).sort_index()
    b = files.set_index(["frame_index", "face_index"]).sort_index()
    assert list(a.index) == list(b.index)
    cols = [c for c in _face_columns(df) if c not in ("face_index",)]
    for c in cols:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), atol=1e-4, err_msg=c)
        else:
            assert list(a[c]) == list(b[c]), c
    # a scheduled rerun does nothing; an edited video is redone whole, its frames once in the current view
    again = annotate([inp], out, recursive=True, plots="none", local=True, fps=5)
    assert again["run"]["annotated"] == 0 and again["run"]["rows_written"] == 0
    write_video(inp / "clip.mp4", frames[:20], fps=10)
    third = annotate([inp], out, recursive=True, plots="none", local=True, fps=5)
    assert third["run"]["videos"] == 1 and third["run"]["video_frames"] == 10
    video = read_annotations(out).query("path == 'clip.mp4'")
    assert sorted(video["frame_index"].unique()) == list(range(0, 20, 2))
    assert not video.duplicated(["frame_index", "face_index"]).any()


@pytest.mark.shared
@pytest.mark.integration
def test_two_people_side_by_side_on_ray_are_two_continuous_tracks(tmp_path, ray_session):
    """On Ray, cut into segments decoded by tasks of their own: two tracks, unbroken at the borders."""
    frames = _two_people(1)  # 2 photos per frame pair
    n = len(frames) // 2
    inp = tmp_path / "in"
    inp.mkdir()
    write_video(inp / "two.webm", frames, fps=10, fmt="webm")
    out = tmp_path / "out"
    summary = annotate([inp], out, plots="sample", local=False, fps=5, num_cpus=2, segment_seconds=0.5)
    assert summary["run"]["video_segments"] >= 4 and summary["run"]["videos"] == 1
    ok = read_annotations(out).query("status == 'ok'")
    assert ok["segment_index"].nunique() == summary["run"]["video_segments"]
    assert ok["frame_index"].nunique() >= n - 2  # both found in nearly every sampled frame
    sizes = ok["track_id"].value_counts()
    assert len(sizes) >= 2 and sizes.iloc[1] >= n - 2, ok[["frame_index", "face_index", "track_id", "bbox_x", "bbox_w"]]
    assert (sizes.iloc[2:] <= 2).all()  # anything else is a stray detection, not a broken track
    centre = ok["bbox_x"] + ok["bbox_w"] / 2
    sides = set()
    for track in sizes.index[:2]:
        rows = ok[ok["track_id"] == track]
        left_side = centre[rows.index] < SIZE[0]
        assert left_side.all() or (~left_side).all()  # a track never jumps to the other person
        assert rows["frame_index"].is_unique
        sides.add(bool(left_side.iloc[0]))
    assert sides == {True, False}
    # the timeline: one panel per track, the longest first six
    assert "plots/in/two.webm.timeline.png" in summary["plots"]
    timeline = cv2.imread(str(out / "plots" / "in" / "two.webm.timeline.png"))
    assert timeline is not None and timeline.shape[0] > 300
    # face_index runs left to right, so the left person is face 0 in every frame with both
    both = ok.groupby("frame_index").filter(lambda g: len(g) == 2)
    assert (both.query("face_index == 0")["bbox_x"].to_numpy() < SIZE[0]).all()


def _two_people(repeat: int) -> list[np.ndarray]:
    left, right = _person_frames("Wes_Craven"), _person_frames("Warren_Buffett")
    n = min(len(left), len(right))
    return [np.hstack([left[k], right[k]]) for _ in range(repeat) for k in range(n) for _ in range(2)]


_SAME = ["frame_index", "timestamp_s", "face_index", "status", "num_faces", "track_id", "bbox_x", "bbox_y", "emotion", "kp_nose_tip_x"]


@pytest.mark.shared
def test_a_video_killed_mid_way_resumes_at_its_first_missing_segment_with_every_frame_once(tmp_path):
    """kill -9 of the job between two segments' commits, then a rerun: the rerun does only the
    missing segments, and the result is the whole-file result row for row (track ids across the
    segment borders and the kill included), each sampled frame once, under one annotation time."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    inp = tmp_path / "in"
    inp.mkdir()
    write_video(inp / "two.mp4", _two_people(3), fps=10)  # 7.2 s: 12 segments of 0.6 s at 5 fps
    ref = tmp_path / "whole"
    annotate([inp], ref, plots="none", local=True, fps=5, segment_seconds=0)
    out = tmp_path / "out"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "jobs" / "annotate.py"), "--local", "--input", str(inp),
           "--output", str(out), "--plots", "none", "--fps", "5", "--segment-seconds", "0.6", "--part-images", "1"]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None and len(list((out / "annotations").glob("part-*.parquet"))) < 3:
                time.sleep(0.01)
            assert proc.poll() is None, "the job ended before the kill:\n" + log.read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    killed = pq.read_table(out / "annotations").to_pandas()
    have, count = killed["segment_index"].nunique(), int(killed["segment_count"].iloc[0])
    assert 3 <= have < count == 12 and sorted(killed["segment_index"].unique()) == list(range(have))  # a prefix
    summary = annotate([inp], out, plots="all", local=True, fps=5, segment_seconds=0.6)
    run = summary["run"]
    assert (run["videos_resumed"], run["video_segments"], run["videos"]) == (1, count - have, 1)
    assert "plots/in/two.mp4.timeline.png" in summary["plots"]
    got, want = read_annotations(out), read_annotations(ref)
    assert not got.duplicated(["frame_index", "face_index"]).any()
    assert got["timestamp"].nunique() == 1 and got["run_id"].nunique() == 2
    assert sorted(got["segment_index"].unique()) == list(range(count))
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(got[_SAME].reset_index(drop=True), want[_SAME].reset_index(drop=True), check_exact=False, atol=1e-4)
    assert want["segment_index"].isna().all()  # --segment-seconds 0: decoded whole
    assert got.query("status == 'ok'")["track_id"].value_counts().iloc[:2].min() >= 34  # two tracks through all 36 frames, 12 segments
    again = annotate([inp], out, plots="none", local=True, fps=5, segment_seconds=0.6)
    assert again["run"]["annotated"] == 0 and again["run"]["rows_written"] == 0


@pytest.mark.shared
def test_a_truncated_video_keeps_its_frames_adds_an_error_row_and_is_not_retried(tmp_path):
    frames = [f for f in _person_frames("Warren_Buffett") for _ in range(4)]  # 4.8 s at 10 fps
    inp = tmp_path / "in"
    inp.mkdir()
    write_video(tmp_path / "whole.mp4", frames, fps=10)
    data = (tmp_path / "whole.mp4").read_bytes()
    (inp / "cut.mp4").write_bytes(data[: len(data) // 2])
    write_video(inp / "long.mkv", frames, fps=10, fmt="mkv")  # 24 frames to sample: cut by --max-frames
    out = tmp_path / "out"
    summary = annotate([inp], out, plots="video", local=True, fps=5, max_frames=20)
    df = read_annotations(out)
    cut = df[df["path"] == "cut.mp4"]
    errors = cut[cut["status"] == "error"]
    assert len(errors) == 1
    at = errors["timestamp_s"].iloc[0]
    assert 0.5 < at < 4.8 and f"{at:.3f} s" in errors["error"].iloc[0] and "truncated" in errors["error"].iloc[0]
    good = cut[cut["status"] != "error"]
    assert good["frame_index"].nunique() >= 5 and good["timestamp_s"].max() <= at
    long = df[df["path"] == "long.mkv"]
    assert long["frame_index"].dropna().nunique() == 20
    limit = long[long["status"] == "error"]["error"].tolist()
    assert len(limit) == 1 and "--max-frames" in limit[0] and "limit of 20 frames" in limit[0]
    assert summary["run"]["videos"] == 2 and summary["run"]["video_frames"] == good["frame_index"].nunique() + 20
    # --plots video: each video's sampled frames, drawn, at their own times (the cut one up to the damage)
    for name, rows in (("cut.mp4", good), ("long.mkv", long[long["status"] != "error"])):
        copy = (out / "plots" / "in" / (name + ".annotated.mp4")).read_bytes()
        assert _timestamps(copy, None) == pytest.approx(sorted(rows["timestamp_s"].unique()), abs=2e-3), name
        assert f"plots/in/{name}.annotated.mp4" in summary["plots"]
    face = good[good["status"] == "ok"].iloc[0]
    x, y0, y1 = round(face["bbox_x"]), round(face["bbox_y"] + 0.2 * face["bbox_h"]), round(face["bbox_y"] + 0.8 * face["bbox_h"])

    def greener(video: bytes) -> float:
        """How much greener than red and blue the face box's left edge is, in the face's frame."""
        img = next(f for f in sample_frames(video)[1] if abs(f.timestamp_s - face["timestamp_s"]) < 1e-3).image.astype(int)
        edge = img[y0:y1, x - 1:x + 2]
        return float((edge[..., 1] - edge[..., [0, 2]].mean(-1)).mean())

    drawn, original = greener((out / "plots" / "in" / "cut.mp4.annotated.mp4").read_bytes()), greener(data)
    assert drawn > original + 20, (drawn, original)  # the box is drawn in green
    # the files gave what they could: a rerun leaves them as they are
    again = annotate([inp], out, plots="none", local=True, fps=5, max_frames=20)
    assert again["run"]["annotated"] == 0


@pytest.mark.shared
def test_an_output_of_schema_version_1_reads_with_null_frame_columns_and_stays_done(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for k, img in enumerate(_person_frames("Tim_Pawlenty")[:3]):
        cv2.imwrite(str(inp / f"{k}.png"), img)
    out = tmp_path / "out"
    annotate([inp], out, plots="none", local=True)
    # rewrite the parts as version 1 wrote them: no frame columns, version 1 in rows and metadata
    for part in (out / "annotations").glob("*.parquet"):
        t = pq.read_table(part)
        t = t.drop_columns(["frame_index", "timestamp_s", "track_id"])
        t = t.set_column(t.schema.get_field_index("schema_version"), "schema_version",
                         pa.array(np.full(t.num_rows, 1, np.int16)))
        meta = dict(t.schema.metadata)
        meta[b"facepipe.schema_version"] = b"1"
        pq.write_table(t.replace_schema_metadata(meta), part)
    df = read_annotations(out)
    assert len(df) >= 3 and df["frame_index"].isna().all() and df["timestamp_s"].isna().all()
    assert read_annotations(out, columns=["path", "track_id"])["track_id"].isna().all()
    again = annotate([inp], out, plots="none", local=True)
    assert again["run"]["annotated"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["annotated"] == 0


@pytest.mark.shared
def test_4k_frames_are_downscaled_for_detection_and_rows_are_in_the_videos_pixels(tmp_path):
    face = cv2.resize(_person_frames("Tim_Pawlenty")[0], (1600, 1760), interpolation=cv2.INTER_CUBIC)
    frame = np.full((2160, 3840, 3), 100, np.uint8)
    frame[200:1960, 1100:2700] = face
    inp = tmp_path / "in"
    inp.mkdir()
    write_video(inp / "uhd.mp4", [frame] * 3, fps=5)
    out = tmp_path / "out"
    annotate([inp], out, plots="none", local=True, fps=5)
    df = read_annotations(out)
    assert (df["image_width"] == 3840).all() and (df["image_height"] == 2160).all()
    ok = df[df["status"] == "ok"]
    assert sorted(ok["frame_index"].unique()) == [0, 1, 2] and ok["track_id"].nunique() == 1
    # the box is where the face was pasted, in the video's own pixels (detection ran downscaled)
    cx, cy = ok["bbox_x"] + ok["bbox_w"] / 2, ok["bbox_y"] + ok["bbox_h"] / 2
    assert cx.between(1100, 2700).all() and cy.between(200, 1960).all() and (ok["bbox_w"] > 500).all()


@pytest.mark.shared
def test_predict_takes_videos_beside_images_and_the_command_prints_each_track(tmp_path, capsys):
    from facepipe.annotate import predict
    from facepipe.cli.predict import run

    frames = _person_frames("Wes_Craven")
    clip = tmp_path / "clip.mkv"
    write_video(clip, frames, fps=5, fmt="mkv")  # one photo per sampled frame
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), frames[0])
    video, image, from_bytes = predict([str(clip), str(photo), clip.read_bytes()])
    # each item keeps its own result, a video's faces say when and which track
    assert image["status"] == "ok" and "tracks" not in image and len(image["faces"]) == 1
    assert video["frames"] == len(frames) and len(video["faces"]) >= len(frames) - 2
    assert [f["timestamp_s"] for f in video["faces"]] == sorted(f["timestamp_s"] for f in video["faces"])
    assert {f["track_id"] for f in video["faces"]} == {0}
    (track,) = video["tracks"]
    assert track["frames"] == len(video["faces"]) and sum(track["seconds_per_emotion"].values()) == pytest.approx(0.2 * track["frames"])
    assert [f["bbox"] for f in from_bytes["faces"]] == [f["bbox"] for f in video["faces"]]
    first = next(f for f in video["faces"] if f["frame_index"] == 0)
    # the first frame decoded from the video is close to the photo (lossy): the same face, nearly the same box
    np.testing.assert_allclose(first["bbox"], image["faces"][0]["bbox"], atol=6)

    assert run([str(clip), "--json", "--plot", str(tmp_path / "plots")]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    got = json.loads(line)
    assert got["frames"] == video["frames"] and got["tracks"] == video["tracks"]
    assert (tmp_path / "plots" / "clip.mkv.timeline.png").stat().st_size > 1000
    assert run([str(clip), str(photo)]) == 0
    table = capsys.readouterr().out
    assert f"{clip}\ttrack 0\t{track['dominant_emotion']}\t" in table and "t=0.20s track 0" in table
    assert run([str(clip), "--fps", "-1"]) == 2
