"""Numba CPU kernels for pseudo-heatmap volumes (joint and limb modes), batched.

Layout of the work: the output ``[B, C, T, H, W]`` is seen as ``P = B*C*T`` planes of
``[H, W]``. A ``prange`` runs over contiguous chunks of planes, so every plane is written by
exactly one thread, start to finish: no atomics, no reduction, and the result does not depend
on the thread count (bit-identical for 1 or N threads). Each plane is zero-filled by the thread
that renders it, while it is hot in L1, so the output memory is written once (no separate
``np.zeros`` pass over ``B*C*T*H*W`` values).

Per plane the kernel loops over persons (joint mode: joint k of every person; limb mode: limb l
of every person) and max-merges each Gaussian into the plane, as pyskl does.

- Joint Gaussians are separable on the pixel grid:
  ``exp(-(dx^2+dy^2)/2s^2) = exp(-dx^2/2s^2) * exp(-dy^2/2s^2)``, so a w x h window costs w + h
  ``exp`` calls instead of w*h. Not bit-identical to the reference (float32 rounding of two
  exps and a product instead of one exp), but within a few float32 ulps: <= 1e-6 absolute for
  scores up to 1.5 (property-tested; the error scales with the score).
- Limb Gaussians are not separable; their distance-to-segment arithmetic reproduces pyskl's
  float32 expressions operation by operation (same cancellation errors, same case selection),
  and ``exp`` is an inlined Cephes-style float32 polynomial (< 1 ulp in [-87, 0], measured;
  used for joints too) so LLVM can vectorise the pixel loop; pyskl evaluates that exp in
  float64. Results below ``exp(-87) ~ 1.6e-38`` are written as 0 (the reference keeps float32
  denormals there; the difference is < 2e-38).

Output dtypes: float32 is rendered in place. float16 and uint8 planes are rendered into a
per-thread float32 scratch plane (L1-resident, kept zero between planes) and converted on the
way out, so they equal the float32 result converted, exactly; only the rows a Gaussian touched
are converted (the splats report their rows), the others are written as zeros:

- float16: IEEE round-to-nearest-even (what ``ndarray.astype(np.float16)`` does), written as
  bits into a ``uint16`` view of the output, since Numba has no float16 type on the CPU.
- uint8: ``floor(v * 255 + 0.5)`` in float32 (round half up), clipped to 255 (v >= 0 always).

Test-time flip (``mirror_channel``): after plane p is rendered, its mirror plane q (W reversed,
channel swapped) is written in the same pass: the touched rows reversed, every other row
zero-filled, which is bit-exact (the rest of p is zeros) and costs a fill, not a render.

Missing points (see :mod:`heatvol.kernels.reference`): score not a finite number >= 1e-3,
or a coordinate that is NaN/inf or has magnitude >= 2**60. Window bounds are clamped before the
float -> int conversion, which gives the same window as exact arithmetic would (empty when the
point is far off-frame), so nothing ever indexes outside the plane.

Compilation is cached on disk (``cache=True``): next to this file in ``__pycache__`` when the
package directory is writable, otherwise in Numba's per-user cache directory, or in
``$NUMBA_CACHE_DIR`` when that is set (the place to point at in read-only installs/containers).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic

from .constants import (COORD_LIMIT, EPS, OUT_FLOAT16_BITS, OUT_FLOAT32, OUT_UINT8,
                        kernel_scalars, out_kind_for)

__all__ = ["render_into", "render_joints_into", "render_limbs_into", "default_num_chunks"]

# Chunks per thread in the prange: more than one so uneven planes (busy frames) balance out,
# few enough that the per-chunk scratch allocation is negligible.
_CHUNKS_PER_THREAD = 8
# Pixels per SIMD block in the limb loop (8 float32 lanes of AVX2; harmless elsewhere).
_SIMD_BLOCK = 8


def default_num_chunks() -> int:
    """Chunks for the kernels' prange: a few per Numba thread, so uneven planes balance out."""
    return get_num_threads() * _CHUNKS_PER_THREAD


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret int32 bits as a float32 (used to build 2**n in the exp)."""
    if bits != types.int32:
        return None
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


@njit(cache=True, fastmath=False)
def _exp_nonpositive_f32(a):
    """exp(a) for float32 ``a <= 0``, < 1 ulp in [-87, 0]; 0 for a < -87 (no denormals).

    Cephes ``expf``: a = n*ln2 + r, |r| <= ln2/2, degree-5 polynomial for exp(r), times 2**n
    built from its exponent bits. Branch-free arithmetic, so a pixel loop calling it vectorises.
    """
    f32 = np.float32
    clamped = max(a, f32(-87.0))
    # n = round(a / ln2) by the 1.5 * 2**23 trick (exact in IEEE round-to-nearest, |.| < 2**22);
    # math.floor would be a libm call that stops the pixel loops from vectorising.
    n_f = (clamped * f32(1.44269504088896341) + f32(12582912.0)) - f32(12582912.0)
    n = np.int32(n_f)
    # ln2 split in two (Cody-Waite) so r is exact enough.
    r = clamped - n_f * f32(0.693359375)
    r = r - n_f * f32(-2.12194440e-4)
    p = f32(1.9875691500e-4)
    p = p * r + f32(1.3981999507e-3)
    p = p * r + f32(8.3334519073e-3)
    p = p * r + f32(4.1665795894e-2)
    p = p * r + f32(1.6666665459e-1)
    p = p * r + f32(5.0000001201e-1)
    exp_r = p * (r * r) + r + f32(1.0)
    two_to_n = _int32_bits_as_float32(np.int32((n + 127) << 23))  # n in [-126, 0]
    return f32(0.0) if a < f32(-87.0) else exp_r * two_to_n


@njit(cache=True, fastmath=False)
def _is_drawn(x, y, score):
    """A point takes part: finite score >= EPS and |coordinates| < 2**60 (NaN/inf fail)."""
    return (score >= EPS and score <= 3.4028234663852886e38
            and abs(x) < COORD_LIMIT and abs(y) < COORD_LIMIT)


@njit(cache=True, fastmath=False)
def _truncate_clamped(v, extent):
    """int(v) (toward zero) for float32 v, clamped into [-2, extent + 1] first.

    Every window bound is ``max(int(lo), 0)`` or ``min(int(hi) + 1, extent)``; clamping ``v``
    to [-2, extent + 1] leaves both unchanged (and empty windows empty) while keeping the
    float -> int conversion defined for any magnitude.
    """
    return int(min(max(v, np.float32(-2.0)), np.float32(extent + 1)))


@njit(cache=True, fastmath=False)
def _splat_point(plane, x, y, value, three_sigma, neg_inv_two_var, col_weight, row_weight):
    """Max-merge ``value * exp(-((j-x)^2 + (i-y)^2) / 2s^2)`` over pyskl's window into plane.

    plane: float32 [H, W]; x, y, value, three_sigma, neg_inv_two_var: float32.
    col_weight, row_weight: float32 scratch of length >= W and >= H.
    Returns the rows written, (first, end); (0, 0) when the window is empty.
    """
    height, width = plane.shape
    st_x = max(_truncate_clamped(x - three_sigma, width), 0)
    ed_x = min(_truncate_clamped(x + three_sigma, width) + 1, width)
    st_y = max(_truncate_clamped(y - three_sigma, height), 0)
    ed_y = min(_truncate_clamped(y + three_sigma, height) + 1, height)
    if st_x >= ed_x or st_y >= ed_y:
        return 0, 0
    # Separable Gaussian: w + h exps instead of w * h.
    for i in range(ed_x - st_x):
        dx = np.float32(st_x + i) - x
        col_weight[i] = _exp_nonpositive_f32(dx * dx * neg_inv_two_var)
    for j in range(ed_y - st_y):
        dy = np.float32(st_y + j) - y
        row_weight[j] = _exp_nonpositive_f32(dy * dy * neg_inv_two_var) * value
    for j in range(ed_y - st_y):
        row = plane[st_y + j]
        weight = row_weight[j]
        for i in range(ed_x - st_x):
            v = col_weight[i] * weight
            if v > row[st_x + i]:
                row[st_x + i] = v
    return st_y, ed_y


@njit(cache=True, fastmath=False)
def _splat_segment(plane, sx, sy, ex, ey, value, three_sigma, neg_inv_two_var, row_values):
    """Max-merge pyskl's segment Gaussian for a limb of squared length >= 1 into plane.

    plane: float32 [H, W]; (sx, sy) start, (ex, ey) end, value, three_sigma, neg_inv_two_var:
    float32. The window is the endpoints' bounding box +- 3 sigma (same int()/clip rules).
    row_values: float32 scratch of length >= W + _SIMD_BLOCK.
    Returns the rows written, (first, end); (0, 0) when the window is empty.
    """
    height, width = plane.shape
    st_x = max(_truncate_clamped(min(sx, ex) - three_sigma, width), 0)
    ed_x = min(_truncate_clamped(max(sx, ex) + three_sigma, width) + 1, width)
    st_y = max(_truncate_clamped(min(sy, ey) - three_sigma, height), 0)
    ed_y = min(_truncate_clamped(max(sy, ey) + three_sigma, height) + 1, height)
    if st_x >= ed_x or st_y >= ed_y:
        return 0, 0
    dx_ab = sx - ex
    dy_ab = sy - ey
    d2_ab = dx_ab * dx_ab + dy_ab * dy_ab
    vx = ex - sx
    vy = ey - sy
    two = np.float32(2.0)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    # Rows are short (a limb's box is ~5-25 px wide), so a vectorised loop over exactly the
    # window would spend most of its time in the scalar remainder. Instead the values of a row
    # are computed for a whole number of SIMD blocks into ``row_values`` (the extra pixels
    # cost nothing) and then max-merged over the window only.
    width_window = ed_x - st_x
    width_padded = (width_window + _SIMD_BLOCK - 1) // _SIMD_BLOCK * _SIMD_BLOCK
    for yi in range(st_y, ed_y):
        yf = np.float32(yi)
        dys = yf - sy
        dys2 = dys * dys
        dye = yf - ey
        dye2 = dye * dye
        # Branch-free body (all three distances computed, then selected) so LLVM vectorises it.
        for i in range(width_padded):
            xf = np.float32(st_x + i)
            # pyskl's float32 expressions, in its order (keeps its rounding exactly).
            dxs = xf - sx
            d2_start = dxs * dxs + dys2
            dxe = xf - ex
            d2_end = dxe * dxe + dye2
            coeff = (d2_start - d2_end + d2_ab) / two / d2_ab
            lx = xf - (sx + coeff * vx)
            ly = yf - (sy + coeff * vy)
            d2 = lx * lx + ly * ly
            d2 = d2_end if coeff >= one else d2
            d2 = d2_start if coeff <= zero else d2
            row_values[i] = _exp_nonpositive_f32(d2 * neg_inv_two_var) * value
        row = plane[yi, st_x:ed_x]
        for i in range(width_window):
            v = row_values[i]
            current = row[i]
            row[i] = v if v > current else current
    return st_y, ed_y


@njit(cache=True, fastmath=False)
def _emit_uint8(values, out):
    """uint8 = floor(v * 255 + 0.5) in float32, clipped to 255. values: float32 [n] >= 0."""
    for i in range(values.size):
        out[i] = min(math.floor(values[i] * np.float32(255.0) + np.float32(0.5)), 255)


@njit(cache=True, fastmath=False)
def _emit_float16_bits(value_bits, out):
    """IEEE float32 -> float16 bits, round to nearest even (NumPy's ``astype(np.float16)``).

    value_bits: uint32 [n], the bits of non-negative, non-NaN float32 values. out: uint16 [n].
    Branch-free int32 arithmetic (every case computed, then selected) so LLVM vectorises the
    loop; the subnormal shift is clamped into [14, 24] so no lane shifts out of range.
    """
    for i in range(value_bits.size):
        u = np.int32(value_bits[i])
        # normal half: rebias the exponent, round the mantissa to nearest even
        normal = (u - np.int32(0x38000000) + np.int32(0x0FFF) + ((u >> 13) & 1)) >> 13
        # subnormal half, [2**-25, 2**-14) (may round up to 2**-14)
        shift = min(max(np.int32(126) - (u >> 23), np.int32(14)), np.int32(24))
        mantissa = (u & np.int32(0x7FFFFF)) | np.int32(0x800000)
        subnormal = (mantissa + (np.int32(1) << (shift - 1)) - 1 + ((mantissa >> shift) & 1)
                     ) >> shift
        h = np.int32(0)
        h = subnormal if u >= np.int32(0x33000000) else h
        h = normal if u >= np.int32(0x38800000) else h
        h = np.int32(0x7C00) if u >= np.int32(0x477FF000) else h  # >= 65520 rounds to +inf
        out[i] = np.uint16(h)


@njit(cache=True, fastmath=False)
def _mirror_rows(src, dst, first, end):
    """dst[j, i] = src[j, W - 1 - i] for [H, W] planes of one dtype whose src is zero outside
    rows [first, end): those rows are copied reversed (the stored values, so the mirror is
    bit-exact whatever the output dtype), every other row of dst is zero-filled. The mirror
    thus costs a fill plus a few rows, less than rendering the plane."""
    height, width = src.shape
    last = width - 1
    for j in range(height):
        dst_row = dst[j]
        if first <= j < end:
            src_row = src[j]
            # Forward stores, reversed loads through an unsigned index: Numba adds no negative-
            # index wraparound, so LLVM vectorises the loop (~10x faster than a signed index).
            for i in range(width):
                dst_row[i] = src_row[np.uint64(last - i)]
        else:
            for i in range(width):
                dst_row[i] = 0


@njit(cache=True, fastmath=False)
def _write_mirror(out_float32, out_float16_bits, out_uint8, out_kind, p, q, first, end):
    """Mirror output plane p (non-zero only in rows [first, end)) into output plane q."""
    if out_kind == OUT_FLOAT32:
        _mirror_rows(out_float32[p], out_float32[q], first, end)
    elif out_kind == OUT_UINT8:
        _mirror_rows(out_uint8[p], out_uint8[q], first, end)
    else:
        _mirror_rows(out_float16_bits[p], out_float16_bits[q], first, end)


@njit(cache=True, fastmath=False)
def _zero(plane):
    height, width = plane.shape
    for j in range(height):
        row = plane[j]
        for i in range(width):
            row[i] = 0


@njit(cache=True, fastmath=False)
def _finish_plane(scratch, out_float16_bits, out_uint8, p, out_kind, first, end):
    """Write a plane rendered into the float32 ``scratch`` [H, W] (non-zero only in rows
    [first, end)) to the float16-bits or uint8 output, and zero those scratch rows again:
    only the rendered rows are converted, the others are written as zeros."""
    height, width = scratch.shape
    bits = scratch.view(np.uint32)
    for j in range(height):
        if first <= j < end:
            if out_kind == OUT_UINT8:
                _emit_uint8(scratch[j], out_uint8[p, j])
            else:
                _emit_float16_bits(bits[j], out_float16_bits[p, j])
            row = scratch[j]
            for i in range(width):
                row[i] = 0
        elif out_kind == OUT_UINT8:
            row8 = out_uint8[p, j]
            for i in range(width):
                row8[i] = 0
        else:
            row16 = out_float16_bits[p, j]
            for i in range(width):
                row16[i] = 0


# The two kernels below take all three possible outputs, float32 [P, H, W], float16 bits
# (uint16) [P, H, W] and uint8 [P, H, W], of which the one named by ``out_kind`` is the real
# one and the others are empty [0, H, W] placeholders. One signature for every output dtype
# means one compilation (and one cache entry) per kernel instead of one per dtype.


@njit(parallel=True, cache=True, fastmath=False)
def render_joints_into(keypoints, scores, out_float32, out_float16_bits, out_uint8, out_kind,
                       three_sigma, neg_inv_two_var, use_score, planes_are_zero, num_chunks,
                       mirror_channel):
    """Joint pseudo-heatmaps for a batch; use :func:`render_into` rather than this.

    keypoints: float32 [B, M, T, K, 2] C-contiguous; scores: float32 [B, M, T, K].
    out_*: [B*K*T, H, W] C-contiguous views of the [B, K, T, H, W] output, see above.
    three_sigma, neg_inv_two_var: float32 from :func:`kernel_scalars`. use_score: bool.
    planes_are_zero: skip the per-plane zero fill (float32 output already zeroed by the caller).
    num_chunks: how many plane ranges the prange splits the work into (a Python-side value:
    calling Numba's ``get_num_threads`` in here would make the kernel uncacheable).
    mirror_channel: int64 [K] (test-time flip, out_* then hold 2B samples) or empty.
    """
    batch, persons, frames, joints, _ = keypoints.shape
    num_planes = batch * joints * frames
    channels = joints
    mirrored = mirror_channel.size > 0
    height, width = out_float32.shape[1], out_float32.shape[2]
    direct = out_kind == OUT_FLOAT32  # float32: render in place; else via float32 scratch
    num_chunks = max(1, min(num_chunks, num_planes))
    for chunk in prange(num_chunks):
        col_weight = np.empty(width + _SIMD_BLOCK, np.float32)
        row_weight = np.empty(height, np.float32)
        # float16 / uint8: rendered here, kept zero between planes (see _finish_plane)
        scratch = np.zeros((height, width), np.float32)
        for p in range(chunk * num_planes // num_chunks, (chunk + 1) * num_planes // num_chunks):
            b = p // (joints * frames)
            k = (p // frames) % joints
            t = p % frames
            plane = out_float32[p] if direct else scratch
            if direct and not planes_are_zero:
                _zero(plane)
            first, end = height, 0  # the rows drawn into
            for m in range(persons):
                x = keypoints[b, m, t, k, 0]
                y = keypoints[b, m, t, k, 1]
                score = scores[b, m, t, k]
                if not _is_drawn(x, y, score):
                    continue
                value = score if use_score else np.float32(1.0)
                lo, hi = _splat_point(plane, x, y, value, three_sigma, neg_inv_two_var,
                                      col_weight, row_weight)
                if lo < hi:
                    first, end = min(first, lo), max(end, hi)
            if not direct:
                _finish_plane(scratch, out_float16_bits, out_uint8, p, out_kind, first, end)
            if mirrored:
                q = ((batch + b) * channels + mirror_channel[k]) * frames + t
                _write_mirror(out_float32, out_float16_bits, out_uint8, out_kind, p, q, first,
                              end)


@njit(parallel=True, cache=True, fastmath=False)
def render_limbs_into(keypoints, scores, limbs, out_float32, out_float16_bits, out_uint8,
                      out_kind, three_sigma, neg_inv_two_var, use_score, planes_are_zero,
                      num_chunks, mirror_channel):
    """Limb pseudo-heatmaps for a batch; use :func:`render_into` rather than this.

    limbs: int64 [L, 2] joint index pairs (a, b); out_*: [B*L*T, H, W] views of the
    [B, L, T, H, W] output (2B samples with ``mirror_channel`` [L]). Other arguments as
    :func:`render_joints_into`.
    """
    batch, persons, frames, joints, _ = keypoints.shape
    num_limbs = limbs.shape[0]
    num_planes = batch * num_limbs * frames
    channels = num_limbs
    mirrored = mirror_channel.size > 0
    height, width = out_float32.shape[1], out_float32.shape[2]
    direct = out_kind == OUT_FLOAT32
    num_chunks = max(1, min(num_chunks, num_planes))
    for chunk in prange(num_chunks):
        col_weight = np.empty(width + _SIMD_BLOCK, np.float32)
        row_weight = np.empty(height, np.float32)
        # float16 / uint8: rendered here, kept zero between planes (see _finish_plane)
        scratch = np.zeros((height, width), np.float32)
        for p in range(chunk * num_planes // num_chunks, (chunk + 1) * num_planes // num_chunks):
            b = p // (num_limbs * frames)
            limb = (p // frames) % num_limbs
            t = p % frames
            a_idx = limbs[limb, 0]
            b_idx = limbs[limb, 1]
            plane = out_float32[p] if direct else scratch
            if direct and not planes_are_zero:
                _zero(plane)
            first, end = height, 0  # the rows drawn into
            for m in range(persons):
                sx = keypoints[b, m, t, a_idx, 0]
                sy = keypoints[b, m, t, a_idx, 1]
                ex = keypoints[b, m, t, b_idx, 0]
                ey = keypoints[b, m, t, b_idx, 1]
                score_a = scores[b, m, t, a_idx]
                score_b = scores[b, m, t, b_idx]
                if not (_is_drawn(sx, sy, score_a) and _is_drawn(ex, ey, score_b)):
                    continue
                dx_ab = sx - ex
                dy_ab = sy - ey
                if dx_ab * dx_ab + dy_ab * dy_ab < np.float32(1.0):
                    # pyskl: a limb shorter than 1 px is joint a's point with a's OWN value.
                    value_a = score_a if use_score else np.float32(1.0)
                    lo, hi = _splat_point(plane, sx, sy, value_a, three_sigma,
                                          neg_inv_two_var, col_weight, row_weight)
                else:
                    value = min(score_a, score_b) if use_score else np.float32(1.0)
                    lo, hi = _splat_segment(plane, sx, sy, ex, ey, value, three_sigma,
                                            neg_inv_two_var, col_weight)
                if lo < hi:
                    first, end = min(first, lo), max(end, hi)
            if not direct:
                _finish_plane(scratch, out_float16_bits, out_uint8, p, out_kind, first, end)
            if mirrored:
                q = ((batch + b) * channels + mirror_channel[limb]) * frames + t
                _write_mirror(out_float32, out_float16_bits, out_uint8, out_kind, p, q, first,
                              end)


def render_into(keypoints: np.ndarray, scores: np.ndarray, limbs: np.ndarray | None,
                out: np.ndarray, sigma: float, use_score: bool, *, planes_are_zero: bool = False,
                num_chunks: int | None = None, mirror_channel: np.ndarray | None = None) -> None:
    """Render a batch into ``out`` with the Numba kernels (the ``"cpu"`` backend).

    keypoints: float32 [B, M, T, K, 2] C-contiguous; scores: float32 [B, M, T, K] C-contiguous.
    limbs: None for joint mode (C = K), else int64 [L, 2] (C = L).
    out: C-contiguous [B, C, T, H, W] float32, float16 or uint8; every element is written.
    planes_are_zero: float32 ``out`` is already all zeros (skips the kernels' own zero fill;
    only for measuring, see benchmarks/render_cpu.py). num_chunks: default
    :func:`default_num_chunks`. Inputs are not validated here: :mod:`heatvol.render` does that.
    mirror_channel: None, or int64 [C] for the test-time flip: ``out`` is then [2B, C, T, H, W]
    and ``out[B + b, mirror_channel[c]] = out[b, c, ..., ::-1]`` (written in the same pass).
    """
    out_kind = out_kind_for(out.dtype)
    height, width = out.shape[-2:]
    planes = out.reshape((-1, height, width))
    if out_kind == OUT_FLOAT16_BITS:
        planes = planes.view(np.uint16)

    def placeholder(dtype):
        return planes if planes.dtype == dtype else np.empty((0, height, width), dtype)

    three_sigma, neg_inv_two_var = kernel_scalars(sigma)
    chunks = default_num_chunks() if num_chunks is None else int(num_chunks)
    mirror = (np.empty(0, np.int64) if mirror_channel is None
              else np.ascontiguousarray(mirror_channel, dtype=np.int64))
    args = (placeholder(np.float32), placeholder(np.uint16), placeholder(np.uint8), out_kind,
            three_sigma, neg_inv_two_var, bool(use_score), bool(planes_are_zero), chunks, mirror)
    if limbs is None:
        render_joints_into(keypoints, scores, *args)
    else:
        render_limbs_into(keypoints, scores, limbs, *args)
