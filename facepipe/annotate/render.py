"""Annotated copies of images (box, keypoints, emotion label and confidence), drawn with OpenCV.

:func:`draw` works on one decoded image; :func:`render_batch` is the Ray Data function that
re-reads files and writes ``OUT/plots/<root>/<path>.jpg`` (mirroring the input tree,
:func:`plot_path`); :func:`render_video_batch` re-decodes videos and writes each one's sampled
frames, drawn, as ``OUT/plots/<root>/<path>.annotated.mp4`` (``--plots video``). Summary bar charts use
``facepipe.plots.bar_counts``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from facepipe import storage
from facepipe.faces.decode import decode_image
from facepipe.faces.pose import rotation_from_angles
from facepipe.annotate.writer import atomic_write_bytes

__all__ = ["PLOTS_DIR", "VIDEO_SUFFIX", "plot_path", "draw", "render_batch", "render_video_batch"]

PLOTS_DIR = "plots"

_BOX = (60, 220, 60)  # BGR
_POINT = (40, 40, 255)
_TEXT_BG = (30, 30, 30)


#: Longest file name (bytes) most file systems take (Linux NAME_MAX).
NAME_MAX = 255
PLOT_SUFFIX = ".jpg"
#: The annotated copy of a video (``--plots video``).
VIDEO_SUFFIX = ".annotated.mp4"


def plot_path(output: str | os.PathLike, root: str, path: str, suffix: str = PLOT_SUFFIX) -> Path | str:
    """``OUT/plots/<root>/<path>.jpg`` (a video's timeline: ``suffix=".timeline.png"``): the suffix is always added, so two inputs never share a
    plot (``a.png`` and ``a.png.jpg`` become ``a.png.jpg`` and ``a.png.jpg.jpg``). A name that
    would pass NAME_MAX is cut and keeps a hash of the whole name, so it stays unique."""
    import hashlib

    folder, _, name = path.rpartition("/")
    name += suffix
    if len(os.fsencode(name)) > NAME_MAX:
        digest = "~" + hashlib.sha256(os.fsencode(path)).hexdigest()[:16] + suffix
        keep = os.fsencode(name)[: NAME_MAX - len(digest) - 32]  # a margin below NAME_MAX (the writer's temporary name is short)
        name = keep.decode("utf-8", "ignore") + digest
    if storage.is_uri(output):
        return storage.join(output, PLOTS_DIR, root, *([folder] if folder else []), name)
    return Path(output) / PLOTS_DIR / root / folder / name


def _label(img: np.ndarray, text: str, x: int, y: int, scale: float, color=(255, 255, 255)) -> None:
    thick = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    y = max(y, th + base + 2)
    x = min(max(x, 0), max(0, img.shape[1] - tw - 4))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), _TEXT_BG, -1)
    cv2.putText(img, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


#: Head pose axes (BGR): the face's x (towards its left eye) red, y (down) green, z (out of the face) blue.
_AXES = ((0, 0, 255), (0, 200, 0), (255, 80, 0))


def _pose_axes(img: np.ndarray, angles, origin: tuple[float, float], length: float, thick: int) -> None:
    """The face's three axes from ``origin``, rotated by its (yaw, pitch, roll) and drawn as seen
    (orthographic); nothing when the pose is unknown."""
    if angles is None or len(angles) != 3 or not all(a is not None and np.isfinite(a) for a in angles):
        return
    rot = rotation_from_angles(*angles)
    ox, oy = origin
    for k, color in enumerate(_AXES):
        d = rot[:, k] * (-1 if k == 2 else 1)  # z drawn out of the face, towards the camera
        cv2.line(img, (round(ox), round(oy)), (round(ox + length * d[0]), round(oy + length * d[1])), color, thick, cv2.LINE_AA)


def draw(image: np.ndarray, faces: list[dict], status: str = "ok", max_side: int = 1280) -> np.ndarray:
    """A BGR copy of ``image`` (uint8 gray or BGR), downscaled to ``max_side``, with each face's box,
    keypoints (``[K, 2]`` image pixels), head pose axes (``pose``: yaw, pitch, roll in degrees) and
    ``"<emotion> <confidence>"``; ``no face`` when none."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else img.copy()
    unit = max(img.shape[:2]) / 400.0
    thick = max(1, int(round(unit)))
    font = max(0.35, 0.45 * unit)
    if not faces:
        _label(img, "no face" if status == "no_face" else status, 2, int(22 * max(unit, 0.6)), font, (80, 200, 255))
        return img
    for f in faces:
        x, y, bw, bh = (float(v) * s for v in f["bbox"])
        cv2.rectangle(img, (round(x), round(y)), (round(x + bw), round(y + bh)), _BOX, thick, cv2.LINE_AA)
        r = max(1, int(round(bw / 60)))
        for px, py in np.asarray(f.get("keypoints", []), np.float64).reshape(-1, 2):
            if np.isfinite(px) and np.isfinite(py):
                cv2.circle(img, (round(px * s), round(py * s)), r, _POINT, -1, cv2.LINE_AA)
        _pose_axes(img, f.get("pose"), (x + bw / 2, y + bh / 2), bw / 2, thick)
        if f.get("emotion"):
            _label(img, f"{f['emotion']} {float(f.get('confidence', 0.0)):.2f}", round(x), round(y) - 2, font)
    return img


def _write_each(items, render) -> dict[str, np.ndarray]:
    """``render(*item)`` → ``(destination, bytes)`` for each item, written atomically. Returns
    ``written`` (path or ``""``) and ``error`` per item; a failure never raises (a plot never fails
    the job)."""
    cv2.setNumThreads(1)
    written, errors = [], []
    for item in items:
        try:
            dest, data = render(*item)
            atomic_write_bytes(dest, data)
            written.append(str(dest))
            errors.append("")
        except Exception as e:  # noqa: BLE001 - see above
            written.append("")
            errors.append(f"{type(e).__name__}: {e}")
    return {"written": np.array(written, dtype=object), "error": np.array(errors, dtype=object)}


def render_batch(batch: dict[str, np.ndarray], output: str, max_side: int = 1280) -> dict[str, np.ndarray]:
    """Ray Data stage: rows (abs_path, root, path, status, faces_json) → written plot files.

    Returns ``written`` (plot path or ``""``) and ``error`` per row; a failure never raises.
    """
    def image_plot(abs_path, root, path, status, faces_json) -> tuple[Path | str, bytes]:
        dec = decode_image(storage.read_bytes(abs_path))
        img = draw(dec.image, json.loads(faces_json), status=str(status), max_side=max_side)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise OSError("JPEG encoding failed")
        return plot_path(output, str(root), str(path)), buf.tobytes()

    return _write_each(zip(batch["abs_path"], batch["root"], batch["path"], batch["status"], batch["faces_json"]), image_plot)


def render_video_batch(batch: dict[str, np.ndarray], output: str, max_side: int = 1280) -> dict[str, np.ndarray]:
    """Ray Data stage: videos (abs_path, root, path, fps, max_frames, frames_json) → their annotated
    copies, ``OUT/plots/<root>/<path>.annotated.mp4``.

    ``frames_json``: ``[[frame_index, timestamp_s, status, faces], ...]`` of the frames the job
    sampled (faces as :func:`draw` takes them). The video is sampled again the same way and each of
    those frames drawn and encoded at its own presentation time. Returns ``written`` and ``error``
    per video, as :func:`render_batch`; a failure never raises.
    """
    import io

    from facepipe.faces.video import VideoError, sample_frames, write_video

    def video_plot(abs_path, root, path, fps, max_frames, frames_json) -> tuple[Path | str, bytes]:
        wanted = {int(i): (float(t), str(st), faces) for i, t, st, faces in json.loads(frames_json)}
        _, frames = sample_frames(storage.read_bytes(abs_path), fps=float(fps) or None,
                                  max_frames=int(max_frames) if int(max_frames) > 0 else None)
        times: list[float] = []

        def drawn():
            try:
                for f in frames:
                    if f.index in wanted:
                        t, st, faces = wanted[f.index]
                        times.append(t)
                        yield draw(f.image, faces, status=st, max_side=max_side)
                    if len(times) == len(wanted):
                        return
            except VideoError:  # damage after the good frames (the rows' error row says where): those frames only
                return

        buf = io.BytesIO()
        # write_video reads times_s[n] once it has frame n, which the generator appended
        if write_video(buf, drawn(), fps=float(fps) or 25.0, fmt="mp4", times_s=times) == 0:
            raise OSError("none of the annotated frames could be decoded again")
        return plot_path(output, str(root), str(path), suffix=VIDEO_SUFFIX), buf.getvalue()

    return _write_each(zip(batch["abs_path"], batch["root"], batch["path"], batch["fps"], batch["max_frames"], batch["frames_json"]),
                       video_plot)
