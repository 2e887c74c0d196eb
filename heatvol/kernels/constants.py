"""What every kernel shares: the missing-point rule, the output codes, the sigma scalars.

The CPU, CUDA and reference kernels import these; nothing outside :mod:`heatvol.kernels` and
:mod:`heatvol.render` needs them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EPS", "COORD_LIMIT", "OUT_FLOAT32", "OUT_FLOAT16_BITS", "OUT_BFLOAT16_BITS",
           "OUT_UINT8", "out_kind_for", "kernel_scalars"]

#: Scores below this mark a joint as missing (pyskl's EPS; mmaction2 uses 1e-4).
EPS = 1e-3
#: Coordinates with |c| >= this (2**60 px) are missing: they keep every float32 intermediate of
#: the limb formula finite (squares <= 2**123) and are far off any frame.
COORD_LIMIT = float(2 ** 60)

#: ``out_kind`` codes: which output the kernels store, and how (the same on every backend).
OUT_FLOAT32 = 0        # float32 values
OUT_FLOAT16_BITS = 1   # IEEE half bits (round to nearest even) into a 16-bit integer view
OUT_BFLOAT16_BITS = 2  # bfloat16 bits (round to nearest even) into a 16-bit integer view (CUDA)
OUT_UINT8 = 3          # floor(v * 255 + 0.5), clipped to 255


def out_kind_for(dtype) -> int:
    """The ``out_kind`` code for a NumPy output dtype (float32, float16 or uint8).

    bfloat16 has no NumPy dtype: its buffers are 16-bit integer views with
    ``out_kind=OUT_BFLOAT16_BITS`` given explicitly."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return OUT_FLOAT32
    if dtype == np.float16:
        return OUT_FLOAT16_BITS
    if dtype == np.uint8:
        return OUT_UINT8
    raise ValueError(f"unsupported output dtype {dtype}; use float32, float16 or uint8 (or "
                     f"bfloat16 bits with out_kind=OUT_BFLOAT16_BITS)")


def kernel_scalars(sigma: float) -> tuple[np.float32, np.float32]:
    """(three_sigma, neg_inv_two_var) as the kernels want them.

    ``three_sigma`` is ``float32(3 * sigma)`` with the product taken in double precision, which
    is exactly what pyskl's ``mu - 3 * sigma`` does with a float32 ``mu`` under NumPy 2, so the
    windows match pyskl's to the pixel.
    """
    sigma = float(sigma)
    return np.float32(3 * sigma), np.float32(-1.0 / (2.0 * sigma * sigma))
