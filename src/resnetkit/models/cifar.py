"""ResNets for 32×32 inputs: the CIFAR ResNet-18/34/50 and He et al.'s ResNet-20 … 110.

The stem is one 3×3 conv (stride 1, no max pool), so a 32×32 image keeps its
resolution through the first stage and feature levels sit at reductions
1, 2, 4 (, 8). Everything else is the ImageNet :class:`ResNet`: the same
blocks, stage builder and options.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("resnet20", features_only=True)
>>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 3, 32, 32))]
[(16, 32, 32), (32, 16, 16), (64, 8, 8)]
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ResnetkitValueError
from ..blocks import BasicBlock, Bottleneck
from ..blocks.shortcut import ZeroPadShortcut
from ..registry import register_model
from .resnet import ResNet, _deep_stem


class CifarResNet(ResNet):
    """A :class:`ResNet` with a 3×3 stride-1 stem and no max pool, for 32×32 inputs.

    Every ResNet option applies (style, groups, dilation, plugins, drop path,
    frozen_stages, ...); ``deep_stem`` makes the stem three stride-1 3×3 convs.
    ``shortcut="B"`` projects with a 1×1 conv + BN where shapes change (the
    CIFAR ResNet-18/34/50 of common practice); ``"A"`` subsamples and zero-pads
    (He et al.'s CIFAR models: no shortcut parameters).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 10, shortcut: str = "B",
                 **kwargs) -> None:
        if shortcut not in ("A", "B"):
            raise ResnetkitValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1×1 projection), got {shortcut!r}")
        if shortcut == "A" and kwargs.get("avg_down"):
            raise ResnetkitValueError("avg_down changes projection shortcuts; it needs shortcut='B', not the "
                                      "parameter-free option A")
        self._shortcut_kind = shortcut  # read by _make_shortcut during ResNet.__init__
        super().__init__(block, layers, num_classes=num_classes, widths=widths, **kwargs)

    def _make_stem(self, in_chans: int, out_chs: int, deep_stem: bool,
                   stem_width: int) -> tuple[list[str], int, int]:
        self.conv1 = _deep_stem(in_chans, stem_width, out_chs, stride=1, norm_layer=self.norm_layer) if deep_stem \
            else nn.Conv2d(in_chans, out_chs, 3, 1, 1, bias=False)
        norm = self._stem_norm(out_chs)
        self.relu = nn.ReLU(inplace=True)
        return ["conv1", norm, "relu"], 1, 1

    def _make_shortcut(self, inplanes: int, outplanes: int, stride: int,
                       same_pool: bool = False) -> nn.Module | None:
        if self._shortcut_kind == "B" or (stride == 1 and inplanes == outplanes):
            return super()._make_shortcut(inplanes, outplanes, stride, same_pool)
        return ZeroPadShortcut(inplanes, outplanes, stride)


def _cifar(block, layers, **kwargs) -> CifarResNet:
    return CifarResNet(block, layers, **kwargs)


def _he_cifar(n: int, **kwargs) -> CifarResNet:
    """He et al. 2015 §4.2: 6n+2 layers, three stages of n BasicBlocks on 16/32/64 channels, option A."""
    kwargs.setdefault("shortcut", "A")
    return CifarResNet(BasicBlock, [n] * 3, widths=(16, 32, 64), **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def cifar_resnet18(**kwargs) -> CifarResNet:
    """ResNet-18 for CIFAR: 3×3 stem, no max pool, BasicBlock × [2, 2, 2, 2] (11.2 M params)."""
    return _cifar(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def cifar_resnet34(**kwargs) -> CifarResNet:
    """ResNet-34 for CIFAR: BasicBlock × [3, 4, 6, 3] (21.3 M params)."""
    return _cifar(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def cifar_resnet50(**kwargs) -> CifarResNet:
    """ResNet-50 for CIFAR: Bottleneck × [3, 4, 6, 3] (23.5 M params)."""
    return _cifar(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (He et al. CIFAR-10, n=3): 0.27 M params."""
    return _he_cifar(3, **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 (n=5): 0.46 M params."""
    return _he_cifar(5, **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def resnet44(**kwargs) -> CifarResNet:
    """ResNet-44 (n=7): 0.66 M params."""
    return _he_cifar(7, **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 (n=9): 0.85 M params."""
    return _he_cifar(9, **kwargs)


@register_model(CifarResNet, input_size=(3, 32, 32))
def resnet110(**kwargs) -> CifarResNet:
    """ResNet-110 (n=18): 1.7 M params."""
    return _he_cifar(18, **kwargs)
