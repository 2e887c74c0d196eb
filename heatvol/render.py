"""Pseudo-heatmap volumes (PoseC3D's GeneratePoseTarget), the one front door.

    vol = heatvol.render_volume(keypoints, scores, size=56)                 # [K, T, H, W]
    vols = heatvol.render_batch(kps, scs, size=(64, 64), mode="limb")      # [B, L, T, H, W]

Callers never pick a kernel file: ``backend`` names an implementation and
:func:`_select_backend` maps it to one. Backends:

- ``"cpu"``: Numba kernels (:mod:`heatvol.kernels.cpu`), parallel over output planes,
  deterministic for any thread count.
- ``"reference"``: the plain NumPy transcription of pyskl (:mod:`heatvol.kernels.reference`),
  slow; the test oracle.
- ``"cuda"``: Numba CUDA kernels (:mod:`heatvol.kernels.cuda`, design in ``docs/gpu.md``);
  without a usable GPU asking for it raises a one-line ``RuntimeError``.
- ``"auto"``: ``"cuda"`` when a real GPU is usable (never the simulator), else ``"cpu"``.
- ``"cuda-simulator"`` (tests only, not in :data:`BACKENDS`): the CUDA kernels under Numba's
  simulator, in a process started with ``NUMBA_ENABLE_CUDASIM=1``.

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

    Contract of ``heatvol/kernels/cuda.py``: ``is_available() -> bool`` and
    ``render_into(keypoints, scores, limbs, out, sigma, use_score)`` with the BackendFn
    signature above (host arrays in and out; device arrays too, see render_batch).
    """
    why = None
    try:
        from .kernels import cuda
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


def _cuda_usable() -> bool:
    """A real GPU the CUDA backend can use (False under the simulator, without numba.cuda...)."""
    try:
        from .kernels import cuda
    except ImportError:
        return False
    return cuda.is_available()


def _render_cuda_simulator(keypoints, scores, limbs, out, sigma, use_score):
    from .kernels import cuda

    cuda.render_into(keypoints, scores, limbs, out, sigma, use_score, allow_simulator=True)


def _select_backend(name: str) -> BackendFn:
    """Map a backend name to its render function; the only place that knows the kernels."""
    if name == "auto":
        return _cuda_backend() if _cuda_usable() else _render_cpu
    if name == "cpu":
        return _render_cpu
    if name == "cuda-simulator":
        from .kernels import cuda

        if not cuda.simulator_enabled():
            raise RuntimeError("backend='cuda-simulator' needs NUMBA_ENABLE_CUDASIM=1 set before "
                               "numba is imported")
        return _render_cuda_simulator
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


def _check(kp_shape, sc_shape, kp_dtype, sc_dtype, *, batched: bool, size, sigma, mode, layout,
           dtype):
    """Check shapes/dtypes/arguments (metadata only, so device arrays need no copy).

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
    dtype = _output_dtype(dtype)
    height, width = _parse_size(size)
    if mode == "limb":
        limbs = np.ascontiguousarray(np.asarray(lay.limbs, dtype=np.int64).reshape(-1, 2))
        channels = len(lay.limbs)
    else:
        limbs = None
        channels = lay.num_joints
    return limbs, height, width, channels, sigma, dtype


def _output_dtype(dtype):
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
    limbs, height, width, channels, sigma, dtype = _check(
        keypoints.shape, scores.shape, keypoints.dtype, scores.dtype, batched=batched, size=size,
        sigma=sigma, mode=mode, layout=layout, dtype=dtype)
    # One conversion (float64 -> float32 like pyskl's PoseDecode), C order for the kernels.
    keypoints = np.ascontiguousarray(keypoints, dtype=np.float32)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    return keypoints, scores, limbs, height, width, channels, sigma, dtype


# ------------------------------------------------------------------------- device arrays

def _is_torch(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "is_cuda")


def _array_kind(obj) -> str | None:
    """"torch" / "cupy" / "numba" / "dlpack" for a CUDA device array, None for host data."""
    if obj is None or isinstance(obj, np.ndarray):
        return None
    if _is_torch(obj):
        return "torch" if obj.is_cuda else None
    module = type(obj).__module__
    if module.startswith("cupy"):
        return "cupy"
    if module.startswith("numba") and hasattr(obj, "copy_to_host"):
        return "numba"  # numba DeviceNDArray (also the simulator's fake device arrays)
    try:
        if hasattr(obj, "__cuda_array_interface__"):
            return "numba"
    except Exception:  # noqa: BLE001  (some producers raise other errors from the property)
        pass
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None:
        try:
            if int(device()[0]) in (2, 3, 13):  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
                return "dlpack"
        except Exception:  # noqa: BLE001
            pass
    return None


def _torch_dtype(torch, dtype):
    return torch.bfloat16 if dtype == "bfloat16" else getattr(torch, np.dtype(dtype).name)


def _device_float32(arr, kind):
    """A C-contiguous float32 device array (converted on the device only when needed)."""
    if kind == "torch":
        import torch

        return arr.detach().to(torch.float32).contiguous()
    if kind == "cupy":
        import cupy

        return cupy.ascontiguousarray(arr, dtype=cupy.float32)
    if kind == "numba":
        if np.dtype(arr.dtype) != np.float32 or not arr.is_c_contiguous():
            raise ValueError(f"numba device arrays must be C-contiguous float32; got {arr.dtype}")
        return arr
    return arr  # host data: the kernels' render_into copies it once


def _render_device(keypoints, scores, out, *, size, sigma, mode, layout, use_score, dtype,
                   backend, batched=True):
    """render_batch for device arrays: nothing leaves the GPU; see the module notes."""
    if backend not in ("auto", "cuda", "cuda-simulator"):
        raise ValueError(f"device arrays (CuPy/PyTorch CUDA/Numba) need backend 'cuda' or 'auto'; "
                         f"got backend={backend!r}")
    from .kernels import cuda as kernels

    allow_simulator = backend == "cuda-simulator"
    if allow_simulator:
        _select_backend(backend)  # the one-line error when the simulator is off
    else:
        _cuda_backend()  # the one-line error when no GPU is usable
    kinds = [k for k in (_array_kind(keypoints), _array_kind(scores), _array_kind(out)) if k]
    if "dlpack" in kinds:
        import torch

        convert = (lambda a: torch.from_dlpack(a) if _array_kind(a) == "dlpack" else a)
        keypoints, scores = convert(keypoints), convert(scores)
        out = convert(out) if out is not None else None
        kinds = ["torch" if k == "dlpack" else k for k in kinds]
    kind = "torch" if "torch" in kinds else "cupy" if "cupy" in kinds else "numba"

    def meta(arr):
        if _array_kind(arr) is None and not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        if _is_torch(arr):  # only real/integer-ness matters for the checks
            dt = np.dtype(np.float32) if arr.is_floating_point() else \
                np.dtype(np.complex64) if arr.is_complex() else np.dtype(np.int64)
        else:
            dt = np.dtype(arr.dtype)
        return arr, tuple(arr.shape), dt

    keypoints, kp_shape, kp_dtype = meta(keypoints)
    scores, sc_shape, sc_dtype = meta(scores)
    limbs, height, width, channels, sigma, dtype = _check(
        kp_shape, sc_shape, kp_dtype, sc_dtype, batched=batched, size=size, sigma=sigma,
        mode=mode, layout=layout, dtype=dtype)
    if isinstance(keypoints, np.ndarray):
        keypoints = np.ascontiguousarray(keypoints, dtype=np.float32)
    if isinstance(scores, np.ndarray):
        scores = np.ascontiguousarray(scores, dtype=np.float32)
    keypoints = _device_float32(keypoints, _array_kind(keypoints))
    scores = _device_float32(scores, _array_kind(scores))
    shape = (kp_shape[0], channels, kp_shape[2], height, width)
    if dtype == "bfloat16" and kind != "torch":
        raise ValueError("bfloat16 output needs PyTorch (give torch CUDA tensors or out=)")
    if out is None:
        if kind == "torch":
            import torch

            device = next(a.device for a in (keypoints, scores) if _is_torch(a))
            out = torch.empty(shape, dtype=_torch_dtype(torch, dtype), device=device)
        elif kind == "cupy":
            import cupy

            out = cupy.empty(shape, dtype=dtype)
        else:
            from numba import cuda

            out = cuda.device_array(shape, dtype)
    target, out_kind, stream = _device_target(out, shape, dtype, kind)
    if all(shape):
        kernels.render_into(keypoints, scores, limbs, target, sigma, bool(use_score),
                            out_kind=out_kind, stream=stream, allow_simulator=allow_simulator)
    return out


def _device_target(out, shape, dtype, kind):
    """(array for the kernels, out_kind, stream) for a device ``out``; checks it."""
    from .kernels import cuda as kernels

    out_kind_of = {"float32": kernels.OUT_FLOAT32, "float16": kernels.OUT_FLOAT16_BITS,
                   "bfloat16": kernels.OUT_BFLOAT16_BITS, "uint8": kernels.OUT_UINT8}
    want = dtype if dtype == "bfloat16" else np.dtype(dtype).name
    if _is_torch(out):
        got, contiguous = str(out.dtype).replace("torch.", ""), out.is_contiguous()
    else:
        got = np.dtype(out.dtype).name
        contiguous = out.flags.c_contiguous if hasattr(out, "flags") and hasattr(
            out.flags, "c_contiguous") else out.is_c_contiguous()
    if tuple(out.shape) != shape or got != want or not contiguous or _array_kind(out) is None:
        raise ValueError(f"out must be a C-contiguous {want} device array of shape {shape}; "
                         f"got {got} {tuple(out.shape)}")
    stream = None
    target = out
    if kind == "torch":
        import torch

        if want in ("float16", "bfloat16"):
            target = out.view(torch.int16)
        target = target.detach()
        from numba import cuda

        stream = cuda.external_stream(torch.cuda.current_stream(out.device).cuda_stream)
        target = cuda.as_cuda_array(target)
    elif kind == "cupy":
        import cupy
        from numba import cuda

        if want == "float16":
            target = out.view(cupy.int16)
        stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
        target = cuda.as_cuda_array(target)
    return target, out_kind_of[want], stream


def render_batch(keypoints, scores, *, size, sigma: float = 0.6, mode: str = "joint",
                 layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                 backend: str = "auto", out=None):
    """Render a batch of pseudo-heatmap volumes.

    keypoints: [B, M, T, K, 2] pixel (x, y) (float32; float64/ints converted once).
    scores: [B, M, T, K] confidences; < 1e-3 (or NaN) marks a joint missing.
    size: H = W int, or (H, W). sigma: Gaussian std in px. mode: "joint" (C = K channels) or
    "limb" (C = the layout's L limbs, in ``layout.limbs`` order). use_score: peak value = score
    (else 1). dtype: float32, float16, uint8 or bfloat16 (torch results only).
    backend: "auto" | "cpu" | "reference" | "cuda".
    out: optional C-contiguous [B, C, T, H, W] array of ``dtype`` to write into: NumPy, or a
    device array (CuPy, PyTorch CUDA tensor, Numba) filled in place.
    Returns ``out`` (or a new array) of shape [B, C, T, H, W]: NumPy for host inputs, a device
    array of the inputs' kind for device inputs (torch in, torch out), a torch tensor for
    bfloat16.
    """
    if any(_array_kind(a) for a in (keypoints, scores, out)):
        return _render_device(keypoints, scores, out, size=size, sigma=sigma, mode=mode,
                              layout=layout, use_score=use_score, dtype=dtype, backend=backend)
    keypoints, scores, limbs, height, width, channels, sigma, dtype = _validate(
        keypoints, scores, batched=True, size=size, sigma=sigma, mode=mode, layout=layout,
        dtype=dtype)
    render_fn = _select_backend(backend)
    if dtype == "bfloat16":
        return _render_bfloat16_host(keypoints, scores, limbs, render_fn, (height, width),
                                     channels, sigma, bool(use_score), out)
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


def _render_bfloat16_host(keypoints, scores, limbs, render_fn, size, channels, sigma, use_score,
                          out):
    """bfloat16 from host inputs: a torch CPU tensor (float32 rendered, rounded to nearest even;
    the CUDA backend rounds on the device)."""
    import torch

    batch, _, frames, _, _ = keypoints.shape
    shape = (batch, channels, frames) + tuple(size)
    if out is not None and not (_is_torch(out) and tuple(out.shape) == shape
                                and out.dtype == torch.bfloat16 and out.is_contiguous()):
        raise ValueError(f"out must be a C-contiguous torch.bfloat16 tensor of shape {shape}")
    result = out if out is not None else torch.empty(shape, dtype=torch.bfloat16)
    if not result.numel():
        return result
    if render_fn in (_render_cpu, _render_reference):
        full = np.empty(shape, np.float32)
        render_fn(keypoints, scores, limbs, full, sigma, use_score)
        result.copy_(torch.from_numpy(full))
    else:
        from .kernels import cuda as kernels

        bits = result.view(torch.int16).numpy()
        kernels.render_into(keypoints, scores, limbs, bits, sigma, use_score,
                            out_kind=kernels.OUT_BFLOAT16_BITS,
                            allow_simulator=render_fn is _render_cuda_simulator)
    return result


def render_volume(keypoints, scores, *, size, sigma: float = 0.6, mode: str = "joint",
                  layout: str | Layout = "coco17", use_score: bool = True, dtype=np.float32,
                  backend: str = "auto") -> np.ndarray:
    """Render one sample's pseudo-heatmap volume.

    keypoints: [M, T, K, 2] pixel (x, y); scores: [M, T, K]. Other arguments as
    :func:`render_batch`. Returns [C, T, H, W] of ``dtype`` (C = K joints or L limbs).
    """
    if _array_kind(keypoints) or _array_kind(scores):  # device arrays: checked by render_batch
        if len(keypoints.shape) != 4:
            raise ValueError(f"keypoints must be [M, T, K, 2]; got shape {tuple(keypoints.shape)}")
        keypoints, scores = keypoints[None], scores[None]
    else:
        keypoints, scores, *_ = _validate(keypoints, scores, batched=False, size=size,
                                          sigma=sigma, mode=mode, layout=layout, dtype=dtype)
        keypoints, scores = keypoints[None], scores[None]
    return render_batch(keypoints, scores, size=size, sigma=sigma, mode=mode,
                        layout=layout, use_score=use_score, dtype=dtype, backend=backend)[0]
