"""Face tracks across video frames: the same face keeps its ``track_id`` from frame to frame.

A greedy tracker on the detector's boxes and the predicted keypoints: each frame's faces are
matched to the live tracks' last faces, best pairs first, by box overlap (intersection over union)
and closeness (the mean distance between the two faces' keypoints relative to the box size, or
between the box centres where either face has no keypoints); a face close to no live track starts
a new track, and a track unseen for ``max_gap_s`` ends (a face that leaves and another that enters
get different ids). Sampled frames are 0.2 s apart at the default 5 fps, so a face moves little
between them relative to its size; the keypoints follow the face itself where the detector's box
jumps in size from frame to frame. Tracking runs once a video's (or segment's) faces have their
keypoints: :func:`track_rows`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Tracker", "track_rows", "track_summary"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4: x, y, w, h) with every box of ``b`` (m, 4)."""
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The mean box side of every pair of ``a`` (n, 4) and ``b`` (m, 4): the scale closeness is measured in."""
    return np.maximum((a[:, None, 2:].mean(axis=2) + b[None, :, 2:].mean(axis=2)) / 2, 1e-9)


def _near(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - centre distance / mean box side (clipped at 0): large when two boxes are close for their size."""
    ca = a[:, None, :2] + a[:, None, 2:] / 2
    cb = b[None, :, :2] + b[None, :, 2:] / 2
    return np.clip(1 - np.linalg.norm(ca - cb, axis=2) / _side(a, b), 0, None)


def _points_near(pa: np.ndarray, pb: list, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - mean keypoint distance / mean box side (clipped at 0) of every face of ``pa`` (n, K, 2)
    with every face of ``pb`` (m arrays of (K, 2), or None); NaN where the pair shares no point."""
    out = np.full((len(pa), len(pb)), np.nan)
    side = _side(a, b)
    for j, q in enumerate(pb):
        if q is None or q.shape != pa.shape[1:]:
            continue
        d = np.linalg.norm(pa - q[None], axis=2)  # (n, K), NaN where either face misses the point
        finite = np.isfinite(d)
        count = finite.sum(axis=1)
        mean = np.where(finite, d, 0.0).sum(axis=1) / np.maximum(count, 1)
        out[:, j] = np.where(count > 0, np.clip(1 - mean / side[:, j], 0, None), np.nan)
    return out


@dataclass
class Tracker:
    """Assigns track ids frame by frame (:meth:`update`); ids count from ``first_id``."""

    min_iou: float = 0.2
    #: A box not overlapping a track enough still continues it when its centre is within this
    #: fraction of a box side of the track's last centre.
    max_shift: float = 0.75
    #: A track unseen this long (seconds of presentation time) is over.
    max_gap_s: float = 1.0
    first_id: int = 0
    _next: int = field(init=False, default=0)
    _live: dict[int, tuple] = field(init=False, default_factory=dict)  # id -> (last box, last time, last keypoints or None)

    def __post_init__(self) -> None:
        self._next = self.first_id

    @classmethod
    def continuing(cls, last_seen: dict[int, tuple], **settings) -> "Tracker":
        """A tracker in the state one had after seeing tracks whose last box, time and keypoints
        were ``last_seen`` (``{id: (box, t, points or None)}``): it goes on as that one would (new
        ids after theirs)."""
        tracker = cls(first_id=max(last_seen, default=-1) + 1, **settings)
        tracker._live = {int(k): (np.asarray(box, np.float64), float(t), None if pts is None else np.asarray(pts, np.float64))
                         for k, (box, t, pts) in last_seen.items()}
        return tracker

    def update(self, boxes: np.ndarray, t: float, points: np.ndarray | None = None) -> list[int]:
        """The track id of each box (n, 4: x, y, w, h) of the frame shown at time ``t``; ``points``
        (n, K, 2, NaN where missing): the faces' keypoints, in the boxes' pixels."""
        self._live = {k: v for k, v in self._live.items() if t - v[1] <= self.max_gap_s}
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        pts = None if points is None or not len(boxes) else np.asarray(points, np.float64).reshape(len(boxes), -1, 2)
        ids = [-1] * len(boxes)
        if len(boxes) and self._live:
            keys = list(self._live)
            last = np.stack([self._live[k][0] for k in keys])
            iou, near = _iou(boxes, last), _near(boxes, last)
            if pts is not None and pts.shape[1]:
                by_points = _points_near(pts, [self._live[k][2] for k in keys], boxes, last)
                near = np.where(np.isnan(by_points), near, by_points)
            score = np.where(iou >= self.min_iou, 1 + (iou + near) / 2, np.where(near >= 1 - self.max_shift, near, 0.0))
            for flat in np.argsort(-score, axis=None):
                i, j = divmod(int(flat), len(keys))
                if score[i, j] <= 0:
                    break
                if ids[i] == -1 and keys[j] not in ids:
                    ids[i] = keys[j]
        for i, box in enumerate(boxes):
            if ids[i] == -1:
                ids[i] = self._next
                self._next += 1
            self._live[ids[i]] = (box, t, None if pts is None else pts[i])
        return ids


def track_rows(tracker: Tracker, frame_index: np.ndarray, timestamp_s: np.ndarray, status: np.ndarray, boxes: np.ndarray,
               points: np.ndarray | None = None) -> np.ndarray:
    """Track ids (int32, -1 for rows that are not faces) of one video's rows, given frame by frame
    in order (``frame_index`` < 0: a row of no frame); ``points`` (n, K, 2): their keypoints."""
    status = np.asarray(status).astype(str)
    frame_index = np.asarray(frame_index)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    track = np.full(len(status), -1, np.int32)
    starts = np.flatnonzero(np.r_[True, frame_index[1:] != frame_index[:-1]]) if len(status) else np.array([], int)
    for a, b in zip(starts, np.r_[starts[1:], len(status)]):
        if frame_index[a] < 0:
            continue
        ok = np.arange(a, b)[status[a:b] == "ok"]
        track[ok] = tracker.update(boxes[ok], float(timestamp_s[a]), None if points is None else np.asarray(points)[ok])
    return track


def track_summary(rows) -> list[dict]:
    """Per face track of each video, from annotation rows (a pandas DataFrame with ``root``,
    ``path``, ``status``, ``timestamp_s``, ``track_id``, ``emotion``): first and last time seen,
    sampled frames, the dominant emotion and the seconds spent in each emotion.

    A sampled frame stands for the time until the video's next sampled frame (the last one for
    the median step), so the seconds follow ``--fps`` and variable frame rates alike."""
    ok = rows[(rows["status"] == "ok") & rows["track_id"].notna()]
    if not len(ok):
        return []
    # every sampled time of each video (its faceless and error rows too), in one pass over the rows
    timed = rows[rows["timestamp_s"].notna()].groupby(["root", "path"], observed=True)["timestamp_s"]
    times_of = {key: np.unique(t.to_numpy(float)) for key, t in timed}
    out = []
    for (root, path), video in ok.groupby(["root", "path"], sort=True, observed=True):
        times = times_of[(root, path)]
        steps = np.diff(times)
        last = float(np.median(steps)) if len(steps) else 0.0
        length = dict(zip(times, np.append(steps, last)))
        for track, g in video.groupby("track_id", sort=True, observed=True):
            seconds = g.groupby("emotion", observed=True)["timestamp_s"].agg(lambda t: sum(length.get(x, 0.0) for x in t))
            out.append({"root": str(root), "path": str(path), "track_id": int(track), "frames": int(len(g)),
                        "first_s": round(float(g["timestamp_s"].min()), 3), "last_s": round(float(g["timestamp_s"].max()), 3),
                        "dominant_emotion": str(seconds.idxmax()) if len(seconds) else None,  # None: no emotion model ran
                        "seconds_per_emotion": {str(k): round(float(v), 3) for k, v in seconds.sort_values(ascending=False).items()}})
    return out
