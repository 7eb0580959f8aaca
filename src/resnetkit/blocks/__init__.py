"""Building blocks shared by every model family."""
from .base import Block, DropPath, make_divisible
from .conv import ConvBNAct
from .d2l import Residual
from .ghost import GhostBottleneck, GhostModule
from .inverted import InvertedResidual
from .plugins import NonLocal, register_plugin
from .resnet import BasicBlock, Bottleneck, make_shortcut
from .res2net import Bottle2neck
from .split_attention import ResNestBottleneck, SplitAttention
from .se import SqueezeExcite
from .shortcut import ZeroPadShortcut

__all__ = [
    "Block", "DropPath", "make_divisible", "SqueezeExcite", "NonLocal", "register_plugin",
    "BasicBlock", "Bottleneck", "make_shortcut", "Bottle2neck", "ResNestBottleneck", "SplitAttention",
    "Residual", "ConvBNAct", "InvertedResidual", "GhostModule", "GhostBottleneck",
    "ZeroPadShortcut",
]
