"""Classification metrics of predicted class probabilities: top-1, top-5, mean-class and
per-class accuracy, and the confusion matrix. NumPy only; the bottom of the training stack."""

from __future__ import annotations

import numpy as np

__all__ = ["compute_metrics"]


def compute_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """top-1, top-5 (top-k with k = min(5, classes)), mean-class accuracy (over the classes
    present in ``labels``), per-class accuracy {name: acc or None when absent}, and the
    confusion matrix (rows = true class, columns = predicted; list of lists of ints)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = len(labels), len(classes)
    if n == 0:
        return {"num_samples": 0, "top1": 0.0, "top5": 0.0, "mean_class": 0.0,
                "per_class": {name: None for name in classes},
                "confusion": [[0] * c for _ in range(c)]}
    pred = probs.argmax(axis=1)
    k = min(5, probs.shape[1])
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top1 = float((pred == labels).mean())
    top5 = float((topk == labels[:, None]).any(axis=1).mean())
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    per_class = {}
    accs = []
    for i, name in enumerate(classes):
        if support[i]:
            acc = float(confusion[i, i] / support[i])
            per_class[name] = acc
            accs.append(acc)
        else:
            per_class[name] = None
    return {"num_samples": int(n), "top1": top1, "top5": top5,
            "mean_class": float(np.mean(accs)) if accs else 0.0, "per_class": per_class,
            "confusion": confusion.tolist()}
