"""Res2Net's bottleneck (Gao et al. 2019): the 3×3 conv split into ``scale`` groups of channels in a hierarchy.

After the 1×1 reduce, the ``width × scale`` channels are split into ``scale``
slices. Slice 1 goes through its own 3×3; slice i (i ≥ 2) is added to the
previous 3×3's output before its own 3×3, so later slices see ever larger
receptive fields at one block's cost; the last slice passes unchanged. The
first block of a stage ("stage" type: stride or projection) feeds every slice
its own input instead and average-pools the last one (3×3, at the stride;
timm pools it at stride 1 too, mmdet only where there is a stride:
``pool_unstrided``). Layer
names (``convs.i``, ``bns.i``, ``pool``) are timm's, so timm's res2net
checkpoints load as they are; ``cardinality`` > 1 groups each 3×3 (Res2NeXt).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .norm import NormLayer, norm_abbr
from .resnet import _ResBlock


class Bottle2neck(_ResBlock):
    """1×1 reduce → ``scale - 1`` hierarchical 3×3s (+ the passed-through slice) → 1×1 expand. ``expansion = 4``.

    ``groups``/``base_width`` follow ResNet's vocabulary (the per-slice width is
    ``planes · base_width/64 · groups``); ``scale`` is the number of slices.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 26, dilation: int = 1, norm_layer: NormLayer | None = None,
                 *, scale: int = 4, style: str = "pytorch", drop_path: float = 0.0,
                 plugins: Sequence[dict] | None = None, first_dilation: int | None = None,
                 dcn: dict | None = None, pool_unstrided: bool = True) -> None:
        super().__init__()
        if style != "pytorch" or dcn is not None:
            raise ResnetkitValueError("Bottle2neck takes style='pytorch' and no dcn (Res2Net puts the stride on its "
                                      "3×3 slices)")
        if scale < 1:
            raise ResnetkitValueError(f"scale must be >= 1, got {scale}")
        norm_layer = norm_layer or nn.BatchNorm2d
        abbr = norm_abbr(norm_layer)
        self.scale, self.width = scale, int(math.floor(planes * (base_width / 64.0))) * groups
        self.is_first = stride > 1 or downsample is not None   # a stage's first block: slices stay independent
        width, d = self.width, first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.add_module(f"{abbr}1", norm_layer(width * scale))
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride, padding=d, dilation=d, groups=groups,
                                             bias=False) for _ in range(max(1, scale - 1)))
        self.bns = nn.ModuleList(norm_layer(width) for _ in range(max(1, scale - 1)))
        self.pool = nn.AvgPool2d(3, stride, padding=1) if self.is_first and (stride > 1 or pool_unstrided) else None
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, 1, bias=False)
        self.add_module(f"{abbr}3", norm_layer(planes * self.expansion))
        self.norm_names = [f"{abbr}1", f"{abbr}3"]
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self._setup(inplanes, planes, stride, downsample, drop_path, plugins,
                    {"after_conv1": width * scale, "after_conv3": planes * self.expansion})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._plugin(self.relu(self.norm1(self.conv1(x))), "after_conv1")
        slices = torch.split(out, self.width, 1)
        outs, sp = [], slices[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = slices[i] if i == 0 or self.is_first else sp + slices[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        if self.scale > 1:   # the last slice: passed through (pooled to the stride in a stage's first block)
            outs.append(self.pool(slices[-1]) if self.pool is not None else slices[-1])
        out = self.conv3(torch.cat(outs, 1))
        out = self._plugin(getattr(self, self.norm_names[1])(out), "after_conv3")
        return self._add(out, x)

    def inside(self) -> tuple[str, str]:
        s, w = self.scale, self.width
        if s == 1:
            return "1 slice: a plain 3×3", "scale 1: one 3×3 over all channels, as a plain bottleneck"
        conv = f"3×3/{self.stride}" if self.stride > 1 else "3×3"
        split = f"conv1's {w * s} channels are split into {s} slices of {w}"
        join = f"the {s} outputs are concatenated back to {w * s} channels for conv3"
        last = f"average-pooled {conv}" if self.pool is not None else "passed on unchanged"
        convolved = f"slices 1–{s - 1} each" if s > 2 else "slice 1"
        if self.is_first:
            return (f"{s} slices × {w} ch, parallel {conv}s",
                    f"{split}; a stage's first block gives {convolved} its own {conv} (no chain), "
                    f"slice {s} is {last}; {join}")
        chain = (f"; slice i = 3×3(slice i + output i−1) for i = 2…{s - 1}, so each slice sees a larger field "
                 f"than the one before (up to {s - 1} chained 3×3s)") if s > 2 else ""
        return (f"{s} slices × {w} ch, hierarchical 3×3s",
                f"{split}: slice 1 → 3×3{chain}; slice {s} is {last}; {join}")
