"""Device arrays in and out of the renderer: CuPy arrays, PyTorch CUDA tensors, Numba device
arrays and other CUDA DLPack producers, used in place (``__cuda_array_interface__``, no copy).

The result is a device array of the inputs' kind (torch in, torch out; DLPack-only producers give
torch tensors); ``out=`` may be a preallocated device array. The kernels run on the current
stream of the producing library (torch's or CuPy's), so no synchronisation is added.
"""

from __future__ import annotations

import numpy as np

from .backends import render_cuda_into, select_backend

__all__ = ["is_torch", "array_kind", "render_device_arrays"]


def is_torch(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "is_cuda")


def array_kind(obj) -> str | None:
    """"torch" / "cupy" / "numba" / "dlpack" for a CUDA device array, None for host data."""
    if obj is None or isinstance(obj, np.ndarray):
        return None
    if is_torch(obj):
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


def render_device_arrays(keypoints, scores, out, *, size, sigma, mode, layout, use_score, dtype,
                         render_device, check, batched=True, mirror_channel=None):
    """render_batch for device arrays: nothing leaves the GPU; see the module notes.

    ``check``: the front door's request check (shapes, dtypes, arguments), called on metadata
    only. ``mirror_channel``: the test-time flip (int64 [C]; ``out`` then has 2B samples, see
    :data:`heatvol.render.backends.BackendFn`)."""
    if render_device not in ("auto", "cuda", "cuda-simulator"):
        raise ValueError(f"device arrays (CuPy/PyTorch CUDA/Numba) need render_device 'cuda' or "
                         f"'auto'; got render_device={render_device!r}")
    allow_simulator = render_device == "cuda-simulator"
    select_backend(render_device if allow_simulator else "cuda")  # one-line error if unusable
    kinds = [k for k in (array_kind(keypoints), array_kind(scores), array_kind(out)) if k]
    if "dlpack" in kinds:
        import torch

        convert = (lambda a: torch.from_dlpack(a) if array_kind(a) == "dlpack" else a)
        keypoints, scores = convert(keypoints), convert(scores)
        out = convert(out) if out is not None else None
        kinds = ["torch" if k == "dlpack" else k for k in kinds]
    kind = "torch" if "torch" in kinds else "cupy" if "cupy" in kinds else "numba"

    def meta(arr):
        if array_kind(arr) is None and not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        if is_torch(arr):  # only real/integer-ness matters for the checks
            dt = np.dtype(np.float32) if arr.is_floating_point() else \
                np.dtype(np.complex64) if arr.is_complex() else np.dtype(np.int64)
        else:
            dt = np.dtype(arr.dtype)
        return arr, tuple(arr.shape), dt

    keypoints, kp_shape, kp_dtype = meta(keypoints)
    scores, sc_shape, sc_dtype = meta(scores)
    limbs, height, width, channels, sigma, dtype = check(
        kp_shape, sc_shape, kp_dtype, sc_dtype, batched=batched, size=size, sigma=sigma,
        mode=mode, layout=layout, dtype=dtype)
    if isinstance(keypoints, np.ndarray):
        keypoints = np.ascontiguousarray(keypoints, dtype=np.float32)
    if isinstance(scores, np.ndarray):
        scores = np.ascontiguousarray(scores, dtype=np.float32)
    keypoints = _device_float32(keypoints, array_kind(keypoints))
    scores = _device_float32(scores, array_kind(scores))
    samples = kp_shape[0] * (1 if mirror_channel is None else 2)
    shape = (samples, channels, kp_shape[2], height, width)
    if dtype == "bfloat16" and kind != "torch":
        raise ValueError("bfloat16 output needs PyTorch (give torch CUDA tensors or out=)")
    if out is None:
        if kind == "torch":
            import torch

            device = next(a.device for a in (keypoints, scores) if is_torch(a))
            out = torch.empty(shape, dtype=_torch_dtype(torch, dtype), device=device)
        elif kind == "cupy":
            import cupy

            out = cupy.empty(shape, dtype=dtype)
        else:
            from numba import cuda

            out = cuda.device_array(shape, dtype)
    target, stream = _device_target(out, shape, dtype, kind)
    if all(shape):
        render_cuda_into(keypoints, scores, limbs, target, sigma, bool(use_score),
                         dtype=dtype if dtype == "bfloat16" else np.dtype(dtype).name,
                         stream=stream, allow_simulator=allow_simulator,
                         mirror_channel=mirror_channel)
    return out


def _device_target(out, shape, dtype, kind):
    """(array for the kernels, stream) for a device ``out``; checks it."""
    want = dtype if dtype == "bfloat16" else np.dtype(dtype).name
    if is_torch(out):
        got, contiguous = str(out.dtype).replace("torch.", ""), out.is_contiguous()
    else:
        got = np.dtype(out.dtype).name
        contiguous = out.flags.c_contiguous if hasattr(out, "flags") and hasattr(
            out.flags, "c_contiguous") else out.is_c_contiguous()
    if tuple(out.shape) != shape or got != want or not contiguous or array_kind(out) is None:
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
    return target, stream
