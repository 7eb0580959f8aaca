"""ResNeSt's split attention (Zhang et al. 2020) and its bottleneck.

A split-attention conv computes ``radix`` versions of a grouped 3×3 conv (one
conv with ``groups × radix`` groups), sums them, pools the sum to one vector
per image, and from it (two 1×1 convs, a softmax across the radix splits)
weighs the splits per channel before adding them: squeeze-excite across
alternative convolutions rather than across channels. Names (``conv``,
``bn0``, ``fc1``, ``bn1``, ``fc2``; the block's ``conv2``, ``avd_first``,
``avd_last``) are timm's, so timm's resnest checkpoints load as they are.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetkitValueError
from .base import make_divisible
from .norm import NormLayer, norm_abbr
from .resnet import _ResBlock


class SplitAttention(nn.Module):
    """A ``radix``-way split-attention k×k conv (``radix=1``: a sigmoid gate on one conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, radix: int = 2, norm_layer: NormLayer | None = None,
                 reduction: float = 0.25, min_attn_channels: int = 32, attn_channels: int | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.radix, self.groups = radix, groups
        mid = out_channels * radix
        attn = attn_channels or make_divisible(in_channels * radix * reduction, min_value=min_attn_channels, divisor=8)
        self.conv = nn.Conv2d(in_channels, mid, kernel_size, stride, padding=dilation * (kernel_size // 2),
                              dilation=dilation, groups=groups * radix, bias=False)
        self.bn0 = norm_layer(mid)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn, 1, groups=groups)
        self.bn1 = norm_layer(attn)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn, mid, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv(x)))
        n, rc, h, w = x.shape
        splits = x.reshape(n, self.radix, rc // self.radix, h, w) if self.radix > 1 else x
        gap = (splits.sum(1) if self.radix > 1 else x).mean((2, 3), keepdim=True)
        attn = self.fc2(self.act1(self.bn1(self.fc1(gap))))
        if self.radix > 1:   # softmax across the radix splits, per cardinal group and channel
            attn = F.softmax(attn.view(n, self.groups, self.radix, -1).transpose(1, 2), dim=1)
            return (splits * attn.reshape(n, self.radix, rc // self.radix, 1, 1)).sum(1).contiguous()
        return x * torch.sigmoid(attn)


class ResNestBottleneck(_ResBlock):
    """1×1 reduce → split-attention 3×3 → 1×1 expand, ``expansion = 4``.

    With ``avd`` the stride leaves the 3×3 for a 3×3 average pool, before it
    (``avd_first``) or after it, as ResNeSt does in every strided block.
    The attention's hidden width is timm's (``width·radix/4`` rounded to a
    multiple of 8, at least 32); ``reduction_factor=r`` gives mmdet's
    (``max(width·radix // r, 32)``).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer | None = None,
                 *, radix: int = 2, avd: bool = True, avd_first: bool = False, style: str = "pytorch",
                 drop_path: float = 0.0, plugins: Sequence[dict] | None = None, first_dilation: int | None = None,
                 dcn: dict | None = None, reduction_factor: int | None = None) -> None:
        super().__init__()
        if style != "pytorch" or dcn is not None:
            raise ResnetkitValueError("ResNestBottleneck takes style='pytorch' and no dcn")
        if radix < 1:
            raise ResnetkitValueError(f"radix must be >= 1, got {radix}")
        norm_layer = norm_layer or nn.BatchNorm2d
        abbr = norm_abbr(norm_layer)
        width = int(planes * (base_width / 64.0)) * groups
        avd_stride, conv_stride = (stride, 1) if avd and stride > 1 else (0, stride)
        d = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.add_module(f"{abbr}1", norm_layer(width))
        self.avd_first = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride and avd_first else None
        attn = max(width * radix // reduction_factor, 32) if reduction_factor else None
        self.conv2 = SplitAttention(width, width, 3, conv_stride, d, groups, radix, norm_layer, attn_channels=attn)
        self.avd_last = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride and not avd_first else None
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.add_module(f"{abbr}3", norm_layer(planes * self.expansion))
        self.norm_names = [f"{abbr}1", f"{abbr}3"]
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self._setup(inplanes, planes, stride, downsample, drop_path, plugins,
                    {"after_conv1": width, "after_conv2": width, "after_conv3": planes * self.expansion})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._plugin(self.relu(self.norm1(self.conv1(x))), "after_conv1")
        out = self.avd_first(out) if self.avd_first is not None else out
        out = self._plugin(self.conv2(out), "after_conv2")
        out = self.avd_last(out) if self.avd_last is not None else out
        out = self._plugin(getattr(self, self.norm_names[1])(self.conv3(out)), "after_conv3")
        return self._add(out, x)

    def inside(self) -> tuple[str, str]:
        sa = self.conv2
        r, g = sa.radix, sa.groups
        width, hidden = sa.conv.out_channels // r, sa.fc1.out_channels
        pool = self.avd_first or self.avd_last
        stride = f"; the stride {self.stride} is a 3×3 average pool {'before' if self.avd_first else 'after'} it" \
            if pool is not None else ""
        groups = f"{g} group{'s' if g > 1 else ''}"
        if r == 1:
            return (f"split attention: radix 1, {groups}",
                    f"conv2 = split attention with radix 1: one 3×3 conv in {groups} whose {width} channels are "
                    f"gated by a sigmoid of fc2(fc1(their average)), {width}→{hidden}→{width} (squeeze-excite){stride}")
        return (f"split attention: radix {r}, {groups}",
                f"conv2 = split attention: one 3×3 conv in {g * r} groups makes {r} versions of {width} channels "
                f"({width * r}); their sum is averaged to {width}×1×1, fc1 {width}→{hidden} and fc2 {hidden}→{width * r} "
                f"score each version per channel, a softmax across the {r} versions weighs them, and their weighted "
                f"sum is the {width} channels (squeeze-excite across alternative convs){stride}")
