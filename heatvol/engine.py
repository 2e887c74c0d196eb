"""Training and evaluation loops: PoseConv3D models on volumes rendered on the fly, and the
graph models (ST-GCN, MS-G3D, DualHead-Net) on joint coordinates.

    from heatvol.engine import TrainConfig, train
    summary = train(TrainConfig(poses="penn.h5", model="x3d", size=32, clip_len=32,
                                work_dir="runs/penn"))

What :func:`train` does (details in ``docs/training.md``):

- data: :class:`heatvol.data.PoseDataset` (3D CNNs) or :class:`heatvol.data.SkeletonDataset`
  (GCNs, ``modality`` joint / bone / joint-motion / bone-motion) through a DataLoader whose
  sampler is a :class:`heatvol.data.ResumableSampler`; volumes rendered in the workers
  (``render="cpu"``) or inside the step on the GPU (``render="gpu"``; ``"auto"`` picks gpu
  when the device is a CUDA GPU the CUDA renderer can use);
- SGD (momentum 0.9, Nesterov), linear warm-up then cosine decay per iteration
  (:class:`WarmupCosine`), weight decay, gradient-norm clipping; on CUDA bf16 autocast and
  channels-last-3d (3D CNNs); DualHead-Net's loss averages the cross-entropy of its two heads;
- checkpoints (rank 0): ``epoch_NNN.pt`` after every epoch (the newest ``keep_epochs`` kept),
  ``best.pt`` on the best validation top-1, ``last.pt`` after every epoch and whenever the run
  stops (end, ``max_steps``, Ctrl-C / SIGTERM);
- ``resume``: model, optimiser, scheduler, sampler position and every RNG (torch, CUDA, NumPy,
  Python; of every rank) come back, so the run continues exactly as if never stopped;
- a tqdm bar (loss, samples/s, data wait, ETA), ``log.csv``, ``train.log`` and TensorBoard
  (when ``torch.utils.tensorboard`` imports);
- DDP when started by ``torchrun`` (``WORLD_SIZE`` > 1): gloo on the CPU, NCCL on GPUs; each
  rank reads its share of every epoch; rank 0 logs, validates and writes checkpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import PoseDataset, ResumableSampler, SkeletonDataset, StepRenderer, model_input
from .layouts import layout as get_layout

__all__ = ["TrainConfig", "ConfigError", "WarmupCosine", "train", "predict", "load_checkpoint",
           "build_model", "is_gcn", "resolve_device", "resolve_render"]

CHECKPOINT_VERSION = 1


class ConfigError(ValueError):
    """A setting or an input makes the run impossible; one line, shown by the CLI."""


@dataclass
class TrainConfig:
    """Every setting of a training run (presets and the CLI set these fields)."""

    poses: str = "poses.h5"
    work_dir: str | None = None           # default: runs/<preset>
    preset: str | None = None
    # model and volumes
    model: str = "slowonly"
    model_kwargs: dict = field(default_factory=dict)
    mode: str = "joint"                   # 3D CNNs: joint | limb heatmaps
    modality: str = "joint"               # GCNs: joint | bone | joint-motion | bone-motion
    rotate: float | list = 0.0            # GCNs, training: random rotation up to this (radians;
                                          # 3D: one limit or three, about x, y, z)
    scale: float = 0.0                    # GCNs, training: random scaling by 1 +- this
    align: bool = False                   # GCNs, 3D: turn each sequence to one canonical view
    clip_len: int = 48
    size: int = 56
    test_size: int | None = None          # default: size
    sigma: float = 0.6
    max_persons: int = 2
    area_range: tuple = (0.56, 1.0)
    train_split: str = "train"
    val_split: str | None = "auto"        # auto: "val", else "test", else none
    # optimisation
    epochs: int = 240
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-4
    grad_clip: float | None = 40.0
    warmup_epochs: float = 0.0
    warmup_start: float = 0.1             # warm-up starts at lr * warmup_start
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    # execution
    render: str = "auto"                  # cpu | gpu | auto
    render_backend: str = "cuda"          # the step renderer's backend for render=gpu
    device: str = "auto"
    workers: int = 2
    amp: bool = True                      # bf16 autocast, CUDA only
    channels_last: bool = True            # CUDA only
    seed: int = 0
    max_steps: int | None = None
    resume: str | None = None             # a checkpoint path, or "auto" = <work_dir>/last.pt
    val_every: int = 1                    # epochs between validations (and the last); 0: none
    val_num_clips: int = 1
    val_flip: bool = False
    eval_batch_size: int | None = None
    log_every: int = 10
    keep_epochs: int = 3
    progress: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(names))}")
        data = dict(data)
        if "area_range" in data:
            data["area_range"] = tuple(data["area_range"])
        return cls(**data)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["area_range"] = list(self.area_range)
        return out


# --------------------------------------------------------------------------- schedule


class WarmupCosine:
    """Learning rate per optimiser step: linear warm-up from ``lr * warmup_start`` to ``lr``
    over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps``."""

    def __init__(self, optimizer, *, lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_start: float = 0.1, min_lr: float = 0.0):
        self.optimizer, self.lr = optimizer, float(lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.warmup_start, self.min_lr = float(warmup_start), float(min_lr)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            return self.lr * (self.warmup_start + (1 - self.warmup_start) * frac)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def apply(self) -> float:
        """Set the learning rate of the next step; returns it."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "lr": self.lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])


# --------------------------------------------------------------------------- helpers


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for but torch.cuda.is_available() is False "
                              "(no CUDA GPU or a CPU-only torch); use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def resolve_render(render: str, device: torch.device, backend: str = "cuda") -> str:
    """"cpu" or "gpu"; "auto" is gpu on a CUDA device whose CUDA renderer works."""
    if render == "auto":
        if device.type != "cuda":
            return "cpu"
        from .render import _cuda_usable

        return "gpu" if _cuda_usable() else "cpu"
    if render not in ("cpu", "gpu"):
        raise ConfigError(f"render must be cpu, gpu or auto, got {render!r}")
    if render == "gpu" and backend == "cuda":
        if device.type != "cuda":
            raise ConfigError(f"--render gpu renders each batch on the CUDA GPU inside the "
                              f"training step, but the device is {device.type} (no CUDA GPU: "
                              f"torch.cuda.is_available() is "
                              f"{torch.cuda.is_available()}); use --render cpu")
        from .render import _cuda_backend

        try:
            _cuda_backend()
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None
    return render


def is_gcn(model_name: str) -> bool:
    """True for the graph models (coordinates in), False for the 3D CNNs (volumes in)."""
    from . import models

    if model_name not in models.MODELS:
        raise ConfigError(f"unknown model {model_name!r}; known: {', '.join(models.MODELS)}")
    return model_name in models.GCN_MODELS


def build_model(cfg: dict | TrainConfig, *, layout, num_classes: int):
    from . import models

    cfg = cfg if isinstance(cfg, dict) else cfg.to_dict()
    lay = get_layout(layout)
    kw = dict(cfg.get("model_kwargs") or {})
    if is_gcn(cfg["model"]):
        kw.setdefault("num_person", cfg["max_persons"])
        return models.build(cfg["model"], layout=lay, num_classes=num_classes, in_channels=3,
                            **kw)
    channels = lay.num_joints if cfg["mode"] == "joint" else lay.num_limbs
    return models.build(cfg["model"], layout=lay, num_classes=num_classes, in_channels=channels,
                        **kw)


def _loss(net, model, x, y, label_smoothing: float):
    """Cross-entropy of the logits; for a two-headed model (DualHead-Net) the mean of the two
    heads' losses, as the official code trains it."""
    if getattr(model, "multi_head", False):
        heads = net(x, return_heads=True)
        return sum(F.cross_entropy(h.float(), y, label_smoothing=label_smoothing)
                   for h in heads) / len(heads)
    return F.cross_entropy(net(x).float(), y, label_smoothing=label_smoothing)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001  (truncated/corrupt files raise many kinds)
        raise ConfigError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())})") \
            from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConfigError(f"{path}: not a heatvol training checkpoint")
    return ckpt


def _worker_init(_worker_id: int) -> None:
    """Each worker renders single-threaded (the processes are the parallelism), with Numba's
    fork-safe "workqueue" threading layer: its GNU OpenMP layer hangs in a child forked from a
    process whose torch already ran OpenMP regions. Workers ignore SIGINT/SIGTERM: the main
    process handles them (finish the step, checkpoint, stop) and shuts the workers down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        import numba

        try:
            numba.threading_layer()
        except ValueError:  # not chosen yet in this process: choose the fork-safe one
            numba.config.THREADING_LAYER = "workqueue"
        numba.set_num_threads(1)
    except Exception:  # noqa: BLE001
        pass


def _worker_context():
    """None (fork), or "forkserver" once this process has run Numba's GNU OpenMP threading
    layer: libgomp aborts a forked child that uses it ("fork() called from a process already
    using GNU OpenMP"), e.g. after rendering in the main process with workers=0."""
    try:
        import numba

        layer = numba.threading_layer()
    except Exception:  # noqa: BLE001  (ValueError: not initialised yet)
        return None
    return "forkserver" if layer == "omp" else None


def _loader(dataset, sampler, *, batch_size: int, workers: int, drop_last: bool, pin: bool,
            seed: int):
    from torch.utils.data import DataLoader

    # An explicit generator: creating the iterator then never draws from torch's global RNG.
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=workers, pin_memory=pin, generator=gen,
                      worker_init_fn=_worker_init if workers else None,
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      multiprocessing_context=_worker_context() if workers else None)


class _Distributed:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False

    def init(self, device_type: str) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
            self.owns_group = True

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj):
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Log:
    """Rank-0 messages (stdout + train.log), CSV rows and TensorBoard scalars."""

    FIELDS = ["kind", "step", "epoch", "lr", "loss", "samples_per_s", "data_wait",
              "top1", "top5", "mean_class", "time"]

    def __init__(self, work_dir: Path, active: bool, bar=None):
        self.active, self.bar, self.work_dir = active, bar, work_dir
        self.tb = None
        self.tb_note = ""
        if not active:
            return
        self.text = open(work_dir / "train.log", "a")
        csv_path = work_dir / "log.csv"
        new = not csv_path.exists()
        self.csv_file = open(csv_path, "a", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=self.FIELDS)
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(work_dir / "tb"))
            self.tb_note = f"TensorBoard: {work_dir / 'tb'}"
        except Exception as exc:  # noqa: BLE001  (ImportError: tensorboard not installed)
            self.tb_note = (f"TensorBoard: skipped ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]}); CSV only")

    def msg(self, text: str) -> None:
        if not self.active:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"[{stamp}] {text}"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)
        self.text.write(line + "\n")
        self.text.flush()

    def row(self, **values) -> None:
        if not self.active:
            return
        values.setdefault("time", round(time.time(), 3))
        self.csv.writerow({k: values.get(k, "") for k in self.FIELDS})
        self.csv_file.flush()
        if self.tb is not None:
            kind, step = values["kind"], values["step"]
            for key in ("lr", "loss", "samples_per_s", "data_wait", "top1", "top5", "mean_class"):
                if values.get(key, "") != "":
                    self.tb.add_scalar(f"{kind}/{key}", float(values[key]), step)

    def close(self) -> None:
        if self.active:
            self.text.close()
            self.csv_file.close()
            if self.tb is not None:
                self.tb.close()


class _StopSignal:
    """First Ctrl-C / SIGTERM: finish the current step, checkpoint and stop. Second: abort."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model, dataset: PoseDataset, *, device, batch_size: int = 8, workers: int = 0,
            flip: bool = False, renderer: StepRenderer | None = None, amp: bool = True,
            channels_last: bool = True, progress: bool = False, desc: str = "test"):
    """Class probabilities of every sample: softmax averaged over its clips (and their
    horizontal flips: ``flip_volume`` of a rendered volume; a :class:`SkeletonDataset` made
    with ``flip=True`` already holds its mirrored clips). Returns (probs float64 [N, C],
    labels int64 [N])."""
    from tqdm import tqdm

    from .transforms import flip_volume

    was_training = model.training
    model.eval()
    device = torch.device(device)
    cuda = device.type == "cuda"
    loader = _loader(dataset, None, batch_size=batch_size, workers=workers, drop_last=False,
                     pin=cuda, seed=0)
    probs, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        # [B, clips, C, T, H, W] volumes or [B, clips, M, T, V, C] skeletons
        x = model_input(batch, device, renderer)
        b, clips = x.shape[:2]
        x = x.flatten(0, 1)
        views = [x]
        volumes = "skeleton" not in batch
        if flip and volumes:
            views.append(flip_volume(x, dataset.layout, dataset.mode))
        x = torch.cat(views)
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


# --------------------------------------------------------------------------- training


def _open_store(path):
    from .store import PoseStore, StoreError

    try:
        return PoseStore(path, in_memory=True)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None


def _split_names(store, split: str | None, what: str) -> list[str]:
    if split is None:
        return []
    if split not in store.splits:
        raise ConfigError(f"{store.path}: no {what} split named {split!r} (splits: "
                          f"{', '.join(store.splits) or 'none'})")
    return [n for n in store.split(split) if n in store]


def _classes(store) -> list[str]:
    if store.classes:
        return list(store.classes)
    top = int(store.labels.max()) if len(store) else -1
    return [str(i) for i in range(top + 1)]


def _dataset(cfg: TrainConfig, store, names, *, train: bool, render: str, num_clips: int = 1,
             flip: bool = False):
    """The run's dataset: coordinates for a GCN (``flip`` mirrors test clips in the dataset),
    volumes for a 3D CNN (``predict`` flips those)."""
    if is_gcn(cfg.model):
        return SkeletonDataset(store, names, train=train, clip_len=cfg.clip_len,
                               modality=cfg.modality, num_clips=num_clips,
                               max_persons=cfg.max_persons, rotate=cfg.rotate if train else 0,
                               scale=cfg.scale if train else 0, align=cfg.align,
                               flip=flip and not train,
                               seed=cfg.seed)
    return PoseDataset(store, names, train=train, clip_len=cfg.clip_len,
                       size=cfg.size if train else (cfg.test_size or cfg.size), mode=cfg.mode,
                       render=render, num_clips=num_clips, max_persons=cfg.max_persons,
                       sigma=cfg.sigma, seed=cfg.seed, area_range=cfg.area_range)


_MUST_MATCH = ("model", "mode", "modality", "align", "clip_len", "size", "batch_size", "seed",
               "max_persons", "train_split", "sigma")


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training run; returns a summary dict (steps, epochs, best, paths,
    stopped: "end" | "max_steps" | "interrupted")."""
    from tqdm import tqdm

    from . import models  # noqa: F401  (fail early on a broken install)

    dist_ = _Distributed()
    device = resolve_device(cfg.device, dist_.local_rank)
    gcn = is_gcn(cfg.model)
    if gcn:
        from .skeleton import MODALITIES

        if cfg.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}; got "
                              f"{cfg.modality!r}")
        if cfg.render == "gpu":
            raise ConfigError(f"--render gpu renders heatmap volumes; {cfg.model} is a graph "
                              f"model that reads joint coordinates (leave --render out)")
        render = "none"
    else:
        if cfg.mode not in ("joint", "limb"):
            raise ConfigError(f"mode must be joint or limb, got {cfg.mode!r}")
        render = resolve_render(cfg.render, device, cfg.render_backend)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist_.init(device.type)
    rank0 = dist_.rank == 0
    cuda = device.type == "cuda"
    work_dir = Path(cfg.work_dir or Path("runs") / (cfg.preset or "default"))

    store = _open_store(cfg.poses)
    if store.dims != 2 and not gcn:
        raise ConfigError(f"{store.path}: heatmap volumes need 2D keypoints; this store is "
                          f"{store.dims}D (train a graph model on 3D: --model msg3d, dualhead or "
                          f"stgcn)")
    if cfg.align and not (gcn and store.dims == 3 and get_layout(store.layout).spine):
        raise ConfigError(f"{store.path}: align turns 3D skeletons of a layout with spine and "
                          f"shoulder joints (ntu25, kinect20); this store is {store.dims}D "
                          f"{store.layout} (drop --set align=true)")
    classes = _classes(store)
    if store.splits:
        train_names = _split_names(store, cfg.train_split, "training")
    else:
        train_names = store.names()
    train_names = [n for n in train_names if store[n].label >= 0]
    val_split = cfg.val_split
    if val_split == "auto":
        val_split = "val" if "val" in store.splits else "test" if "test" in store.splits else None
    val_names = [n for n in _split_names(store, val_split, "validation") if store[n].label >= 0]
    if not train_names:
        raise ConfigError(f"{store.path}: no labelled sequences to train on")

    train_set = _dataset(cfg, store, train_names, train=True, render=render)
    sampler = ResumableSampler(len(train_set), seed=cfg.seed, shuffle=True, rank=dist_.rank,
                               world_size=dist_.world)
    steps_per_epoch = sampler.per_rank // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the {sampler.per_rank} "
                          f"training samples per process; lower --batch-size")
    total_steps = cfg.epochs * steps_per_epoch
    renderer = StepRenderer(size=cfg.size, mode=cfg.mode, layout=store.layout, sigma=cfg.sigma,
                            backend=cfg.render_backend) if render == "gpu" else None
    test_renderer = StepRenderer(size=cfg.test_size or cfg.size, mode=cfg.mode,
                                 layout=store.layout, sigma=cfg.sigma,
                                 backend=cfg.render_backend) if render == "gpu" else None

    # Model init is identical on every rank (DDP also broadcasts rank 0's weights).
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, layout=store.layout, num_classes=len(classes)).to(device)
    channels_last = cuda and cfg.channels_last and not gcn
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    net = model
    if dist_.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(optimizer, lr=cfg.lr, total_steps=total_steps,
                             warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
                             warmup_start=cfg.warmup_start, min_lr=cfg.min_lr)
    # Dropout draws differ between ranks; every RNG is seeded once here and saved with the run.
    torch.manual_seed(cfg.seed * 1000 + 1 + dist_.rank)
    np.random.seed((cfg.seed * 1000 + 2 + dist_.rank) % 2**32)
    random.seed(cfg.seed * 1000 + 3 + dist_.rank)

    global_step, epoch, position, best = 0, 0, 0, None
    resumed_from = None
    if cfg.resume:
        path = work_dir / "last.pt" if cfg.resume in ("auto", "last") else Path(cfg.resume)
        ckpt = load_checkpoint(path)
        saved = ckpt["config"]
        diff = [k for k in _MUST_MATCH if k in saved and saved[k] != getattr(cfg, k)
                and not (k == "area_range")]
        if diff:
            raise ConfigError(f"{path}: cannot resume with different "
                              + ", ".join(f"{k} ({saved[k]!r} -> {getattr(cfg, k)!r})"
                                          for k in diff))
        if ckpt.get("world_size", 1) != dist_.world:
            raise ConfigError(f"{path}: saved by {ckpt.get('world_size', 1)} process(es); resume "
                              f"with the same number (this run has {dist_.world})")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        sampler.load_state_dict(ckpt["sampler"])
        global_step, epoch, position = ckpt["step"], sampler.epoch, sampler.position
        best = ckpt.get("best")
        _set_rng_state(ckpt["rng"][dist_.rank], device)
        resumed_from = path

    if rank0:
        work_dir.mkdir(parents=True, exist_ok=True)
    dist_.barrier()
    bar = tqdm(total=min(total_steps, cfg.max_steps or total_steps), initial=global_step,
               disable=not (cfg.progress and rank0), dynamic_ncols=True, unit="step",
               desc=f"epoch {epoch + 1}/{cfg.epochs}")
    log = _Log(work_dir, rank0, bar)
    log.msg(f"heatvol train: {cfg.model} {cfg.modality if gcn else cfg.mode} on {store.path} ({len(train_names)} train, "
            f"{len(val_names)} {val_split or 'no'} val, {len(classes)} classes), preset "
            f"{cfg.preset or '-'}, device {device}, render {render}, {dist_.world} process(es), "
            f"batch {cfg.batch_size}/process, {steps_per_epoch} steps/epoch x {cfg.epochs} "
            f"epochs = {total_steps} steps; work dir {work_dir}")
    log.msg(log.tb_note or "TensorBoard: (rank 0 only)")
    if resumed_from:
        log.msg(f"resumed from {resumed_from}: step {global_step}, epoch {epoch + 1}, sample "
                f"{position} of the epoch")

    def checkpoint(name: str, *, extra: list[str] = ()) -> Path | None:
        rngs = dist_.gather(_rng_state(device))
        if not rank0:
            return None
        state = {"version": CHECKPOINT_VERSION, "config": cfg.to_dict(), "model":
                 model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                 "step": global_step, "epoch": sampler.epoch, "best": best, "rng": rngs,
                 "world_size": dist_.world, "classes": classes, "layout": store.layout.name,
                 "total_steps": total_steps, "steps_per_epoch": steps_per_epoch}
        path = work_dir / name
        _atomic_save(state, path)
        for other in extra:
            _atomic_save(state, work_dir / other)
        return path

    amp = cuda and cfg.amp
    stopped = "end"
    rate = None        # samples/s (all ranks), smoothed
    wait_frac = None   # fraction of step time spent waiting for data, smoothed
    loss_sum, loss_n = 0.0, 0
    timings: list[tuple[float, float]] = []  # (data wait, whole step) seconds, this run
    t_start = time.perf_counter()
    net.train()
    with _StopSignal() as stop:
        while epoch < cfg.epochs and stopped == "end":
            sampler.set_epoch(epoch, position)
            bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
            loader = _loader(train_set, sampler, batch_size=cfg.batch_size, workers=cfg.workers,
                             drop_last=True, pin=cuda, seed=cfg.seed * 100003 + epoch)
            step_in_epoch = position // cfg.batch_size
            it = iter(loader)
            t_prev = time.perf_counter()
            while step_in_epoch < steps_per_epoch:
                if cfg.max_steps is not None and global_step >= cfg.max_steps:
                    stopped = "max_steps"
                    break
                if dist_.any(stop.requested):
                    stopped = "interrupted"
                    break
                try:
                    batch = next(it)
                except (RuntimeError, StopIteration):
                    if stop.requested:  # Ctrl-C also reached the workers
                        stopped = "interrupted"
                        break
                    raise
                t_data = time.perf_counter()
                x = model_input(batch, device, renderer)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                y = batch["label"].to(device, non_blocking=True)
                lr = scheduler.apply()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = _loss(net, model, x, y, cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                sampler.advance(cfg.batch_size)
                global_step += 1
                step_in_epoch += 1
                loss_value = float(loss.detach())  # syncs the device: step time is real
                t_end = time.perf_counter()
                step_time, data_time = t_end - t_prev, t_data - t_prev
                t_prev = t_end
                sps = cfg.batch_size * dist_.world / max(step_time, 1e-9)
                rate = sps if rate is None else 0.9 * rate + 0.1 * sps
                frac = data_time / max(step_time, 1e-9)
                wait_frac = frac if wait_frac is None else 0.9 * wait_frac + 0.1 * frac
                loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
                timings.append((data_time, step_time))
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}",
                                sps=f"{rate:.1f}", data=f"{wait_frac:.0%}", refresh=False)
                if global_step % cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                    log.row(kind="train", step=global_step, epoch=epoch + 1, lr=f"{lr:.6g}",
                            loss=f"{loss_sum / loss_n:.5f}", samples_per_s=f"{rate:.2f}",
                            data_wait=f"{wait_frac:.4f}")
                    loss_sum, loss_n = 0.0, 0
            del it, loader
            if stopped != "end":
                break
            # ---- end of epoch: validate, checkpoint
            epoch += 1
            position = 0
            sampler.set_epoch(epoch, 0)
            metrics = None
            if (val_names and cfg.val_every > 0
                    and (epoch % cfg.val_every == 0 or epoch == cfg.epochs) and rank0):
                from .evaluate import compute_metrics

                val_set = _dataset(cfg, store, val_names, train=False, render=render,
                                   num_clips=cfg.val_num_clips, flip=cfg.val_flip)
                probs, labels = predict(model, val_set, device=device,
                                        batch_size=cfg.eval_batch_size or cfg.batch_size,
                                        workers=cfg.workers, flip=cfg.val_flip,
                                        renderer=test_renderer, amp=cfg.amp,
                                        channels_last=cfg.channels_last, progress=cfg.progress,
                                        desc=f"val {epoch}")
                metrics = compute_metrics(probs, labels, classes)
            extra = ["last.pt"]
            if metrics is not None:
                improved = best is None or metrics["top1"] > best["top1"]
                if improved:
                    best = {"top1": metrics["top1"], "top5": metrics["top5"],
                            "mean_class": metrics["mean_class"], "epoch": epoch,
                            "step": global_step}
                    extra.append("best.pt")
                log.row(kind="val", step=global_step, epoch=epoch, top1=f"{metrics['top1']:.5f}",
                        top5=f"{metrics['top5']:.5f}", mean_class=f"{metrics['mean_class']:.5f}")
                log.msg(f"epoch {epoch}: val ({val_split}, {len(val_names)}, "
                        f"{cfg.val_num_clips} clip{'s' if cfg.val_num_clips > 1 else ''}) top-1 "
                        f"{metrics['top1']:.2%}, top-5 {metrics['top5']:.2%}, mean-class "
                        f"{metrics['mean_class']:.2%}" + ("  (best)" if improved else ""))
            checkpoint(f"epoch_{epoch:03d}.pt", extra=extra)
            if rank0:
                for old in sorted(work_dir.glob("epoch_*.pt"))[:-max(cfg.keep_epochs, 1)]:
                    old.unlink(missing_ok=True)
            if rate is not None:
                log.msg(f"epoch {epoch} done: step {global_step}, {rate:.1f} samples/s, data "
                        f"wait {wait_frac:.1%} of the step time")
            dist_.barrier()
        if stopped != "end":
            checkpoint("last.pt")
            log.msg(f"stopped ({'--max-steps' if stopped == 'max_steps' else 'interrupted'}) "
                    f"at step {global_step}; checkpoint {work_dir / 'last.pt'} (continue with "
                    f"--resume)")
    bar.close()
    elapsed = time.perf_counter() - t_start
    log.msg(f"done: {global_step} steps in {elapsed:.0f} s"
            + (f"; best val top-1 {best['top1']:.2%} (epoch {best['epoch']})" if best else ""))
    log.close()
    dist_.barrier()
    dist_.close()
    return {"steps": global_step, "epoch": epoch, "stopped": stopped, "best": best,
            "work_dir": str(work_dir), "last": str(work_dir / "last.pt"),
            "samples_per_s": rate, "data_wait": wait_frac, "elapsed_s": elapsed,
            "total_steps": total_steps, "render": render, "device": str(device),
            "timings": timings, "batch_size": cfg.batch_size, "world_size": dist_.world}
