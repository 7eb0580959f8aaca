"""Res2Net and Res2NeXt (Gao et al. 2019): ResNet with hierarchical 3×3 slices in every bottleneck.

The ResNet class with :class:`~resnetkit.blocks.res2net.Bottle2neck`; names,
widths and stems are timm's (``res2net50d``/``res2net101d``: deep stem and
average-pool shortcuts), so timm's checkpoints load strictly.
"""
from __future__ import annotations

from ..blocks.res2net import Bottle2neck
from ..registry import register_model
from .resnet import ResNet


class Res2Net(ResNet):
    """ResNet whose bottlenecks are :class:`~resnetkit.blocks.res2net.Bottle2neck` (every ResNet option applies)."""


def _res2net(layers: list[int], width: int, scale: int, **kwargs) -> Res2Net:
    block_args = {"scale": scale, **kwargs.pop("block_args", {})}
    return Res2Net(Bottle2neck, layers, width_per_group=width, block_args=block_args, **kwargs)


def _d(kwargs: dict) -> dict:
    kwargs.setdefault("deep_stem", True)
    kwargs.setdefault("avg_down", True)
    return kwargs


@register_model(Res2Net)
def res2net50_26w_4s(**kwargs) -> Res2Net:
    """Res2Net-50 26w×4s: 4 slices of 26 channels (at the first stage's width), 25.7 M params."""
    return _res2net([3, 4, 6, 3], 26, 4, **kwargs)


@register_model(Res2Net)
def res2net50_14w_8s(**kwargs) -> Res2Net:
    """Res2Net-50 14w×8s: 8 slices of 14 channels."""
    return _res2net([3, 4, 6, 3], 14, 8, **kwargs)


@register_model(Res2Net)
def res2net50_26w_6s(**kwargs) -> Res2Net:
    """Res2Net-50 26w×6s."""
    return _res2net([3, 4, 6, 3], 26, 6, **kwargs)


@register_model(Res2Net)
def res2net50_26w_8s(**kwargs) -> Res2Net:
    """Res2Net-50 26w×8s."""
    return _res2net([3, 4, 6, 3], 26, 8, **kwargs)


@register_model(Res2Net)
def res2net50_48w_2s(**kwargs) -> Res2Net:
    """Res2Net-50 48w×2s: two slices, one through a 3×3 and one passed on."""
    return _res2net([3, 4, 6, 3], 48, 2, **kwargs)


@register_model(Res2Net)
def res2net101_26w_4s(**kwargs) -> Res2Net:
    """Res2Net-101 26w×4s."""
    return _res2net([3, 4, 23, 3], 26, 4, **kwargs)


@register_model(Res2Net)
def res2next50(**kwargs) -> Res2Net:
    """Res2NeXt-50: 4 slices, each 3×3 in 8 groups of 4 channels."""
    return _res2net([3, 4, 6, 3], 4, 4, groups=8, **kwargs)


@register_model(Res2Net)
def res2net50d(**kwargs) -> Res2Net:
    """Res2Net-50-D: 26w×4s with the deep stem and average-pool shortcuts."""
    return _res2net([3, 4, 6, 3], 26, 4, **_d(kwargs))


@register_model(Res2Net)
def res2net101d(**kwargs) -> Res2Net:
    """Res2Net-101-D."""
    return _res2net([3, 4, 23, 3], 26, 4, **_d(kwargs))
