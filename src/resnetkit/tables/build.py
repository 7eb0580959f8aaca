"""Checked row specs -> ``nn.Module``s: ``from_table``."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..blocks.base import Block
from ..blocks.se import SqueezeExcite
from ..blocks.shortcut import ZeroPadShortcut
from ..inspect.units import AFTER_LAYERS
from .ops import Op, Shape, Step, apply
from .parse import parse_table
from .spec import RowSpec


def _layer(op: Op, in_shape: Shape) -> nn.Module:
    if op.kind == "conv":
        return nn.Conv2d(in_shape[0], op.out, op.kernel, op.stride, op.padding, op.dilation, op.groups,
                         bias=op.bias)
    if op.kind == "maxpool":
        return nn.MaxPool2d(op.kernel, op.stride, op.padding, op.dilation, ceil_mode=op.ceil)
    if op.kind == "avgpool":
        return nn.AvgPool2d(op.kernel, op.stride, op.padding, ceil_mode=op.ceil)
    if op.kind == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if op.kind == "gmp":
        return nn.AdaptiveMaxPool2d(1)
    if op.kind == "fc":
        n_in = math.prod(in_shape)
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, op.out)) if len(in_shape) > 1 else nn.Linear(n_in, op.out)
    if op.kind == "bn":
        return _norm(in_shape)
    if op.kind == "se":
        return SqueezeExcite(in_shape[0], rd_channels=op.out, gate_layer=AFTER_LAYERS[op.gate])
    if op.kind == "zeropad":
        return ZeroPadShortcut(in_shape[0], op.out, op.stride[0])
    if op.kind == "chain":
        return nn.Sequential(*_step_layers(op.steps, in_shape))
    if op.kind == "ghost":
        primary, cheap = (s.op for s in op.steps)
        return TableGhost(_layer(primary, in_shape), _layer(cheap, apply(primary, in_shape, None)[0]), op.out)
    return nn.Identity()


def _step_layers(steps: tuple[Step, ...], shape: Shape) -> list[nn.Module]:
    """The modules of a chain's steps, flat: each step's layer and the norms/activations after it."""
    layers = []
    for step in steps:
        layers.append(_layer(step.op, shape))
        shape = apply(step.op, shape, None)[0]
        layers += [_after(w, shape) for w in step.after]
    return layers


def _norm(shape: Shape) -> nn.Module:
    """BN over a map's channels, or over a vector's features (after an FC row BatchNorm2d would fail)."""
    return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])


def _after(word: str, shape: Shape) -> nn.Module:
    return _norm(shape) if word == "BN" else AFTER_LAYERS[word]()


class TableGhost(nn.Module):
    """A table's ``Ghost concat C (A; B)``: ``cat([A(x), B(A(x))])``, first C channels.

    The attribute names are timm's GhostModule's, so ``to_table`` writes it back the same way.
    """

    def __init__(self, primary_conv: nn.Module, cheap_operation: nn.Module, out_chs: int) -> None:
        super().__init__()
        self.primary_conv = primary_conv
        self.cheap_operation = cheap_operation
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)[:, : self.out_chs]


class TableResidual(Block):
    """A residual table row: ``post(branch(x) + shortcut(x))``.

    ``branch`` is the row's operation and the norms of its After cell; ``post``
    holds the After cell from its first activation on, so the shortcut is added
    before the activation, as in He et al.'s units.
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module, post: nn.Sequential, label: str = "") -> None:
        super().__init__()
        self.table_label = label  # the unit's name in its table (``Bottleneck``), which to_table writes back
        self.branch = branch
        self.shortcut = shortcut
        self.post = post

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.branch(x) + self.shortcut(x))


def build_row(spec: RowSpec) -> nn.Module:
    """The module of one checked row (a ``TableResidual`` when the row has a shortcut)."""
    op = spec.op
    main = _step_layers(op.steps, spec.in_shape) if op.kind == "chain" else [_layer(op, spec.in_shape)]
    layers = main + [_after(w, spec.out_shape) for w in spec.after]
    if spec.shortcut is None:
        return nn.Sequential(*layers)
    first_act = len(main) + next((i for i, w in enumerate(spec.after) if w != "BN"), len(spec.after))
    sc_layers, shape = [], spec.in_shape
    for sc in spec.shortcut:
        if sc.kind != "identity":
            sc_layers.append(_layer(sc, shape))
        shape = apply(sc, shape, None)[0]
    shortcut = nn.Sequential(*sc_layers) if sc_layers else nn.Identity()
    return TableResidual(nn.Sequential(*layers[:first_act]), shortcut, nn.Sequential(*layers[first_act:]),
                         op.label)


class TableNet(nn.Sequential):
    """A network built from a layer table: children ``row1``, ``row2``, ... in table order.

    A paper table's children are its layer names (``conv1``, ``conv2_x``: a
    Sequential of the row's blocks). ``input_size``/``default_input_size`` is
    row 1's (C, H, W); ``output_size`` what the table computes for it; ``specs``
    the checked units.
    """

    def __init__(self, specs: list[RowSpec]) -> None:
        groups: OrderedDict[str, list[nn.Module]] = OrderedDict()
        for s in specs:
            groups.setdefault(s.group, []).append(build_row(s))
        super().__init__(OrderedDict((name, mods[0] if len(mods) == 1 else nn.Sequential(*mods))
                                     for name, mods in groups.items()))
        self.specs = specs
        self.input_size = specs[0].in_shape
        self.default_input_size = self.input_size
        self.output_size = specs[-1].out_shape


def from_table(text: str, column: str | None = None) -> TableNet:
    """Build a network from a layer table, the way papers and blog posts write networks.

    Columns: ``Input size`` (H×W×C, checked against the previous row),
    ``Operation`` (``Conv K×K×C``, ``Max pool K×K``, ``Avg pool K×K``,
    ``Global avg pool``, ``FC N``, or a residual unit's steps, see
    :mod:`resnetkit.tables.ops`), ``Stride``, ``Padding``, ``Shortcut``
    (e.g. ``Conv 1×1×128 Stride=2`` or ``Identity``: the row becomes a
    residual unit whose shortcut is added before the After activation) and
    ``After`` (e.g. ``BN, ReLU``). ``×``, ``x`` and ``*`` are accepted, so are
    ``conv 3x3, 64`` and ``3×3 conv, 64`` and the Chinese headers (``输入大小``,
    ``操作``, ``步长``, ``填充``, ``快捷连接``, ``之后``); blank cells mean none
    (stride 1, padding 0). A table with an ``output size`` column is read as
    the ResNet paper's Table 1 (:mod:`resnetkit.tables.paper`); ``column``
    picks its architecture column when it has several (``"50-layer"``).
    Any problem raises :class:`TableError` naming the row; a wrong declared
    size also names the declared and computed sizes and the formula.

    >>> import torch, resnetkit as rk
    >>> net = rk.from_table('''
    ... | Input size | Operation    | Stride | Padding | Shortcut              | After    |
    ... | 32×32×3    | Conv 3×3×16  | 1      | 1       |                       | BN, ReLU |
    ... | 32×32×16   | Conv 3×3×32  | 2      | 1       | Conv 1×1×32 Stride=2  | BN, ReLU |
    ... ''')
    >>> tuple(net(torch.zeros(1, 3, 32, 32)).shape)
    (1, 32, 16, 16)
    """
    return TableNet(parse_table(text, column))
