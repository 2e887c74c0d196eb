"""PoseConv3D C3D-light (pyskl ``C3D(in_channels=17, base_channels=32, num_stages=3,
temporal_downsample=False)`` + ``I3DHead(256)``).

Every conv is 3x3x3 (pad 1, no bias) + BN + ReLU; pooling is average pooling over space only
(``temporal_downsample=False``). Shapes for ``[N, 17, 48, 56, 56]``:
conv1a ``[N, 32, 48, 56, 56]`` -> pool1 -> conv2a ``[N, 64, 48, 28, 28]`` -> pool2 ->
conv3a/b ``[N, 128, 48, 14, 14]`` -> pool3 -> conv4a/b ``[N, 256, 48, 7, 7]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import ConvBN3d, I3DHead, Recognizer3D, init_conv_bn

__all__ = ["C3D", "c3d"]


class C3D(nn.Module):
    """C3D backbone: ``[N, C, T, H, W] -> [N, base*8, T', H/8, W/8]`` (3 stages) or
    ``base*8`` at 1/16 with 4 stages. ``temporal_downsample`` also halves T at pools 2-4."""

    def __init__(self, in_channels: int = 17, base_channels: int = 32, num_stages: int = 3,
                 temporal_downsample: bool = False):
        super().__init__()
        assert num_stages in (3, 4)
        b = base_channels
        pool = 2 if temporal_downsample else (1, 2, 2)

        def conv(cin, cout):
            return ConvBN3d(cin, cout, 3, padding=1)

        self.conv1a = conv(in_channels, b)
        self.pool1 = nn.AvgPool3d((1, 2, 2), (1, 2, 2))
        self.conv2a = conv(b, 2 * b)
        self.pool2 = nn.AvgPool3d(pool, pool)
        self.conv3a = conv(2 * b, 4 * b)
        self.conv3b = conv(4 * b, 4 * b)
        self.pool3 = nn.AvgPool3d(pool, pool)
        self.conv4a = conv(4 * b, 8 * b)
        self.conv4b = conv(8 * b, 8 * b)
        self.num_stages = num_stages
        if num_stages == 4:
            self.pool4 = nn.AvgPool3d(pool, pool)
            self.conv5a = conv(8 * b, 8 * b)
            self.conv5b = conv(8 * b, 8 * b)
        self.out_channels = 8 * b
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1a(x)
        x = self.conv2a(self.pool1(x))
        x = self.conv3b(self.conv3a(self.pool2(x)))
        x = self.conv4b(self.conv4a(self.pool3(x)))
        if self.num_stages == 4:
            x = self.conv5b(self.conv5a(self.pool4(x)))
        return x


def c3d(*, in_channels: int, num_classes: int, dropout: float = 0.5, **kw) -> Recognizer3D:
    """PoseConv3D C3D-light (base 32, 3 stages, no temporal pooling) + I3D head on 256 channels.
    ``[N, in_channels, T, H, W] -> [N, num_classes]``; extra ``kw`` go to :class:`C3D`."""
    backbone = C3D(in_channels=in_channels, **kw)
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))
