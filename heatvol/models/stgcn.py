"""ST-GCN (Yan et al., AAAI 2018), the baseline GCN, following the official code
(yysijie/st-gcn, ``net/st_gcn.py``) with the "spatial" partition strategy and learnable edge
importance.

Input ``[N, M, T, V, C]`` (pyskl layout), output logits ``[N, num_classes]``.

- ``data_bn``: BatchNorm1d over ``V*C`` channels, persons folded into the batch.
- Ten blocks ``(C, 64, no residual), 64x3, (64 -> 128, stride 2), 128x2, (128 -> 256, stride 2),
  256x2``; each: graph conv ``Conv1x1(C_in -> 3*C_out)`` aggregated with the three partition
  matrices ``A * edge_importance`` (``einsum('nkctv,kvw->nctw')``), then
  ``BN -> ReLU -> Conv(9x1, stride) -> BN -> Dropout``, plus a residual, then ReLU.
- Global average pool over ``T*V`` and the persons, ``Linear(256, classes)``.

The partition centre is the layout's ``center`` joint unless ``center=`` is given (the official
NTU graph used the spine-shoulder joint, 20, and OpenPose the neck, 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..layouts import Layout, layout as _layout
from .graph import adjacency, stgcn_spatial_partition

__all__ = ["STGCNBlock", "STGCN", "stgcn"]


class STGCNBlock(nn.Module):
    """Spatial graph conv + temporal conv: ``[N, C_in, T, V] -> [N, C_out, ceil(T/stride), V]``.

    ``a`` (``(K, V, V)``) is passed in at call time (already multiplied by the edge importance).
    """

    def __init__(self, in_channels: int, out_channels: int, num_partitions: int,
                 kernel_size: int = 9, stride: int = 1, dropout: float = 0.0, residual: bool = True):
        super().__init__()
        self.num_partitions = num_partitions
        self.gcn = nn.Conv2d(in_channels, out_channels * num_partitions, 1)
        pad = (kernel_size - 1) // 2
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel_size, 1), (stride, 1), (pad, 0)),
            nn.BatchNorm2d(out_channels), nn.Dropout(dropout, inplace=True))
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=(stride, 1)),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        n, _, t, v = x.shape
        y = self.gcn(x).view(n, self.num_partitions, -1, t, v)     # [N, K, C_out, T, V]
        y = torch.einsum("nkctv,kvw->nctw", y, a)                   # [N, C_out, T, V]
        y = self.tcn(y)
        if self.residual is not None:
            y = y + self.residual(x)
        return self.relu(y)


class STGCN(nn.Module):
    """ST-GCN classifier: ``[N, M, T, V, C] -> [N, num_classes]``.

    Args:
        a: ``(K, V, V)`` partitioned adjacency (:func:`heatvol.models.graph.stgcn_spatial_partition`).
        num_classes: logits. in_channels: C (3). dropout: in the temporal convs (0).
        edge_importance: learn a ``(K, V, V)`` multiplier per block (True, as the official model).
    """

    def __init__(self, a: np.ndarray, num_classes: int, in_channels: int = 3, dropout: float = 0.0,
                 edge_importance: bool = True):
        super().__init__()
        a = torch.as_tensor(a, dtype=torch.float32)
        self.register_buffer("A", a, persistent=False)
        k, v = a.shape[0], a.shape[1]
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        spec = [(in_channels, 64, 1, False), (64, 64, 1, True), (64, 64, 1, True), (64, 64, 1, True),
                (64, 128, 2, True), (128, 128, 1, True), (128, 128, 1, True),
                (128, 256, 2, True), (256, 256, 1, True), (256, 256, 1, True)]
        self.st_gcn_networks = nn.ModuleList(
            STGCNBlock(cin, cout, k, stride=s, dropout=dropout, residual=res)
            for cin, cout, s, res in spec)
        if edge_importance:
            self.edge_importance = nn.ParameterList(nn.Parameter(torch.ones(k, v, v)) for _ in spec)
        else:
            self.edge_importance = [1.0] * len(spec)
        self.fc = nn.Linear(256, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, M, T, V, C] -> [N*M, 256, ceil(ceil(T/2)/2), V]``."""
        n, m, t, v, c = x.shape
        x = x.permute(0, 1, 3, 4, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x)
        x = x.view(n * m, v, c, t).permute(0, 2, 3, 1)              # [N*M, C, T, V]
        for block, importance in zip(self.st_gcn_networks, self.edge_importance):
            x = block(x, self.A * importance)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = x.shape[:2]
        x = self.forward_features(x)
        x = x.reshape(n, m, x.shape[1], -1).mean(3).mean(1)          # [N, 256]
        return self.fc(x)


def stgcn(*, layout: str | Layout, num_classes: int, in_channels: int = 3,
          center: int | None = None, **kw) -> STGCN:
    """ST-GCN (spatial partitions around ``center``, default the layout's centre joint).
    ``[N, M, T, V, C] -> [N, num_classes]``; ``kw``: ``dropout``, ``edge_importance``.
    ``num_person`` is accepted and ignored (the data BN is shared across persons)."""
    lay = _layout(layout)
    kw.pop("num_person", None)
    a = stgcn_spatial_partition(adjacency(lay), lay.center if center is None else center)
    return STGCN(a, num_classes, in_channels=in_channels, **kw)
