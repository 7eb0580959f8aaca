"""MobileNetV2's inverted residual with linear bottleneck (Sandler et al. 2018)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .base import Block, DropPath
from .conv import ConvBNAct, LayerFn


class InvertedResidual(Block):
    """1×1 expand (×``expand_ratio``) → 3×3 depthwise (stride) → 1×1 linear projection.

    The projection has no activation: ReLU on the narrow output would destroy
    information (the "linear bottleneck"). The shortcut is an identity and is
    used only when it fits - stride 1 and equal channels (``use_res_connect``);
    otherwise the block is a plain feed-forward unit, as in the paper, so there
    is nothing to refuse. Child names are torchvision's (``conv.0`` … ``conv.3``).

    >>> blk = InvertedResidual(3, 64, 1, 6)
    >>> blk(torch.zeros(1, 3, 224, 224)).shape, blk.use_res_connect
    (torch.Size([1, 64, 224, 224]), False)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float,
                 norm_layer: LayerFn | None = None, act_layer: LayerFn = nn.ReLU6, drop_path: float = 0.0) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ResnetkitValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        norm_layer = norm_layer or nn.BatchNorm2d
        hidden = int(round(in_channels * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer, act_layer=act_layer),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            norm_layer(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + self.drop_path(out) if self.use_res_connect else out
