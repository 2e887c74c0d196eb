"""PoseConv3D SlowOnly-R50 (pyskl ``ResNet3dSlowOnly`` with the pose configuration).

pyskl NTU60 config: ``ResNet3dSlowOnly(in_channels=17, base_channels=32, num_stages=3,
out_indices=(2,), stage_blocks=(4, 6, 3), conv1_stride=(1, 1), pool1_stride=(1, 1),
inflate=(0, 1, 1), spatial_strides=(2, 2, 2), temporal_strides=(1, 1, 2))`` + ``I3DHead(512)``.

- Stem: Conv(1x7x7, stride 1) + BN + ReLU, MaxPool(1x3x3, stride 1, pad 1): no early downsampling.
- Three stages of bottlenecks (expansion 4): 32 -> 128, 64 -> 256, 128 -> 512 channels.
  Stage 1 is not inflated (1x1x1, 1x3x3, 1x1x1); stages 2-3 are ("3x1x1" style: the first
  1x1x1 conv becomes 3x1x1). The first block of each stage strides (t, s, s) in its 1x3x3 conv
  and in a 1x1x1 projection shortcut.
- Shapes for ``[N, 17, 48, 56, 56]``: stem ``[N, 32, 48, 56, 56]`` -> ``[N, 128, 48, 28, 28]``
  -> ``[N, 256, 48, 14, 14]`` -> ``[N, 512, 24, 7, 7]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import ConvBN3d, I3DHead, Recognizer3D, init_conv_bn

__all__ = ["Bottleneck3d", "ResNet3dSlowOnly", "slowonly"]


class Bottleneck3d(nn.Module):
    """ResNet bottleneck, 3x1x1 inflation style: ``[N, C_in, T, H, W] -> [N, 4*planes, T/t, H/s, W/s]``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride=(1, 1), inflate: bool = True,
                 downsample: nn.Module | None = None):
        super().__init__()
        t, s = stride
        self.conv1 = ConvBN3d(inplanes, planes, (3, 1, 1) if inflate else 1,
                              padding=(1, 0, 0) if inflate else 0)
        self.conv2 = ConvBN3d(planes, planes, (1, 3, 3), stride=(t, s, s), padding=(0, 1, 1))
        self.conv3 = ConvBN3d(planes, planes * self.expansion, 1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


class ResNet3dSlowOnly(nn.Module):
    """SlowOnly ResNet3d backbone: ``[N, C, T, H, W] -> [N, base*16, T', H', W']``.

    Args:
        in_channels: heatmap channels (joints or limbs).
        base_channels: stem width (32 for the pose model).
        stage_blocks: bottlenecks per stage.
        inflate: per stage, 1 to use 3x1x1 temporal kernels in the bottlenecks' first conv.
        spatial_strides / temporal_strides: per-stage strides of the first block.
        conv1_kernel: stem kernel. zero_init_residual: zero the last BN of every block.
    """

    def __init__(self, in_channels: int = 17, base_channels: int = 32,
                 stage_blocks=(4, 6, 3), inflate=(0, 1, 1), spatial_strides=(2, 2, 2),
                 temporal_strides=(1, 1, 2), conv1_kernel=(1, 7, 7),
                 zero_init_residual: bool = True):
        super().__init__()
        self.conv1 = ConvBN3d(in_channels, base_channels, conv1_kernel,
                              padding=tuple((k - 1) // 2 for k in conv1_kernel))
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))

        inplanes = base_channels
        self.res_layers = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            stride = (temporal_strides[i], spatial_strides[i])
            layer = self._make_layer(inplanes, planes, num_blocks, stride, bool(inflate[i]))
            inplanes = planes * Bottleneck3d.expansion
            self.add_module(f"layer{i + 1}", layer)
            self.res_layers.append(f"layer{i + 1}")
        self.out_channels = inplanes

        init_conv_bn(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    nn.init.zeros_(m.conv3.bn.weight)

    @staticmethod
    def _make_layer(inplanes, planes, blocks, stride, inflate) -> nn.Sequential:
        t, s = stride
        out = planes * Bottleneck3d.expansion
        downsample = None
        if s != 1 or inplanes != out:
            downsample = ConvBN3d(inplanes, out, 1, stride=(t, s, s), act=False)
        layers = [Bottleneck3d(inplanes, planes, stride, inflate, downsample)]
        layers += [Bottleneck3d(out, planes, (1, 1), inflate) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        for name in self.res_layers:
            x = getattr(self, name)(x)
        return x


def slowonly(*, in_channels: int, num_classes: int, dropout: float = 0.5, **kw) -> Recognizer3D:
    """PoseConv3D SlowOnly-R50 (base 32, stages (4, 6, 3)) + I3D head on 512 channels.
    ``[N, in_channels, T, H, W] -> [N, num_classes]``; extra ``kw`` go to :class:`ResNet3dSlowOnly`."""
    backbone = ResNet3dSlowOnly(in_channels=in_channels, **kw)
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))
