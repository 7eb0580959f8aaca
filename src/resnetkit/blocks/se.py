"""Squeeze-and-Excitation (Hu et al. 2018): one channel gate shared by every family."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .base import make_divisible
from .conv import make_act


class SqueezeExcite(nn.Module):
    """Global-pool → 1×1 reduce → act → 1×1 expand → gate, then scale the input.

    Names (``conv_reduce``, ``conv_expand``) follow timm so GhostNet weights load
    unchanged. ``rd_channels`` overrides ``rd_ratio``; ``rd_divisor`` rounds the
    reduced width (GhostNet uses 4).
    """

    def __init__(
        self,
        in_chs: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(in_chs * rd_ratio, rd_divisor) if rd_divisor > 1 \
                else max(1, round(in_chs * rd_ratio))
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = make_act(act_layer)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)
