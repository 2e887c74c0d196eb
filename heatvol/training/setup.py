"""What a run is made of: its pose store, split names and classes, what the model reads
(coordinates or volumes, decided once by :func:`is_gcn`), its datasets and its model."""

from __future__ import annotations

from pathlib import Path

from ..data import PoseDataset, SkeletonDataset, StepRenderer
from ..layouts import layout as get_layout
from .config import ConfigError, TrainConfig

__all__ = ["is_gcn", "check_inputs", "open_store", "check_store", "store_classes", "split_names",
           "run_names", "resolve_volume_dtype", "make_dataset", "make_step_renderer",
           "build_model"]


def is_gcn(model_name: str) -> bool:
    """True for the graph models (coordinates in), False for the 3D CNNs (volumes in).

    The one place that decides it; everything else is given the answer."""
    from .. import models

    if model_name not in models.MODELS:
        raise ConfigError(f"unknown model {model_name!r}; known: {', '.join(models.MODELS)}")
    return model_name in models.GCN_MODELS


def check_inputs(cfg: TrainConfig, gcn: bool) -> None:
    """The settings of the inputs the model reads: ``modality`` for a graph model (and no
    rendering on a GPU), ``mode`` for a 3D CNN (checked by :class:`TrainConfig`)."""
    if gcn:
        from ..skeleton import MODALITIES

        if cfg.modality not in MODALITIES:
            raise ConfigError(f"--modality must be one of {', '.join(MODALITIES)}; got "
                              f"{cfg.modality!r}")
        if cfg.render_device == "cuda":
            raise ConfigError(f"--render-device cuda renders heatmap volumes; {cfg.model} is a "
                              f"graph model that reads joint coordinates (leave "
                              f"--render-device out)")


#: Stores up to this size are read into the main process's memory once (fast when there are
#: no workers); larger ones (Kinetics-400 is ~21 GiB) are read per sample, so the main
#: process's memory does not grow with the dataset. The samples are the same either way.
IN_MEMORY_MAX_BYTES = 1 << 30


def open_store(path):
    """The pose store at ``path`` (read into memory when it is small); a bad store is a
    ConfigError."""
    from ..parts import PartFiles
    from ..store import PoseStore, StoreError

    files = [Path(path)] + [p for _, p in PartFiles(path).list()]
    size = sum(p.stat().st_size for p in files if p.is_file())
    try:
        return PoseStore(path, in_memory=size <= IN_MEMORY_MAX_BYTES)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None


def check_store(cfg: TrainConfig, store, gcn: bool) -> None:
    """The store suits the model: volumes need 2D keypoints; ``align`` needs 3D skeletons of
    a layout with spine and shoulder joints."""
    if store.dims != 2 and not gcn:
        raise ConfigError(f"{store.path}: heatmap volumes need 2D keypoints; this store is "
                          f"{store.dims}D (train a graph model on 3D: --model msg3d, dualhead or "
                          f"stgcn)")
    if cfg.align and not (gcn and store.dims == 3 and get_layout(store.layout).spine):
        raise ConfigError(f"{store.path}: align turns 3D skeletons of a layout with spine and "
                          f"shoulder joints (ntu25, kinect20); this store is {store.dims}D "
                          f"{store.layout} (drop --set align=true)")


def split_names(store, split: str | None, what: str) -> list[str]:
    """The names of ``split`` that the store holds ([] for None); ``what`` names the split's
    role in the error of a split the store lacks."""
    if split is None:
        return []
    if split not in store.splits:
        raise ConfigError(f"{store.path}: no {what} split named {split!r} (splits: "
                          f"{', '.join(store.splits) or 'none'})")
    return [n for n in store.split(split) if n in store]


def store_classes(store) -> list[str]:
    """The store's class names, or "0".."max label" when it has none."""
    if store.classes:
        return list(store.classes)
    top = int(store.labels.max()) if len(store) else -1
    return [str(i) for i in range(top + 1)]


def run_names(cfg: TrainConfig, store) -> tuple[list[str], str | None, list[str]]:
    """(training names, validation split or None, validation names): labelled sequences only;
    ``val_split="auto"`` is "val", else "test", else none."""
    if store.splits:
        train_names = split_names(store, cfg.train_split, "training")
    else:
        train_names = store.names()
    train_names = [n for n in train_names if store[n].label >= 0]
    val_split = cfg.val_split
    if val_split == "auto":
        val_split = "val" if "val" in store.splits else "test" if "test" in store.splits else None
    val_names = [n for n in split_names(store, val_split, "validation") if store[n].label >= 0]
    if not train_names:
        raise ConfigError(f"{store.path}: no labelled sequences to train on")
    return train_names, val_split, val_names


def resolve_volume_dtype(cfg: TrainConfig, device) -> str:
    """The dtype workers render volumes in: ``cfg.volume_dtype``, with "auto" = float16 when
    the model runs on a CUDA device under ``amp`` (its bf16 autocast rounds the input to 8
    significant bits anyway; float16 keeps 11, and halves the bytes through the loader,
    pinned memory and the host-to-device copy), else float32 (what a float32 model consumes:
    converting on the CPU would only add a pass)."""
    if cfg.volume_dtype != "auto":
        return cfg.volume_dtype
    return "float16" if str(device).startswith("cuda") and cfg.amp else "float32"


def make_dataset(cfg: TrainConfig, store, names, *, gcn: bool, train: bool,
                 render_device: str | None, num_clips: int = 1, flip: bool = False,
                 device=None):
    """The run's dataset: coordinates for a GCN (``render_device`` None), volumes for a 3D CNN
    rendered in the workers (``render_device`` "cpu", in :func:`resolve_volume_dtype` for the
    model's ``device``, default the CPU) or keypoints rendered in the step ("cuda"). ``flip``
    (testing): the dataset mirrors every clip (skeletons, or volumes by the kernels' test-time
    flip); for keypoints the step renderer does it."""
    if gcn:
        return SkeletonDataset(store, names, train=train, clip_len=cfg.clip_len,
                               modality=cfg.modality, num_clips=num_clips,
                               max_persons=cfg.max_persons, rotate=cfg.rotate if train else 0,
                               scale=cfg.scale if train else 0, align=cfg.align,
                               flip=flip and not train,
                               seed=cfg.seed)
    return PoseDataset(store, names, train=train, clip_len=cfg.clip_len,
                       size=cfg.size if train else (cfg.test_size or cfg.size), mode=cfg.mode,
                       render_device=render_device, num_clips=num_clips,
                       max_persons=cfg.max_persons,
                       sigma=cfg.sigma, seed=cfg.seed, area_range=cfg.area_range,
                       flip=flip and not train,
                       volume_dtype=resolve_volume_dtype(cfg, device or "cpu"))


def make_step_renderer(cfg: TrainConfig, layout, *, train: bool):
    """The in-step renderer (``render_device`` "cuda") at the training or the test size; CUDA
    kernels, or the host kernels of ``cfg.step_render_device`` (the testing stand-in)."""
    return StepRenderer(size=cfg.size if train else (cfg.test_size or cfg.size), mode=cfg.mode,
                        layout=layout, sigma=cfg.sigma,
                        render_device=cfg.step_render_device or "cuda")


def build_model(cfg: dict | TrainConfig, *, layout, num_classes: int):
    """The run's model, untrained: a graph model reads 3 coordinates per joint and
    ``max_persons`` persons; a 3D CNN reads one channel per joint (``mode`` joint) or limb."""
    from .. import models

    cfg = cfg if isinstance(cfg, dict) else cfg.to_dict()
    lay = get_layout(layout)
    kw = dict(cfg.get("model_kwargs") or {})
    if is_gcn(cfg["model"]):
        kw.setdefault("num_person", cfg["max_persons"])
        return models.build(cfg["model"], layout=lay, num_classes=num_classes, in_channels=3,
                            **kw)
    channels = lay.channels(cfg["mode"])
    return models.build(cfg["model"], layout=lay, num_classes=num_classes, in_channels=channels,
                        **kw)
