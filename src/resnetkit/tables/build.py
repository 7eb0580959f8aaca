"""Checked row specs -> ``nn.Module``s: ``from_table``."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..blocks.base import Block
from ..inspect.units import AFTER_LAYERS
from .parse import Op, RowSpec, Shape, parse_table


def _layer(op: Op, in_shape: Shape) -> nn.Module:
    if op.kind == "conv":
        return nn.Conv2d(in_shape[0], op.out, op.kernel, op.stride, op.padding, op.dilation, op.groups,
                         bias=False)
    if op.kind == "maxpool":
        return nn.MaxPool2d(op.kernel, op.stride, op.padding, op.dilation, ceil_mode=op.ceil)
    if op.kind == "avgpool":
        return nn.AvgPool2d(op.kernel, op.stride, op.padding, ceil_mode=op.ceil)
    if op.kind == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if op.kind == "gmp":
        return nn.AdaptiveMaxPool2d(1)
    if op.kind == "fc":
        n_in = 1
        for s in in_shape:
            n_in *= s
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, op.out)) if len(in_shape) > 1 else nn.Linear(n_in, op.out)
    if op.kind == "bn":
        return _norm(in_shape)
    return nn.Identity()


def _norm(shape: Shape) -> nn.Module:
    """BN over a map's channels, or over a vector's features (after an FC row BatchNorm2d would fail)."""
    return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])


def _after(word: str, shape: Shape) -> nn.Module:
    return _norm(shape) if word == "BN" else AFTER_LAYERS[word]()


class TableResidual(Block):
    """A residual table row: ``post(branch(x) + shortcut(x))``.

    ``branch`` is the row's operation and the norms of its After cell; ``post``
    holds the After cell from its first activation on, so the shortcut is added
    before the activation, as in He et al.'s units.
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module, post: nn.Sequential) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.post = post

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.branch(x) + self.shortcut(x))


def build_row(spec: RowSpec) -> nn.Module:
    """The module of one checked row (a ``TableResidual`` when the row has a shortcut)."""
    layers = [_layer(spec.op, spec.in_shape)] + [_after(w, spec.out_shape) for w in spec.after]
    if spec.shortcut is None:
        return nn.Sequential(*layers)
    first_act = next((i + 1 for i, w in enumerate(spec.after) if w != "BN"), len(layers))
    sc_layers, shape = [], spec.in_shape
    for op in spec.shortcut:
        if op.kind != "identity":
            sc_layers.append(_layer(op, shape))
        shape = (op.out, *shape[1:]) if op.kind == "conv" else shape
    shortcut = nn.Sequential(*sc_layers) if sc_layers else nn.Identity()
    return TableResidual(nn.Sequential(*layers[:first_act]), shortcut, nn.Sequential(*layers[first_act:]))


class TableNet(nn.Sequential):
    """A network built from a layer table: children ``row1``, ``row2``, ... in table order.

    ``input_size``/``default_input_size`` is row 1's declared (C, H, W);
    ``output_size`` what the table computes for it; ``specs`` the checked rows.
    """

    def __init__(self, specs: list[RowSpec]) -> None:
        super().__init__(OrderedDict((f"row{s.number}", build_row(s)) for s in specs))
        self.specs = specs
        self.input_size = specs[0].in_shape
        self.default_input_size = self.input_size
        self.output_size = specs[-1].out_shape


def from_table(text: str) -> TableNet:
    """Build a network from a layer table, the way papers and blog posts write networks.

    Columns: ``Input size`` (H×W×C, checked against the previous row),
    ``Operation`` (``Conv K×K×C``, ``Max pool K×K``, ``Avg pool K×K``,
    ``Global avg pool``, ``FC N``), ``Stride``, ``Padding``, ``Shortcut``
    (e.g. ``Conv 1×1×128 Stride=2`` or ``Identity``: the row becomes a
    residual unit whose shortcut is added before the After activation) and
    ``After`` (e.g. ``BN, ReLU``). ``×`` and ``x`` are both accepted and blank
    cells mean none (stride 1, padding 0). Any problem raises
    :class:`TableError` naming the row; a wrong declared size also names the
    declared and computed sizes and the formula.

    >>> import torch, resnetkit as rk
    >>> net = rk.from_table('''
    ... | Input size | Operation    | Stride | Padding | Shortcut              | After    |
    ... | 32×32×3    | Conv 3×3×16  | 1      | 1       |                       | BN, ReLU |
    ... | 32×32×16   | Conv 3×3×32  | 2      | 1       | Conv 1×1×32 Stride=2  | BN, ReLU |
    ... ''')
    >>> tuple(net(torch.zeros(1, 3, 32, 32)).shape)
    (1, 32, 16, 16)
    """
    return TableNet(parse_table(text))
