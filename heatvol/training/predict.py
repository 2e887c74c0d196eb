"""Prediction and evaluation: class probabilities of a dataset (:func:`predict`, also the
validation of :func:`heatvol.training.train`) and a checkpoint on a split of a pose store
(:func:`evaluate_checkpoint`, ``heatvol test``).

    from heatvol.training import evaluate_checkpoint
    res = evaluate_checkpoint("penn.h5", "runs/penn/best.pt", split="test", num_clips=10,
                              flip=True)
    res["top1"], res["per_class"], res["confusion_png"]

PoseC3D's test protocol: ``num_clips`` clips per sequence by deterministic uniform sampling,
subject-centred crop, resize to the test size, render; with ``flip`` also the mirrored volume
(:func:`heatvol.transforms.flip_volume`); the softmax is averaged over clips and flips. Graph
models get the same clips as coordinates (mirrored by :func:`heatvol.skeleton.flip_skeleton`
inside :class:`heatvol.data.SkeletonDataset`).

The result holds the per-sample ``scores`` (averaged probabilities, [N, classes]) with their
``names`` and ``labels``, so streams can be fused later (:mod:`heatvol.training.ensemble`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..data import PoseDataset, StepRenderer, model_input
from ..metrics import compute_metrics
from .checkpoint import load_checkpoint
from .config import ConfigError, TrainConfig
from .confusion import save_confusion_png
from .runtime import make_loader, resolve_device, resolve_render_device
from .setup import (build_model, is_gcn, make_dataset, make_step_renderer, open_store,
                    store_classes)

__all__ = ["predict", "evaluate_checkpoint"]


@torch.no_grad()
def predict(model, dataset: PoseDataset, *, device, batch_size: int = 8, workers: int = 0,
            flip: bool = False, renderer: StepRenderer | None = None, amp: bool = True,
            channels_last: bool = True, progress: bool = False, desc: str = "test"):
    """Class probabilities of every sample: softmax averaged over its clips (and their
    horizontal flips). Where the flip happens: a dataset made with ``flip=True``
    (:class:`SkeletonDataset`, or :class:`PoseDataset` rendering on the CPU) already holds the
    mirrored clips, rendered by the kernels in the same pass; keypoint batches are flipped by
    the step renderer (``renderer(..., flip=True)``, same kernels); only volumes of a dataset
    made without ``flip`` are mirrored here (``flip_volume``, the same values). Returns
    (probs float64 [N, C], labels int64 [N])."""
    from ..progress import progress as progress_display
    from ..transforms import flip_volume

    was_training = model.training
    model.eval()
    device = torch.device(device)
    cuda = device.type == "cuda"
    loader = make_loader(dataset, None, batch_size=batch_size, workers=workers, drop_last=False,
                         pin=cuda, seed=0)
    probs, labels = [], []
    for batch in progress_display(loader, desc=desc, unit="batch", enabled=progress):
        # [B, clips, C, T, H, W] volumes or [B, clips, M, T, V, C] skeletons
        volumes = "skeleton" not in batch
        step_flip = flip and "keypoints" in batch
        if step_flip:  # [2, B, clips, C, T, H, W]: the kernels' flip
            x = renderer(batch["keypoints"], batch["scores"], device, flip=True)
            b, clips = x.shape[1:3]
            x = x.flatten(0, 2)
            views = [None, None]
        else:
            x = model_input(batch, device, renderer)
            b, clips = x.shape[:2]
            x = x.flatten(0, 1)
            views = [x]
            if flip and volumes and not getattr(dataset, "flip", False):
                views.append(flip_volume(x, dataset.layout, dataset.mode))
            x = torch.cat(views) if len(views) > 1 else x
        if cuda and channels_last and volumes:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
            logits = model(x)
        p = logits.float().softmax(-1).reshape(len(views), b, clips, -1).mean(dim=(0, 2))
        probs.append(p.double().cpu().numpy())
        labels.append(batch["label"].numpy())
    model.train(was_training)
    ncls = getattr(getattr(model, "cls_head", None), "fc_cls", None)
    ncls = ncls.out_features if ncls is not None else 0
    if not probs:
        return np.zeros((0, ncls)), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64)


def _test_names(store, split: str | None, cfg: TrainConfig) -> tuple[str | None, list[str]]:
    """(split, labelled names): the run's validation split, else "test", by default; all
    sequences when the store has no splits."""
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
    return split, [n for n in names if n in store and store[n].label >= 0]


def evaluate_checkpoint(poses, checkpoint, *, split: str | None = None, num_clips: int = 10,
                        flip: bool = False, batch_size: int = 4, device: str = "auto",
                        render_device: str = "auto", workers: int = 0, confusion_png=None,
                        progress: bool = False, render: str | None = None,
                        volume_dtype: str | None = None, size=None) -> dict:
    """Evaluate ``checkpoint`` on ``split`` of the store ``poses`` (default split: the run's
    validation split, else "test"). ``device``: the torch device; ``render_device``: where
    the test volumes are rendered (auto | cpu | cuda; ``render=`` with cpu | gpu | auto is
    its former name). ``volume_dtype``: what the CPU-rendered volumes reach the model in
    (default: the run's ``volume_dtype`` setting). ``size``: the test volumes' (H, W) or one
    int (default: the run's ``test_size``, else its ``size``). Returns
    :func:`heatvol.metrics.compute_metrics`'s dict plus the
    settings and ``confusion_png`` (written beside the checkpoint unless a path is given)."""
    if render is not None:  # the former name, kept for one release
        warnings.warn("evaluate_checkpoint(render=...) is deprecated; use render_device= "
                      "('gpu' is now 'cuda')", DeprecationWarning, stacklevel=2)
        render_device = "cuda" if render == "gpu" else render
    ckpt = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_checkpoint_dict(ckpt["config"])
    if volume_dtype is not None:
        cfg.volume_dtype = volume_dtype
    if size is not None:
        cfg.test_size = size
    cfg.check()
    store = open_store(poses)
    if store.layout.name != ckpt["layout"]:
        raise ConfigError(f"{poses}: layout {store.layout.name!r}, the checkpoint was trained on "
                          f"{ckpt['layout']!r}")
    classes = ckpt.get("classes") or store_classes(store)
    split, names = _test_names(store, split, cfg)
    if num_clips < 1:
        raise ConfigError(f"--num-clips must be at least 1, got {num_clips}")
    dev = resolve_device(device)
    gcn = is_gcn(cfg.model)
    place = None if gcn else resolve_render_device(render_device, dev)
    model = build_model(cfg, layout=store.layout, num_classes=len(classes))
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    if dev.type == "cuda" and cfg.channels_last and not gcn:
        model = model.to(memory_format=torch.channels_last_3d)
    dataset = make_dataset(cfg, store, names, gcn=gcn, train=False, render_device=place,
                           num_clips=num_clips, flip=flip, device=dev)
    renderer = make_step_renderer(cfg, store.layout, train=False) if place == "cuda" else None
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
                "size": list(cfg.test_size or cfg.size), "step": ckpt.get("step"),
                "render_device": place, "device": str(dev), "confusion_png": str(confusion_png),
                "names": list(names), "labels": labels.tolist(), "scores": probs.tolist()})
    return res
