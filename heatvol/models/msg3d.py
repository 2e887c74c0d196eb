"""MS-G3D (Liu et al., CVPR 2020), following the official code (kenziyuliu/MS-G3D).

Inputs are laid out as pyskl does, ``[N, M, T, V, C]`` (batch, persons, frames, joints,
channels; C = 3: x, y, score or x, y, z); outputs are logits ``[N, num_classes]``.
Internally a person is a sample: features are ``[N*M, C, T, V]``.

Building blocks (module and parameter names mirror the official ones, so that e.g.
``gcn3d1.gcn3d.0.gcn3d.1.A_res`` and ``sgcn1.0.A_res`` exist with the official shapes):

- :class:`MLP`: ``Conv1x1 -> BN -> act`` on ``[N, C, T, V]``.
- :class:`MSGCN`: multi-scale (disentangled k-hop) graph conv. Fixed stack ``A_powers``
  ``(K*V, V)`` (a non-persistent buffer) plus a learnable mask ``A_res`` (init U(-1e-6, 1e-6))
  added after normalisation; aggregation ``[N, C, T, V] -> [N, K*C, T, V]`` (channel ``k*C + c``)
  then ``MLP(K*C -> C_out)`` with ReLU.
- :class:`MSTCN`: 6 branches (4 dilated 3x1 convs with dilations 1..4, a max-pool, a 1x1), each
  ``C_out/6`` channels, concatenated, plus a residual, then ReLU.
- :class:`MSG3D` / :class:`MultiWindowMSG3D`: unified spatial-temporal graph conv over windows of
  τ frames (τ = 3 and 5, outputs summed): unfold ``[N, C, T, V] -> [N, C, T', τ*V]``,
  multi-scale graph conv on ``tile(A + I, (τ, τ))``, collapse the window with a
  ``Conv3d(1, τ, 1)`` and BN (no activation).
- STGC block (:func:`stgc_modules`, :func:`stgc_forward`): ``x = relu(sgcn(x) + gcn3d(x));
  x = tcn(x)`` where ``sgcn`` = MS-GCN -> MS-TCN (stride) -> MS-TCN (no final ReLU).

:class:`MSG3DNet`: ``data_bn`` over ``(M, V, C)`` channels, three STGC blocks (96, 192, 384
channels; temporal strides 1, 2, 2), global average pool over ``T' * V`` then over persons, and
``Linear(384, num_classes)``. With 13 GCN scales and 6 G3D scales on NTU-25 and 60 classes it has
3,194,595 parameters, as the official model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layouts import Layout, layout as _layout
from .graph import adjacency, multiscale_adjacency, spatial_temporal_graph

__all__ = ["MLP", "MSGCN", "MSTCN", "MSG3D", "MultiWindowMSG3D", "stgc_modules", "stgc_forward",
           "MSG3DNet", "msg3d"]


class MLP(nn.Module):
    """``Conv2d 1x1 -> BatchNorm2d -> ReLU`` (``act=False``: no ReLU).
    ``[N, C_in, T, V] -> [N, C_out, T, V]``."""

    def __init__(self, in_channels: int, out_channels: int, act: bool = True):
        super().__init__()
        self.layers = nn.ModuleList([nn.Conv2d(in_channels, out_channels, 1),
                                     nn.BatchNorm2d(out_channels),
                                     nn.ReLU(inplace=True) if act else nn.Identity()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _aggregate(x: torch.Tensor, a: torch.Tensor, num_scales: int) -> torch.Tensor:
    """Multi-scale graph aggregation: ``x [N, C, T, U]``, ``a [K*U, U]`` -> ``[N, K*C, T, U]``
    with channel index ``k*C + c``."""
    n, c, t, u = x.shape
    agg = torch.einsum("vu,nctu->nctv", a, x)                     # [N, C, T, K*U]
    agg = agg.view(n, c, t, num_scales, u).permute(0, 3, 1, 2, 4)  # [N, K, C, T, U]
    return agg.reshape(n, num_scales * c, t, u)


class MSGCN(nn.Module):
    """Multi-scale graph convolution (factorised spatial path): ``[N, C_in, T, V] -> [N, C_out, T, V]``.

    ``A = A_powers + A_res``: the fixed normalised k-hop stack (k = 0..K-1) plus a learnable
    residual mask of the same shape ``(K*V, V)``.
    """

    def __init__(self, num_scales: int, in_channels: int, out_channels: int, a_binary: np.ndarray):
        super().__init__()
        self.num_scales = num_scales
        a_powers = torch.from_numpy(multiscale_adjacency(a_binary, num_scales))
        self.register_buffer("A_powers", a_powers, persistent=False)
        self.A_res = nn.Parameter(torch.empty_like(a_powers).uniform_(-1e-6, 1e-6))
        self.mlp = MLP(in_channels * num_scales, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.A_powers.to(x.dtype) + self.A_res.to(x.dtype)
        return self.mlp(_aggregate(x, a, self.num_scales))


class TemporalConv(nn.Module):
    """``Conv2d((k, 1), stride (s, 1), dilation (d, 1)) -> BN``: ``[N, C_in, T, V] -> [N, C_out, T/s, V]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1), dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class MSTCN(nn.Module):
    """Multi-scale temporal convolution: ``[N, C_in, T, V] -> [N, C_out, ceil(T/s), V]``.

    Branches (``C_out / (len(dilations) + 2)`` channels each), concatenated in this order: for each
    dilation d, ``1x1 -> BN -> ReLU -> (3x1, dilation d, stride s) -> BN``; then
    ``1x1 -> BN -> ReLU -> MaxPool(3x1, stride s) -> BN``; then ``1x1 (stride s) -> BN``.
    Residual: identity if the shape is kept, else ``1x1 (stride s) -> BN``. Output: ReLU(sum);
    ``act`` can be replaced (MS-G3D sets it to Identity for the last MS-TCN of each ``sgcn``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilations=(1, 2, 3, 4), residual: bool = True):
        super().__init__()
        num_branches = len(dilations) + 2
        if out_channels % num_branches:
            raise ValueError(f"MS-TCN: {out_channels} output channels are not a multiple of "
                             f"{num_branches} branches")
        bc = out_channels // num_branches

        def entry():
            return [nn.Conv2d(in_channels, bc, 1), nn.BatchNorm2d(bc), nn.ReLU(inplace=True)]

        self.branches = nn.ModuleList(
            nn.Sequential(*entry(), TemporalConv(bc, bc, kernel_size, stride, d)) for d in dilations)
        self.branches.append(nn.Sequential(
            *entry(), nn.MaxPool2d((3, 1), stride=(stride, 1), padding=(1, 0)), nn.BatchNorm2d(bc)))
        self.branches.append(nn.Sequential(
            nn.Conv2d(in_channels, bc, 1, stride=(stride, 1)), nn.BatchNorm2d(bc)))

        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = TemporalConv(in_channels, out_channels, 1, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([branch(x) for branch in self.branches], dim=1)
        if self.residual is not None:
            out = out + self.residual(x)
        return self.act(out)


class UnfoldTemporalWindows(nn.Module):
    """Sliding windows of τ frames: ``[N, C, T, V] -> [N, C, T', τ*V]`` (node ``w*V + v``),
    ``T' = ceil(T / stride)`` (zero padding at both ends)."""

    def __init__(self, window_size: int, window_stride: int = 1, window_dilation: int = 1):
        super().__init__()
        self.window_size = window_size
        pad = (window_size + (window_size - 1) * (window_dilation - 1) - 1) // 2
        self.unfold = nn.Unfold(kernel_size=(window_size, 1), dilation=(window_dilation, 1),
                                stride=(window_stride, 1), padding=(pad, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, _, v = x.shape
        x = self.unfold(x)                                            # [N, C*τ, T'*V]
        x = x.view(n, c, self.window_size, -1, v).permute(0, 1, 3, 2, 4)
        return x.reshape(n, c, -1, self.window_size * v)


class SpatialTemporalMSGCN(nn.Module):
    """Multi-scale graph conv on the τV-node window graph, linear MLP then ReLU:
    ``[N, C_in, T', τV] -> [N, C_out, T', τV]``."""

    def __init__(self, in_channels: int, out_channels: int, a_binary: np.ndarray, num_scales: int,
                 window_size: int):
        super().__init__()
        self.num_scales = num_scales
        a_large = spatial_temporal_graph(a_binary, window_size)
        a_scales = torch.from_numpy(multiscale_adjacency(a_large, num_scales))
        self.register_buffer("A_scales", a_scales, persistent=False)
        self.A_res = nn.Parameter(torch.empty_like(a_scales).uniform_(-1e-6, 1e-6))
        self.mlp = MLP(in_channels * num_scales, out_channels, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.A_scales.to(x.dtype) + self.A_res.to(x.dtype)
        return self.act(self.mlp(_aggregate(x, a, self.num_scales)))


class MSG3D(nn.Module):
    """One G3D pathway with window τ: ``[N, C_in, T, V] -> [N, C_out, ceil(T/stride), V]``, no activation.

    Channel routing as the official code (``embed_factor=1``): the window graph conv keeps
    ``C_in`` channels and the collapsing ``Conv3d(1, τ, 1)`` maps ``C_in -> C_out``, except in the
    first block (``first=True``; the official code tests ``in_channels == 3``), where the graph
    conv maps ``C_in -> C_out`` directly.
    """

    def __init__(self, in_channels: int, out_channels: int, a_binary: np.ndarray, num_scales: int,
                 window_size: int, window_stride: int = 1, window_dilation: int = 1,
                 first: bool = False):
        super().__init__()
        self.window_size = window_size
        self.embed_channels_out = out_channels if first else in_channels
        self.in1x1 = nn.Identity()
        self.gcn3d = nn.Sequential(
            UnfoldTemporalWindows(window_size, window_stride, window_dilation),
            SpatialTemporalMSGCN(in_channels, self.embed_channels_out, a_binary, num_scales,
                                 window_size))
        self.out_conv = nn.Conv3d(self.embed_channels_out, out_channels, kernel_size=(1, window_size, 1))
        self.out_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, _, v = x.shape
        x = self.gcn3d(self.in1x1(x))                                  # [N, C', T', τV]
        x = x.view(n, self.embed_channels_out, -1, self.window_size, v)
        x = self.out_conv(x).squeeze(3)                                 # [N, C_out, T', V]
        return self.out_bn(x)


class MultiWindowMSG3D(nn.Module):
    """Sum of :class:`MSG3D` pathways with windows ``window_sizes`` (default 3 and 5), no activation."""

    def __init__(self, in_channels: int, out_channels: int, a_binary: np.ndarray, num_scales: int,
                 window_sizes=(3, 5), window_stride: int = 1, window_dilations=None,
                 first: bool = False):
        super().__init__()
        window_dilations = window_dilations or [1] * len(window_sizes)
        self.gcn3d = nn.ModuleList(
            MSG3D(in_channels, out_channels, a_binary, num_scales, w, window_stride, d, first=first)
            for w, d in zip(window_sizes, window_dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for pathway in self.gcn3d:
            out = out + pathway(x)
        return out


def stgc_modules(in_channels: int, out_channels: int, a_binary: np.ndarray, num_gcn_scales: int,
                 num_g3d_scales: int, stride: int = 1, first: bool = False, window_sizes=(3, 5),
                 dilations=(1, 2, 3, 4)) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The three modules ``(gcn3d, sgcn, tcn)`` of one spatial-temporal (STGC) block,
    ``[N, C_in, T, V] -> [N, C_out, ceil(T/stride), V]`` as :func:`stgc_forward` runs them:

    - ``gcn3d``: multi-window G3D (windows ``window_sizes``, stride ``stride``);
    - ``sgcn``: ``MS-GCN(C_in -> C_g) -> MS-TCN(C_g -> C_out, stride) -> MS-TCN(C_out -> C_out)``
      without the last ReLU; ``C_g = C_out`` in the first block, else ``C_in``;
    - ``tcn``: ``MS-TCN(C_out -> C_out)``.

    They stay three attributes of the model (``gcn3d1``, ``sgcn1``, ``tcn1``, ...), as in the
    official code, so parameter names match its state_dict.
    """
    c_gcn = out_channels if first else in_channels
    gcn3d = MultiWindowMSG3D(in_channels, out_channels, a_binary, num_g3d_scales,
                             window_sizes=window_sizes, window_stride=stride, first=first)
    sgcn = nn.Sequential(
        MSGCN(num_gcn_scales, in_channels, c_gcn, a_binary),
        MSTCN(c_gcn, out_channels, stride=stride, dilations=dilations),
        MSTCN(out_channels, out_channels, dilations=dilations))
    sgcn[-1].act = nn.Identity()
    tcn = MSTCN(out_channels, out_channels, dilations=dilations)
    return gcn3d, sgcn, tcn


def stgc_forward(x: torch.Tensor, gcn3d: nn.Module, sgcn: nn.Module, tcn: nn.Module) -> torch.Tensor:
    """One STGC block: ``tcn(relu(sgcn(x) + gcn3d(x)))``."""
    return tcn(F.relu(sgcn(x) + gcn3d(x)))


def persons_to_batch(x: torch.Tensor, data_bn: nn.BatchNorm1d) -> torch.Tensor:
    """``[N, M, T, V, C]`` -> BatchNorm1d over the ``M*V*C`` channels (order M, V, C, as the
    official models) -> ``[N*M, C, T, V]``."""
    if x.dim() != 5 or x.shape[1] * x.shape[3] * x.shape[4] != data_bn.num_features:
        raise ValueError(f"expected input [N, M, T, V, C] with M*V*C = {data_bn.num_features} "
                         f"(num_person, joints, channels of the model), got {tuple(x.shape)}")
    n, m, t, v, c = x.shape
    x = x.permute(0, 1, 3, 4, 2).reshape(n, m * v * c, t)
    x = data_bn(x)
    return x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)


def pool_persons(x: torch.Tensor, n: int) -> torch.Tensor:
    """``[N*M, C, T, V]`` -> mean over ``T*V`` then over persons -> ``[N, C]``."""
    nm, c = x.shape[:2]
    return x.reshape(n, nm // n, c, -1).mean(3).mean(1)


class MSG3DNet(nn.Module):
    """MS-G3D classifier: ``[N, M, T, V, C] -> [N, num_classes]``.

    Args:
        a_binary: ``(V, V)`` binary adjacency (see :func:`heatvol.models.graph.adjacency`).
        num_classes: output logits. in_channels: C (3). num_person: M (the data BN has M*V*C
            channels, so M is fixed at construction; pad with zeros for fewer persons).
        num_gcn_scales / num_g3d_scales: k-hop scales of the MS-GCN / G3D paths (13 / 6 on NTU;
            the official Kinetics config uses 8 / 8).
        channels: widths of the three blocks (96, 192, 384).
    """

    def __init__(self, a_binary: np.ndarray, num_classes: int, in_channels: int = 3,
                 num_person: int = 2, num_gcn_scales: int = 13, num_g3d_scales: int = 6,
                 channels=(96, 192, 384)):
        super().__init__()
        v = len(a_binary)
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * v)
        c1, c2, c3 = channels
        scales = (a_binary, num_gcn_scales, num_g3d_scales)
        self.gcn3d1, self.sgcn1, self.tcn1 = stgc_modules(in_channels, c1, *scales, stride=1, first=True)
        self.gcn3d2, self.sgcn2, self.tcn2 = stgc_modules(c1, c2, *scales, stride=2)
        self.gcn3d3, self.sgcn3, self.tcn3 = stgc_modules(c2, c3, *scales, stride=2)
        self.fc = nn.Linear(c3, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, M, T, V, C] -> [N*M, 384, ceil(ceil(T/2)/2), V]``."""
        x = persons_to_batch(x, self.data_bn)                       # [N*M, C, T, V]
        x = stgc_forward(x, self.gcn3d1, self.sgcn1, self.tcn1)     # [N*M, 96, T, V]
        x = stgc_forward(x, self.gcn3d2, self.sgcn2, self.tcn2)     # [N*M, 192, T/2, V]
        x = stgc_forward(x, self.gcn3d3, self.sgcn3, self.tcn3)     # [N*M, 384, T/4, V]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return self.fc(pool_persons(self.forward_features(x), n))


def msg3d(*, layout: str | Layout, num_classes: int, in_channels: int = 3, **kw) -> MSG3DNet:
    """MS-G3D on ``layout``'s graph (13 GCN scales, 6 G3D scales, blocks 96/192/384).
    ``[N, M, T, V, C] -> [N, num_classes]``; ``kw``: ``num_person`` (2), ``num_gcn_scales``,
    ``num_g3d_scales``, ``channels``."""
    return MSG3DNet(adjacency(_layout(layout)), num_classes, in_channels=in_channels, **kw)
