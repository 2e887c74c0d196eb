"""Checkpoint files: written atomically, read back with one-line errors, and the RNG states
(torch, CUDA, NumPy, Python) a resumed run restores.

A checkpoint (``torch.save`` of a dict, :data:`CHECKPOINT_VERSION` 1) holds ``version config
model optimizer scheduler sampler step epoch best rng world_size classes layout total_steps
steps_per_epoch``; ``rng`` is one :func:`rng_state` dict per rank.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

__all__ = ["CHECKPOINT_VERSION", "atomic_save", "load_checkpoint", "rng_state",
           "set_rng_state"]

CHECKPOINT_VERSION = 1


def rng_state(device: torch.device) -> dict:
    """This process's RNG states: torch (CPU), NumPy's and Python's global generators, and
    the CUDA generator of ``device`` when it is a GPU."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``:
    a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint of :func:`heatvol.training.train` as a dict (tensors on the CPU); a
    missing, unreadable or foreign file is a one-line :class:`ConfigError`."""
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
