"""Label schemas: emotion class names and keypoint point sets built from CSV column names."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: FER2013 label order (the ``emotion`` column's 0..6).
EMOTIONS: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")

#: FER2013 ``Usage`` values.
FER_USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")

#: The 30 coordinate columns of Kaggle's Facial Keypoints ``training.csv``, in file order.
KAGGLE_KEYPOINT_COLUMNS: tuple[str, ...] = tuple(
    f"{p}_{a}"
    for p in (
        "left_eye_center", "right_eye_center",
        "left_eye_inner_corner", "left_eye_outer_corner",
        "right_eye_inner_corner", "right_eye_outer_corner",
        "left_eyebrow_inner_end", "left_eyebrow_outer_end",
        "right_eyebrow_inner_end", "right_eyebrow_outer_end",
        "nose_tip",
        "mouth_left_corner", "mouth_right_corner",
        "mouth_center_top_lip", "mouth_center_bottom_lip",
    )
    for a in ("x", "y")
)


#: iBUG-68 mirror pairs (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth), for points
#: named ``p00``..``p67`` as in ``ytf_frames_68.csv``, whose names carry no side.
_IBUG68_PAIRS = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)] + [
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),
    (60, 64), (61, 63), (65, 67)]
_IBUG68_MIRROR = {f"p{a:02d}": f"p{b:02d}" for a, b in _IBUG68_PAIRS} | {f"p{b:02d}": f"p{a:02d}" for a, b in _IBUG68_PAIRS}


#: Kaggle's 15 points from iBUG-68 (``p00``..``p67``): the mapping ``ytf15_training`` and
#: ``ytf_frames_kaggle15.csv`` were made with (an eye centre is the mean of its six contour points).
IBUG68_TO_KAGGLE15: dict[str, tuple[int, ...]] = {
    "left_eye_center": tuple(range(42, 48)), "right_eye_center": tuple(range(36, 42)),
    "left_eye_inner_corner": (42,), "left_eye_outer_corner": (45,), "right_eye_inner_corner": (39,), "right_eye_outer_corner": (36,),
    "left_eyebrow_inner_end": (22,), "left_eyebrow_outer_end": (26,), "right_eyebrow_inner_end": (21,), "right_eyebrow_outer_end": (17,),
    "nose_tip": (30,), "mouth_left_corner": (54,), "mouth_right_corner": (48,), "mouth_center_top_lip": (51,), "mouth_center_bottom_lip": (57,),
}


#: The iBUG-68 point names, in iBUG order (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).
IBUG68_NAMES = tuple(f"p{i:02d}" for i in range(68))


def is_ibug68(names: list[str] | tuple[str, ...]) -> bool:
    """Whether ``names`` are the 68 iBUG points ``p00``..``p67`` (in any order)."""
    return len(names) == 68 and set(names) == set(IBUG68_NAMES)


def kaggle15_from_ibug68(points: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Points ``[..., 68, 2]`` named ``p00``..``p67`` (in any order) → Kaggle's 15 ``[..., 15, 2]``, in Kaggle's order."""
    idx = {n: i for i, n in enumerate(names)}
    missing = [f"p{i:02d}" for i in range(68) if f"p{i:02d}" not in idx]
    if missing:
        raise ValueError(f"not an iBUG-68 point set: {len(missing)} of p00..p67 missing (first {missing[0]})")
    pts = np.asarray(points, np.float64)
    return np.stack([pts[..., [idx[f"p{i:02d}"] for i in src], :].mean(-2) for src in IBUG68_TO_KAGGLE15.values()], axis=-2)


def _mirror_name(name: str) -> str | None:
    """The name of the mirrored point ('left' <-> 'right', or its iBUG-68 twin), or None if the name has no side."""
    if name in _IBUG68_MIRROR:
        return _IBUG68_MIRROR[name]
    tokens = name.split("_")
    swapped = [{"left": "right", "right": "left"}.get(t, t) for t in tokens]
    return "_".join(swapped) if swapped != tokens else None


@dataclass(frozen=True)
class KeypointSchema:
    """A named point set: x/y column pairs and horizontal-flip pairs derived from the names.

    Points are named as in Kaggle: "left" is the subject's left (the image's right side).
    A point whose name has no ``left``/``right`` token is its own mirror (e.g. ``nose_tip``).
    """

    names: tuple[str, ...]
    x_columns: tuple[str, ...] = field(repr=False)
    y_columns: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_columns(cls, columns: list[str] | tuple[str, ...]) -> "KeypointSchema":
        """Build from coordinate column names (``<point>_x`` / ``<point>_y``); other columns ignored.

        Raises ValueError when a point has only one of its two coordinates.
        """
        xs = [c[:-2] for c in columns if c.endswith("_x")]
        ys = [c[:-2] for c in columns if c.endswith("_y")]
        if set(xs) != set(ys):
            lonely = sorted(set(xs) ^ set(ys))
            raise ValueError(f"keypoint columns without their x/y partner: {lonely}")
        if len(set(xs)) != len(xs):
            raise ValueError("duplicate keypoint columns")
        return cls(tuple(xs), tuple(f"{n}_x" for n in xs), tuple(f"{n}_y" for n in xs))

    @classmethod
    def kaggle(cls) -> "KeypointSchema":
        """The 15-point Kaggle Facial Keypoints schema."""
        return cls.from_columns(KAGGLE_KEYPOINT_COLUMNS)

    @property
    def num_points(self) -> int:
        return len(self.names)

    @property
    def columns(self) -> tuple[str, ...]:
        """Coordinate columns interleaved x, y per point (the Kaggle file order)."""
        return tuple(c for pair in zip(self.x_columns, self.y_columns) for c in pair)

    @property
    def flip_permutation(self) -> np.ndarray:
        """Index array p such that after a horizontal flip, point i takes the label of point p[i].

        Raises ValueError if a point's mirror name (left<->right) is absent from the schema,
        since flipping would then mislabel it.
        """
        index = {n: i for i, n in enumerate(self.names)}
        perm = []
        for n in self.names:
            m = _mirror_name(n)
            if m is None:
                perm.append(index[n])
            elif m in index:
                perm.append(index[m])
            else:
                raise ValueError(f"point {n!r} has no mirror point {m!r}; horizontal flip is not safe")
        return np.asarray(perm, dtype=np.int64)

    @property
    def flip_pairs(self) -> list[tuple[str, str]]:
        """The (left, right) name pairs that swap under a horizontal flip."""
        perm = self.flip_permutation
        return [(self.names[i], self.names[j]) for i, j in enumerate(perm) if i < j]

    def to_dict(self) -> dict:
        return {"names": list(self.names)}

    @classmethod
    def from_names(cls, names: list[str]) -> "KeypointSchema":
        return cls(tuple(names), tuple(f"{n}_x" for n in names), tuple(f"{n}_y" for n in names))
