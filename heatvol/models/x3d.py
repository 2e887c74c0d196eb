"""PoseConv3D X3D-shallow (pyskl ``X3D(gamma_d=1, in_channels=17, base_channels=24,
num_stages=3, se_ratio=None, use_swish=False, stage_blocks=(2, 5, 3), spatial_strides=(2, 2, 2))``
+ ``I3DHead(216)``).

- Stem: Conv(1x3x3, stride (1, 2, 2), no BN) then depthwise Conv(5x1x1) + BN + ReLU.
- Stages of X3D blocks (1x1x1 expand to ``2.25x`` -> depthwise 3x3x3 (spatial stride) -> 1x1x1
  project, residual, ReLU; no squeeze-excitation, no swish in the shallow pose variant):
  widths 24, 48, 96 with inner widths 54, 108, 216.
- ``conv5``: 1x1x1 96 -> 216 + BN + ReLU.
- Shapes for ``[N, 17, 48, 56, 56]``: stem ``[N, 24, 48, 28, 28]`` -> ``[N, 24, 48, 14, 14]``
  -> ``[N, 48, 48, 7, 7]`` -> ``[N, 96, 48, 4, 4]`` -> conv5 ``[N, 216, 48, 4, 4]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import ConvBN3d, I3DHead, Recognizer3D, init_conv_bn

__all__ = ["BlockX3D", "X3D", "x3d"]


class BlockX3D(nn.Module):
    """X3D bottleneck: ``[N, C_in, T, H, W] -> [N, out, T, H/s, W/s]``."""

    def __init__(self, inplanes: int, planes: int, outplanes: int, spatial_stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = ConvBN3d(inplanes, planes, 1)
        self.conv2 = ConvBN3d(planes, planes, 3, stride=(1, spatial_stride, spatial_stride),
                              padding=1, groups=planes, act=False)
        self.conv3 = ConvBN3d(planes, outplanes, 1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


class X3D(nn.Module):
    """X3D backbone without squeeze-excitation / swish: ``[N, C, T, H, W] -> [N, 216, T, H/16, W/16]``
    for the defaults.

    Args:
        in_channels: heatmap channels. base_channels: stage-1 width (``gamma_w = 1``).
        stage_blocks: blocks per stage (``gamma_d = 1``). gamma_b: bottleneck expansion.
        spatial_strides: per-stage stride of the first block.
    """

    def __init__(self, in_channels: int = 17, base_channels: int = 24, stage_blocks=(2, 5, 3),
                 spatial_strides=(2, 2, 2), gamma_b: float = 2.25,
                 zero_init_residual: bool = True):
        super().__init__()
        assert len(stage_blocks) == len(spatial_strides)
        b = base_channels
        self.conv1_s = ConvBN3d(in_channels, b, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1),
                                norm=False, act=False)
        self.conv1_t = ConvBN3d(b, b, (5, 1, 1), padding=(2, 0, 0), groups=b)

        layer_inplanes = b
        self.res_layers = []
        for i, num_blocks in enumerate(stage_blocks):
            width = b * 2 ** i
            planes = int(width * gamma_b)
            s = spatial_strides[i]
            downsample = None
            if s != 1 or layer_inplanes != width:
                downsample = ConvBN3d(layer_inplanes, width, 1, stride=(1, s, s), act=False)
            blocks = [BlockX3D(layer_inplanes, planes, width, s, downsample)]
            blocks += [BlockX3D(width, planes, width) for _ in range(1, num_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.res_layers.append(f"layer{i + 1}")
            layer_inplanes = width

        self.out_channels = int(layer_inplanes * gamma_b)
        self.conv5 = ConvBN3d(layer_inplanes, self.out_channels, 1)

        init_conv_bn(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BlockX3D):
                    nn.init.zeros_(m.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1_t(self.conv1_s(x))
        for name in self.res_layers:
            x = getattr(self, name)(x)
        return self.conv5(x)


def x3d(*, in_channels: int, num_classes: int, dropout: float = 0.5, **kw) -> Recognizer3D:
    """PoseConv3D X3D-shallow (base 24, stages (2, 5, 3)) + I3D head on 216 channels.
    ``[N, in_channels, T, H, W] -> [N, num_classes]``; extra ``kw`` go to :class:`X3D`."""
    backbone = X3D(in_channels=in_channels, **kw)
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))
