"""heatvol: pose stores, pseudo-heatmap volumes and training for skeleton-based action recognition.

The pipeline, one front door per stage::

    heatvol.PoseStore(path)          # store: (x, y, score) triplets in HDF5      (heatvol/store.py)
    heatvol.transforms               # sampling, cropping, resizing, flipping     (heatvol/transforms.py)
    heatvol.render_volume(kp, sc)    # K x T x H x W heatmap volumes              (heatvol/render/)
"""

__version__ = "0.1.0"

from .layouts import Layout, layout  # noqa: E402

# Where each lazily imported front door lives: the store pulls in h5py, the renderer Numba, so
# `import heatvol` (and `heatvol --help`) stays fast until one is used.
_LAZY = {"PoseStore": "store", "PoseWriter": "store", "PoseRecord": "store",
         "render_volume": "render", "render_batch": "render"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'heatvol' has no attribute {name!r}")


__all__ = ["__version__", "Layout", "layout", "PoseStore", "PoseWriter", "PoseRecord",
           "render_volume", "render_batch"]
