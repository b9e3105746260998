"""Every matplotlib figure facepipe writes: exploration, training curves, evaluation, annotation.

Functions take arrays and a path, write one PNG and return the path; none computes metrics.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facepipe import storage  # noqa: E402
from facepipe.data.schema import EMOTIONS  # noqa: E402


def _save(fig, path: str | os.PathLike) -> Path | str:
    """Save and close ``fig`` as ``path``: a local path, or an object-store URI (one PUT)."""
    if storage.is_uri(path):
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format=os.fspath(path).rsplit(".", 1)[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
        return storage.write_bytes(path, buf.getvalue())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return (n + cols - 1) // cols, cols


# --- exploration -------------------------------------------------------------------------------


def class_distribution(counts: dict[str, dict[str, int]], path: str | os.PathLike, title: str = "Emotion classes") -> Path:
    """Grouped bars: rows per class, one group per split."""
    splits = list(counts)
    classes = list(next(iter(counts.values())))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(classes))
    for i, s in enumerate(splits):
        vals = [counts[s][c] for c in classes]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=s)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, classes)
    ax.set_ylabel("rows")
    ax.set_title(title)
    if len(splits) > 1:
        ax.legend()
    return _save(fig, path)


def image_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    keypoints: np.ndarray | None = None,
    true_keypoints: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    title_colors: Sequence[str] | None = None,
    point_names: Sequence[str] | None = None,
    cols: int = 6,
    suptitle: str | None = None,
) -> Path:
    """Grid of grayscale images, optionally with keypoints (red; true ones green) and titles.

    With ``point_names`` the points of the first image are labelled with their names.
    """
    n = len(images)
    rows, cols = _grid(n, cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        if true_keypoints is not None:
            t = true_keypoints[i]
            ax.scatter(t[:, 0], t[:, 1], s=10, c="lime", marker="o", linewidths=0)
        if keypoints is not None:
            k = keypoints[i]
            ax.scatter(k[:, 0], k[:, 1], s=10, c="red", marker="x", linewidths=1)
            if point_names is not None and i == 0:
                for (x, y), name in zip(k, point_names):
                    if np.isfinite(x):
                        ax.annotate(name.replace("_", " "), (x, y), fontsize=4, color="yellow", xytext=(2, 2), textcoords="offset points")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8, color=(title_colors[i] if title_colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def missing_keypoints(missing: dict[str, int], total: int, path: str | os.PathLike) -> Path:
    """Horizontal bars: rows missing each keypoint."""
    names = list(missing)
    vals = [missing[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    bars = ax.barh(names, vals, color="tab:orange")
    ax.bar_label(bars, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"rows missing the point (of {total})")
    ax.set_title("Missing keypoints")
    return _save(fig, path)


def pixel_histogram(images: np.ndarray, path: str | os.PathLike) -> Path:
    """Histogram of pixel intensities over all images."""
    counts = np.bincount(images.reshape(-1), minlength=256)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(np.arange(256), counts, width=1.0, color="tab:gray")
    ax.set_xlabel("pixel intensity")
    ax.set_ylabel("pixels")
    ax.set_title(f"Pixel intensities (mean {images.mean():.1f}, std {images.std():.1f})")
    return _save(fig, path)


# --- training and evaluation ---------------------------------------------------------------------


def training_curves(history: list[dict], path: str | os.PathLike, metric: str | None = None) -> Path:
    """Loss per epoch (train and validation) and one validation metric beside it."""
    epochs = [h["epoch"] for h in history]
    ncols = 2 if metric else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.5), squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    losses = [h[k] for h in history for k in ("train_loss", "val_loss") if h.get(k) is not None]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        # A first epoch 50x above the rest (the keypoint MSE) flattens a linear axis to a line.
        ax.set_yscale("log")
    ax.legend()
    ax.set_title("Loss")
    if metric:
        ax = axes[0, 1]
        ax.plot(epochs, [h.get(metric) for h in history], "o-", color="tab:green")
        ax.set_xlabel("epoch")
        ax.set_title(metric.replace("_", " "))
    return _save(fig, path)


def confusion_matrix(cm: np.ndarray, path: str | os.PathLike, classes: Sequence[str] = EMOTIONS, normalize: bool = True) -> Path:
    """Heat map of a confusion matrix (rows = true class); row-normalised with counts shown."""
    cm = np.asarray(cm)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            txt = f"{shown[i, j]:.2f}\n({cm[i, j]})" if normalize else str(cm[i, j])
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
    return _save(fig, path)


def per_keypoint_rmse(rmse: dict[str, float], path: str | os.PathLike, overall: float | None = None) -> Path:
    """Horizontal bars: RMSE in pixels per keypoint, with the overall RMSE as a line."""
    names = list(rmse)
    vals = [rmse[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
    bars = ax.barh(names, vals, color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    if overall is not None:
        ax.axvline(overall, color="red", linestyle="--", label=f"overall {overall:.2f} px")
        ax.legend(loc="lower right")
    ax.invert_yaxis()
    ax.set_xlabel("RMSE (pixels)")
    ax.set_title("Per-keypoint RMSE")
    return _save(fig, path)


def bar_counts(counts: dict[str, int], path: str | os.PathLike, title: str, xlabel: str = "", color: str = "tab:blue") -> Path:
    """Simple labelled bar chart of counts (status counts, emotions, faces per image)."""
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(counts) + 2), 3.5))
    bars = ax.bar([str(k) for k in counts], list(counts.values()), color=color)
    ax.bar_label(bars, fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _save(fig, path)


def emotion_timeline(rows, path: str | os.PathLike, title: str, max_tracks: int = 6) -> Path | str:
    """A video's emotion probabilities over time, one stacked panel per face track (the longest
    ``max_tracks``). ``rows``: its ``ok`` rows with ``timestamp_s``, ``track_id`` and ``prob_*``."""
    probs = [c for c in rows.columns if c.startswith("prob_")]
    tracks = rows["track_id"].value_counts().index[:max_tracks].sort_values()
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(tracks), 1, figsize=(9, 1.9 * len(tracks) + 0.6), sharex=True, squeeze=False)
    steps = np.diff(np.unique(rows["timestamp_s"].to_numpy(float)))
    step = float(np.median(steps)) if len(steps) else 0.2  # a sampled frame lasts until the next
    for ax, track in zip(axes[:, 0], tracks):
        g = rows[rows["track_id"] == track].sort_values("timestamp_s")
        t = g["timestamp_s"].to_numpy(float)
        ys = [np.append(g[c].to_numpy(float), g[c].iloc[-1]) for c in probs]
        ax.stackplot(np.append(t, t[-1] + step), *ys, labels=[c[5:] for c in probs], colors=colors[: len(probs)], step="post")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {int(track)}")
        ax.margins(x=0)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    more = rows["track_id"].nunique() - len(tracks)
    fig.suptitle(title + (f" ({more} shorter tracks not shown)" if more > 0 else ""), fontsize=10)
    return _save(fig, path)
