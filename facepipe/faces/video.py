"""Video files: recognised by content, decoded with PyAV (FFmpeg's binding), sampled at a frame rate.

PyAV over OpenCV's bundled FFmpeg (measured in ``bench/results/video_decoders.md``): both give
exact presentation times on variable-frame-rate files read from the start and decode at similar
speed, but PyAV reads bytes and file-like objects (an object-store download, no temporary file)
and seeks by presentation time.

Frames come out upright (the display rotation applied) as BGR ``uint8``, like decoded images.
Sampling keeps the first decoded frame of every ``1/fps`` interval of presentation time, counted
from the stream's first frame, so a 30 fps file sampled at 5 fps gives every sixth frame and a
variable-frame-rate file gives the frame shown at each interval's start.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterable, Iterator, Sequence

import cv2
import numpy as np

__all__ = ["VIDEO_FORMATS", "VideoError", "VideoFrame", "VideoInfo", "Segment", "SegmentPlan", "sniff_video", "open_video", "sample_frames",
           "plan_segments", "sample_segment", "write_video"]

#: Container formats recognised by content (their first bytes), whatever the file is named.
VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm", "avi")


#: A hole in presentation time wider than both of these (seconds; frame steps) is reported.
GAP_S, GAP_STEPS = 0.5, 10


class VideoError(Exception):
    """A video that cannot be decoded (further); ``at_s`` is where decoding stopped (None: at the start)."""

    def __init__(self, message: str, at_s: float | None = None):
        super().__init__(message)
        self.at_s = at_s


@dataclass(frozen=True)
class VideoFrame:
    #: The frame's number in decode order in its stream (0 = the first frame).
    index: int
    #: Presentation time, seconds from the stream's first frame.
    timestamp_s: float
    #: The upright frame, BGR uint8.
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    format: str
    width: int  # upright (rotation applied)
    height: int
    rotation: int  # display rotation applied, degrees counter-clockwise (0, 90, 180, 270)
    duration_s: float | None  # from the container (None when it does not say)
    frames: int | None  # the stream's frame count as the container states it (None: unknown)
    codec: str


def sniff_video(head: bytes) -> str | None:
    """The container format of a file from its first bytes (``VIDEO_FORMATS``), or None."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"):
            return None  # HEIF/AVIF still images share the ISO box layout
        return "mov" if brand == b"qt  " else "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska, or WebM (its DocType says which)
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _rotation(frame) -> int:
    """The frame's display rotation in degrees counter-clockwise, as 0, 90, 180 or 270."""
    r = getattr(frame, "rotation", 0) or 0
    return int(round(r / 90.0)) % 4 * 90


_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def _upright(frame) -> np.ndarray:
    img = frame.to_ndarray(format="bgr24")
    r = _rotation(frame)
    return cv2.rotate(img, _ROTATE[r]) if r else img


def _ffmpeg_message(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return str(text).strip().splitlines()[-1] if str(text).strip() else type(e).__name__


def open_video(source: str | bytes | BinaryIO):
    """A PyAV container for a path, bytes or a seekable file-like object; VideoError when it has no
    video stream or cannot be opened."""
    import av

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        container = av.open(src, mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"cannot open video: {_ffmpeg_message(e)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream in the file")
    return container


def _seconds(pts: int, time_base) -> float:
    """A presentation time in seconds: one formula for whole files, segment plans and segments alike,
    so that all three put a frame into the same sampling interval."""
    return float(pts * time_base)


def _bin(t: float, fps: float | None, index: int) -> int:
    """The sampling interval of a frame at ``t`` seconds (every frame its own: ``fps`` None or 0)."""
    return math.floor(t * fps + 1e-6) if fps else index


def sample_frames(source: str | bytes | BinaryIO, fps: float | None = None, max_frames: int | None = None,
                  fmt: str = "") -> tuple[VideoInfo, Iterator[VideoFrame]]:
    """The video's :class:`VideoInfo` and an iterator over its frames sampled at ``fps`` (None or
    0: every frame), at most ``max_frames`` of them. The iterator raises :class:`VideoError` with
    ``at_s`` when the stream turns out damaged after some frames: the frames given were good (when
    the decoder skipped damaged data and went on, after the last frame)."""
    container = open_video(source)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads inside one decoder: FFmpeg's own, not Python's
    ctx = stream.codec_context
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else (
        container.duration / 1e6 if container.duration else None)
    frames = int(stream.frames) if stream.frames else None
    try:
        gen = container.decode(stream)
        first = next(gen)
    except StopIteration:
        container.close()
        raise VideoError("the video stream has no frames") from None
    except Exception as e:  # noqa: BLE001 - FFmpeg's errors (av.FFmpegError) and damaged headers alike
        container.close()
        raise VideoError(f"cannot decode video: {_ffmpeg_message(e)}", at_s=0.0) from None
    rot = _rotation(first)
    w, h = (ctx.height, ctx.width) if rot in (90, 270) else (ctx.width, ctx.height)
    info = VideoInfo(format=fmt, width=int(w), height=int(h), rotation=rot, duration_s=duration, frames=frames, codec=ctx.name)
    rate = stream.average_rate or stream.guessed_rate
    step = 1.0 / float(rate) if rate else 0.1

    tb = stream.time_base

    def frames_iter() -> Iterator[VideoFrame]:
        t0 = _seconds(first.pts, tb) if first.pts is not None else 0.0
        last_bin, kept, index, frame, last_t = -1, 0, 0, first, 0.0
        # A decoder that meets damaged data may resynchronise further on and go on quietly (FFmpeg's
        # logs would say, but PyAV's log hook can deadlock threaded decoders): a hole in presentation
        # time far wider than the stream's frame step is reported once the frames after it were given.
        gap = None
        try:
            while True:
                t = (_seconds(frame.pts, tb) - t0) if frame.pts is not None else last_t
                b = _bin(t, fps, index)
                if b > last_bin:
                    if max_frames is not None and kept >= max_frames:
                        return
                    last_bin = b
                    kept += 1
                    yield VideoFrame(index=index, timestamp_s=round(float(t), 6), image=_upright(frame))
                last_t = t
                index += 1
                try:
                    frame = next(gen)
                except StopIteration:
                    # FFmpeg ends a cut-off stream quietly: the time the container states says it was cut
                    if duration is not None and last_t + 2.5 * step < duration:
                        raise VideoError(f"video decoding stopped after {last_t:.3f} s of the {duration:.3f} s the file "
                                         "states (truncated or damaged)", at_s=last_t) from None
                    break
                except Exception as e:  # noqa: BLE001 - damage after good frames: say where
                    raise VideoError(f"video decoding failed after {last_t:.3f} s: {_ffmpeg_message(e)}", at_s=last_t) from None
                if gap is None and frame.pts is not None and _seconds(frame.pts, tb) - t0 - last_t > max(GAP_S, GAP_STEPS * step):
                    gap = (last_t, _seconds(frame.pts, tb) - t0)
        finally:
            container.close()
        if gap is not None:
            raise VideoError(f"no frames between {gap[0]:.3f} s and {gap[1]:.3f} s (damaged data the decoder skipped, or a "
                             "hole in the file); the frames on both sides are analysed", at_s=gap[0])

    return info, frames_iter()


@dataclass(frozen=True)
class Segment:
    """A run of consecutive sampled frames that one task decodes on its own (:func:`sample_segment`)."""

    start_pts: int  # its first sampled frame's presentation time (stream time base): the task seeks there
    end_pts: int | None  # the next segment's first (None: the video's end)
    first_index: int  # the first sampled frame's index (decode order, as :class:`VideoFrame` counts)
    first_bin: int  # its sampling interval
    frames: int  # sampled frames in it


@dataclass(frozen=True)
class SegmentPlan:
    """How a video's sampled frames split into :class:`Segment` s, found from its packets alone."""

    t0_pts: int  # the first frame's presentation time: timestamps count from it
    segments: tuple[Segment, ...]
    sampled: int  # sampled frames in all
    last_s: float  # the last sampled frame's time
    limited: bool  # sampling stopped at ``max_frames`` before the video's end

    def to_json(self) -> str:
        import dataclasses
        import json

        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SegmentPlan":
        import json

        d = json.loads(text)
        return cls(**{**d, "segments": tuple(Segment(**s) for s in d["segments"])})


def plan_segments(source: str | bytes | BinaryIO, fps: float | None, max_frames: int | None, segment_s: float) -> SegmentPlan | None:
    """The video's sampled frames (the ones :func:`sample_frames` gives) cut into segments of about
    ``segment_s`` seconds of presentation time, from its packets (demuxed, not decoded); None when
    it is not worth cutting (at most 1.5 segments long) or anything about its packets is unusual
    (no time on a packet, a hole, a stream cut short, a demuxer error): such a file is decoded
    whole, where those cases are found and reported frame by frame."""
    try:
        container = open_video(source)
    except VideoError:
        return None
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate  # read now: a closed container's stream is gone
        duration = float(stream.duration * tb) if stream.duration and tb else (container.duration / 1e6 if container.duration else None)
        if not segment_s or duration is None or duration <= 1.5 * segment_s or tb is None:
            return None
        pts = []
        for packet in container.demux(stream):
            if packet.pts is None:
                if packet.size:
                    return None
                continue  # the demuxer's closing empty packet
            pts.append(int(packet.pts))
    except Exception:  # noqa: BLE001 - a demuxer error: the whole-file path says where
        return None
    finally:
        container.close()
    if len(pts) < 2 or len(set(pts)) != len(pts):
        return None
    pts.sort()  # decoders give frames in presentation order
    t0 = _seconds(pts[0], tb)
    times = [_seconds(p, tb) - t0 for p in pts]
    step = 1.0 / float(rate) if rate else 0.1
    if times[-1] + 2.5 * step < duration or max(b - a for a, b in zip(times, times[1:])) > max(GAP_S, GAP_STEPS * step):
        return None
    sampled, last_bin = [], -1  # (index, bin) of each sampled frame
    for i, t in enumerate(times):
        b = _bin(t, fps, i)
        if b > last_bin:
            if max_frames is not None and len(sampled) >= max_frames:
                break
            sampled.append((i, b))
            last_bin = b
    groups: dict[int, list[tuple[int, int]]] = {}
    for i, b in sampled:
        groups.setdefault(int(times[i] // segment_s), []).append((i, b))
    if len(groups) < 2:
        return None
    firsts = [g[0][0] for g in groups.values()]
    segments = tuple(Segment(start_pts=pts[g[0][0]], end_pts=pts[firsts[k + 1]] if k + 1 < len(firsts) else None,
                             first_index=g[0][0], first_bin=g[0][1], frames=len(g)) for k, g in enumerate(groups.values()))
    last_s = times[sampled[-1][0]]
    limited = max_frames is not None and len(sampled) >= max_frames and sampled[-1][0] < len(times) - 1
    return SegmentPlan(t0_pts=pts[0], segments=segments, sampled=len(sampled), last_s=round(last_s, 6), limited=limited)


def sample_segment(source: str | bytes | BinaryIO, plan: SegmentPlan, k: int, fps: float | None) -> Iterator[VideoFrame]:
    """The sampled frames of segment ``k`` of ``plan``: the frames :func:`sample_frames` gives in
    that stretch, with the same indices and timestamps, decoded from the key frame before it
    (a seek, not a decode from the start). Raises :class:`VideoError` with ``at_s`` on damage."""
    seg = plan.segments[k]
    container = open_video(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        t0 = _seconds(plan.t0_pts, tb)
        last_t = _seconds(seg.start_pts, tb) - t0
        for attempt in ("seek", "start"):
            if attempt == "seek" and seg.first_index:
                container.seek(seg.start_pts, stream=stream, backward=True, any_frame=False)
            elif attempt == "seek":
                attempt = "start"
            last_bin, kept, index, late = seg.first_bin - 1, 0, seg.first_index, False
            try:
                for frame in container.decode(stream):
                    if frame.pts is None or frame.pts < seg.start_pts:
                        continue
                    if kept == 0 and frame.pts > seg.start_pts:
                        late = True  # the seek landed past the segment's start: decode from the start instead
                        break
                    if seg.end_pts is not None and frame.pts >= seg.end_pts:
                        return
                    t = _seconds(frame.pts, tb) - t0
                    b = _bin(t, fps, index)
                    if b > last_bin:
                        last_bin, kept = b, kept + 1
                        yield VideoFrame(index=index, timestamp_s=round(float(t), 6), image=_upright(frame))
                        if kept >= seg.frames:
                            return
                    last_t, index = t, index + 1
            except Exception as e:  # noqa: BLE001 - damage inside the segment: say where
                raise VideoError(f"video decoding failed after {last_t:.3f} s: {_ffmpeg_message(e)}", at_s=last_t) from None
            if not late or attempt == "start":
                break
            container.seek(0, stream=stream, backward=True, any_frame=False)
        if kept < seg.frames:
            raise VideoError(f"video decoding stopped after {last_t:.3f} s, {seg.frames - kept} sampled frames short of what "
                             "its packets promised (truncated or damaged)", at_s=last_t)
    finally:
        container.close()


#: Encoders by container for :func:`write_video` (all in PyAV's wheel).
_CODECS = {"mp4": "libx264", "mov": "libx264", "mkv": "libx264", "webm": "libvpx-vp9", "avi": "mpeg4"}
_MUXERS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm", "avi": "avi"}


def write_video(target: str | os.PathLike | BinaryIO, frames: Iterable[np.ndarray], fps: float = 25.0, *, fmt: str = "mp4",
                times_s: Sequence[float] | None = None, rotation: int = 0, codec: str | None = None) -> int:
    """Encode BGR ``uint8`` frames (all one size; odd sides are cropped by a pixel for 4:2:0) into a
    video file or file-like object; returns the number of frames written.

    ``times_s``: each frame's presentation time (a variable frame rate), else ``1/fps`` apart.
    ``rotation``: the display rotation to store (degrees counter-clockwise, as phones write it);
    the frames are stored as given, so a reader that honours the flag shows them turned."""
    import av

    if fmt not in _MUXERS:
        raise ValueError(f"unknown video format {fmt!r}; choose one of {', '.join(_MUXERS)}")
    # mp4/mov to a path: the index first (faststart, as files meant for streaming are written);
    # FFmpeg moves it by reading the finished file back, which it can only do by name
    options = {"movflags": "faststart"} if fmt in ("mp4", "mov") and isinstance(target, (str, os.PathLike)) else {}
    container = av.open(target, mode="w", format=_MUXERS[fmt], options=options)
    stream = None
    tb = Fraction(1, 1000)
    n = 0
    try:
        for n, img in enumerate(frames):
            h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
            if stream is None:
                stream = container.add_stream(codec or _CODECS[fmt], rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                if times_s is not None:
                    stream.codec_context.time_base = tb
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="bgr24")
            if times_s is not None:
                frame.pts, frame.time_base = round(times_s[n] / tb), tb
            container.mux(stream.encode(frame))
        n = 0 if stream is None else n + 1
        if stream is not None:
            container.mux(stream.encode())
    finally:
        container.close()
    return n
