"""He et al.'s parameter-free shortcut (option A) for the CIFAR ResNets."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetkitValueError


class ZeroPadShortcut(nn.Module):
    """Subsample by ``stride`` and zero-pad the extra channels: option A of He et al. 2015, §4.2.

    The CIFAR ResNets (ResNet-20 … 110) use it so that every parameter sits in
    the 3×3 convs, which is how the paper's table counts 0.27 M … 1.7 M. Pass
    it as a block's ``downsample``; the new channels are split evenly before
    and after the old ones.

    >>> ZeroPadShortcut(16, 32, 2)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1) -> None:
        super().__init__()
        if outplanes < inplanes or stride < 1:
            raise ResnetkitValueError(f"ZeroPadShortcut({inplanes}, {outplanes}, stride={stride}) can only add channels "
                                      "(outplanes >= inplanes) and subsample (stride >= 1); use "
                                      "resnetkit.blocks.make_shortcut for a 1×1 projection instead")
        self.inplanes, self.outplanes, self.stride = inplanes, outplanes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.outplanes - self.inplanes
        return nn.functional.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        return f"{self.inplanes}, {self.outplanes}, stride={self.stride}"
