"""ResNeSt (Zhang et al. 2020): ResNet-D with split-attention 3×3s and average-pooled strides.

The ResNet class with :class:`~resnetkit.blocks.split_attention.ResNestBottleneck`,
a deep stem and average-pool shortcuts; "d" models have a 32-wide stem (64
out), "e" models a 64-wide one (128 out), as timm names them, so timm's
checkpoints load strictly.
"""
from __future__ import annotations

from ..blocks.split_attention import ResNestBottleneck
from ..registry import register_model
from .resnet import ResNet


class ResNeSt(ResNet):
    """ResNet-D whose bottlenecks are :class:`~resnetkit.blocks.split_attention.ResNestBottleneck`."""


def _resnest(layers: list[int], stem: str = "d", radix: int = 2, groups: int = 1, width: int = 64,
             avd_first: bool = False, **kwargs) -> ResNeSt:
    block_args = {"radix": radix, "avd": True, "avd_first": avd_first, **kwargs.pop("block_args", {})}
    kwargs.setdefault("deep_stem", True)
    kwargs.setdefault("avg_down", True)
    if stem == "e":
        kwargs.setdefault("stem_width", 64)
        kwargs.setdefault("stem_channels", 128)
    return ResNeSt(ResNestBottleneck, layers, groups=groups, width_per_group=width, block_args=block_args, **kwargs)


@register_model(ResNeSt)
def resnest14d(**kwargs) -> ResNeSt:
    """ResNeSt-14d: one block per stage, radix 2."""
    return _resnest([1, 1, 1, 1], **kwargs)


@register_model(ResNeSt)
def resnest26d(**kwargs) -> ResNeSt:
    """ResNeSt-26d."""
    return _resnest([2, 2, 2, 2], **kwargs)


@register_model(ResNeSt)
def resnest50d(**kwargs) -> ResNeSt:
    """ResNeSt-50d (the paper's ResNeSt-50), 27.5 M params."""
    return _resnest([3, 4, 6, 3], **kwargs)


@register_model(ResNeSt)
def resnest50d_1s4x24d(**kwargs) -> ResNeSt:
    """ResNeSt-50d 1s4×24d: radix 1 (a sigmoid gate), 4 groups of 24, pool before the 3×3."""
    return _resnest([3, 4, 6, 3], radix=1, groups=4, width=24, avd_first=True, **kwargs)


@register_model(ResNeSt)
def resnest50d_4s2x40d(**kwargs) -> ResNeSt:
    """ResNeSt-50d 4s2×40d: radix 4, 2 groups of 40, pool before the 3×3."""
    return _resnest([3, 4, 6, 3], radix=4, groups=2, width=40, avd_first=True, **kwargs)


@register_model(ResNeSt, input_size=(3, 256, 256))
def resnest101e(**kwargs) -> ResNeSt:
    """ResNeSt-101e (the paper's ResNeSt-101): 64-wide deep stem, 256×256 inputs."""
    return _resnest([3, 4, 23, 3], stem="e", **kwargs)


@register_model(ResNeSt, input_size=(3, 320, 320))
def resnest200e(**kwargs) -> ResNeSt:
    """ResNeSt-200e, 320×320 inputs."""
    return _resnest([3, 24, 36, 3], stem="e", **kwargs)


@register_model(ResNeSt, input_size=(3, 416, 416))
def resnest269e(**kwargs) -> ResNeSt:
    """ResNeSt-269e, 416×416 inputs."""
    return _resnest([3, 30, 48, 8], stem="e", **kwargs)
