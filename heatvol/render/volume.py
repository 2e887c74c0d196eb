"""Pseudo-heatmap volumes (PoseC3D's GeneratePoseTarget), the one front door.

    vol = heatvol.render_volume(keypoints, scores, size=56)                 # [K, T, H, W]
    vols = heatvol.render_batch(kps, scs, size=(64, 64), mode="limb")      # [B, L, T, H, W]

Callers never pick a kernel file: ``render_device`` names where to render ("auto", "cpu",
"cuda", or "reference" for the NumPy oracle) and :mod:`heatvol.render.backends` maps it to
the kernels.

Arrays (see ``docs/gpu.md``): NumPy in, NumPy out (the GPU backend copies in once and out once).
CuPy arrays, PyTorch CUDA tensors, Numba device arrays and other CUDA DLPack producers are used
in place (``__cuda_array_interface__``, no copy) and select the GPU; the result is a device array
of the same kind (torch in, torch out; DLPack-only producers give torch tensors), and
``out=`` may be a preallocated device array. ``dtype`` may also be ``"bfloat16"`` /
``torch.bfloat16`` (a torch tensor comes back; on the CPU it is the float32 result rounded to
nearest even by torch).

Semantics (all backends; details in ``docs/kernels.md``): Gaussians on the integer pixel grid
(pixel (i, j) at x=j, y=i), pyskl's windows, persons merged by max; a joint is missing when its
score is not a finite number >= 1e-3 (also with ``use_score=False``) or its coordinates are
NaN/inf/|c| >= 2**60. uint8 output is ``floor(v*255 + 0.5)`` clipped to 255; float16 is
round-to-nearest-even of the float32 result.
"""

from __future__ import annotations

import math

import numpy as np

from ..layouts import Layout, layout as get_layout
from ..params import MODES, parse_size
from .backends import is_cpu_backend, render_cuda_into, select_backend
from .interop import array_kind, is_torch, render_device_arrays

__all__ = ["render_volume", "render_batch", "Renderer", "check_request", "mirror_channels",
           "OUTPUT_DTYPES"]

OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))


def check_request(kp_shape, sc_shape, kp_dtype, sc_dtype, *, batched: bool, size, sigma, mode, layout,
           dtype):
    """Check a render request's shapes/dtypes/arguments (metadata only, so device arrays need
    no copy).

    Returns (limbs int64 [L,2] or None, H, W, C, sigma, output dtype: np.dtype or "bfloat16")."""
    lead = "[B, M, T, K, 2]" if batched else "[M, T, K, 2]"
    ndim = 5 if batched else 4
    kp_shape, sc_shape = tuple(kp_shape), tuple(sc_shape)
    if len(kp_shape) != ndim:
        raise ValueError(f"keypoints must be {lead}; got shape {kp_shape}")
    if kp_shape[-1] == 3:
        raise ValueError(f"keypoints must be 2D (x, y) pixel coordinates {lead}; got C=3 "
                         f"(3D or (x, y, score) triplets): pass keypoints[..., :2] and the scores "
                         f"separately")
    if kp_shape[-1] != 2:
        raise ValueError(f"keypoints must be {lead} with C=2 (x, y); got shape {kp_shape}")
    if sc_shape != kp_shape[:-1]:
        raise ValueError(f"scores must have shape {kp_shape[:-1]} (keypoints' without C); "
                         f"got {sc_shape}")
    for name, arr_dtype in (("keypoints", kp_dtype), ("scores", sc_dtype)):
        if not (np.issubdtype(arr_dtype, np.floating) or np.issubdtype(arr_dtype, np.integer)):
            raise ValueError(f"{name} must be a real numeric array; got dtype {arr_dtype}")
    lay: Layout = get_layout(layout)
    num_joints = kp_shape[-2]
    if num_joints != lay.num_joints:
        raise ValueError(f"layout {lay.name!r} expects K={lay.num_joints} joints; got K={num_joints} "
                         f"(keypoints shape {kp_shape})")
    if mode not in MODES:
        raise ValueError(f"mode must be 'joint' or 'limb'; got {mode!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number; got {sigma}")
    dtype = output_dtype(dtype)
    height, width = parse_size(size)
    channels = lay.channels(mode)
    limbs = np.ascontiguousarray(np.asarray(lay.limbs, dtype=np.int64).reshape(-1, 2)) \
        if mode == "limb" else None
    return limbs, height, width, channels, sigma, dtype


def output_dtype(dtype):
    """np.dtype of OUTPUT_DTYPES, or the string "bfloat16" (also for torch dtypes)."""
    if str(dtype) in ("bfloat16", "torch.bfloat16"):
        return "bfloat16"
    if type(dtype).__module__ == "torch":  # torch.float32 etc.
        dtype = str(dtype).replace("torch.", "")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32, float16, bfloat16 or uint8; got {dtype}") from None
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be float32, float16, bfloat16 or uint8; got {dtype}")
    return dtype


def _validate(keypoints, scores, *, batched: bool, size, sigma, mode, layout, dtype):
    """Check and normalise host inputs; returns (keypoints f32, scores f32, limbs, H, W, C, sigma,
    dtype)."""
    keypoints = np.asarray(keypoints)
    scores = np.asarray(scores)
    limbs, height, width, channels, sigma, dtype = check_request(
        keypoints.shape, scores.shape, keypoints.dtype, scores.dtype, batched=batched, size=size,
        sigma=sigma, mode=mode, layout=layout, dtype=dtype)
    # One conversion (float64 -> float32 like pyskl's PoseDecode), C order for the kernels.
    keypoints = np.ascontiguousarray(keypoints, dtype=np.float32)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    return keypoints, scores, limbs, height, width, channels, sigma, dtype


def render_batch(keypoints, scores, *, size, sigma: float = 0.6, mode: str = "joint",
                 layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                 render_device: str = "auto", out=None, backend: str | None = None,
                 flip: bool = False):
    """Render a batch of pseudo-heatmap volumes (and, with ``flip``, their mirrors).

    keypoints: [B, M, T, K, 2] pixel (x, y) (float32; float64/ints converted once).
    scores: [B, M, T, K] confidences; < 1e-3 (or NaN) marks a joint missing.
    size: H = W int, or (H, W). sigma: Gaussian std in px. mode: "joint" (C = K channels) or
    "limb" (C = the layout's L limbs, in ``layout.limbs`` order). use_score: peak value = score
    (else 1). dtype: float32, float16, uint8 or bfloat16 (torch results only).
    render_device: "auto" | "cpu" | "cuda" | "reference" (where to render, see
    :mod:`heatvol.params`); ``backend`` is its former name (deprecated).
    out: optional C-contiguous [B, C, T, H, W] ([2B, ...] with ``flip``) array of ``dtype`` to
    write into: NumPy, or a device array (CuPy, PyTorch CUDA tensor, Numba) filled in place.
    flip: the test-time flip: the result is [2B, C, T, H, W], samples B..2B-1 being samples
    0..B-1 mirrored along W with left/right channels swapped (``layout.flip_index()``, or
    ``layout.limb_flip_index()`` in limb mode), written by the kernels in the same pass on the
    CPU (a second kernel on the GPU). Exactly ``concatenate([v, flip_volume(v, layout, mode)])``
    of the plain render ``v`` (bit for bit, every dtype).
    Returns ``out`` (or a new array) of shape [B, C, T, H, W] ([2B, ...] with ``flip``): NumPy
    for host inputs, a device array of the inputs' kind for device inputs (torch in, torch
    out), a torch tensor for bfloat16.
    """
    render_device = _renamed_backend(render_device, backend)
    mirror_channel = mirror_channels(layout, mode) if flip else None
    if any(array_kind(a) for a in (keypoints, scores, out)):
        return render_device_arrays(keypoints, scores, out, size=size, sigma=sigma, mode=mode,
                                    layout=layout, use_score=use_score, dtype=dtype,
                                    render_device=render_device, check=check_request,
                                    mirror_channel=mirror_channel)
    keypoints, scores, limbs, height, width, channels, sigma, dtype = _validate(
        keypoints, scores, batched=True, size=size, sigma=sigma, mode=mode, layout=layout,
        dtype=dtype)
    render_fn = select_backend(render_device)
    if dtype == "bfloat16":
        return _render_bfloat16_host(keypoints, scores, limbs, render_fn, (height, width),
                                     channels, sigma, bool(use_score), out,
                                     simulator=render_device == "cuda-simulator",
                                     mirror_channel=mirror_channel)
    return _render_host(render_fn, keypoints, scores, limbs, (channels, height, width), dtype,
                        sigma, bool(use_score), mirror_channel, out)


def _render_host(render_fn, keypoints, scores, limbs, plane_shape, dtype, sigma, use_score,
                 mirror_channel, out=None):
    """Checked float32 C-contiguous host inputs -> ``out`` (or a new array) [B or 2B, C, T, H,
    W]."""
    batch, _, frames, _, _ = keypoints.shape
    samples = batch if mirror_channel is None else 2 * batch
    channels, height, width = plane_shape
    shape = (samples, channels, frames, height, width)
    if out is None:
        # np.empty, not np.zeros: the kernels zero each plane themselves (one pass over memory).
        out = np.empty(shape, dtype)
    elif (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous {dtype} array of shape {shape}; got "
                         f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if out.size:
        render_fn(keypoints, scores, limbs, out, sigma, use_score, mirror_channel=mirror_channel)
    return out


class Renderer:
    """:func:`render_batch` with its arguments checked once, for loops over many batches (a
    DataLoader worker renders thousands of samples with the same size, mode and layout).

        renderer = Renderer(size=56, mode="limb", layout=store.layout, render_device="cpu")
        volumes = renderer(keypoints, scores)   # == render_batch(keypoints, scores, size=56, ...)

    Arguments as :func:`render_batch`. A call with float32 C-contiguous NumPy arrays of the
    right shapes goes straight to the kernels (the per-call checks of ``render_batch`` cost
    ~20 us, a tenth of rendering a training sample); anything else (other dtypes, device
    arrays, bfloat16 output, wrong shapes) takes ``render_batch`` itself, with its checks and
    messages. Results are identical either way.
    """

    def __init__(self, *, size, sigma: float = 0.6, mode: str = "joint",
                 layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                 render_device: str = "auto", flip: bool = False):
        self._kwargs = dict(size=size, sigma=sigma, mode=mode, layout=layout,
                            use_score=use_score, dtype=dtype, render_device=render_device,
                            flip=flip)
        lay = get_layout(layout)
        self._num_joints = lay.num_joints
        self._limbs, height, width, channels, self._sigma, self._dtype = check_request(
            (1, 1, 1, lay.num_joints, 2), (1, 1, 1, lay.num_joints), np.float32, np.float32,
            batched=True, size=size, sigma=sigma, mode=mode, layout=lay, dtype=dtype)
        self._plane_shape = (channels, height, width)
        self._use_score = bool(use_score)
        self._mirror_channel = mirror_channels(lay, mode) if flip else None
        self._render_fn = None if self._dtype == "bfloat16" else select_backend(render_device)

    def __call__(self, keypoints, scores):
        """keypoints [B, M, T, K, 2], scores [B, M, T, K] -> [B (2B with flip), C, T, H, W]."""
        if (self._render_fn is None or type(keypoints) is not np.ndarray
                or type(scores) is not np.ndarray or keypoints.dtype != np.float32
                or scores.dtype != np.float32 or not keypoints.flags.c_contiguous
                or not scores.flags.c_contiguous or keypoints.ndim != 5
                or keypoints.shape[3:] != (self._num_joints, 2)
                or scores.shape != keypoints.shape[:4]):
            return render_batch(keypoints, scores, **self._kwargs)
        return _render_host(self._render_fn, keypoints, scores, self._limbs, self._plane_shape,
                            self._dtype, self._sigma, self._use_score, self._mirror_channel)


def mirror_channels(layout: str | Layout, mode: str) -> np.ndarray:
    """int64 [C]: where the test-time flip moves channel c (the inverse of the flip
    permutation ``perm``, since a flipped volume's channel c' is the plain volume's
    ``perm[c']``, as in :func:`heatvol.transforms.flip_volume`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'joint' or 'limb'; got {mode!r}")
    lay = get_layout(layout)
    perm = np.asarray(lay.flip_index() if mode == "joint" else lay.limb_flip_index(), np.int64)
    return np.ascontiguousarray(np.argsort(perm, kind="stable"))


def _render_bfloat16_host(keypoints, scores, limbs, render_fn, size, channels, sigma, use_score,
                          out, *, simulator: bool, mirror_channel=None):
    """bfloat16 from host inputs: a torch CPU tensor (float32 rendered, rounded to nearest even;
    the CUDA backend rounds on the device)."""
    import torch

    batch, _, frames, _, _ = keypoints.shape
    samples = batch if mirror_channel is None else 2 * batch
    shape = (samples, channels, frames) + tuple(size)
    if out is not None and not (is_torch(out) and tuple(out.shape) == shape
                                and out.dtype == torch.bfloat16 and out.is_contiguous()):
        raise ValueError(f"out must be a C-contiguous torch.bfloat16 tensor of shape {shape}")
    result = out if out is not None else torch.empty(shape, dtype=torch.bfloat16)
    if not result.numel():
        return result
    if is_cpu_backend(render_fn):
        full = np.empty(shape, np.float32)
        render_fn(keypoints, scores, limbs, full, sigma, use_score,
                  mirror_channel=mirror_channel)
        result.copy_(torch.from_numpy(full))
    else:
        bits = result.view(torch.int16).numpy()
        render_cuda_into(keypoints, scores, limbs, bits, sigma, use_score, dtype="bfloat16",
                         allow_simulator=simulator, mirror_channel=mirror_channel)
    return result


def render_volume(keypoints, scores, *, size, sigma: float = 0.6, mode: str = "joint",
                  layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                  render_device: str = "auto", backend: str | None = None) -> np.ndarray:
    """Render one sample's pseudo-heatmap volume.

    keypoints: [M, T, K, 2] pixel (x, y); scores: [M, T, K]. Other arguments as
    :func:`render_batch`. Returns [C, T, H, W] of ``dtype`` (C = K joints or L limbs).
    """
    render_device = _renamed_backend(render_device, backend)
    if array_kind(keypoints) or array_kind(scores):  # device arrays: checked by render_batch
        if len(keypoints.shape) != 4:
            raise ValueError(f"keypoints must be [M, T, K, 2]; got shape {tuple(keypoints.shape)}")
        keypoints, scores = keypoints[None], scores[None]
    else:
        keypoints, scores, *_ = _validate(keypoints, scores, batched=False, size=size,
                                          sigma=sigma, mode=mode, layout=layout, dtype=dtype)
        keypoints, scores = keypoints[None], scores[None]
    return render_batch(keypoints, scores, size=size, sigma=sigma, mode=mode,
                        layout=layout, use_score=use_score, dtype=dtype,
                        render_device=render_device)[0]


def _renamed_backend(render_device: str, backend: str | None) -> str:
    """``backend=`` is the former name of ``render_device=`` (kept for one release)."""
    if backend is None:
        return render_device
    import warnings

    warnings.warn("render_volume/render_batch: backend= is now render_device= (same values)",
                  DeprecationWarning, stacklevel=3)
    return backend
