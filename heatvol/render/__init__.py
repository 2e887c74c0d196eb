"""Rendering: pose keypoints -> pseudo-heatmap volumes (PoseC3D's GeneratePoseTarget). The only
door to the kernels (:mod:`heatvol.kernels`).

    vol = heatvol.render_volume(keypoints, scores, size=56)                 # [K, T, H, W]
    vols = heatvol.render_batch(kps, scs, size=(64, 64), mode="limb")      # [B, L, T, H, W]
    renderer = heatvol.render.Renderer(size=56, mode="limb"); renderer(kps, scs)  # checked once
    heatvol.render.render_store("penn.h5", "volumes.h5", mode="limb", size=56)
    heatvol.render.gpu_available()                                          # a usable CUDA GPU?

Modules: :mod:`~heatvol.render.volume` (the front door: checks, dtypes, host arrays),
:mod:`~heatvol.render.interop` (CuPy / torch / Numba device arrays in and out, zero copy),
:mod:`~heatvol.render.backends` (render_device -> kernels), :mod:`~heatvol.render.pipeline`
(a pose store -> a volume file) and :mod:`~heatvol.render.gpu_batches` (its batched GPU path).
"""

from __future__ import annotations

from ..params import MODES, RENDER_DEVICES
from .backends import BACKENDS, gpu_available, require_gpu
from .pipeline import render_store
from .volume import OUTPUT_DTYPES, Renderer, render_batch, render_volume

__all__ = ["render_volume", "render_batch", "Renderer", "render_store", "gpu_available",
           "require_gpu", "MODES", "RENDER_DEVICES", "BACKENDS", "OUTPUT_DTYPES"]
