"""Benchmark: how the annotation job's Haar detector frames FER2013 faces, to pick the emotion crop.

FER2013 faces (48x48) are registered so that the face fills most of the frame; the emotion model
learnt that framing. The annotation job finds faces with :func:`facepipe.faces.detect.detect_faces`
(the default detector, Haar: :func:`~facepipe.faces.detect.detector_config`) and crops with ``square_crop(box, margin)``
+ ``crop_resize(gray, square, 48)``, so the margin (and a vertical offset) must map a detector box
back onto FER's frame.

Each ``PublicTest`` face becomes a "photo": upscaled 3x (``cv2.INTER_CUBIC``, 144 px) inside a
mid-grey (128) border of 48 px (240x240), so the FER frame is ``x, y in [48, 192)``. On faces with
at least one box (the largest is taken) it measures ``side_ratio = 144 / box side`` and the frame
centre's offset from the box centre in box sides (``dx``, ``dy``; median and robust std =
1.4826 * MAD). The implied framing is ``margin = (median side_ratio - 1) / 2`` and
``offset_y = median dy`` (the box is shifted down by ``offset_y`` of its side before ``square_crop``;
``offset_x`` is reported, not applied). For the default margin 0.15, the implied margin alone and
the implied margin + offset it reports the IoU of the crop square with the frame and the mean
absolute pixel difference between the 48x48 crop and the original face (per face; median and mean
over faces); ``frame`` is the floor: the exact frame cropped from the photo (cubic up, area down).

Prints progress, then one JSON line last; writes a PNG grid (``--plot``): row 1 = FER originals,
row 2 = their crops at margin 0.15, row 3 = their crops with the implied framing.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fer2013" / "fer2013_trainval.csv.gz"
PLOT = Path(__file__).resolve().parent / "results" / "emotion_framing.png"

FER = 48
UPSCALE = 3
BORDER = 48
GREY = 128
FRAME = (BORDER, BORDER, FER * UPSCALE)  # x0, y0, side of the FER face inside the photo
DEFAULT_MARGIN = 0.15  # facepipe.faces.framing.DEFAULT_MARGIN, checked in main()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT.resolve()), help="FER2013 CSV (.csv or .csv.gz) (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="first N PublicTest faces only (0 = all) (default: %(default)s)")
    p.add_argument("--plot", default=str(PLOT), help="PNG grid to write (default: %(default)s)")
    p.add_argument("--examples", type=int, default=8, help="faces in the PNG grid (default: %(default)s)")
    return p


def make_photo(face: np.ndarray) -> np.ndarray:
    """A 48x48 FER face as a user's photo: 3x cubic upscale inside a grey border (240x240 uint8)."""
    import cv2

    up = cv2.resize(face, (FER * UPSCALE, FER * UPSCALE), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(up, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=GREY)


def shifted(box, offset_x: float, offset_y: float) -> tuple[float, float, float, float]:
    """``box`` moved by ``offset_*`` of its longer side (what a framing offset does before square_crop)."""
    x, y, w, h = (float(v) for v in box)
    s = max(w, h)
    return x + offset_x * s, y + offset_y * s, w, h


def iou(square, frame=FRAME) -> float:
    ax0, ay0, a = square
    bx0, by0, b = frame
    iw = max(0, min(ax0 + a, bx0 + b) - max(ax0, bx0))
    ih = max(0, min(ay0 + a, by0 + b) - max(ay0, by0))
    inter = iw * ih
    return inter / float(a * a + b * b - inter)


def mae(crop: np.ndarray, face: np.ndarray) -> float:
    return float(np.abs(crop.astype(np.int16) - face.astype(np.int16)).mean())


def robust(values: np.ndarray) -> dict:
    med = float(np.median(values))
    return {"median": round(med, 4), "robust_std": round(1.4826 * float(np.median(np.abs(values - med))), 4)}


def main(args: argparse.Namespace) -> dict:
    import cv2

    from facepipe.faces.crop import crop_resize, square_crop
    from facepipe.faces.detect import detect_faces, detector_config
    from facepipe.faces.framing import DEFAULT_MARGIN as ANNOTATE_MARGIN
    from facepipe.data import read_table
    from facepipe.plots import image_grid

    assert ANNOTATE_MARGIN == DEFAULT_MARGIN, ANNOTATE_MARGIN
    cv2.setNumThreads(1)  # one core: a benchmark of framing, not of speed
    config = detector_config()  # the job's default detector (Haar)

    t = time.perf_counter()
    table = read_table(args.data)
    faces = table.images[table.usage == "PublicTest"]
    if args.limit:
        faces = faces[: args.limit]
    n = len(faces)
    print(f"{n} PublicTest faces from {args.data} ({time.perf_counter() - t:.1f} s)", flush=True)

    # Pass 1: detect. Keep the largest box of each face.
    t = time.perf_counter()
    boxes = np.full((n, 4), np.nan, np.float64)
    multi = 0
    for i, face in enumerate(faces):
        found, _ = detect_faces(make_photo(face), config)
        if len(found):
            multi += len(found) > 1
            boxes[i] = found[np.argmax(found[:, 2] * found[:, 3])]
        if (i + 1) % 500 == 0 or i + 1 == n:
            print(f"  detected {i + 1}/{n} ({time.perf_counter() - t:.1f} s)", flush=True)
    detect_s = time.perf_counter() - t
    ok = np.flatnonzero(np.isfinite(boxes[:, 0]))
    if len(ok) == 0:
        raise SystemExit("no face detected")
    b = boxes[ok]
    side = np.maximum(b[:, 2], b[:, 3])
    fx0, fy0, fside = FRAME
    side_ratio = fside / side
    # Edge convention on both sides (box covers [x, x + w), frame [48, 192)): centres x + w / 2, 120.
    dx = (fx0 + fside / 2.0 - (b[:, 0] + b[:, 2] / 2.0)) / side
    dy = (fy0 + fside / 2.0 - (b[:, 1] + b[:, 3] / 2.0)) / side
    margin = (float(np.median(side_ratio)) - 1.0) / 2.0
    offset_x, offset_y = float(np.median(dx)), float(np.median(dy))
    print(
        f"boxes: {len(ok)}/{n} faces, median side_ratio {np.median(side_ratio):.3f} → margin {margin:.3f}, "
        f"offset_x {offset_x:+.3f}, offset_y {offset_y:+.3f}",
        flush=True,
    )

    # Pass 2: crops under each framing vs the original face.
    framings = {
        "frame": None,  # the exact FER frame: the floor of the resampling round trip
        f"margin_{DEFAULT_MARGIN:g}": (DEFAULT_MARGIN, 0.0),
        "implied_margin_only": (margin, 0.0),
        "implied": (margin, offset_y),
    }
    errs = {k: np.empty(len(ok)) for k in framings}
    ious = {k: np.empty(len(ok)) for k in framings if framings[k] is not None}
    crops = {k: [] for k in framings}
    for j, i in enumerate(ok):
        photo = make_photo(faces[i])
        for k, fr in framings.items():
            if fr is None:
                sq = FRAME
            else:
                sq = square_crop(shifted(boxes[i], 0.0, fr[1]), fr[0])
                ious[k][j] = iou(sq)
            crop = crop_resize(photo, sq, FER)
            errs[k][j] = mae(crop, faces[i])
            if j < args.examples:
                crops[k].append(crop)

    def stats(v: np.ndarray) -> dict:
        return {"median": round(float(np.median(v)), 2), "mean": round(float(np.mean(v)), 2)}

    for k in framings:
        extra = f", IoU median {np.median(ious[k]):.3f}" if k in ious else ""
        print(f"  {k}: MAE median {np.median(errs[k]):.2f} mean {np.mean(errs[k]):.2f}{extra}", flush=True)

    m = min(args.examples, len(ok))
    grid = np.concatenate([faces[ok[:m]], np.stack(crops[f"margin_{DEFAULT_MARGIN:g}"][:m]), np.stack(crops["implied"][:m])])
    titles = (
        [f"FER #{i}" for i in ok[:m]]
        + [f"m={DEFAULT_MARGIN:g} MAE {errs[f'margin_{DEFAULT_MARGIN:g}'][j]:.0f}" for j in range(m)]
        + [f"implied MAE {errs['implied'][j]:.0f}" for j in range(m)]
    )
    plot = image_grid(
        grid,
        args.plot,
        titles=titles,
        cols=m,
        suptitle=f"FER originals / margin {DEFAULT_MARGIN:g} / implied margin {margin:.3f} offset_y {offset_y:+.3f}",
    )
    print(f"plot: {plot}", flush=True)

    result = {
        "faces": n,
        "detected": int(len(ok)),
        "detection_rate": round(len(ok) / n, 4),
        "multi_box": int(multi),
        "side_ratio": {
            "median": round(float(np.median(side_ratio)), 4),
            "p10": round(float(np.percentile(side_ratio, 10)), 4),
            "p90": round(float(np.percentile(side_ratio, 90)), 4),
        },
        "dx": robust(dx),
        "dy": robust(dy),
        "margin": round(margin, 4),
        "offset_x": round(offset_x, 4),
        "offset_y": round(offset_y, 4),
        "mae": {k: stats(v) for k, v in errs.items()},
        "iou_median": {k: round(float(np.median(v)), 4) for k, v in ious.items()},
        "detect_seconds": round(detect_s, 1),
        "ms_per_detect": round(1000 * detect_s / n, 2),
        "plot": str(plot),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
