"""Classification heads and the small pieces the PoseConv3D backbones share.

- :class:`ConvBN3d`: Conv3d (no bias) -> BatchNorm3d -> optional ReLU. Its submodules are named
  ``conv`` / ``bn`` like mmcv's ``ConvModule``, so parameter names mirror pyskl's
  (``backbone.layer1.0.conv1.conv.weight``, ``...conv1.bn.weight``).
- :class:`I3DHead`: global average pool -> dropout -> linear (pyskl ``I3DHead``; ``fc_cls``).
- :class:`Recognizer3D`: ``backbone`` + ``cls_head``; ``[N, C, T, H, W] -> [N, num_classes]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBN3d", "I3DHead", "Recognizer3D", "init_conv_bn"]


class ConvBN3d(nn.Module):
    """``Conv3d(bias=False) -> BatchNorm3d -> ReLU`` (``act=False`` drops the ReLU, ``norm=False``
    the BatchNorm). ``[N, C_in, T, H, W] -> [N, C_out, T', H', W']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 groups: int = 1, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm3d(out_channels) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def init_conv_bn(module: nn.Module) -> None:
    """mmcv-style init: Kaiming-normal (fan_out, ReLU) convolutions with zero bias, BatchNorm
    weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Conv1d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class I3DHead(nn.Module):
    """I3D classification head: ``[N, C, T, H, W] -> avg pool -> [N, C] -> dropout -> linear ->
    [N, num_classes]``. The linear layer is initialised N(0, 0.01), bias 0 (pyskl)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5,
                 init_std: float = 0.01):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc_cls = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.fc_cls.weight, std=init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return self.fc_cls(self.dropout(x))


class Recognizer3D(nn.Module):
    """A 3D-CNN backbone followed by a head: ``[N, C, T, H, W] -> [N, num_classes]`` (logits).

    ``forward_features`` gives the backbone's feature map ``[N, C', T', H', W']``.
    """

    def __init__(self, backbone: nn.Module, cls_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.backbone(x))
