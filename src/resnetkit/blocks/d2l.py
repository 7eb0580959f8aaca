"""The residual unit of *Dive into Deep Learning* (§8.6), kept as the book writes it."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .base import Block


class Residual(Block):
    """Two 3×3 conv + BN, an optional 1×1 conv shortcut, add, ReLU.

    Faithful to the book: the convolutions keep their bias (the BN after them
    makes it redundant, but d2l trains with it) and the shortcut projection is a
    bare 1×1 conv (``conv3``, no BN). ``use_1x1conv=True`` is required whenever
    ``strides`` or the channel count changes; leaving it out is refused here
    rather than failing at the addition in ``forward``.

    >>> Residual(3, 6, use_1x1conv=True, strides=2)(torch.zeros(4, 3, 6, 6)).shape
    torch.Size([4, 6, 3, 3])
    """

    shortcut_attr = "conv3"  # tells resnetkit.inspect / to_table which layer is the shortcut

    def __init__(self, input_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
        super().__init__()
        if not use_1x1conv and (strides != 1 or input_channels != num_channels):
            raise ResnetkitValueError(
                f"Residual({input_channels}, {num_channels}, strides={strides}): the branch outputs "
                f"{num_channels} channels at stride {strides} but the shortcut is an identity on "
                f"{input_channels} channels at stride 1, so the two cannot be added. "
                f"Pass use_1x1conv=True (a 1×1 conv shortcut with stride {strides}).")
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.relu = nn.ReLU(inplace=True)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.relu(y + x)
