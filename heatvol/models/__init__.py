"""Models: PoseConv3D backbones on heatmap volumes and GCNs on joint coordinates.

One front door::

    model = heatvol.models.build("slowonly", layout="coco17", num_classes=60)

=============  ====================================  ===========================  ======================
name           model (file)                          input                        ``in_channels`` default
=============  ====================================  ===========================  ======================
``slowonly``   SlowOnly-R50 + I3D head               ``[N, C, T, H, W]`` volumes  layout's joint count
               (``resnet3d_slowonly.py``)
``c3d``        C3D-light + I3D head (``c3d.py``)     ``[N, C, T, H, W]``          layout's joint count
``x3d``        X3D-shallow + I3D head (``x3d.py``)   ``[N, C, T, H, W]``          layout's joint count
``stgcn``      ST-GCN (``stgcn.py``)                 ``[N, M, T, V, C]`` coords   3
``msg3d``      MS-G3D (``msg3d.py``)                 ``[N, M, T, V, C]``          3
``dualhead``   DualHead-Net (``dualhead.py``)        ``[N, M, T, V, C]``          3
=============  ====================================  ===========================  ======================

Every model returns logits ``[N, num_classes]``. For limb volumes pass
``in_channels=layout.num_limbs``. GCN inputs follow pyskl's layout: ``M`` persons (``num_person``,
default 2, fixed at construction for the data BatchNorm of MS-G3D / DualHead-Net; pad absent
persons with zeros), ``C`` = 3 channels (x, y, score for 2D; x, y, z for 3D).

DualHead-Net has two heads: ``model(x)`` averages their logits (the official prediction);
``model(x, return_heads=True)`` returns ``(fine, coarse)`` for the official loss
``(CE(fine) + CE(coarse)) / 2``; ``model.multi_head`` is True.

Graph utilities live in :mod:`heatvol.models.graph`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..layouts import Layout, layout as _layout
from .c3d import c3d
from .dualhead import dualhead
from .msg3d import msg3d
from .resnet3d_slowonly import slowonly
from .stgcn import stgcn
from .x3d import x3d

__all__ = ["build", "MODELS", "CNN_MODELS", "GCN_MODELS", "count_parameters"]

#: 3D CNNs on heatmap volumes ``[N, C, T, H, W]``.
CNN_MODELS: dict[str, Callable[..., nn.Module]] = {"slowonly": slowonly, "c3d": c3d, "x3d": x3d}
#: GCNs on coordinates ``[N, M, T, V, C]``.
GCN_MODELS: dict[str, Callable[..., nn.Module]] = {"stgcn": stgcn, "msg3d": msg3d, "dualhead": dualhead}
MODELS = {**CNN_MODELS, **GCN_MODELS}


def build(name: str, *, layout: str | Layout, num_classes: int, in_channels: int | None = None,
          **kw) -> nn.Module:
    """Build model ``name`` for skeleton ``layout`` with ``num_classes`` outputs.

    ``in_channels`` defaults to the layout's joint count for the 3D CNNs and to 3 for the GCNs;
    other keywords go to the model's builder (e.g. ``dropout`` for the CNNs, ``num_person``,
    ``num_gcn_scales``, ``num_g3d_scales`` for the GCNs).
    """
    lay = _layout(layout)
    if name in CNN_MODELS:
        return CNN_MODELS[name](in_channels=in_channels or lay.num_joints,
                                num_classes=num_classes, **kw)
    if name in GCN_MODELS:
        return GCN_MODELS[name](layout=lay, num_classes=num_classes,
                                in_channels=in_channels or 3, **kw)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
