"""The shared vocabulary: one name, one meaning and one parser for each parameter that the
Python API, the CLI, the presets and the docs all use.

- ``mode``: which heatmaps a volume holds, ``"joint"`` (one channel per joint, K) or ``"limb"``
  (one per limb, L); :meth:`heatvol.Layout.channels` gives the count.
- ``size``: the heatmap size (H, W) in pixels; an int means square.
- ``render_device``: where heatmaps are rendered: ``"cpu"`` (Numba kernels; in training, in the
  DataLoader workers), ``"cuda"`` (CUDA kernels; in training, inside the GPU step) or ``"auto"``
  (``"cuda"`` when a GPU is usable). The Python render functions also take ``"reference"``
  (the NumPy oracle). The torch device of a model is ``device``, a different word.
"""

from __future__ import annotations

import numbers

__all__ = ["MODES", "RENDER_DEVICES", "parse_size", "check_mode", "check_render_device"]

MODES = ("joint", "limb")
RENDER_DEVICES = ("auto", "cpu", "cuda")


def parse_size(size, name: str = "size") -> tuple[int, int]:
    """``size`` as (H, W) positive ints; an int (or a one-element sequence) means square.

    Raises ValueError naming ``name`` for anything else (0, negative, three numbers...)."""
    if isinstance(size, bool):
        raise ValueError(f"{name} must be an int or (H, W); got {size!r}")
    values = [size] if isinstance(size, (numbers.Number, str)) else size
    try:
        values = [_whole(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (H, W) of ints; got {size!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ValueError(f"{name} must be an int or (H, W); got {size!r}")
    height, width = values
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive; got (H, W) = ({height}, {width})")
    return height, width


def _whole(value) -> int:
    """An int from an int, a whole float or a digit string; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    number = int(value)
    if isinstance(value, numbers.Number) and number != value:
        raise ValueError(value)
    return number


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'joint' or 'limb'; got {mode!r}")
    return mode


def check_render_device(render_device: str, *, extra: tuple[str, ...] = ()) -> str:
    known = RENDER_DEVICES + tuple(extra)
    if render_device not in known:
        raise ValueError(f"render_device must be one of {', '.join(known)}; "
                         f"got {render_device!r}")
    return render_device
