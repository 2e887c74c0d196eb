"""The training loop (:func:`train`): PoseConv3D models on volumes rendered on the fly, and the
graph models (ST-GCN, MS-G3D, DualHead-Net) on joint coordinates.

    from heatvol.training import TrainConfig, train
    summary = train(TrainConfig(poses="penn.h5", model="x3d", size=32, clip_len=32,
                                work_dir="runs/penn"))

What :func:`train` does (details in ``docs/training.md``):

- data: :class:`heatvol.data.PoseDataset` (3D CNNs) or :class:`heatvol.data.SkeletonDataset`
  (GCNs, ``modality`` joint / bone / joint-motion / bone-motion) through a DataLoader whose
  sampler is a :class:`heatvol.data.ResumableSampler`; volumes rendered in the workers
  (``render_device="cpu"``) or inside the step on the GPU (``render_device="cuda"``;
  ``"auto"`` picks cuda when the device is a CUDA GPU the CUDA renderer can use);
- SGD (momentum 0.9, Nesterov), linear warm-up then cosine decay per iteration
  (:class:`heatvol.training.WarmupCosine`), weight decay, gradient-norm clipping; on CUDA bf16
  autocast and channels-last-3d (3D CNNs); DualHead-Net's loss averages the cross-entropy of
  its two heads;
- checkpoints (rank 0): ``epoch_NNN.pt`` after every epoch (the newest ``keep_epochs`` kept),
  ``best.pt`` on the best validation top-1, ``last.pt`` after every epoch and whenever the run
  stops (end, ``max_steps``, Ctrl-C / SIGTERM);
- ``resume``: model, optimiser, scheduler, sampler position and every RNG (torch, CUDA, NumPy,
  Python; of every rank) come back, so the run continues exactly as if never stopped;
- a progress display (:func:`heatvol.progress.progress`: a bar on a terminal, a line every
  few percent otherwise), ``log.csv``, ``train.log`` and TensorBoard (an extra:
  ``pip install heatvol[tensorboard]``);
- Ctrl-C / SIGTERM: the step in progress is dropped (or, in its optimiser update, finished),
  ``last.pt`` written, exit; a second one aborts at once;
- an exception while loading a batch (also in a DataLoader worker) ends the run with one
  line (:class:`~heatvol.training.config.RunError`), the workers shut down;
- DDP when started by ``torchrun`` (``WORLD_SIZE`` > 1): gloo on the CPU, NCCL on GPUs; each
  rank reads its share of every epoch; rank 0 logs, validates and writes checkpoints.

The steps, in order: :func:`_prepare` (devices, data, model, optimiser), :func:`_resume`,
then per epoch :func:`_train_epoch` (one :func:`_step` per batch) and :func:`_end_epoch`
(validate, checkpoint). The order of every RNG draw is part of the contract: a seeded run and
a resumed one end with bit-identical weights.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ResumableSampler, model_input
from ..metrics import compute_metrics
from .checkpoint import CHECKPOINT_VERSION, atomic_save, load_checkpoint, rng_state, set_rng_state
from .config import ConfigError, RunError, TrainConfig, resume_conflicts
from .log import RunLog
from .predict import predict
from .runtime import (Distributed, StepAborted, StopSignal, make_loader, resolve_device,
                      resolve_render_device)
from .schedule import WarmupCosine
from .setup import (build_model, check_inputs, check_store, is_gcn, make_dataset,
                    make_step_renderer, open_store, run_names, store_classes)

__all__ = ["train", "training_loss"]


def training_loss(net, model, x, y, label_smoothing: float):
    """Cross-entropy of the logits; for a two-headed model (DualHead-Net) the mean of the two
    heads' losses, as the official code trains it. ``net`` is ``model`` or its DDP wrapper."""
    if getattr(model, "multi_head", False):
        heads = net(x, return_heads=True)
        return sum(F.cross_entropy(h.float(), y, label_smoothing=label_smoothing)
                   for h in heads) / len(heads)
    return F.cross_entropy(net(x).float(), y, label_smoothing=label_smoothing)


@dataclass
class _Run:
    """What a run builds before its first step (fixed for the whole run)."""

    cfg: TrainConfig
    dist: Distributed
    device: torch.device
    gcn: bool                    # graph model on coordinates, else 3D CNN on volumes
    render_device: str | None    # None (coordinates), "cpu" (in the workers) or "cuda" (step)
    work_dir: Path
    store: object
    classes: list
    train_names: list
    val_split: str | None
    val_names: list
    train_set: object
    sampler: ResumableSampler
    steps_per_epoch: int
    total_steps: int
    renderer: object             # StepRenderer of render_device "cuda" (training size), else None
    test_renderer: object        # ... at the test size
    model: torch.nn.Module
    net: torch.nn.Module         # model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    channels_last: bool

    @property
    def rank0(self) -> bool:
        return self.dist.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class _Progress:
    """Where the run is: what a checkpoint saves beside the states of its objects."""

    global_step: int = 0
    epoch: int = 0
    position: int = 0            # samples of the current epoch consumed (this rank)
    best: dict | None = None


@dataclass
class _Meter:
    """Throughput and loss of the steps: smoothed for the bar, averaged over the log interval
    for ``log.csv`` and over the whole epoch for its summary line."""

    rate: float | None = None        # samples/s (all ranks), smoothed (the bar)
    wait_frac: float | None = None   # fraction of step time spent waiting for data, smoothed
    loss_sum: float = 0.0
    loss_n: int = 0
    timings: list = field(default_factory=list)  # (data wait, whole step) seconds, this run
    row_samples: int = 0             # since the last log row
    row_time: float = 0.0
    row_wait: float = 0.0
    epoch_samples: int = 0           # this epoch, in this process's run
    epoch_time: float = 0.0
    epoch_wait: float = 0.0

    def update(self, loss_value: float, data_time: float, step_time: float,
               samples: int) -> None:
        sps = samples / max(step_time, 1e-9)
        self.rate = sps if self.rate is None else 0.9 * self.rate + 0.1 * sps
        frac = data_time / max(step_time, 1e-9)
        self.wait_frac = frac if self.wait_frac is None else 0.9 * self.wait_frac + 0.1 * frac
        self.loss_sum, self.loss_n = self.loss_sum + loss_value, self.loss_n + 1
        self.timings.append((data_time, step_time))
        self.row_samples += samples
        self.row_time += step_time
        self.row_wait += data_time
        self.epoch_samples += samples
        self.epoch_time += step_time
        self.epoch_wait += data_time

    def take_row(self) -> tuple[float, float, float]:
        """(mean loss, samples/s, data-wait fraction) since the last call."""
        out = (self.loss_sum / self.loss_n, self.row_samples / max(self.row_time, 1e-9),
               self.row_wait / max(self.row_time, 1e-9))
        self.loss_sum, self.loss_n = 0.0, 0
        self.row_samples, self.row_time, self.row_wait = 0, 0.0, 0.0
        return out

    def take_epoch(self) -> tuple[float, float, float] | None:
        """(samples/s, data-wait fraction, seconds) of the epoch's steps (wall time from its
        loader's start to its last step), or None when no step ran; then starts a new one."""
        if not self.epoch_samples:
            return None
        out = (self.epoch_samples / max(self.epoch_time, 1e-9),
               self.epoch_wait / max(self.epoch_time, 1e-9), self.epoch_time)
        self.epoch_samples, self.epoch_time, self.epoch_wait = 0, 0.0, 0.0
        return out


def _start(cfg: TrainConfig, dist: Distributed) -> tuple[torch.device, bool, str | None]:
    """(device, gcn, render_device): the torch device, what the model reads and where volumes
    are rendered (None for a graph model); joins the process group of a DDP run."""
    device = resolve_device(cfg.device, dist.local_rank)
    gcn = is_gcn(cfg.model)
    check_inputs(cfg, gcn)
    render_device = None if gcn else resolve_render_device(cfg.render_device, device,
                                                            cfg.step_render_device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init(device.type)
    return device, gcn, render_device


def _prepare(cfg: TrainConfig) -> _Run:
    """Devices, store, datasets, sampler, model, optimiser and schedule, in the order that
    fixes every RNG draw (the model is initialised from ``seed`` on every rank)."""
    dist = Distributed()
    device, gcn, render_device = _start(cfg, dist)
    work_dir = Path(cfg.work_dir or Path("runs") / (cfg.preset or "default"))
    store = open_store(cfg.poses)
    check_store(cfg, store, gcn)
    classes = store_classes(store)
    train_names, val_split, val_names = run_names(cfg, store)

    train_set = make_dataset(cfg, store, train_names, gcn=gcn, train=True,
                             render_device=render_device, device=device)
    sampler = ResumableSampler(len(train_set), seed=cfg.seed, shuffle=True, rank=dist.rank,
                               world_size=dist.world)
    steps_per_epoch = sampler.per_rank // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the {sampler.per_rank} "
                          f"training samples per process; lower --batch-size")
    total_steps = cfg.epochs * steps_per_epoch
    in_step = render_device == "cuda"
    renderer = make_step_renderer(cfg, store.layout, train=True) if in_step else None
    test_renderer = make_step_renderer(cfg, store.layout, train=False) if in_step else None

    # Model init is identical on every rank (DDP also broadcasts rank 0's weights).
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, layout=store.layout, num_classes=len(classes)).to(device)
    channels_last = device.type == "cuda" and cfg.channels_last and not gcn
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    net = dist.wrap(model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(optimizer, lr=cfg.lr, total_steps=total_steps,
                             warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
                             warmup_start=cfg.warmup_start, min_lr=cfg.min_lr)
    # Dropout draws differ between ranks; every RNG is seeded once here and saved with the run.
    torch.manual_seed(cfg.seed * 1000 + 1 + dist.rank)
    np.random.seed((cfg.seed * 1000 + 2 + dist.rank) % 2**32)
    random.seed(cfg.seed * 1000 + 3 + dist.rank)
    return _Run(cfg=cfg, dist=dist, device=device, gcn=gcn, render_device=render_device,
                work_dir=work_dir,
                store=store, classes=classes, train_names=train_names, val_split=val_split,
                val_names=val_names, train_set=train_set, sampler=sampler,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps, renderer=renderer,
                test_renderer=test_renderer, model=model, net=net, optimizer=optimizer,
                scheduler=scheduler, channels_last=channels_last)


def _resume(run: _Run, progress: _Progress) -> Path:
    """Load ``cfg.resume`` into the run's objects, ``progress`` and this rank's RNGs; returns
    the checkpoint's path."""
    cfg = run.cfg
    path = run.work_dir / "last.pt" if cfg.resume in ("auto", "last") else Path(cfg.resume)
    ckpt = load_checkpoint(path)
    diff = resume_conflicts(ckpt["config"], cfg)
    if diff:
        raise ConfigError(f"{path}: cannot resume with different " + ", ".join(diff))
    if ckpt.get("world_size", 1) != run.dist.world:
        raise ConfigError(f"{path}: saved by {ckpt.get('world_size', 1)} process(es); resume "
                          f"with the same number (this run has {run.dist.world})")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.sampler.load_state_dict(ckpt["sampler"])
    progress.global_step = ckpt["step"]
    progress.epoch, progress.position = run.sampler.epoch, run.sampler.position
    progress.best = ckpt.get("best")
    set_rng_state(ckpt["rng"][run.dist.rank], run.device)
    return path


def _save(run: _Run, progress: _Progress, name: str, *, extra: list[str] = ()) -> Path | None:
    """Write the checkpoint ``name`` (and copies named ``extra``) in the work dir; every rank
    takes part (their RNG states are gathered), rank 0 writes."""
    rngs = run.dist.gather(rng_state(run.device))
    if not run.rank0:
        return None
    state = {"version": CHECKPOINT_VERSION, "config": run.cfg.to_dict(), "model":
             run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "sampler": run.sampler.state_dict(),
             "step": progress.global_step, "epoch": run.sampler.epoch, "best": progress.best,
             "rng": rngs, "world_size": run.dist.world, "classes": run.classes,
             "layout": run.store.layout.name, "total_steps": run.total_steps,
             "steps_per_epoch": run.steps_per_epoch}
    path = run.work_dir / name
    atomic_save(state, path)
    for other in extra:
        atomic_save(state, run.work_dir / other)
    return path


def _validates(run: _Run) -> bool:
    """Whether this run validates at all (a validation split with sequences, val_every > 0)."""
    return bool(run.val_names) and run.cfg.val_every > 0


def _header(run: _Run, progress: _Progress, log: RunLog, resumed_from: Path | None) -> None:
    """The run's first lines in the log: data, model, device, schedule, work dir."""
    cfg = run.cfg
    if _validates(run):
        every = "after each epoch" if cfg.val_every == 1 else \
            f"every {cfg.val_every} epochs and after the last"
        val = f"validating on {len(run.val_names)} {run.val_split} ({every})"
    elif run.val_names:
        val = "no validation (val_every 0)"
    else:
        val = "no validation split"
    where = "coordinates" if run.gcn else f"rendered on {run.render_device}" + \
        (" in the DataLoader workers" if run.render_device == "cpu" else " inside the step")
    log.msg(f"heatvol train: {cfg.model} {cfg.modality if run.gcn else cfg.mode} on "
            f"{run.store.path} ({len(run.train_names)} train, {len(run.classes)} classes; "
            f"{val}), preset {cfg.preset or '-'}, device {run.device}, {where}, "
            f"{run.dist.world} process(es), batch {cfg.batch_size}/process, "
            f"{run.steps_per_epoch} steps/epoch x {cfg.epochs} epochs = {run.total_steps} "
            f"steps; work dir {run.work_dir}")
    log.msg(log.tb_note or "TensorBoard: (rank 0 only)")
    if resumed_from:
        log.msg(f"resumed from {resumed_from}: step {progress.global_step}, epoch "
                f"{progress.epoch + 1}, sample {progress.position} of the epoch")


def _forward_backward(run: _Run, batch: dict) -> tuple[torch.Tensor, float]:
    """The part of a step that changes nothing kept (gradients only): returns (loss, lr)."""
    cfg = run.cfg
    x = model_input(batch, run.device, run.renderer)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = batch["label"].to(run.device, non_blocking=True)
    lr = run.scheduler.apply()  # a function of the step count: setting it again is harmless
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.cuda and cfg.amp):
        loss = training_loss(run.net, run.model, x, y, cfg.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    return loss, lr


def _commit(run: _Run, progress: _Progress) -> None:
    """The part of a step that a checkpoint sees: weights, schedule, data position, count."""
    run.optimizer.step()
    run.scheduler.step()
    run.sampler.advance(run.cfg.batch_size)
    progress.global_step += 1


def _buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    """Copies of the model's buffers (BatchNorm statistics: a few KB to a few hundred KB)."""
    return [buf.detach().clone() for buf in model.buffers()]


def _data_failure(exc: Exception) -> Exception:
    """A one-line error for an exception raised while loading a batch. DataLoader workers
    re-raise theirs with the worker's whole traceback as the message; its last line is the
    original ``Type: message``. A damaged pose store (:class:`heatvol.store.StoreError`)
    already names the file and the sequence: its message alone."""
    from ..store import StoreError

    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:
        last = lines[-1]
        kind, sep, message = last.partition(": ")
        if sep and kind.rsplit(".", 1)[-1] == StoreError.__name__:
            return RunError(message)
        return RunError(f"a DataLoader worker failed: {last}")
    if isinstance(exc, StoreError):
        return RunError(" ".join(text.split()))
    return RunError(f"loading a batch failed: {type(exc).__name__}: {' '.join(text.split())}")


def _cpu_estimate(run: _Run, meter: _Meter, log: RunLog, measured: int) -> None:
    """A preset sized for a GPU, run on a CPU: warn with the run's estimated time from the
    mean of the last ``measured`` steps (the first steps start workers and are left out)."""
    mean = sum(t for _, t in meter.timings[-measured:]) / measured
    left = run.total_steps - len(meter.timings)
    hours = mean * left / 3600
    log.msg(f"warning: preset {run.cfg.preset} is sized for a CUDA GPU but this run is on the "
            f"CPU: {mean:.1f} s per step (mean of {measured} steps), about {hours:.1f} h for "
            f"the {left} steps left; for a CPU run use --preset penn-x3d-cpu (or "
            f"`heatvol train` without --preset)")


def _train_epoch(run: _Run, progress: _Progress, meter: _Meter, stop: StopSignal, bar,
                 log: RunLog) -> str:
    """The steps of the current epoch from ``progress.position``; returns "end" (the epoch is
    done), "max_steps" or "interrupted".

    A stop signal during a step's fetch, forward or backward drops that step: the RNGs and the
    model's buffers go back to where they stood after the last completed step, so the
    checkpoint written next resumes exactly as if the run had stopped there. A failing batch (an exception in a
    DataLoader worker) ends the run with one line (:class:`RunError`)."""
    cfg, epoch = run.cfg, progress.epoch
    run.sampler.set_epoch(epoch, progress.position)
    bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
    loader = make_loader(run.train_set, run.sampler, batch_size=cfg.batch_size,
                         workers=cfg.workers, drop_last=True, pin=run.cuda,
                         seed=cfg.seed * 100003 + epoch)
    step_in_epoch = progress.position // cfg.batch_size
    estimate_after = 4 if (cfg.target_device == "cuda" and not run.cuda and run.rank0
                           and not meter.timings) else None
    it = iter(loader)
    t_prev = time.perf_counter()
    try:
        while step_in_epoch < run.steps_per_epoch:
            if cfg.max_steps is not None and progress.global_step >= cfg.max_steps:
                return "max_steps"
            if run.dist.any(stop.requested):
                return "interrupted"
            # What a dropped step must put back: the RNGs and the model's buffers (a training
            # forward pass updates BatchNorm's running statistics) after the last full step.
            rngs, buffers = rng_state(run.device), _buffers(run.model) if stop.drop_steps else []
            try:
                with stop.droppable():
                    try:
                        batch = next(it)
                    except StopIteration:
                        raise
                    except Exception as exc:  # noqa: BLE001  (any failure of a sample)
                        raise _data_failure(exc) from None
                    t_data = time.perf_counter()
                    loss, lr = _forward_backward(run, batch)
            except StepAborted:
                set_rng_state(rngs, run.device)
                with torch.no_grad():
                    for buf, saved in zip(run.model.buffers(), buffers):
                        buf.copy_(saved)
                return "interrupted"
            _commit(run, progress)
            step_in_epoch += 1
            loss_value = float(loss.detach())  # syncs the device: step time is real
            t_end = time.perf_counter()
            meter.update(loss_value, t_data - t_prev, t_end - t_prev,
                         cfg.batch_size * run.dist.world)
            t_prev = t_end
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}", sps=f"{meter.rate:.1f}",
                            data=f"{meter.wait_frac:.0%}")
            if progress.global_step % cfg.log_every == 0 or step_in_epoch == run.steps_per_epoch:
                mean_loss, rate, wait = meter.take_row()
                log.row(kind="train", step=progress.global_step, epoch=epoch + 1,
                        lr=f"{lr:.6g}", loss=f"{mean_loss:.5f}", samples_per_s=f"{rate:.2f}",
                        data_wait=f"{wait:.4f}")
            if estimate_after is not None and len(meter.timings) == estimate_after:
                _cpu_estimate(run, meter, log, estimate_after - 1)
        return "end"
    finally:
        del it  # shut the workers down now, also when the epoch ends on an error


def _validate(run: _Run, epoch: int) -> dict | None:
    """Metrics of the validation split after ``epoch`` (rank 0, every ``val_every`` epochs and
    after the last), else None."""
    cfg = run.cfg
    if not (_validates(run) and (epoch % cfg.val_every == 0 or epoch == cfg.epochs)
            and run.rank0):
        return None
    val_set = make_dataset(cfg, run.store, run.val_names, gcn=run.gcn, train=False,
                           render_device=run.render_device, num_clips=cfg.val_num_clips,
                           flip=cfg.val_flip, device=run.device)
    probs, labels = predict(run.model, val_set, device=run.device,
                            batch_size=cfg.eval_batch_size or cfg.batch_size,
                            workers=cfg.workers, flip=cfg.val_flip,
                            renderer=run.test_renderer, amp=cfg.amp,
                            channels_last=cfg.channels_last, progress=cfg.progress,
                            desc=f"val {epoch}")
    return compute_metrics(probs, labels, run.classes)


def _end_epoch(run: _Run, progress: _Progress, meter: _Meter, log: RunLog) -> None:
    """After a full epoch: validate, keep the best, checkpoint, prune old epoch files."""
    cfg = run.cfg
    progress.epoch += 1
    progress.position = 0
    epoch = progress.epoch
    run.sampler.set_epoch(epoch, 0)
    metrics = _validate(run, epoch)
    extra = ["last.pt"]
    if metrics is not None:
        best = progress.best
        improved = best is None or metrics["top1"] > best["top1"]
        if improved:
            progress.best = {"top1": metrics["top1"], "top5": metrics["top5"],
                             "mean_class": metrics["mean_class"], "epoch": epoch,
                             "step": progress.global_step}
            extra.append("best.pt")
        log.row(kind="val", step=progress.global_step, epoch=epoch,
                top1=f"{metrics['top1']:.5f}", top5=f"{metrics['top5']:.5f}",
                mean_class=f"{metrics['mean_class']:.5f}")
        log.msg(f"epoch {epoch}: val ({run.val_split}, {len(run.val_names)}, "
                f"{cfg.val_num_clips} clip{'s' if cfg.val_num_clips > 1 else ''}) top-1 "
                f"{metrics['top1']:.2%}, top-5 {metrics['top5']:.2%}, mean-class "
                f"{metrics['mean_class']:.2%}" + ("  (best)" if improved else ""))
    _save(run, progress, f"epoch_{epoch:03d}.pt", extra=extra)
    if run.rank0:
        for old in sorted(run.work_dir.glob("epoch_*.pt"))[:-max(cfg.keep_epochs, 1)]:
            old.unlink(missing_ok=True)
    speed = meter.take_epoch()
    if speed is not None:
        rate, wait, seconds = speed
        log.msg(f"epoch {epoch} done: step {progress.global_step}, {seconds:.0f} s of steps, "
                f"{rate:.1f} samples/s (epoch average), data wait {wait:.1%} of the step time")
    run.dist.barrier()


def train(cfg: TrainConfig, notes: tuple[str, ...] | list[str] = ()) -> dict:
    """Run (or resume) a training run; returns a summary dict (steps, epochs, best, paths,
    stopped: "end" | "max_steps" | "interrupted"). ``notes``: lines for the banner (e.g.
    which preset was chosen and why, :func:`heatvol.training.settings.train_settings`)."""
    from .. import models  # noqa: F401  (fail early on a broken install)
    from ..progress import progress as progress_display

    run = _prepare(cfg)
    progress = _Progress()
    resumed_from = _resume(run, progress) if cfg.resume else None
    if run.rank0:
        run.work_dir.mkdir(parents=True, exist_ok=True)
    run.dist.barrier()
    bar = progress_display(total=min(run.total_steps, cfg.max_steps or run.total_steps),
                           initial=progress.global_step, unit="step",
                           desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
                           enabled=cfg.progress and run.rank0)
    log = RunLog(run.work_dir, run.rank0, bar)
    _header(run, progress, log, resumed_from)
    for note in notes:
        log.msg(note)

    meter = _Meter()
    stopped = "end"
    t_start = time.perf_counter()
    run.net.train()
    with StopSignal(drop_steps=not run.dist.enabled) as stop:
        while progress.epoch < cfg.epochs and stopped == "end":
            stopped = _train_epoch(run, progress, meter, stop, bar, log)
            if stopped != "end":
                break
            _end_epoch(run, progress, meter, log)
        if stopped != "end":
            _save(run, progress, "last.pt")
            log.msg(f"stopped ({'--max-steps' if stopped == 'max_steps' else 'interrupted'}) "
                    f"at step {progress.global_step}; checkpoint {run.work_dir / 'last.pt'} "
                    f"(continue with --resume)")
    bar.close()
    elapsed = time.perf_counter() - t_start
    best = progress.best
    log.msg(f"done: {progress.global_step} steps in {elapsed:.0f} s"
            + (f"; best val top-1 {best['top1']:.2%} (epoch {best['epoch']})" if best else ""))
    log.close()
    run.dist.barrier()
    run.dist.close()
    return {"steps": progress.global_step, "epoch": progress.epoch, "stopped": stopped,
            "best": best, "work_dir": str(run.work_dir), "last": str(run.work_dir / "last.pt"),
            "samples_per_s": meter.rate, "data_wait": meter.wait_frac, "elapsed_s": elapsed,
            "total_steps": run.total_steps, "render_device": run.render_device,
            "device": str(run.device),
            "timings": meter.timings, "batch_size": cfg.batch_size,
            "world_size": run.dist.world}
