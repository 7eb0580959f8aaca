"""ResNets for 32×32 inputs: the CIFAR ResNet-18/34/50 and He et al.'s ResNet-20 … 110.

The stem is one 3×3 conv (stride 1, no max pool), so a 32×32 image keeps its
resolution through the first stage and feature levels sit at reductions
1, 2, 4 (, 8). Blocks are the shared ``BasicBlock``/``Bottleneck``.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("resnet20", features_only=True)
>>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 3, 32, 32))]
[(16, 32, 32), (32, 16, 16), (64, 8, 8)]
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..blocks import BasicBlock, Bottleneck, make_shortcut
from ..blocks.shortcut import ZeroPadShortcut
from ..features import levels_from_trunk
from ..registry import register_model
from .base import ResidualNet
from .resnet import ResNet

SHORTCUTS = {"A": ZeroPadShortcut, "B": make_shortcut}


class CifarResNet(ResidualNet):
    """3×3 stem (``conv1/bn1/relu``), one stage per entry of ``widths`` (the first at stride 1,
    the others halving the size), global average pool, ``fc``.

    ``shortcut="B"`` projects with a 1×1 conv + BN where shapes change (the
    CIFAR ResNet-18/34/50 of common practice); ``"A"`` subsamples and zero-pads
    (He et al.'s CIFAR models: no shortcut parameters).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 10, in_chans: int = 3,
                 shortcut: str = "B", zero_init_residual: bool = False, drop_path_rate: float = 0.0,
                 norm_layer: type[nn.Module] | None = None, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1×1 projection), got {shortcut!r}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} need one entry per stage")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.num_classes = num_classes
        inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_chans, inplanes, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(inplanes)
        self.relu = nn.ReLU(inplace=True)
        trunk, reduction = [("relu", inplanes, 1)], 1
        dpr = [drop_path_rate * i / max(sum(layers) - 1, 1) for i in range(sum(layers))]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            outplanes = planes * block.expansion
            downsample = None if stride == 1 and inplanes == outplanes else \
                SHORTCUTS[shortcut](inplanes, outplanes, stride)
            blocks = [block(inplanes if j == 0 else outplanes, planes, stride if j == 0 else 1,
                            downsample if j == 0 else None, norm_layer=norm_layer, drop_path=dpr.pop(0))
                      for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes, reduction = outplanes, reduction * stride
            trunk.append((f"layer{i + 1}", outplanes, reduction))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()

        self.trunk_names = ["conv1", "bn1", "relu"] + [f"layer{i + 1}" for i in range(len(widths))]
        self.head_names = ["avgpool", "fc"]
        self.classifier_name = "fc"
        self.feature_info = levels_from_trunk(trunk)
        ResNet._init_weights(self, zero_init_residual)  # the same He init as the ImageNet ResNets
        self._apply_backbone_options(frozen_stages, norm_eval, with_cp)


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
