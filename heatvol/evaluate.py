"""Evaluation: a checkpoint on a split of a pose store (``heatvol test``).

    from heatvol.evaluate import evaluate_checkpoint
    res = evaluate_checkpoint("penn.h5", "runs/penn/best.pt", split="test", num_clips=10,
                              flip=True)
    res["top1"], res["per_class"], res["confusion_png"]

PoseC3D's test protocol: ``num_clips`` clips per sequence by deterministic uniform sampling,
subject-centred crop, resize to the test size, render; with ``flip`` also the mirrored volume
(:func:`heatvol.transforms.flip_volume`); the softmax is averaged over clips and flips. Graph
models get the same clips as coordinates (mirrored by :func:`heatvol.skeleton.flip_skeleton`).

The result holds the per-sample ``scores`` (averaged probabilities, [N, classes]) with their
``names`` and ``labels``, so streams can be fused later (:mod:`heatvol.ensemble`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["compute_metrics", "save_confusion_png", "evaluate_checkpoint"]


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


def evaluate_checkpoint(poses, checkpoint, *, split: str | None = None, num_clips: int = 10,
                        flip: bool = False, batch_size: int = 4, device: str = "auto",
                        render: str = "auto", workers: int = 0, confusion_png=None,
                        progress: bool = False, render_backend: str = "cuda") -> dict:
    """Evaluate ``checkpoint`` on ``split`` of the store ``poses`` (default split: the run's
    validation split, else "test"). Returns :func:`compute_metrics`'s dict plus the settings
    and ``confusion_png`` (written beside the checkpoint unless a path is given)."""
    import torch

    from .data import StepRenderer
    from .engine import (ConfigError, TrainConfig, _classes, _dataset, _open_store,
                         build_model, is_gcn, load_checkpoint, predict, resolve_device,
                         resolve_render)

    ckpt = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict({k: v for k, v in ckpt["config"].items()
                                 if k in {f for f in TrainConfig.__dataclass_fields__}})
    store = _open_store(poses)
    if store.layout.name != ckpt["layout"]:
        raise ConfigError(f"{poses}: layout {store.layout.name!r}, the checkpoint was trained on "
                          f"{ckpt['layout']!r}")
    classes = ckpt.get("classes") or _classes(store)
    if split is None:
        split = cfg.val_split if cfg.val_split not in (None, "auto") else "test"
        if split not in store.splits and not store.splits:
            split = None
    if split is None:
        names = store.names()
    elif split not in store.splits:
        raise ConfigError(f"{store.path}: no split named {split!r} (splits: "
                          f"{', '.join(store.splits) or 'none'})")
    else:
        names = store.split(split)
    names = [n for n in names if n in store and store[n].label >= 0]
    if num_clips < 1:
        raise ConfigError(f"--num-clips must be at least 1, got {num_clips}")
    dev = resolve_device(device)
    gcn = is_gcn(cfg.model)
    place = "none" if gcn else resolve_render(render, dev, render_backend)
    model = build_model(cfg, layout=store.layout, num_classes=len(classes))
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    if dev.type == "cuda" and cfg.channels_last and not gcn:
        model = model.to(memory_format=torch.channels_last_3d)
    dataset = _dataset(cfg, store, names, train=False, render=place, num_clips=num_clips,
                       flip=flip)
    renderer = StepRenderer(size=cfg.test_size or cfg.size, mode=cfg.mode, layout=store.layout,
                            sigma=cfg.sigma, backend=render_backend) if place == "gpu" else None
    probs, labels = predict(model, dataset, device=dev, batch_size=batch_size, workers=workers,
                            flip=flip, renderer=renderer, amp=cfg.amp,
                            channels_last=cfg.channels_last, progress=progress)
    res = compute_metrics(probs, labels, classes)
    if confusion_png is None:
        confusion_png = Path(checkpoint).with_name(
            f"confusion_{Path(checkpoint).stem}_{split or 'all'}.png")
    title = (f"{Path(checkpoint).name} on {split or 'all'}: top-1 {res['top1']:.2%}, "
             f"{num_clips} clip(s){' + flip' if flip else ''}")
    save_confusion_png(res["confusion"], classes, confusion_png, title=title)
    res.update({"poses": str(poses), "checkpoint": str(checkpoint), "split": split,
                "num_clips": int(num_clips), "flip": bool(flip), "classes": list(classes),
                "model": cfg.model, "mode": None if gcn else cfg.mode,
                "modality": cfg.modality if gcn else None, "clip_len": cfg.clip_len,
                "size": cfg.test_size or cfg.size, "step": ckpt.get("step"),
                "render": place, "device": str(dev), "confusion_png": str(confusion_png),
                "names": list(names), "labels": labels.tolist(), "scores": probs.tolist()})
    return res
