"""What a layer is called in a layer table, and how to recognise a residual unit.

Shared by ``explain`` (which says why a shortcut is an identity or a
projection), ``to_table`` (which renders layers in table words) and
``from_table`` (which builds layers from the same words), so the vocabulary
exists once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.pooling import _AvgPoolNd, _MaxPoolNd

from ..blocks.base import Block
from .trace import window_params

# Words of the table's "After" column -> a constructor taking the channel count.
AFTER_LAYERS: dict[str, type[nn.Module]] = {
    "BN": nn.BatchNorm2d, "ReLU": nn.ReLU, "ReLU6": nn.ReLU6, "LeakyReLU": nn.LeakyReLU,
    "SiLU": nn.SiLU, "GELU": nn.GELU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
    "Hardswish": nn.Hardswish, "Hardsigmoid": nn.Hardsigmoid,
}
ACTIVATIONS = tuple(v for k, v in AFTER_LAYERS.items() if k != "BN")
# Attributes under which residual units keep their shortcut (torchvision/timm/resnetkit names).
SHORTCUT_ATTRS = ("downsample", "shortcut")


def after_word(module: nn.Module) -> str | None:
    """The After-column word for a norm or activation module (None if it is neither)."""
    if isinstance(module, _BatchNorm):
        return "BN"
    for word, cls in AFTER_LAYERS.items():
        if type(module) is cls:
            return word
    return None


def square(values: Sequence[int]) -> str:
    """``3`` for (3, 3), ``3×5`` for (3, 5): a per-axis value as a table writes it."""
    return str(values[0]) if len(set(values)) == 1 else "×".join(map(str, values))


def op_words(module: nn.Module, with_stride: bool = False) -> str | None:
    """A conv or pool in table words: ``Conv 3×3×64``, ``Max pool 3×3`` (None for other layers).

    ``with_stride`` appends ``Stride=s``/``Padding=p`` (as a Shortcut cell
    writes them); grouped convs always say ``Groups=g``, dilated ones
    ``Dilation=d`` and convs with a bias ``Bias``.
    """
    params = window_params(module)
    if params is None:
        return None
    k, s, p, d = (tuple(v[i] for v in params) for i in range(4))
    kernel = "×".join(map(str, k))
    if isinstance(module, _ConvNd):
        text = f"Conv {kernel}×{module.out_channels}"
        extras = [f"Groups={module.groups}"] if module.groups > 1 else []
    else:
        text = f"{'Max' if isinstance(module, _MaxPoolNd) else 'Avg'} pool {kernel}"
        extras = []
    if with_stride:
        if set(s) != {1}:
            extras.insert(0, f"Stride={square(s)}")
        if set(p) != {0}:
            extras.append(f"Padding={square(p)}")
    if set(d) != {1}:
        extras.append(f"Dilation={square(d)}")
    if isinstance(module, (_MaxPoolNd, _AvgPoolNd)) and getattr(module, "ceil_mode", False):
        extras.append("Ceil")
    if isinstance(module, _ConvNd) and module.bias is not None:
        extras.append("Bias")
    return " ".join([text, *extras])


def is_identity(module: nn.Module | None) -> bool:
    """True for a shortcut that passes its input through: None, ``nn.Identity``, an empty Sequential."""
    if module is None or isinstance(module, nn.Identity):
        return True
    return next(iter(module.children()), None) is None and next(iter(module.parameters()), None) is None \
        and type(module) is nn.Sequential


@dataclass(frozen=True)
class Unit:
    """How a residual unit joins its input back: ``identity``, ``projection`` or ``none``."""

    kind: str
    shortcut: nn.Module | None = None      # the projection module, when kind == "projection"
    shortcut_name: str | None = None       # its attribute name, e.g. "downsample"


def residual_unit(module: nn.Module) -> Unit | None:
    """Describe ``module`` as a residual unit, or None if it is not one.

    Recognises resnetkit ``Block``s and any module with torchvision's
    ``downsample``, timm's ``shortcut`` or MobileNetV2's ``use_res_connect``;
    a unit that keeps its shortcut under another name says so in a class
    attribute ``shortcut_attr`` (d2l's ``Residual``: ``"conv3"``).
    """
    if isinstance(getattr(module, "use_res_connect", None), bool):
        return Unit("identity" if module.use_res_connect else "none")
    own = getattr(type(module), "shortcut_attr", None)
    for attr in ((own,) if own else SHORTCUT_ATTRS):
        if hasattr(module, attr):
            sc = getattr(module, attr)
            if not (sc is None or isinstance(sc, nn.Module)):
                continue
            if is_identity(sc):
                return Unit("identity", None, attr)
            return Unit("projection", sc, attr)
    if isinstance(module, Block):
        return Unit("identity")
    return None


def block_inside(module: nn.Module) -> tuple[str, str] | None:
    """A block's own account of what it does inside (Res2Net's slices, ResNeSt's split attention):
    (a short label, a sentence with its numbers); None for plain blocks and other modules."""
    return module.inside() if isinstance(module, Block) else None


def describe_layers(module: nn.Module) -> str:
    """A shortcut (or any small stack) in table words, e.g. ``Conv 1×1×128 Stride=2, BN``."""
    mods = [module] if next(iter(module.children()), None) is None else list(module.modules())[1:]
    words = []
    for m in mods:
        if isinstance(m, _ConvTransposeNd):
            words.append(type(m).__name__)
        elif (w := op_words(m, with_stride=True) or after_word(m)) is not None:
            words.append(w)
        elif next(iter(m.children()), None) is None and not isinstance(m, nn.Identity):
            words.append(type(m).__name__)
    return ", ".join(words) or "Identity"
