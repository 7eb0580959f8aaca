"""GhostNet's blocks (Han et al. 2020): half the feature maps from cheap depthwise convs."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import Block
from .conv import ConvBNAct, LayerFn
from .se import SqueezeExcite


class GhostModule(nn.Module):
    """A "ghost" conv: a primary conv makes ``out/ratio`` maps, a cheap depthwise conv the rest.

    Feature maps of a trained CNN are largely near-copies of each other; GhostNet
    generates those copies with a ``dw_size`` depthwise conv instead of a full
    conv, so a 1×1 conv to ``out_chs`` costs about 1/``ratio`` of the MACs.
    ``act_layer=None`` makes the module linear (the second ghost of a bottleneck).
    Names (``primary_conv``, ``cheap_operation``) are timm's.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, ratio: int = 2, dw_size: int = 3,
                 stride: int = 1, act_layer: LayerFn | None = nn.ReLU) -> None:
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)
        # ceil() may make one map too many; timm slices it off even when it did not, and that no-op slice
        # cost OpenVINO int8 6% on ghostnet_100 (NNCF quantizes its output again): sliced only when needed
        self.trim = init_chs * ratio != out_chs
        self.primary_conv = ConvBNAct(in_chs, init_chs, kernel_size, stride, act_layer=act_layer)
        self.cheap_operation = ConvBNAct(init_chs, init_chs * (ratio - 1), dw_size, groups=init_chs,
                                         act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        out = torch.cat([x1, self.cheap_operation(x1)], dim=1)
        return out[:, : self.out_chs] if self.trim else out


class GhostBottleneck(Block):
    """Ghost (expand, ReLU) → [depthwise stride-2 conv] → [SE] → ghost (linear), plus a shortcut.

    The shortcut is chosen to fit: an identity when stride is 1 and the channels
    match, else a depthwise ``dw_kernel_size`` conv (stride) + BN followed by a
    1×1 conv + BN. The SE reduces to a multiple of 4 and gates with a hard
    sigmoid, as in GhostNet. Names are timm's (``ghost1``, ``conv_dw``, ``bn_dw``,
    ``se``, ``ghost2``, ``shortcut``).

    >>> GhostBottleneck(16, 48, 24, stride=2, se_ratio=0.25)(torch.zeros(1, 16, 56, 56)).shape
    torch.Size([1, 24, 28, 28])
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, act_layer: LayerFn = nn.ReLU) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, act_layer=act_layer)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, (dw_kernel_size - 1) // 2,
                                     groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        else:
            self.conv_dw = self.bn_dw = None
        self.se = SqueezeExcite(mid_chs, rd_ratio=se_ratio, rd_divisor=4, gate_layer=nn.Hardsigmoid) \
            if se_ratio and se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, act_layer=None)
        if stride == 1 and in_chs == out_chs:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, (dw_kernel_size - 1) // 2, groups=in_chs,
                          bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.conv_dw is not None:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)
