"""Training, evaluation and score fusion of action-recognition models on a pose store.

    from heatvol.training import TrainConfig, train, evaluate_checkpoint
    summary = train(TrainConfig(poses="penn.h5", model="x3d", size=32, clip_len=32,
                                work_dir="runs/penn"))
    res = evaluate_checkpoint("penn.h5", "runs/penn/best.pt", split="test", num_clips=10)

Modules (each imports only the ones above it in this list, never the other way):

- ``config``: :class:`TrainConfig` (every setting), :class:`ConfigError`, what resume keeps;
- ``checkpoint``: atomic checkpoint files, :func:`load_checkpoint`, RNG state capture/restore;
- ``schedule``: :class:`WarmupCosine`;
- ``runtime``: torch device, where volumes are rendered, DDP processes, stop signals, loaders;
- ``log``: ``train.log``, ``log.csv``, TensorBoard;
- ``setup``: store, splits, classes, datasets, :func:`build_model`; :func:`is_gcn` decides
  once whether a model reads coordinates (graph models) or volumes (3D CNNs);
- ``confusion``: the confusion-matrix PNG;
- ``predict``: :func:`predict`, :func:`evaluate_checkpoint` (``heatvol test``);
- ``loop``: :func:`train` (``heatvol train``);
- ``ensemble``: :func:`load_result`, :func:`fuse_results` (``heatvol ensemble``).

Metrics (:func:`heatvol.metrics.compute_metrics`) sit below this package.
"""

from .checkpoint import load_checkpoint
from .config import ConfigError, RunError, TrainConfig
from .confusion import save_confusion_png
from .ensemble import fuse_results, load_result
from .loop import train
from .predict import evaluate_checkpoint, predict
from .runtime import resolve_device, resolve_render_device
from .schedule import WarmupCosine
from .setup import build_model, is_gcn

__all__ = ["TrainConfig", "ConfigError", "train", "predict", "evaluate_checkpoint",
           "load_checkpoint", "fuse_results", "load_result", "build_model", "is_gcn",
           "WarmupCosine", "resolve_device", "resolve_render_device", "save_confusion_png",
           "RunError"]
