"""Checkpoint files: written atomically, read back with one-line errors, and the RNG states
(torch, CUDA, NumPy, Python) a resumed run restores.

A checkpoint (``torch.save`` of a dict, :data:`CHECKPOINT_VERSION` 2) holds ``version config
model optimizer scheduler sampler step epoch best rng world_size classes layout total_steps
steps_per_epoch checksum``; ``rng`` is one :func:`rng_state` dict per rank. ``checksum`` is the
SHA-256 of everything else (:func:`state_checksum`): torch.load reads a file with flipped bytes
in a tensor without complaint, so :func:`load_checkpoint` recomputes it and refuses a mismatch
(version-1 files, written before checksums, load unchecked).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

__all__ = ["CHECKPOINT_VERSION", "atomic_save", "load_checkpoint", "rng_state",
           "set_rng_state", "state_checksum"]

CHECKPOINT_VERSION = 2


def _feed(digest, value) -> None:
    """Hash ``value`` (nested dicts, lists, tuples, tensors, arrays, scalars) into ``digest``
    in a fixed order; each item is tagged with its kind so different structures never
    hash alike."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)  # 0-d tensors too
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        digest.update(f"A{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"S{type(value).__name__}:{value!r}".encode())


def state_checksum(state: dict) -> str:
    """The SHA-256 (hex) of a checkpoint dict, its ``checksum`` entry left out."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != "checksum"})
    return digest.hexdigest()


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
    a crash leaves the old file or the new one, never half of one. A dict gets its
    :func:`state_checksum` as ``checksum``."""
    if isinstance(obj, dict):
        obj = {**obj, "checksum": state_checksum(obj)}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint of :func:`heatvol.training.train` as a dict (tensors on the CPU); a
    missing, unreadable, damaged (checksum mismatch) or foreign file is a one-line
    :class:`ConfigError`."""
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
    if "checksum" in ckpt:
        if state_checksum(ckpt) != ckpt["checksum"]:
            raise ConfigError(f"{path}: damaged checkpoint (its SHA-256 checksum does not match "
                              f"its contents; the file was changed after it was written); use "
                              f"another one, e.g. an epoch_NNN.pt beside it")
    elif ckpt.get("version", 1) >= 2:
        raise ConfigError(f"{path}: damaged checkpoint (its checksum is missing)")
    return ckpt
