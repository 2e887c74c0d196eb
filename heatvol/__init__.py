"""heatvol: pose stores, pseudo-heatmap volumes and training for skeleton-based action recognition.

The pipeline, one front door per stage::

    heatvol.PoseStore(path)          # store: (x, y, score) triplets in HDF5      (heatvol/store.py)
    heatvol.transforms               # sampling, cropping, resizing, flipping     (heatvol/transforms.py)
    heatvol.render_volume(kp, sc)    # K x T x H x W heatmap volumes              (heatvol/render.py)
"""

__version__ = "0.1.0"

from .layouts import Layout, layout  # noqa: E402
from .store import PoseRecord, PoseStore, PoseWriter  # noqa: E402


def __getattr__(name):
    # The renderer pulls in Numba; import it only when asked for, so `import heatvol` stays fast.
    if name in ("render_volume", "render_batch"):
        from . import render

        return getattr(render, name)
    raise AttributeError(f"module 'heatvol' has no attribute {name!r}")


__all__ = ["__version__", "Layout", "layout", "PoseStore", "PoseWriter", "PoseRecord",
           "render_volume", "render_batch"]
