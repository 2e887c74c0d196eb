"""A confusion matrix as a PNG (``heatvol test``, ``heatvol ensemble --confusion``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_confusion_png"]


def save_confusion_png(confusion, classes: list[str], path: str | os.PathLike,
                       title: str = "") -> Path:
    """A row-normalised confusion matrix (true class down, prediction across) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    c = len(classes)
    side = min(max(4.0, 0.45 * c + 2.5), 40.0)
    fig = Figure(figsize=(side, side), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if c <= 60:
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels(classes, rotation=90, fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
