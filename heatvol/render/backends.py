"""Which kernels render: backend names mapped to the kernel files (the only module that imports
:mod:`heatvol.kernels`, apart from :mod:`heatvol.render.gpu_batches`'s CUDA pipeline).

Backends:

- ``"cpu"``: Numba kernels (:mod:`heatvol.kernels.cpu`), parallel over output planes,
  deterministic for any thread count.
- ``"reference"``: the plain NumPy transcription of pyskl (:mod:`heatvol.kernels.reference`),
  slow; the test oracle.
- ``"cuda"``: Numba CUDA kernels (:mod:`heatvol.kernels.cuda`, design in ``docs/gpu.md``);
  without a usable GPU asking for it raises a one-line ``RuntimeError``.
- ``"auto"``: ``"cuda"`` when a real GPU is usable (never the simulator), else ``"cpu"``.
- ``"cuda-simulator"`` (tests only, not in :data:`BACKENDS`): the CUDA kernels under Numba's
  simulator, in a process started with ``NUMBA_ENABLE_CUDASIM=1``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["BACKENDS", "BackendFn", "select_backend", "gpu_available", "require_gpu",
           "is_cpu_backend", "render_cuda_into", "cuda_out_kind"]

BACKENDS = ("auto", "cpu", "reference", "cuda")

# A backend renders a validated batch into a preallocated C-contiguous output:
#   fn(keypoints f32 [B,M,T,K,2], scores f32 [B,M,T,K], limbs int64 [L,2] or None (joint mode),
#      out [B,C,T,H,W] of an OUTPUT_DTYPES dtype, sigma: float, use_score: bool,
#      mirror_channel=None) -> None
# With ``mirror_channel`` (int64 [C], the test-time flip) ``out`` is [2B, C, T, H, W] and
# out[B + b, mirror_channel[c]] = out[b, c, ..., ::-1] (the mirror of each rendered plane).
BackendFn = Callable[..., None]


def _render_cpu(keypoints, scores, limbs, out, sigma, use_score, mirror_channel=None):
    from ..kernels import cpu

    cpu.render_into(keypoints, scores, limbs, out, sigma, use_score,
                    mirror_channel=mirror_channel)


def _render_reference(keypoints, scores, limbs, out, sigma, use_score, mirror_channel=None):
    from ..kernels import reference

    size = out.shape[-2:]
    batch = keypoints.shape[0]
    for b in range(batch):
        if limbs is None:
            volume = reference.render_joints_reference(keypoints[b], scores[b], size, sigma, use_score)
        else:
            volume = reference.render_limbs_reference(keypoints[b], scores[b], limbs.tolist(), size,
                                                      sigma, use_score)
        out[b] = reference.quantize_uint8(volume) if out.dtype == np.uint8 else volume
    if mirror_channel is not None:  # render, then mirror the stored array (the oracle's flip)
        out[batch + np.arange(batch)[:, None], np.asarray(mirror_channel)] = out[:batch, ..., ::-1]


def require_gpu() -> BackendFn:
    """The CUDA backend, or a one-line RuntimeError saying why there is none.

    Contract of ``heatvol/kernels/cuda.py``: ``is_available() -> bool`` and
    ``render_into(keypoints, scores, limbs, out, sigma, use_score)`` with the BackendFn
    signature above (host arrays in and out; device arrays too, see render_batch).
    """
    why = None
    try:
        from ..kernels import cuda
    except ImportError as exc:  # the module, numba-cuda or the CUDA driver is missing
        why = f"{type(exc).__name__}: {exc}"
    else:
        if not cuda.is_available():
            why = "heatvol.kernels.cuda.is_available() is False"
    if why is not None:
        why = " ".join(why.split())  # one line, whatever the underlying error printed
        raise RuntimeError(f"render_device='cuda' asked for but no usable CUDA GPU/numba-cuda "
                           f"found ({why}); use render_device='cpu' or 'auto'")
    return cuda.render_into


def gpu_available() -> bool:
    """True when a real CUDA GPU is usable by the CUDA kernels (never under the simulator, and
    False without numba's CUDA support or a driver). Cheap after the first call."""
    try:
        from ..kernels import cuda
    except ImportError:
        return False
    return cuda.is_available()


def _render_cuda_simulator(keypoints, scores, limbs, out, sigma, use_score, mirror_channel=None):
    from ..kernels import cuda

    cuda.render_into(keypoints, scores, limbs, out, sigma, use_score, allow_simulator=True,
                     mirror_channel=mirror_channel)


def select_backend(name: str) -> BackendFn:
    """Map a backend name to its render function; the only place that knows the kernels."""
    if name == "auto":
        return require_gpu() if gpu_available() else _render_cpu
    if name == "cpu":
        return _render_cpu
    if name == "cuda-simulator":
        from ..kernels import cuda

        if not cuda.simulator_enabled():
            raise RuntimeError("render_device='cuda-simulator' needs NUMBA_ENABLE_CUDASIM=1 set "
                               "before numba is imported")
        return _render_cuda_simulator
    if name == "reference":
        return _render_reference
    if name == "cuda":
        return require_gpu()
    raise ValueError(f"unknown render_device {name!r}; choose one of {', '.join(BACKENDS)}")


def is_cpu_backend(fn: BackendFn) -> bool:
    """The function renders on the host (CPU kernels or the reference), not with CUDA."""
    return fn in (_render_cpu, _render_reference)


def render_cuda_into(keypoints, scores, limbs, out, sigma, use_score, *, dtype=None,
                     stream=None, allow_simulator=False, mirror_channel=None) -> None:
    """The CUDA kernels' ``render_into`` on host or device arrays.

    ``dtype``: what ``out`` holds when it cannot tell ("float16" / "bfloat16" bits in a 16-bit
    integer array); None: ``out``'s own dtype. ``stream``: a numba stream, or None.
    ``mirror_channel``: the test-time flip (see :data:`BackendFn`)."""
    from ..kernels import cuda

    out_kind = None if dtype is None else cuda_out_kind(dtype)
    cuda.render_into(keypoints, scores, limbs, out, sigma, use_score, out_kind=out_kind,
                     stream=stream, allow_simulator=allow_simulator,
                     mirror_channel=mirror_channel)


def cuda_out_kind(dtype) -> int:
    """The kernels' ``out_kind`` code for "float32" / "float16" / "bfloat16" / "uint8"."""
    from ..kernels import constants

    if str(dtype) == "bfloat16":
        return constants.OUT_BFLOAT16_BITS
    return constants.out_kind_for(dtype)

