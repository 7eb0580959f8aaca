"""``to_table``: any model as a layer table, one row per layer or residual unit."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..inspect.trace import Call, Trace, trace, window_params
from ..inspect.units import after_word, describe_layers, op_words, residual_unit
from .parse import COLUMN_TITLES, fmt_size

_SILENT = (nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout2d)
_SE_NAMES = re.compile(r"SqueezeExcit|^SE|SELayer|SEModule")


@dataclass
class _Row:
    input: str
    op: str
    stride: str = ""
    padding: str = ""
    shortcut: str = ""
    after: list[str] = field(default_factory=list)


def _size(shape: tuple[int, ...] | None) -> str:
    if not shape:
        return ""
    per_image = shape[1:]
    return fmt_size(per_image) if len(per_image) in (1, 3) else "×".join(map(str, per_image))


def _square(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "×".join(map(str, values))


def _atomic(c: Call) -> bool:
    return c.leaf or isinstance(c.module, _BatchNorm)  # timm's BatchNormAct2d holds its activation


def _layer_row(c: Call) -> _Row | None:
    """A conv/pool/FC call as a new row; None for layers that belong in the After cell or nowhere."""
    m = c.module
    if (words := op_words(m)) is not None:
        k_s_p_d = window_params(m)
        return _Row(_size(c.in_shape), words, _square([s for _, s, _, _ in k_s_p_d]),
                    _square([p for _, _, p, _ in k_s_p_d]))
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and c.out_shape[2:] == (1, 1):
        return _Row(_size(c.in_shape), f"Global {'avg' if isinstance(m, nn.AdaptiveAvgPool2d) else 'max'} pool")
    if isinstance(m, nn.Linear):
        return _Row(str(m.in_features), f"FC {m.out_features}")
    return None


def _unit_row(c: Call, tr: Trace) -> _Row:
    """A residual unit as one row: its branch's ops, overall stride, shortcut and final norms/activations."""
    unit = residual_unit(c.module)
    skip = set()
    if unit.shortcut is not None:
        sc_ids = {id(m) for m in unit.shortcut.modules()}
        skip = {d.index for d in tr.descendants(c) if id(d.module) in sc_ids}
    segments: list[tuple[Call, list[str]]] = []
    gates: set[int] = set()  # squeeze-excite calls: shown as one "SE" word, their 1×1 convs are not the branch
    for d in tr.descendants(c):
        if d.index in skip:
            continue
        if d.parent in gates or _SE_NAMES.search(d.type_name):
            if d.parent not in gates and segments:
                segments[-1][1].append("SE")
            gates.add(d.index)
            continue
        if not _atomic(d):
            continue
        if op_words(d.module) is not None:
            segments.append((d, []))
        elif (w := after_word(d.module)) is not None and segments:
            segments[-1][1].append(w)
    shortcut = "Identity" if unit.shortcut is None else describe_layers(unit.shortcut)
    if len(segments) == 1:
        row = _layer_row(segments[0][0])
        row.input, row.shortcut, row.after = _size(c.in_shape), shortcut, [w for w in segments[0][1] if w != "SE"]
        return row
    # The After cell holds what follows the unit's last conv (BN before the addition, the activation
    # after it); the norms, activations and SE that follow inner convs are written after each one.
    inner = [", ".join(a) for _, a in segments[:-1]] + ["SE" if "SE" in a else "" for _, a in segments[-1:]]
    ops = " → ".join(op_words(d.module, with_stride=True) + (f" + {w}" if w else "")
                     for (d, _), w in zip(segments, inner))
    stride = 1
    for d, _ in segments:
        stride *= window_params(d.module)[0][1]
    last_after = [w for w in segments[-1][1] if w != "SE"] if segments else []
    return _Row(_size(c.in_shape), f"{type(c.module).__name__}: {ops}", str(stride), "", shortcut, last_after)


def table_rows(tr: Trace) -> list[_Row]:
    """The rows of a recorded forward pass (see :func:`to_table`)."""
    rows: list[_Row] = []
    inside: set[int] = set()
    for c in tr.calls[1:]:
        if c.index in inside or c.parent in inside:
            inside.add(c.index)
            continue
        unit = None if c.leaf else residual_unit(c.module)
        if unit is not None and unit.kind != "none":
            rows.append(_unit_row(c, tr))
            inside.add(c.index)
            continue
        if not _atomic(c) or isinstance(c.module, _SILENT):
            continue
        if (row := _layer_row(c)) is not None:
            rows.append(row)
        elif (w := after_word(c.module)) is not None and rows:
            rows[-1].after.append(w)
        else:
            rows.append(_Row(_size(c.in_shape), type(c.module).__name__))
    return rows


def render(rows: list[_Row]) -> str:
    """Aligned pipe table with the contract's six columns."""
    cells = [COLUMN_TITLES] + [[r.input, r.op, r.stride, r.padding, r.shortcut, ", ".join(r.after)] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMN_TITLES))]
    return "\n".join("| " + " | ".join(f"{v:<{w}}" for v, w in zip(row, widths)) + " |" for row in cells)


def to_table(model: nn.Module, input_size: Sequence[int] | None = None) -> str:
    """Describe ``model`` as a layer table (the format :func:`from_table` reads).

    Runs one forward pass on ``input_size`` (with batch, default: the model's
    ``default_input_size``) and writes one row per conv, pool or FC layer, with
    the norms and activations that follow it in the After cell, and one row per
    residual unit (a resnetkit ``Block`` or any module with a ``downsample`` /
    ``shortcut``): a unit with a single conv reads exactly like a table row
    (so ``from_table(to_table(m))`` rebuilds a plain or table-built net with the
    same shapes); a deeper unit lists its convs, each inner one with the norms and
    activations after it, as ``Bottleneck: Conv 1×1×64 + BN, ReLU → ...`` with its
    overall stride, which ``from_table`` does not build.
    """
    if input_size is None:
        input_size = (1, *getattr(model, "default_input_size", (3, 224, 224)))
    return render(table_rows(trace(model, input_size)))
