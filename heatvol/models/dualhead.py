"""DualHead-Net (Chen et al., ACM MM 2021), following the official code
(tailin1009/DualHead-Network, ``model/dualhead_net.py``), built from the MS-G3D blocks.

Input ``[N, M, T, V, C]`` (pyskl layout, C = 3), output logits ``[N, num_classes]``.

- Backbone: ``data_bn`` and one MS-G3D STGC block, 3 -> 96 channels, stride 1.
- Fine head (full frame rate, half the channels): ``embed_fine`` = Conv2d 1x1 96 -> 48 (bias, no
  BN, no activation), then STGC blocks 48 -> 96 (stride 2) and 96 -> 192 (stride 2) with G3D
  windows 3 and 5 and MS-TCN dilations (1, 2, 3, 4); ``fc_fine = Linear(192, classes)``.
- Coarse head (half the frame rate, full channels): ``x[:, :, ::2]`` (no parameters), then STGC
  blocks 96 -> 192 (stride 2) and 192 -> 384 (stride 2) with only the window-3 G3D and MS-TCN
  dilations (1, 2) (4 branches); ``fc_coarse = Linear(384, classes)``.
- Cross-head attention, residual re-weighting ``x * a + x``:
  temporal (fine -> coarse): ``a = sigmoid(Conv1d(C_fine -> 1, k=9)(x_fine.mean(V)))`` over T,
  zero-initialised (initial gain 1.5); spatial (coarse -> fine):
  ``a = sigmoid(Conv1d(C_coarse -> 1, k=V or V-1)(x_coarse.mean(T)))`` over V, Xavier-normal.
- Order: backbone -> embed / subsample -> fine2 -> TA1 (-> coarse1) -> coarse2 -> SA1 (-> fine2)
  -> fine3 -> TA2 (-> coarse2) -> coarse3 -> SA2 (-> fine3) -> both pooled heads.

``forward(x)`` returns ``(logits_fine + logits_coarse) / 2``; ``forward(x, return_heads=True)``
returns ``(logits_fine, logits_coarse)`` so that a trainer can use the official loss,
``(CE(fine) + CE(coarse)) / 2`` (the class attribute ``multi_head = True`` flags this).
With 9 GCN scales and 6 G3D scales on NTU-25 and 60 classes it has 3,015,253 parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..layouts import Layout, layout as _layout
from .graph import adjacency
from .msg3d import persons_to_batch, pool_persons, stgc_forward, stgc_modules

__all__ = ["DualHeadNet", "dualhead"]


class DualHeadNet(nn.Module):
    """DualHead-Net: ``[N, M, T, V, C] -> [N, num_classes]`` (or both heads' logits).

    Args:
        a_binary: ``(V, V)`` binary adjacency. num_classes: logits per head.
        in_channels: C (3). num_person: M (fixed by the data BN).
        num_gcn_scales / num_g3d_scales: 9 / 6 in every official config.
    """

    multi_head = True

    def __init__(self, a_binary: np.ndarray, num_classes: int, in_channels: int = 3,
                 num_person: int = 2, num_gcn_scales: int = 9, num_g3d_scales: int = 6):
        super().__init__()
        v = len(a_binary)
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * v)
        c1 = 96
        f1, f2, f3 = 48, 96, 192     # fine head: half the channels
        k1, k2, k3 = 96, 192, 384    # coarse head
        scales = (a_binary, num_gcn_scales, num_g3d_scales)

        # Backbone: one STGC block.
        self.gcn3d1, self.sgcn1, self.tcn1 = stgc_modules(in_channels, c1, *scales, stride=1, first=True)

        # Fine head.
        self.embed_fine = nn.Conv2d(c1, f1, 1)
        self.gcn3d2_fine, self.sgcn2_fine, self.tcn2_fine = stgc_modules(f1, f2, *scales, stride=2)
        self.gcn3d3_fine, self.sgcn3_fine, self.tcn3_fine = stgc_modules(f2, f3, *scales, stride=2)
        self.fc_fine = nn.Linear(f3, num_classes)

        # Coarse head: window-3 G3D only, MS-TCN dilations (1, 2).
        coarse = dict(window_sizes=(3,), dilations=(1, 2))
        self.gcn3d2_coarse, self.sgcn2_coarse, self.tcn2_coarse = stgc_modules(
            k1, k2, *scales, stride=2, **coarse)
        self.gcn3d3_coarse, self.sgcn3_coarse, self.tcn3_coarse = stgc_modules(
            k2, k3, *scales, stride=2, **coarse)
        self.fc_coarse = nn.Linear(k3, num_classes)

        # Temporal attention fine -> coarse: zero init (sigmoid(0) = 0.5, gain 1.5).
        self.conv_ta_fine_to_coarse_block_2_to_1 = nn.Conv1d(f2, 1, 9, padding=4)
        self.conv_ta_fine_to_coarse_block_3_to_2 = nn.Conv1d(f3, 1, 9, padding=4)
        for conv in (self.conv_ta_fine_to_coarse_block_2_to_1, self.conv_ta_fine_to_coarse_block_3_to_2):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

        # Spatial attention coarse -> fine: an odd kernel spanning (almost) all joints.
        k_v = v if v % 2 else v - 1
        self.conv_sa_coarse_to_fine_block_2_to_2 = nn.Conv1d(k2, 1, k_v, padding=(k_v - 1) // 2)
        self.conv_sa_coarse_to_fine_block_3_to_3 = nn.Conv1d(k3, 1, k_v, padding=(k_v - 1) // 2)
        for conv in (self.conv_sa_coarse_to_fine_block_2_to_2, self.conv_sa_coarse_to_fine_block_3_to_3):
            nn.init.xavier_normal_(conv.weight)
            nn.init.zeros_(conv.bias)

    @staticmethod
    def _temporal_attention(conv: nn.Conv1d, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """``fine [B, C_f, T, V]`` re-weights ``coarse [B, C_c, T, V]`` over T: ``coarse * a + coarse``."""
        a = torch.sigmoid(conv(fine.mean(-1)))          # [B, 1, T]
        return coarse * a.unsqueeze(-1) + coarse

    @staticmethod
    def _spatial_attention(conv: nn.Conv1d, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """``coarse [B, C_c, T, V]`` re-weights ``fine [B, C_f, T', V]`` over V: ``fine * a + fine``."""
        a = torch.sigmoid(conv(coarse.mean(-2)))        # [B, 1, V]
        return fine * a.unsqueeze(-2) + fine

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, M, T, V, C]`` -> ``(logits_fine, logits_coarse)``, each ``[N, num_classes]``."""
        n = x.shape[0]
        x = persons_to_batch(x, self.data_bn)                                            # [B, C, T, V]
        x = stgc_forward(x, self.gcn3d1, self.sgcn1, self.tcn1)                          # [B, 96, T, V]

        fine = self.embed_fine(x)                                                        # [B, 48, T, V]
        coarse = x[:, :, ::2]                                                            # [B, 96, T/2, V]

        fine = stgc_forward(fine, self.gcn3d2_fine, self.sgcn2_fine, self.tcn2_fine)     # [B, 96, T/2, V]
        coarse = self._temporal_attention(self.conv_ta_fine_to_coarse_block_2_to_1, fine, coarse)
        coarse = stgc_forward(coarse, self.gcn3d2_coarse, self.sgcn2_coarse,
                              self.tcn2_coarse)                                 # [B, 192, T/4, V]
        fine = self._spatial_attention(self.conv_sa_coarse_to_fine_block_2_to_2, coarse, fine)

        fine = stgc_forward(fine, self.gcn3d3_fine, self.sgcn3_fine, self.tcn3_fine)     # [B, 192, T/4, V]
        coarse = self._temporal_attention(self.conv_ta_fine_to_coarse_block_3_to_2, fine, coarse)
        coarse = stgc_forward(coarse, self.gcn3d3_coarse, self.sgcn3_coarse,
                              self.tcn3_coarse)                                 # [B, 384, T/8, V]
        fine = self._spatial_attention(self.conv_sa_coarse_to_fine_block_3_to_3, coarse, fine)

        return self.fc_fine(pool_persons(fine, n)), self.fc_coarse(pool_persons(coarse, n))

    def forward(self, x: torch.Tensor, return_heads: bool = False):
        """``[N, M, T, V, C]`` -> averaged logits ``[N, num_classes]``, or ``(fine, coarse)``
        logits if ``return_heads``."""
        fine, coarse = self.forward_heads(x)
        if return_heads:
            return fine, coarse
        return (fine + coarse) / 2


def dualhead(*, layout: str | Layout, num_classes: int, in_channels: int = 3, **kw) -> DualHeadNet:
    """DualHead-Net on ``layout``'s graph (9 GCN scales, 6 G3D scales).
    ``[N, M, T, V, C] -> [N, num_classes]``; ``kw``: ``num_person`` (2), ``num_gcn_scales``,
    ``num_g3d_scales``."""
    return DualHeadNet(adjacency(_layout(layout)), num_classes, in_channels=in_channels, **kw)
