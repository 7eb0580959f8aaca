"""Building blocks shared by every model family."""
from .base import Block, DropPath, make_divisible
from .d2l import Residual
from .plugins import NonLocal, register_plugin
from .resnet import BasicBlock, Bottleneck, make_shortcut
from .se import SqueezeExcite

__all__ = [
    "Block", "DropPath", "make_divisible", "SqueezeExcite", "NonLocal", "register_plugin",
    "BasicBlock", "Bottleneck", "make_shortcut",
    "Residual",
]
