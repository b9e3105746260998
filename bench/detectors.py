"""Benchmark: every face detector of the registry (``facepipe.faces.detect.DETECTORS``), side by side.

Each image is decoded as the annotation job decodes it (by content, EXIF upright) and handed to a
detector as the job hands it over (gray, or the BGR image to a detector that uses colour), with the
detector's default settings unless ``--detectors`` sets some (``mtcnn:min_size=30,max_side=480``).

* ``ytf``: the YouTube Faces frames of ../shared (``ytf_frames_kaggle15.csv``, labels in image
  pixels). A frame counts as detected when the box that :func:`facepipe.faces.framing.match_face`
  picks for the two labelled eye centres (the rule training uses: a box holding their midpoint,
  the nearest) holds both of them. Also: boxes beyond that face (``extra_boxes``; the frames show
  one labelled person, so mostly false positives), the median box side in interocular distances
  (how the detector frames a face: models trained on one detector's crops expect its framing)
  and, for a detector with landmarks, the eye landmarks' error in interocular distances.
* ``fer``: FER2013 ``PublicTest`` faces written as photos exactly as
  ``bench/emotion_in_the_wild.py`` writes them (:func:`emotion_framing.make_photo`, 3x cubic upscale
  in a grey border); found = at least one box, as that benchmark counts.
* ``photos``: the 190 real photos of ``../shared/data/images/faces`` (nearly all with one face):
  photos with 0, 1 and 2+ boxes, and boxes beyond one per photo.
* ``no_face``: generated images without a face (gradients, noise, smoothed noise, stripes,
  checkerboards, random shapes; gray and colour, 160-480 px; seeded) and background crops of the
  YTF frames (strips of the frame well away from the labelled face; rarely, one could hold another
  person): every box is a false positive.
* speed: milliseconds per ``detect`` call (decode excluded) over all the images above, with OpenCV
  on all cores (``--threads``, as ``facepipe.predict`` runs); on the 190 photos with one OpenCV
  thread (as one decode/detect task of the job runs); and on those photos upscaled to a 1280-px
  longer side (detection runs on its 640-px downscale).

Prints progress, then one JSON line last; writes the table, the command and that line to
``--output`` (default ``bench/results/detectors.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from emotion_framing import DEFAULT as FER_DEFAULT, make_photo  # noqa: E402  (the photos emotion_in_the_wild annotates)

SHARED = REPO.parent / "shared" / "data"
YTF = SHARED / "keypoints" / "ytf_frames"
RESULTS = Path(__file__).resolve().parent / "results" / "detectors.md"
NO_FACE_KINDS = ("gradient", "noise", "clouds", "stripes", "checkers", "shapes")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detectors", nargs="+", default=None, metavar="NAME[:k=v,...]",
                   help="detectors to measure, each with optional settings (default: every registered one, default settings)")
    p.add_argument("--ytf", default=str(YTF / "ytf_frames_kaggle15.csv"), help="YTF frames labels CSV (default: %(default)s)")
    p.add_argument("--fer", default=str(FER_DEFAULT.resolve()), help="FER2013 CSV (default: %(default)s)")
    p.add_argument("--photos", default=str(SHARED / "images" / "faces"), help="folder of real photos (default: %(default)s)")
    p.add_argument("--no-face", type=int, default=300, help="generated no-face images (default: %(default)s)")
    p.add_argument("--backgrounds", type=int, default=1000,
                   help="YTF frames to cut a background crop from, evenly spaced; those with too little background give none (default: %(default)s)")
    p.add_argument("--large", type=int, default=24, help="photos upscaled to a 1280-px side for the timing (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="at most N images per source, evenly spaced (0 = all) (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="OpenCV threads for the main pass (0 = OpenCV's default: all cores) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated no-face images (default: %(default)s)")
    p.add_argument("--output", default=str(RESULTS), help="Markdown file to write (default: %(default)s)")
    return p


def parse_detector(spec: str):
    """``name`` or ``name:key=value,key=value`` → a detector config (values parsed as JSON, else text)."""
    from facepipe.faces.detect import detector_config

    name, _, rest = spec.partition(":")
    fields = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return detector_config(name, **fields)


def _spaced(n: int, limit: int) -> np.ndarray:
    return np.arange(n) if not limit or limit >= n else np.linspace(0, n - 1, limit).round().astype(int)


# --- sources: (key, image as the job decodes it, gray, truth) ------------------------------------


def ytf_frames(csv: Path, limit: int):
    import pandas as pd

    from facepipe.faces.decode import decode_image

    rows = pd.read_csv(csv)
    for i in _spaced(len(rows), limit):
        r = rows.iloc[i]
        eyes = np.array([[r["right_eye_center_x"], r["right_eye_center_y"]], [r["left_eye_center_x"], r["left_eye_center_y"]]], np.float64)
        if not np.isfinite(eyes).all():
            continue
        dec = decode_image((csv.parent / "frames" / r["image"]).read_bytes())
        yield r["image"], dec.image, dec.gray, eyes


def fer_photos(csv: Path, limit: int):
    from facepipe.data import read_table

    table = read_table(csv)
    faces = table.images[table.usage == "PublicTest"]
    for i in _spaced(len(faces), limit):
        photo = make_photo(faces[i])
        yield int(i), photo, photo, None


def real_photos(folder: Path, limit: int):
    from facepipe.faces.decode import decode_image

    files = sorted(p for p in folder.iterdir() if p.is_file())
    for i in _spaced(len(files), limit):
        dec = decode_image(files[i].read_bytes())
        yield files[i].name, dec.image, dec.gray, None


def generated_no_face(n: int, seed: int):
    """Seeded images with no face: one of :data:`NO_FACE_KINDS`, gray or colour, 160-480 px."""
    import cv2

    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = NO_FACE_KINDS[i % len(NO_FACE_KINDS)]
        h, w = (int(v) for v in rng.integers(160, 481, 2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ch = 3 if rng.random() < 0.5 else 1
        planes = []
        for _ in range(ch):
            if kind == "gradient":
                a = rng.uniform(0, 2 * np.pi)
                v = np.cos(a) * xx + np.sin(a) * yy
                img = (v - v.min()) / max(float(np.ptp(v)), 1.0) * rng.uniform(120, 255)
            elif kind == "noise":
                img = rng.uniform(0, 255, (h, w))
            elif kind == "clouds":
                img = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(2, 20))
                img = (img - img.min()) / max(float(np.ptp(img)), 1e-6) * 255
            elif kind == "stripes":
                a, f = rng.uniform(0, np.pi), rng.uniform(0.02, 0.3)
                img = 127.5 + 127.5 * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy))
            elif kind == "checkers":
                c = int(rng.integers(4, 40))
                img = (((xx // c) + (yy // c)) % 2) * rng.uniform(100, 255)
            else:
                img = np.full((h, w), rng.uniform(0, 255), np.float32)
            planes.append(img.astype(np.float32))
        img = np.dstack(planes) if ch == 3 else planes[0]
        if kind == "shapes":
            img = np.ascontiguousarray(img.astype(np.uint8))
            for _ in range(int(rng.integers(3, 12))):
                color = tuple(int(v) for v in rng.integers(0, 256, ch))
                x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
                r = int(rng.integers(5, max(6, min(h, w) // 3)))
                shape = rng.integers(0, 4)
                if shape == 0:
                    cv2.circle(img, (x, y), r, color, -1)
                elif shape == 1:
                    cv2.ellipse(img, (x, y), (r, int(r * rng.uniform(0.3, 1.5))), float(rng.uniform(0, 180)), 0, 360, color, -1)
                elif shape == 2:
                    cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(5, r + 6))), color, -1)
                else:
                    cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), color, int(rng.integers(1, 8)))
        img = np.clip(img, 0, 255).astype(np.uint8)
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        yield f"{kind}_{i:04d}", img, gray, None


def ytf_backgrounds(csv: Path, n: int):
    """The largest strip of each frame that stays 3/4 of the labelled points' extent (brows to lip)
    away from them, which clears the forehead, chin and ears, when it is at least 48 px both ways."""
    import cv2
    import pandas as pd

    from facepipe.faces.decode import decode_image

    rows = pd.read_csv(csv)
    xs = [c for c in rows.columns if c.endswith("_x")]
    for i in _spaced(len(rows), n):
        r = rows.iloc[i]
        px = r[xs].to_numpy(np.float64)
        py = r[[c[:-2] + "_y" for c in xs]].to_numpy(np.float64)
        if not np.isfinite(px).any():
            continue
        dec = decode_image((csv.parent / "frames" / r["image"]).read_bytes())
        h, w = dec.gray.shape
        x0, x1, y0, y1 = np.nanmin(px), np.nanmax(px), np.nanmin(py), np.nanmax(py)
        s = 0.75 * max(x1 - x0, y1 - y0)
        x0, x1, y0, y1 = int(x0 - s), int(np.ceil(x1 + s)), int(y0 - s), int(np.ceil(y1 + s))
        strips = [(0, 0, max(0, x0), h), (min(w, x1), 0, w, h), (0, 0, w, max(0, y0)), (0, min(h, y1), w, h)]
        best = max(strips, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        bx0, by0, bx1, by1 = best
        if bx1 - bx0 < 48 or by1 - by0 < 48:
            continue
        img = np.ascontiguousarray(dec.image[by0:by1, bx0:bx1])
        yield f"bg_{r['image']}", img, (img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)), None


def large_photos(folder: Path, n: int):
    import cv2

    for key, img, gray, _ in real_photos(folder, n):
        f = 1280 / max(img.shape[:2])
        big = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        yield key, big, (big if big.ndim == 2 else cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)), None


# --- measuring -----------------------------------------------------------------------------------


class Tally:
    """One detector's results on one source."""

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self.boxes = 0
        self.with_box = 0
        self.per_count: dict[int, int] = {}
        self.detected = 0
        self.extra = 0
        self.side_iod: list[float] = []
        self.eye_nme: list[float] = []
        self.labelled = False

    def add(self, found, dt: float, eyes: np.ndarray | None) -> None:
        from facepipe.faces.framing import match_face

        n = len(found.boxes)
        self.images += 1
        self.seconds += dt
        self.boxes += n
        self.with_box += n > 0
        self.per_count[min(n, 2)] = self.per_count.get(min(n, 2), 0) + 1
        if eyes is None:
            return
        self.labelled = True
        j = match_face(found.boxes, eyes)
        if j is not None:
            x, y, w, h = (float(v) for v in found.boxes[j])
            if ((eyes[:, 0] >= x) & (eyes[:, 0] <= x + w) & (eyes[:, 1] >= y) & (eyes[:, 1] <= y + h)).all():
                self.detected += 1
                iod = float(np.hypot(*(eyes[0] - eyes[1])))
                self.side_iod.append(max(w, h) / iod)
                if found.landmarks is not None:
                    self.eye_nme.append(float(np.hypot(*(found.landmarks[j, :2] - eyes).T).mean() / iod))
            else:
                j = None
        self.extra += n - (j is not None)

    def summary(self) -> dict:
        out = {"images": self.images, "boxes": self.boxes, "with_box": self.with_box,
               "ms_per_image": round(1000 * self.seconds / max(self.images, 1), 2),
               "faces_0_1_2plus": [self.per_count.get(k, 0) for k in (0, 1, 2)]}
        if self.labelled:
            out.update(detected=self.detected, detection_rate=round(self.detected / max(self.images, 1), 4), extra_boxes=self.extra,
                       box_side_iod_median=round(float(np.median(self.side_iod)), 3) if self.side_iod else None,
                       eye_landmark_nme_mean=round(float(np.mean(self.eye_nme)), 4) if self.eye_nme else None)
        return out


def measure(detectors: dict, items, threads: int, label: str) -> dict[str, Tally]:
    """Run every detector on every item (decoded once), timing each ``detect`` call."""
    import cv2

    saved = cv2.getNumThreads()
    if threads:
        cv2.setNumThreads(threads)
    tallies = {name: Tally() for name in detectors}
    t0 = time.perf_counter()
    try:
        for k, (key, image, gray, truth) in enumerate(items, 1):
            for name, det in detectors.items():
                x = image if det.wants_color else gray
                t = time.perf_counter()
                found = det.detect(x)
                tallies[name].add(found, time.perf_counter() - t, truth)
            if k % 500 == 0:
                print(f"detectors: {label}: {k} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        cv2.setNumThreads(saved)
    print(f"detectors: {label}: " + "; ".join(f"{n} {t.images} images, {t.boxes} boxes, {1000 * t.seconds / max(t.images, 1):.1f} ms/img"
                                              for n, t in tallies.items()), flush=True)
    return tallies


def _pct(a: int, b: int) -> str:
    return f"{a:,} / {b:,} ({100 * a / max(b, 1):.1f}%)"


def write_markdown(path: Path, result: dict, command: str) -> None:
    d = result["detectors"]
    lines = [
        "# Face detectors side by side (`bench/detectors.py`)",
        "",
        "What the script's docstring describes: detection on labelled real frames, on FER2013 faces as photos, boxes on real",
        "photos of one face each and on images without a face, and the time per image. Machine: "
        f"{result['cpus']} cores ({result['machine']}), {result['date']}.",
        "",
        f"    {command}",
        "",
        "| detector | YTF frames: both labelled eyes in the box | FER2013 PublicTest as photos: found | real photos: 1 box / 0 / 2+ (boxes beyond one) "
        "| no-face images: with a box (boxes) | ms per image, all cores | 1 thread | 1280-px photo |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in d.items():
        y, f, p, z = r["ytf"], r["fer"], r["photos"], r["no_face"]
        zero, one, more = p["faces_0_1_2plus"]
        lines.append(
            f"| `{r['describe']}` | {_pct(y['detected'], y['images'])} | {_pct(f['with_box'], f['images'])} | "
            f"{one} / {zero} / {more} ({p['boxes'] - p['with_box']}) | {_pct(z['with_box'], z['images'])} ({z['boxes']}) | "
            f"{r['ms_per_image']:.1f} | {r['photos_1thread']['ms_per_image']:.1f} | {r['large']['ms_per_image']:.1f} |")
    lines += ["", "| detector | YTF: boxes beyond the labelled face | YTF: box side / interocular (median) | YTF: eye landmarks' error / interocular (mean) "
              "| no-face: generated | no-face: YTF background crops |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in d.items():
        y, g, b = r["ytf"], r["no_face_generated"], r["no_face_backgrounds"]
        nme = y["eye_landmark_nme_mean"]
        lines.append(f"| {name} | {y['extra_boxes']:,} | {y['box_side_iod_median']} | {'-' if nme is None else nme} | "
                     f"{_pct(g['with_box'], g['images'])} | {_pct(b['with_box'], b['images'])} |")
    lines += ["", "    " + json.dumps(result), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(args: argparse.Namespace) -> dict:
    import cv2

    from facepipe.faces.detect import DETECTORS, get_detector

    specs = args.detectors or list(DETECTORS)
    configs = [parse_detector(s) for s in specs]
    names = [s.split(":")[0] if sum(c.name == cfg.name for c in configs) == 1 else s for s, cfg in zip(specs, configs)]
    detectors = {n: get_detector(c) for n, c in zip(names, configs)}
    for n, d in detectors.items():  # load and warm up (first calls allocate)
        d.detect(np.zeros((240, 320, 3), np.uint8))
        print(f"detectors: {n}: {d.describe()}", flush=True)
    threads = args.threads or cv2.getNumThreads()
    ytf, photos = Path(args.ytf), Path(args.photos)
    lim = args.limit
    runs = {
        "ytf": measure(detectors, ytf_frames(ytf, lim), threads, "ytf frames"),
        "fer": measure(detectors, fer_photos(Path(args.fer), lim), threads, "fer photos"),
        "photos": measure(detectors, real_photos(photos, lim), threads, "real photos"),
        "no_face_generated": measure(detectors, generated_no_face(min(args.no_face, lim or args.no_face), args.seed), threads, "generated no-face"),
        "no_face_backgrounds": measure(detectors, ytf_backgrounds(ytf, min(args.backgrounds, lim or args.backgrounds)), threads, "ytf backgrounds"),
        "photos_1thread": measure(detectors, real_photos(photos, lim), 1, "real photos, 1 thread"),
        "large": measure(detectors, large_photos(photos, min(args.large, lim or args.large)), threads, "1280-px photos"),
    }
    out = {}
    main_sets = ("ytf", "fer", "photos", "no_face_generated", "no_face_backgrounds")
    for n, d in detectors.items():
        r = {"describe": d.describe(), **{k: v[n].summary() for k, v in runs.items()}}
        gen, bg = runs["no_face_generated"][n], runs["no_face_backgrounds"][n]
        r["no_face"] = {"images": gen.images + bg.images, "with_box": gen.with_box + bg.with_box, "boxes": gen.boxes + bg.boxes}
        seconds, images = sum(runs[k][n].seconds for k in main_sets), sum(runs[k][n].images for k in main_sets)
        r["ms_per_image"] = round(1000 * seconds / max(images, 1), 2)
        out[n] = r
    result = {"bench": "detectors", "detectors": out, "threads": threads, "cpus": os.cpu_count(), "limit": lim,
              "machine": _cpu_name(), "date": time.strftime("%Y-%m-%d")}
    command = ".venv/bin/python " + " ".join(shlex.quote(os.path.relpath(a, REPO) if i == 0 else a) for i, a in enumerate(sys.argv))
    write_markdown(Path(args.output), result, command)
    print(f"detectors: wrote {args.output}", flush=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args())))
