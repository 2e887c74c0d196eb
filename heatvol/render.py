"""Pseudo-heatmap volumes (PoseC3D's GeneratePoseTarget), the one front door.

    vol = heatvol.render_volume(keypoints, scores, size=56)                 # [K, T, H, W]
    vols = heatvol.render_batch(kps, scs, size=(64, 64), mode="limb")      # [B, L, T, H, W]

Callers never pick a kernel file: ``backend`` names an implementation and
:func:`_select_backend` maps it to one. Backends:

- ``"cpu"``: Numba kernels (:mod:`heatvol.kernels.cpu`), parallel over output planes,
  deterministic for any thread count.
- ``"reference"``: the plain NumPy transcription of pyskl (:mod:`heatvol.kernels.reference`),
  slow; the test oracle.
- ``"cuda"``: to come in :mod:`heatvol.kernels.cuda` (see :func:`_cuda_backend`); until then,
  or without a usable GPU, asking for it raises a one-line ``RuntimeError``.
- ``"auto"``: ``"cpu"``.

Semantics (all backends; details in ``docs/kernels.md``): Gaussians on the integer pixel grid
(pixel (i, j) at x=j, y=i), pyskl's windows, persons merged by max; a joint is missing when its
score is not a finite number >= 1e-3 (also with ``use_score=False``) or its coordinates are
NaN/inf/|c| >= 2**60. uint8 output is ``floor(v*255 + 0.5)`` clipped to 255; float16 is
round-to-nearest-even of the float32 result.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .layouts import Layout, layout as get_layout

__all__ = ["render_volume", "render_batch", "BACKENDS", "MODES", "OUTPUT_DTYPES"]

BACKENDS = ("auto", "cpu", "reference", "cuda")
MODES = ("joint", "limb")
OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))

# A backend renders a validated batch into a preallocated C-contiguous output:
#   fn(keypoints f32 [B,M,T,K,2], scores f32 [B,M,T,K], limbs int64 [L,2] or None (joint mode),
#      out [B,C,T,H,W] of an OUTPUT_DTYPES dtype, sigma: float, use_score: bool) -> None
BackendFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray, float, bool], None]


def _render_cpu(keypoints, scores, limbs, out, sigma, use_score):
    from .kernels import cpu

    cpu.render_into(keypoints, scores, limbs, out, sigma, use_score)


def _render_reference(keypoints, scores, limbs, out, sigma, use_score):
    from .kernels import reference

    size = out.shape[-2:]
    for b in range(keypoints.shape[0]):
        if limbs is None:
            volume = reference.render_joints_reference(keypoints[b], scores[b], size, sigma, use_score)
        else:
            volume = reference.render_limbs_reference(keypoints[b], scores[b], limbs.tolist(), size,
                                                      sigma, use_score)
        out[b] = reference.quantize_uint8(volume) if out.dtype == np.uint8 else volume


def _cuda_backend() -> BackendFn:
    """The CUDA backend, or a one-line RuntimeError saying why there is none.

    Contract for ``heatvol/kernels/cuda.py`` (a later issue): ``is_available() -> bool`` and
    ``render_into(keypoints, scores, limbs, out, sigma, use_score)`` with the BackendFn
    signature above (host arrays in and out).
    """
    why = None
    try:
        from .kernels import cuda  # noqa: F401  (not written yet)
    except ImportError as exc:  # the module, numba-cuda or the CUDA driver is missing
        why = f"{type(exc).__name__}: {exc}"
    else:
        if not cuda.is_available():
            why = "heatvol.kernels.cuda.is_available() is False"
    if why is not None:
        why = " ".join(why.split())  # one line, whatever the underlying error printed
        raise RuntimeError(f"backend='cuda' asked for but no usable CUDA GPU/numba-cuda found "
                           f"({why}); use backend='cpu' or backend='auto'")
    return cuda.render_into


def _select_backend(name: str) -> BackendFn:
    """Map a backend name to its render function; the only place that knows the kernels."""
    if name in ("auto", "cpu"):
        return _render_cpu
    if name == "reference":
        return _render_reference
    if name == "cuda":
        return _cuda_backend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        try:
            height, width = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (H, W); got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive; got (H, W) = ({height}, {width})")
    return height, width


def _validate(keypoints, scores, *, batched: bool, size, sigma, mode, layout, dtype):
    """Check and normalise the inputs; returns (keypoints f32, scores f32, limbs, H, W, C, dtype)."""
    lead = "[B, M, T, K, 2]" if batched else "[M, T, K, 2]"
    ndim = 5 if batched else 4
    keypoints = np.asarray(keypoints)
    scores = np.asarray(scores)
    if keypoints.ndim != ndim:
        raise ValueError(f"keypoints must be {lead}; got shape {keypoints.shape}")
    if keypoints.shape[-1] == 3:
        raise ValueError(f"keypoints must be 2D (x, y) pixel coordinates {lead}; got C=3 "
                         f"(3D or (x, y, score) triplets): pass keypoints[..., :2] and the scores "
                         f"separately")
    if keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be {lead} with C=2 (x, y); got shape {keypoints.shape}")
    if scores.shape != keypoints.shape[:-1]:
        raise ValueError(f"scores must have shape {keypoints.shape[:-1]} (keypoints' without C); "
                         f"got {scores.shape}")
    for name, arr in (("keypoints", keypoints), ("scores", scores)):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    lay: Layout = get_layout(layout)
    num_joints = keypoints.shape[-2]
    if num_joints != lay.num_joints:
        raise ValueError(f"layout {lay.name!r} expects K={lay.num_joints} joints; got K={num_joints} "
                         f"(keypoints shape {keypoints.shape})")
    if mode not in MODES:
        raise ValueError(f"mode must be 'joint' or 'limb'; got {mode!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number; got {sigma}")
    dtype = np.dtype(dtype)
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be float32, float16 or uint8; got {dtype}")
    height, width = _parse_size(size)
    # One conversion (float64 -> float32 like pyskl's PoseDecode), C order for the kernels.
    keypoints = np.ascontiguousarray(keypoints, dtype=np.float32)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if mode == "limb":
        limbs = np.ascontiguousarray(np.asarray(lay.limbs, dtype=np.int64).reshape(-1, 2))
        channels = len(lay.limbs)
    else:
        limbs = None
        channels = lay.num_joints
    return keypoints, scores, limbs, height, width, channels, sigma, dtype


def render_batch(keypoints, scores, *, size, sigma: float = 0.6, mode: str = "joint",
                 layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                 backend: str = "auto", out: np.ndarray | None = None) -> np.ndarray:
    """Render a batch of pseudo-heatmap volumes.

    keypoints: [B, M, T, K, 2] pixel (x, y) (float32; float64/ints converted once).
    scores: [B, M, T, K] confidences; < 1e-3 (or NaN) marks a joint missing.
    size: H = W int, or (H, W). sigma: Gaussian std in px. mode: "joint" (C = K channels) or
    "limb" (C = the layout's L limbs, in ``layout.limbs`` order). use_score: peak value = score
    (else 1). dtype: float32, float16 or uint8. backend: "auto" | "cpu" | "reference" | "cuda".
    out: optional C-contiguous [B, C, T, H, W] array of ``dtype`` to write into.
    Returns ``out`` (or a new array) of shape [B, C, T, H, W].
    """
    keypoints, scores, limbs, height, width, channels, sigma, dtype = _validate(
        keypoints, scores, batched=True, size=size, sigma=sigma, mode=mode, layout=layout,
        dtype=dtype)
    render_fn = _select_backend(backend)
    batch, _, frames, _, _ = keypoints.shape
    shape = (batch, channels, frames, height, width)
    if out is None:
        # np.empty, not np.zeros: the kernels zero each plane themselves (one pass over memory).
        out = np.empty(shape, dtype)
    elif (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous {dtype} array of shape {shape}; got "
                         f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if out.size:
        render_fn(keypoints, scores, limbs, out, sigma, bool(use_score))
    return out


def render_volume(keypoints, scores, *, size, sigma: float = 0.6, mode: str = "joint",
                  layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                  backend: str = "auto") -> np.ndarray:
    """Render one sample's pseudo-heatmap volume.

    keypoints: [M, T, K, 2] pixel (x, y); scores: [M, T, K]. Other arguments as
    :func:`render_batch`. Returns [C, T, H, W] of ``dtype`` (C = K joints or L limbs).
    """
    keypoints, scores, *_ = _validate(keypoints, scores, batched=False, size=size, sigma=sigma,
                                      mode=mode, layout=layout, dtype=dtype)
    return render_batch(keypoints[None], scores[None], size=size, sigma=sigma, mode=mode,
                        layout=layout, use_score=use_score, dtype=dtype, backend=backend)[0]
