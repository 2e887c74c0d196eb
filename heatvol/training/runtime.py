"""Where and how a run executes: the torch device, where volumes are rendered, the processes
of a DDP run, stop signals, and the DataLoaders (with their worker set-up)."""

from __future__ import annotations

import contextlib
import os
import signal

import torch

from .config import ConfigError

__all__ = ["resolve_device", "resolve_render_device", "Distributed", "StopSignal", "StepAborted",
           "make_loader", "worker_init", "worker_context"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of ``name`` (``auto``: cuda when torch sees a GPU, else cpu; a bare
    ``cuda`` becomes ``cuda:local_rank``); asking for CUDA without one is a ConfigError."""
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


def resolve_render_device(render_device: str, device: torch.device,
                          stand_in: str | None = None) -> str:
    """Where volumes are rendered, "cpu" (the DataLoader workers) or "cuda" (inside the step);
    "auto" is cuda on a CUDA device whose CUDA renderer works, else cpu. ``stand_in`` (a
    testing seam, :attr:`TrainConfig.step_render_device`): "cuda" is then rendered in the step
    by those host kernels, so it needs no GPU. Asking for cuda without one is a ConfigError
    in the command's words."""
    if render_device == "auto":
        if device.type != "cuda":
            return "cpu"
        from ..render import gpu_available

        return "cuda" if gpu_available() else "cpu"
    if render_device not in ("cpu", "cuda"):
        raise ConfigError(f"--render-device must be cpu, cuda or auto; got {render_device!r}")
    if render_device == "cuda" and stand_in is None:
        if device.type != "cuda":
            raise ConfigError(f"--render-device cuda renders each batch on the CUDA GPU inside "
                              f"the step, but the device is {device.type} (no CUDA GPU: "
                              f"torch.cuda.is_available() is {torch.cuda.is_available()}); use "
                              f"--render-device cpu")
        from ..render import require_gpu

        try:
            require_gpu()
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None
    return render_device


def worker_init(_worker_id: int) -> None:
    """Each worker renders single-threaded (the processes are the parallelism), with Numba's
    fork-safe "workqueue" threading layer: its GNU OpenMP layer hangs in a child forked from a
    process whose torch already ran OpenMP regions. Workers ignore SIGINT (a terminal's Ctrl-C
    reaches the whole process group; the main process handles it: checkpoint, stop, shut the
    workers down) but not SIGTERM: that is how multiprocessing ends them when the main
    process exits on an error, and a worker that ignored it would hang that exit forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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


def worker_context():
    """None (fork), or "forkserver" once this process has run Numba's GNU OpenMP threading
    layer: libgomp aborts a forked child that uses it ("fork() called from a process already
    using GNU OpenMP"), e.g. after rendering in the main process with workers=0."""
    try:
        import numba

        layer = numba.threading_layer()
    except Exception:  # noqa: BLE001  (ValueError: not initialised yet)
        return None
    return "forkserver" if layer == "omp" else None


def make_loader(dataset, sampler, *, batch_size: int, workers: int, drop_last: bool,
                pin: bool, seed: int):
    """The DataLoader of training (``sampler``: a ResumableSampler) and prediction (None)."""
    from torch.utils.data import DataLoader

    # An explicit generator: creating the iterator then never draws from torch's global RNG.
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=workers, pin_memory=pin, generator=gen,
                      worker_init_fn=worker_init if workers else None,
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      multiprocessing_context=worker_context() if workers else None)


class Distributed:
    """The processes of a run as torchrun describes them (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``); every collective is a no-op in a single-process run."""

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

    def wrap(self, model, device: torch.device):
        """``model`` itself, or wrapped in DistributedDataParallel in a DDP run."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index]
                                       if device.type == "cuda" else None)

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


class StepAborted(BaseException):
    """Raised by :class:`StopSignal` inside :meth:`StopSignal.droppable`: the step in progress
    is dropped (nothing of it was committed). A BaseException, so no ``except Exception`` on
    the way swallows it."""


class StopSignal:
    """Ctrl-C / SIGTERM during a run.

    First signal: stop. Inside :meth:`droppable` (fetching a batch, forward, backward: nothing
    of the step is committed yet) it raises :class:`StepAborted` at once, so a long step does
    not delay the stop; elsewhere (the optimiser update, a checkpoint being written) it only
    sets ``requested`` and the loop stops after that part. Second signal: KeyboardInterrupt.
    ``drop_steps=False`` (DDP: the ranks must agree on every step) never drops a step."""

    def __init__(self, drop_steps: bool = True):
        self.requested = False
        self.drop_steps = drop_steps
        self._droppable = False
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
        if self._droppable:
            self._droppable = False
            raise StepAborted

    @contextlib.contextmanager
    def droppable(self):
        """The part of a step that a stop signal may cut short (raising StepAborted)."""
        if not self.drop_steps:
            yield
            return
        if self.requested:
            raise StepAborted
        self._droppable = True
        try:
            yield
        finally:
            self._droppable = False

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
