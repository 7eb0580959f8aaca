"""Building blocks shared by every model family."""
from .base import Block, DropPath, make_divisible
from .conv import ConvBNAct
from .d2l import Residual
from .gcnet import ContextBlock
from .generalized_attention import GeneralizedAttention
from .ghost import GhostBottleneck, GhostModule
from .inverted import InvertedResidual
from .nonlocal_block import NonLocal2d
from .plugins import NonLocal, register_plugin
from .resnet import BasicBlock, Bottleneck, make_shortcut
from .res2net import Bottle2neck
from .split_attention import ResNestBottleneck, SplitAttention
from .se import SqueezeExcite
from .shortcut import ZeroPadShortcut

__all__ = [
    "Block", "DropPath", "make_divisible", "SqueezeExcite", "NonLocal", "register_plugin",
    "NonLocal2d", "GeneralizedAttention", "ContextBlock",
    "BasicBlock", "Bottleneck", "make_shortcut", "Bottle2neck", "ResNestBottleneck", "SplitAttention",
    "Residual", "ConvBNAct", "InvertedResidual", "GhostModule", "GhostBottleneck",
    "ZeroPadShortcut",
]
