"""Fit the 3-D mean face that head pose is solved against (facepipe/faces/mean_face.json) and report the fit.

    python bench/mean_face.py --labels ../shared/data/keypoints/ytf_frames/ytf_frames_68.csv \
        --write facepipe/faces/mean_face.json        # = make mean-face

Fitted on the training people of the photo split only (the same person-disjoint split the keypoint
models use), by rigid factorisation (:func:`facepipe.faces.pose.fit_mean_face`). Reports, on the
dev people: how well the 3-D face reprojects onto each labelled face (solvePnP, NME in interocular
units), the pose spread of the labels, and the angles of the labels' mirror images against theirs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True, help="iBUG-68 photo labels (ytf_frames_68.csv)")
    p.add_argument("--write", default=None, help="write the mean face JSON here")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (the keypoint models' default)")
    return p


def main(args: argparse.Namespace) -> dict:
    import cv2

    from facepipe.data.photos import interocular, read_photo_rows
    from facepipe.data.schema import KeypointSchema, kaggle15_from_ibug68, IBUG68_TO_KAGGLE15
    from facepipe.faces import pose

    rows = read_photo_rows(args.labels, Path(args.labels).parent / "frames", seed=args.seed)
    names = rows.names
    perm = KeypointSchema.from_names(names).flip_permutation
    train = rows.split == "train"
    face = pose.fit_mean_face(rows.points[train], names, perm)
    k15 = kaggle15_from_ibug68(face[None, :, :], names)[0]  # a mean of 3-D points: where the mapped 2-D label lies
    points = {n: [round(float(v), 3) for v in face[i]] for i, n in enumerate(names)}
    points |= {n: [round(float(v), 3) for v in k15[i]] for i, n in enumerate(IBUG68_TO_KAGGLE15)}
    doc = {"about": "3-D mean face (model units ~ mm, eye centres 63 apart): x image right, y down, z away from the camera. "
                    "Fitted by bench/mean_face.py from the training people of ytf_frames_68.csv (research-only data; see "
                    "facepipe/weights/keypoints/README.md).", "points": points}
    if args.write:
        Path(args.write).write_text(json.dumps(doc, indent=1) + "\n")
        pose.mean_face.cache_clear()
    # reprojection on the dev people, through the same solver head_pose uses
    dev = np.flatnonzero(rows.split == "val")
    errs, angles, mirrored = [], [], []
    for i in dev:
        p = rows.points[i].astype(np.float64)
        w, h = 2 * int(np.ceil(p[:, 0].max())) + 2, 2 * int(np.ceil(p[:, 1].max())) + 2  # labels carry no size: a frame holding them
        cam = pose.camera_matrix(w, h)
        solved = pose.solve_pose(face, p, cam)
        if solved is None:
            continue
        rot, rvec, tvec = solved
        proj = cv2.projectPoints(face, rvec, tvec, cam, None)[0][:, 0]
        errs.append(np.hypot(*(proj - p).T).mean() / interocular(p[None], names)[0])
        angles.append(pose.angles_from_rotation(rot))
        m = p[perm].copy()
        m[:, 0] = (w - 1) - m[:, 0]
        mirrored.append(pose.angles_from_rotation(pose.solve_pose(face, m, cam)[0]))
    errs, angles, mirrored = np.array(errs), np.array(angles), np.array(mirrored)
    result = {
        "bench": "mean_face", "labels": args.labels, "train_faces": int(train.sum()), "dev_faces": int(len(dev)), "solved": int(len(errs)),
        "reprojection_nme_mean": round(float(errs.mean()), 4), "reprojection_nme_median": round(float(np.median(errs)), 4),
        "label_pose_deg": {n: {"median": round(float(np.median(angles[:, j])), 2), "p5": round(float(np.percentile(angles[:, j], 5)), 2),
                               "p95": round(float(np.percentile(angles[:, j], 95)), 2)} for j, n in enumerate(pose.POSE_NAMES)},
        "mirror_residual_deg": {n: round(float(np.abs(mirrored[:, j] - (1 if n == "pitch" else -1) * angles[:, j]).max()), 4)
                                for j, n in enumerate(pose.POSE_NAMES)},
        "model_depth_nose_tip_mm": round(float(face[names.index("p30"), 2] - face[[names.index(f"p{i}") for i in range(36, 48)], 2].mean()), 1),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
