"""Numba CUDA kernels for pseudo-heatmap volumes (joint and limb modes), batched.

Same semantics as :mod:`heatvol.kernels.cpu` (and so as the reference, see ``docs/kernels.md``);
the design is in ``docs/gpu.md``. In short:

- **Decomposition: one thread block per output plane, gathering.** The output ``[B, C, T, H, W]``
  is ``P = B*C*T`` planes; block ``p`` (grid-stride) renders plane ``p``. Its first threads
  evaluate the plane's ``M`` points (missing test, pyskl's window, limb constants) into a
  shared-memory table (32 persons per pass), then every thread walks the plane's pixels with a
  stride of ``blockDim.x``: for each pixel, a 4-compare window test per person, the Gaussian only
  inside a window, max over persons, one store of the final value in the output dtype. Every
  output element is written exactly once (the zero fill is free), stores are coalesced
  (consecutive threads write consecutive pixels), no atomics, results independent of the launch
  configuration.
- **Same float32 numbers as the CPU kernels.** The arithmetic is the CPU kernels', operation by
  operation (separable joint Gaussian, pyskl's limb expressions, the same Cephes-style ``exp``
  polynomial instead of ``expf``). Every multiplication goes through :func:`_mul`, which on a GPU
  is libdevice's ``__nv_fmul_rn`` (``mul.rn.f32``): NVVM/ptxas never fuse such a product into an
  FMA, so contraction cannot change a rounding (the CPU kernels do not contract either). Division
  is IEEE (``fastmath`` off: ``prec_div``), denormals are kept (no ``ftz``). Under Numba's CUDA
  simulator the same code runs on NumPy float32 scalars (IEEE single, NumPy 2 keeps Python
  constants weak), so simulator results equal the CPU kernels bit for bit (tested).
- **Output dtypes**: float32, float16 (IEEE bits, round-to-nearest-even, written as integers into
  a 16-bit integer view), bfloat16 (round-to-nearest-even bits, same way; for ``torch.bfloat16``
  buffers), uint8 (``floor(v*255 + 0.5)`` clipped to 255). All are computed from the float32
  value, so they equal the float32 result converted.
- **Test-time flip** (``mirror_channel``): after the render, :func:`_mirror_kernel` copies each
  plane of the first B samples, reversed along W, into its left/right-swapped channel of the
  second B (stored values copied, so exactly "render, then mirror the array" in every dtype).

Import rules: importing this module never imports ``numba.cuda``; :func:`_kernels` does, on the
first render. It uses only ``numba.cuda`` (the built-in target of Numba, or the ``numba-cuda``
package, which installs itself under that same name), so it works with either.
:func:`is_available` is True only with a real, usable GPU (never under the simulator). Tests run
the kernels under the simulator with ``allow_simulator=True`` in a process started with
``NUMBA_ENABLE_CUDASIM=1`` (see ``tests/test_cuda.py``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading

import numpy as np

from .constants import (COORD_LIMIT, EPS, OUT_BFLOAT16_BITS, OUT_FLOAT16_BITS, OUT_FLOAT32,
                        OUT_UINT8, kernel_scalars, out_kind_for)

__all__ = ["is_available", "simulator_enabled", "render_into", "DEFAULT_THREADS_PER_BLOCK",
           "PERSONS_PER_PASS", "launch_config"]

#: Threads per block (one block per plane). 128 = 4 warps; a 56x56 plane is 24.5 strides.
DEFAULT_THREADS_PER_BLOCK = 128
#: Default block size under the simulator (each CUDA thread is a Python thread there).
SIMULATOR_THREADS_PER_BLOCK = 8
#: Persons whose point/limb constants one pass keeps in shared memory; more persons take more
#: passes, each later pass max-merging with what the earlier ones stored.
PERSONS_PER_PASS = 32

# float32 constants (NumPy scalars are typed float32 by Numba and stay float32 under NumPy 2).
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_FM2 = np.float32(-2.0)
_FM87 = np.float32(-87.0)
_F255 = np.float32(255.0)
_F256 = np.float32(256.0)
_FHALF = np.float32(0.5)
_EPS32 = np.float32(EPS)             # float32(1e-3) > 1e-3: same decisions as the double test
_FLT_MAX32 = np.float32(3.4028234663852886e38)
_COORD_LIMIT32 = np.float32(COORD_LIMIT)
_LOG2E = np.float32(1.44269504088896341)
_ROUND_MAGIC = np.float32(12582912.0)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)


# ----------------------------------------------------------------------------- primitives
# Plain Python here (what the simulator runs); on a GPU :func:`_kernels` rebinds these three
# names to libdevice intrinsics before anything is compiled.

def _mul(a, b):
    """float32 product, never fused into an FMA (GPU: ``__nv_fmul_rn``)."""
    return a * b


def _as_float32(bits):
    """int32 bits -> float32 (GPU: ``__nv_int_as_float``)."""
    return np.int32(bits).view(np.float32)


def _float_bits(value):
    """float32 -> its int32 bits (GPU: ``__nv_float_as_int``)."""
    return np.float32(value).view(np.int32)


# -------------------------------------------------------------------------- device functions
# Compiled with cuda.jit(device=True) on a GPU (see _DEVICE_FUNCTIONS), plain Python under the
# simulator. Each mirrors the CPU kernel's helper of the same name, operation by operation.

def _larger(a, b):
    """max(a, b) without the builtin (Numba's CUDA target mis-types builtin max on ints)."""
    return a if a > b else b


def _smaller(a, b):
    """min(a, b), see _larger."""
    return a if a < b else b


def _exp_nonpositive(a):
    """exp(a) for float32 a <= 0 (Cephes expf, < 1 ulp on [-87, 0]); 0 below -87."""
    clamped = _larger(a, _FM87)
    n_f = (_mul(clamped, _LOG2E) + _ROUND_MAGIC) - _ROUND_MAGIC
    n = np.int32(n_f)
    r = clamped - _mul(n_f, _LN2_HI)
    r = r - _mul(n_f, _LN2_LO)
    p = _P0
    p = _mul(p, r) + _P1
    p = _mul(p, r) + _P2
    p = _mul(p, r) + _P3
    p = _mul(p, r) + _P4
    p = _mul(p, r) + _P5
    exp_r = _mul(p, _mul(r, r)) + r + _F1
    two_to_n = _as_float32(np.int32((n + 127) << 23))
    if a < _FM87:
        return _F0
    return _mul(exp_r, two_to_n)


def _is_drawn(x, y, score):
    """Finite score >= 1e-3 and |coordinates| < 2**60 (NaN/inf fail every comparison)."""
    return (score >= _EPS32 and score <= _FLT_MAX32
            and abs(x) < _COORD_LIMIT32 and abs(y) < _COORD_LIMIT32)


def _truncate_clamped(v, extent):
    """int(v) toward zero after clamping v into [-2, extent + 1] (window bounds unchanged)."""
    return int(_smaller(_larger(v, _FM2), np.float32(extent + 1)))


def _float16_bits(value):
    """IEEE float32 -> float16 bits, round to nearest even; value >= 0, not NaN."""
    u = np.int64(_float_bits(value))
    if u >= 0x477FF000:
        return np.int64(0x7C00)
    if u >= 0x38800000:
        return (u - 0x38000000 + 0x0FFF + ((u >> 13) & 1)) >> 13
    if u >= 0x33000000:
        mantissa = (u & 0x7FFFFF) | 0x800000
        shift = 126 - (u >> 23)
        return (mantissa + (np.int64(1) << (shift - 1)) - 1 + ((mantissa >> shift) & 1)) >> shift
    return np.int64(0)


def _bfloat16_bits(value):
    """float32 -> bfloat16 bits, round to nearest even (torch's conversion); value >= 0."""
    u = np.int64(_float_bits(value))
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def _uint8_code(value):
    """floor(v * 255 + 0.5) in float32, clipped to 255 (clamped first: floor(inf) is undefined)."""
    scaled = _smaller(_mul(value, _F255) + _FHALF, _F256)
    return _smaller(np.int64(math.floor(scaled)), np.int64(255))


def _store(out, p, y, x, value, out_kind, merge):
    """Write the plane's final value; ``merge``: a later persons pass, keep the larger one.

    Conversions are monotone, so max over codes = code of the max."""
    if out_kind == OUT_FLOAT32:
        v = value
        if merge:
            v = _larger(v, out[p, y, x])
        out[p, y, x] = v
    else:
        if out_kind == OUT_FLOAT16_BITS:
            code = _float16_bits(value)
        elif out_kind == OUT_BFLOAT16_BITS:
            code = _bfloat16_bits(value)
        else:
            code = _uint8_code(value)
        if merge:
            code = _larger(code, np.int64(out[p, y, x]))
        out[p, y, x] = code


_DEVICE_FUNCTIONS = ("_larger", "_smaller", "_exp_nonpositive", "_is_drawn", "_truncate_clamped",
                     "_float16_bits",
                     "_bfloat16_bits", "_uint8_code", "_store")


# ------------------------------------------------------------------------------------ kernels
# ``cuda`` below is numba.cuda, bound into this module's globals by _kernels() (the simulator
# swaps it for its fake module while a kernel runs).

def _joint_kernel(keypoints, scores, out, out_kind, three_sigma, neg_inv_two_var, use_score):
    """keypoints f32 [B,M,T,K,2], scores f32 [B,M,T,K]; out [B*K*T, H, W] (float32, 16-bit ints
    or uint8 per ``out_kind``). One block per plane (grid-stride), blockDim.x threads."""
    table_f = cuda.shared.array((PERSONS_PER_PASS, 3), np.float32)  # noqa: F821  x, y, value
    table_i = cuda.shared.array((PERSONS_PER_PASS, 4), np.int32)  # noqa: F821  window
    batch, persons, frames, joints, _ = keypoints.shape
    num_planes, height, width = out.shape[0], out.shape[1], out.shape[2]
    tid = cuda.threadIdx.x  # noqa: F821
    nthreads = cuda.blockDim.x  # noqa: F821
    npix = height * width
    step_y = nthreads // width
    step_x = nthreads - step_y * width
    y0 = tid // width
    x0 = tid - y0 * width
    for p in range(cuda.blockIdx.x, num_planes, cuda.gridDim.x):  # noqa: F821
        b = p // (joints * frames)
        k = (p // frames) % joints
        t = p % frames
        for base in range(0, _larger(persons, 1), PERSONS_PER_PASS):
            count = _smaller(persons - base, PERSONS_PER_PASS)
            for q in range(tid, count, nthreads):
                m = base + q
                px = keypoints[b, m, t, k, 0]
                py = keypoints[b, m, t, k, 1]
                score = scores[b, m, t, k]
                st_x = 0
                ed_x = 0
                st_y = 0
                ed_y = 0
                if _is_drawn(px, py, score):
                    st_x = _larger(_truncate_clamped(px - three_sigma, width), 0)
                    ed_x = _smaller(_truncate_clamped(px + three_sigma, width) + 1, width)
                    st_y = _larger(_truncate_clamped(py - three_sigma, height), 0)
                    ed_y = _smaller(_truncate_clamped(py + three_sigma, height) + 1, height)
                table_f[q, 0] = px
                table_f[q, 1] = py
                table_f[q, 2] = score if use_score else _F1
                table_i[q, 0] = st_x
                table_i[q, 1] = ed_x
                table_i[q, 2] = st_y
                table_i[q, 3] = ed_y
            cuda.syncthreads()  # noqa: F821
            y = y0
            x = x0
            for _pix in range(tid, npix, nthreads):
                acc = _F0
                for q in range(count):
                    if (table_i[q, 0] <= x and x < table_i[q, 1]
                            and table_i[q, 2] <= y and y < table_i[q, 3]):
                        dx = np.float32(x) - table_f[q, 0]
                        dy = np.float32(y) - table_f[q, 1]
                        col = _exp_nonpositive(_mul(_mul(dx, dx), neg_inv_two_var))
                        row = _mul(_exp_nonpositive(_mul(_mul(dy, dy), neg_inv_two_var)),
                                   table_f[q, 2])
                        v = _mul(col, row)
                        if v > acc:
                            acc = v
                _store(out, p, y, x, acc, out_kind, base > 0)
                x += step_x
                y += step_y
                if x >= width:
                    x -= width
                    y += 1
            cuda.syncthreads()  # noqa: F821  (the table is rewritten by the next pass/plane)


def _limb_kernel(keypoints, scores, limbs, out, out_kind, three_sigma, neg_inv_two_var,
                 use_score):
    """Limb planes; limbs int64 [L, 2]; out [B*L*T, H, W]. Same structure as _joint_kernel.

    Table per person: kind (0 nothing, 1 point of joint a with a's value, 2 segment), window;
    sx, sy, ex, ey, value, d2_ab."""
    table_f = cuda.shared.array((PERSONS_PER_PASS, 6), np.float32)  # noqa: F821
    table_i = cuda.shared.array((PERSONS_PER_PASS, 5), np.int32)  # noqa: F821
    batch, persons, frames, joints, _ = keypoints.shape
    num_limbs = limbs.shape[0]
    num_planes, height, width = out.shape[0], out.shape[1], out.shape[2]
    tid = cuda.threadIdx.x  # noqa: F821
    nthreads = cuda.blockDim.x  # noqa: F821
    npix = height * width
    step_y = nthreads // width
    step_x = nthreads - step_y * width
    y0 = tid // width
    x0 = tid - y0 * width
    for p in range(cuda.blockIdx.x, num_planes, cuda.gridDim.x):  # noqa: F821
        b = p // (num_limbs * frames)
        limb = (p // frames) % num_limbs
        t = p % frames
        a_idx = limbs[limb, 0]
        b_idx = limbs[limb, 1]
        for base in range(0, _larger(persons, 1), PERSONS_PER_PASS):
            count = _smaller(persons - base, PERSONS_PER_PASS)
            for q in range(tid, count, nthreads):
                m = base + q
                sx = keypoints[b, m, t, a_idx, 0]
                sy = keypoints[b, m, t, a_idx, 1]
                ex = keypoints[b, m, t, b_idx, 0]
                ey = keypoints[b, m, t, b_idx, 1]
                score_a = scores[b, m, t, a_idx]
                score_b = scores[b, m, t, b_idx]
                kind = 0
                st_x = 0
                ed_x = 0
                st_y = 0
                ed_y = 0
                value = _F1
                d2_ab = _F0
                if _is_drawn(sx, sy, score_a) and _is_drawn(ex, ey, score_b):
                    dx_ab = sx - ex
                    dy_ab = sy - ey
                    d2_ab = _mul(dx_ab, dx_ab) + _mul(dy_ab, dy_ab)
                    if d2_ab < _F1:
                        # pyskl: a limb shorter than 1 px is joint a's point with a's OWN value.
                        kind = 1
                        if use_score:
                            value = score_a
                        st_x = _larger(_truncate_clamped(sx - three_sigma, width), 0)
                        ed_x = _smaller(_truncate_clamped(sx + three_sigma, width) + 1, width)
                        st_y = _larger(_truncate_clamped(sy - three_sigma, height), 0)
                        ed_y = _smaller(_truncate_clamped(sy + three_sigma, height) + 1, height)
                    else:
                        kind = 2
                        if use_score:
                            value = _smaller(score_a, score_b)
                        st_x = _larger(_truncate_clamped(_smaller(sx, ex) - three_sigma, width), 0)
                        ed_x = _smaller(_truncate_clamped(_larger(sx, ex) + three_sigma, width) + 1, width)
                        st_y = _larger(_truncate_clamped(_smaller(sy, ey) - three_sigma, height), 0)
                        ed_y = _smaller(_truncate_clamped(_larger(sy, ey) + three_sigma, height) + 1,
                                   height)
                table_f[q, 0] = sx
                table_f[q, 1] = sy
                table_f[q, 2] = ex
                table_f[q, 3] = ey
                table_f[q, 4] = value
                table_f[q, 5] = d2_ab
                table_i[q, 0] = st_x
                table_i[q, 1] = ed_x
                table_i[q, 2] = st_y
                table_i[q, 3] = ed_y
                table_i[q, 4] = kind
            cuda.syncthreads()  # noqa: F821
            y = y0
            x = x0
            for _pix in range(tid, npix, nthreads):
                acc = _F0
                xf = np.float32(x)
                yf = np.float32(y)
                for q in range(count):
                    if (table_i[q, 0] <= x and x < table_i[q, 1]
                            and table_i[q, 2] <= y and y < table_i[q, 3]):
                        sx = table_f[q, 0]
                        sy = table_f[q, 1]
                        value = table_f[q, 4]
                        if table_i[q, 4] == 1:
                            dx = xf - sx
                            dy = yf - sy
                            col = _exp_nonpositive(_mul(_mul(dx, dx), neg_inv_two_var))
                            row = _mul(_exp_nonpositive(_mul(_mul(dy, dy), neg_inv_two_var)),
                                       value)
                            v = _mul(col, row)
                        else:
                            ex = table_f[q, 2]
                            ey = table_f[q, 3]
                            d2_ab = table_f[q, 5]
                            # pyskl's float32 expressions in its order (as the CPU kernel).
                            dys = yf - sy
                            dys2 = _mul(dys, dys)
                            dye = yf - ey
                            dye2 = _mul(dye, dye)
                            dxs = xf - sx
                            d2_start = _mul(dxs, dxs) + dys2
                            dxe = xf - ex
                            d2_end = _mul(dxe, dxe) + dye2
                            coeff = (d2_start - d2_end + d2_ab) / _F2 / d2_ab
                            lx = xf - (sx + _mul(coeff, ex - sx))
                            ly = yf - (sy + _mul(coeff, ey - sy))
                            d2 = _mul(lx, lx) + _mul(ly, ly)
                            if coeff >= _F1:
                                d2 = d2_end
                            if coeff <= _F0:
                                d2 = d2_start
                            v = _mul(_exp_nonpositive(_mul(d2, neg_inv_two_var)), value)
                        if v > acc:
                            acc = v
                _store(out, p, y, x, acc, out_kind, base > 0)
                x += step_x
                y += step_y
                if x >= width:
                    x -= width
                    y += 1
            cuda.syncthreads()  # noqa: F821


# ------------------------------------------------------------------------------ building them

_build_lock = threading.Lock()
_built: dict = {}


def _mirror_kernel(out, batch, channels, frames, mirror_channel):
    """Test-time flip: out [2*B*C*T, H, W] planes (any dtype); plane (B + b, mirror_channel[c],
    t) = plane (b, c, t) reversed along W. A copy of the stored values, so exact for every
    output dtype. Grid-stride over the first half's elements, one thread per element."""
    num_planes = batch * channels * frames
    height, width = out.shape[1], out.shape[2]
    total = num_planes * height * width
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # noqa: F821
    stride = cuda.gridDim.x * cuda.blockDim.x  # noqa: F821
    for e in range(start, total, stride):
        p = e // (height * width)
        rest = e - p * (height * width)
        y = rest // width
        x = rest - y * width
        b = p // (channels * frames)
        c = (p // frames) % channels
        t = p % frames
        q = ((batch + b) * channels + mirror_channel[c]) * frames + t
        out[q, y, width - 1 - x] = out[p, y, x]


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1 when Numba was imported)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def is_available() -> bool:
    """A real, usable CUDA GPU with a working numba.cuda; never True under the simulator."""
    if "available" not in _built:
        try:
            if simulator_enabled():
                ok = False
            else:
                from numba import cuda as numba_cuda

                ok = bool(numba_cuda.is_available())
        except Exception:  # no numba.cuda, no driver, a broken toolkit: not usable
            ok = False
        _built["available"] = ok
    return _built["available"]


def _bind_target(simulator: bool):
    """Bind ``cuda`` and, for a GPU, the libdevice primitives and device functions into this
    module's globals (once per process: a process is either simulated or not)."""
    from numba import cuda as numba_cuda

    g = globals()
    if "target" in _built:
        return numba_cuda
    g["cuda"] = numba_cuda
    if not simulator:
        from numba.cuda import libdevice

        g["_mul"] = libdevice.fmul_rn
        g["_as_float32"] = libdevice.int_as_float
        g["_float_bits"] = libdevice.float_as_int
        for name in _DEVICE_FUNCTIONS:
            g[name] = numba_cuda.jit(device=True)(g[name])
    _built["target"] = "simulator" if simulator else "gpu"
    return numba_cuda


def _kernels(allow_simulator: bool = False):
    """(joint kernel, limb kernel), built once per process; a one-line RuntimeError if unusable."""
    simulator = simulator_enabled()
    if simulator and not allow_simulator:
        raise RuntimeError("heatvol.kernels.cuda: only Numba's CUDA simulator is enabled "
                           "(NUMBA_ENABLE_CUDASIM=1); pass allow_simulator=True to use it")
    if not simulator and not is_available():
        raise RuntimeError("heatvol.kernels.cuda: no usable CUDA GPU/numba-cuda found")
    with _build_lock:
        if "kernels" not in _built:
            numba_cuda = _bind_target(simulator)
            _built["kernels"] = (numba_cuda.jit(_joint_kernel), numba_cuda.jit(_limb_kernel))
            _built["mirror"] = numba_cuda.jit(_mirror_kernel)
        return _built["kernels"]


def compile_ptx(cc=(9, 0)) -> dict:
    """PTX of both kernels for every output array type, compiled without a GPU.

    Needs libNVVM + libdevice (a CUDA toolkit, or the ``nvidia-cuda-nvcc-cu12`` wheel with
    ``CUDA_HOME`` pointing at its ``nvidia/cuda_nvcc`` folder) but no device: a check that the
    kernels type and compile for real hardware. Returns {(mode, out dtype): ptx text}.
    """
    if simulator_enabled():
        raise RuntimeError("compile_ptx needs the real CUDA target (NUMBA_ENABLE_CUDASIM unset)")
    from numba import types

    with _build_lock:
        numba_cuda = _bind_target(False)
    result = {}
    # Device functions are compiled for "the current device" when a kernel calling them is
    # typed; without a GPU, stand in a device of compute capability ``cc`` for this call only.
    from unittest import mock

    class _Device:
        compute_capability = tuple(cc)

    dispatcher = sys.modules.get("numba.cuda.dispatcher")
    patch = (mock.patch.object(dispatcher, "get_current_device", lambda: _Device())
             if dispatcher is not None and hasattr(dispatcher, "get_current_device")
             else contextlib.nullcontext())
    with patch:
        _compile_ptx_all(numba_cuda, types, cc, result)
    return result


def _compile_ptx_all(numba_cuda, types, cc, result):
    f32 = types.float32
    kp, sc = types.Array(f32, 5, "C"), types.Array(f32, 4, "C")
    limbs = types.Array(types.int64, 2, "C")
    for name in ("float32", "uint16", "int16", "uint8"):
        planes = types.Array(getattr(types, name), 3, "C")
        for mode, fn, args in (("joint", _joint_kernel, (kp, sc, planes)),
                               ("limb", _limb_kernel, (kp, sc, limbs, planes))):
            sig = types.void(*args, types.int64, f32, f32, types.boolean)
            ptx, _ = numba_cuda.compile_ptx(fn, sig, cc=cc)
            result[(mode, name)] = ptx
        i64 = types.int64
        sig = types.void(planes, i64, i64, i64, types.Array(i64, 1, "C"))
        result[("mirror", name)], _ = numba_cuda.compile_ptx(_mirror_kernel, sig, cc=cc)


def launch_config(num_planes: int, threads_per_block: int | None = None) -> tuple[int, int]:
    """(blocks, threads): one block per plane (the kernels grid-stride past 2**31 - 1)."""
    threads = int(threads_per_block or DEFAULT_THREADS_PER_BLOCK)
    if not 1 <= threads <= 1024:
        raise ValueError(f"threads_per_block must be in [1, 1024] (best a multiple of 32); got "
                         f"{threads}")
    return max(1, min(num_planes, 2 ** 31 - 1)), threads


def _is_host(arr) -> bool:
    return isinstance(arr, np.ndarray)


def render_into(keypoints, scores, limbs, out, sigma: float, use_score: bool, *,
                out_kind: int | None = None, threads_per_block: int | None = None,
                stream=None, allow_simulator: bool = False, mirror_channel=None) -> None:
    """Render a batch into ``out`` with the CUDA kernels (the ``"cuda"`` backend).

    keypoints: float32 [B, M, T, K, 2] C-contiguous; scores: float32 [B, M, T, K]; limbs: None
    (joint mode, C = K) or int64 [L, 2] (C = L). Each may be a NumPy array (copied to the device
    once) or a device array Numba accepts (numba DeviceNDArray, or any object with
    ``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors).
    out: C-contiguous [B, C, T, H, W]: NumPy (rendered on the device, copied back) or a device
    array (rendered in place). dtype float32 / float16 / uint8, or a 16-bit integer array with
    ``out_kind`` OUT_FLOAT16_BITS / OUT_BFLOAT16_BITS (how bfloat16 buffers are filled).
    threads_per_block: 1..1024, best a multiple of 32 (default 128, 8 under the simulator;
    results do not depend on it).
    stream: a numba stream to launch on (default stream if None).
    allow_simulator: run under Numba's CUDA simulator (tests only; never chosen by "auto").
    mirror_channel: None, or int64 [C] for the test-time flip: ``out`` is then [2B, C, T, H, W];
    the first B samples are rendered, then a second kernel writes
    ``out[B + b, mirror_channel[c]] = out[b, c, ..., ::-1]`` on the device (exact copies).
    """
    joint_kernel, limb_kernel = _kernels(allow_simulator)
    mirror_kernel = _built["mirror"]
    from numba import cuda as numba_cuda

    stream = 0 if stream is None else stream
    shape = tuple(out.shape)
    height, width = shape[-2], shape[-1]
    num_planes = int(np.prod(shape[:-2]))
    if out_kind is None:
        dtype = np.dtype(out.dtype)
        if dtype in (np.dtype(np.int16), np.dtype(np.uint16)):
            raise ValueError("a 16-bit integer out needs out_kind (OUT_FLOAT16_BITS or "
                             "OUT_BFLOAT16_BITS)")
        out_kind = out_kind_for(dtype)
    host_out = out if _is_host(out) else None
    if host_out is not None:
        target = host_out.view(np.uint16) if host_out.dtype == np.float16 else host_out
        d_out = numba_cuda.device_array(target.shape, target.dtype, stream=stream)
    else:
        d_out = out if hasattr(out, "copy_to_host") else numba_cuda.as_cuda_array(out)
        if np.dtype(d_out.dtype) == np.float16:
            d_out = d_out.view(np.uint16)
    all_planes = d_out.reshape(num_planes, height, width)
    # With the flip the kernels render the first half (contiguous planes); the mirror kernel
    # fills the rest.
    planes = all_planes if mirror_channel is None else all_planes[:num_planes // 2]

    def to_device(arr):
        if arr is None or not _is_host(arr):
            return arr
        return numba_cuda.to_device(np.ascontiguousarray(arr), stream=stream)

    d_kp, d_sc, d_limbs = to_device(keypoints), to_device(scores), to_device(limbs)
    d_mirror = None if mirror_channel is None else to_device(
        np.ascontiguousarray(mirror_channel, dtype=np.int64))
    if num_planes and height and width:
        three_sigma, neg_inv_two_var = kernel_scalars(sigma)
        if threads_per_block is None and simulator_enabled():
            threads_per_block = SIMULATOR_THREADS_PER_BLOCK  # one Python thread per CUDA thread
        blocks, threads = launch_config(num_planes, threads_per_block)
        if limbs is None:
            joint_kernel[blocks, threads, stream](d_kp, d_sc, planes, out_kind, three_sigma,
                                                  neg_inv_two_var, bool(use_score))
        else:
            limb_kernel[blocks, threads, stream](d_kp, d_sc, d_limbs, planes, out_kind,
                                                 three_sigma, neg_inv_two_var, bool(use_score))
        if d_mirror is not None:
            batch, frames = shape[0] // 2, shape[2]
            elements = (num_planes // 2) * height * width
            per_block = threads if simulator_enabled() else DEFAULT_THREADS_PER_BLOCK
            grid = max(1, min(-(-elements // per_block), 65535))
            mirror_kernel[grid, per_block, stream](all_planes, batch, shape[1], frames, d_mirror)
    if host_out is not None:
        d_out.copy_to_host(target, stream=stream)
        if stream != 0:
            stream.synchronize()
