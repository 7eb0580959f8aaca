"""Global context block (GCNet, Cao et al. 2019) with mmcv's ``ContextBlock`` layout.

One attention-pooled context vector per image (a 1×1 conv scores every
position, softmax over positions), passed through a bottleneck transform and
added to (or multiplied into) every position: non-local's global view at SE's
cost. Parameter names are mmcv's (``conv_mask``, ``channel_add_conv.0/1/3``,
``channel_mul_conv.*``), so mmdet GCNet checkpoints' plugin weights fit.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ResnetkitValueError

_FUSIONS = ("channel_add", "channel_mul")


def _transform(channels: int, planes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, planes, 1), nn.LayerNorm([planes, 1, 1]), nn.ReLU(inplace=True),
                         nn.Conv2d(planes, channels, 1))


class ContextBlock(nn.Module):
    """``{"type": "ContextBlock", "ratio": 1/16, "pooling_type": "att"|"avg", "fusion_types": ("channel_add",)}``.

    The last conv of each transform starts at zero (as mmcv's), so the block
    starts as the identity and leaves a pretrained backbone's output unchanged.
    """

    def __init__(self, in_channels: int, ratio: float = 1 / 16, pooling_type: str = "att",
                 fusion_types: Sequence[str] = ("channel_add",)) -> None:
        super().__init__()
        if pooling_type not in ("att", "avg"):
            raise ResnetkitValueError(f"ContextBlock pooling_type must be 'att' or 'avg', got {pooling_type!r}")
        if not fusion_types or any(f not in _FUSIONS for f in fusion_types):
            raise ResnetkitValueError(f"ContextBlock fusion_types must be a non-empty subset of {_FUSIONS}, "
                                      f"got {fusion_types!r}")
        planes = int(in_channels * ratio)
        if planes < 1:
            raise ResnetkitValueError(f"ContextBlock ratio={ratio} leaves no channels of {in_channels}; raise the ratio")
        self.pooling_type = pooling_type
        if pooling_type == "att":
            self.conv_mask = nn.Conv2d(in_channels, 1, 1)
        self.channel_add_conv = _transform(in_channels, planes) if "channel_add" in fusion_types else None
        self.channel_mul_conv = _transform(in_channels, planes) if "channel_mul" in fusion_types else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.pooling_type == "att":
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        for transform in (self.channel_add_conv, self.channel_mul_conv):
            if transform is not None:
                nn.init.zeros_(transform[-1].weight)
                nn.init.zeros_(transform[-1].bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 1, 1): the attention-weighted (or plain) mean over positions."""
        if self.pooling_type == "avg":
            return x.mean((2, 3), keepdim=True)
        weights = self.conv_mask(x).flatten(2).softmax(-1)           # N, 1, HW
        return (x.flatten(2) @ weights.transpose(1, 2)).unsqueeze(-1)  # N, C, 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context(x)
        if self.channel_mul_conv is not None:
            x = x * torch.sigmoid(self.channel_mul_conv(ctx))
        if self.channel_add_conv is not None:
            x = x + self.channel_add_conv(ctx)
        return x
