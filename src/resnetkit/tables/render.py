"""``to_table``: any model as a layer table, one row per layer or residual unit."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..inspect.summary import default_input_size
from ..inspect.trace import Call, Trace, trace, window_params
from ..blocks.shortcut import ZeroPadShortcut
from ..inspect.units import after_word, describe_layers, op_words, residual_unit, square
from .ops import fmt_size
from .errors import TableError
from .parse import COLUMN_TITLES

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


def _atomic(c: Call) -> bool:
    return c.leaf or isinstance(c.module, _BatchNorm)  # timm's BatchNormAct2d holds its activation


def _is_ghost(m: nn.Module) -> bool:
    return hasattr(m, "primary_conv") and hasattr(m, "cheap_operation")


def _se_words(m: nn.Module) -> str:
    """``SE 16`` (reduced channels), with the gate when it is not a sigmoid: ``SE 20 Hardsigmoid``."""
    rd = next((c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)), 0)
    gate = after_word(getattr(m, "gate", nn.Sigmoid()))
    return f"SE {rd}" + (f" {gate}" if gate not in (None, "Sigmoid") else "")


def _shortcut_words(sc: nn.Module | None) -> str:
    if isinstance(sc, ZeroPadShortcut):
        return f"Zero-pad {sc.outplanes}" + (f" Stride={sc.stride}" if sc.stride > 1 else "")
    return "Identity" if sc is None else describe_layers(sc)


@dataclass
class _Step:
    text: str
    stride: int
    after: list[str] = field(default_factory=list)
    call: Call | None = None     # a plain conv/pool step's call

    def words(self, with_after: bool = True) -> str:
        return self.text + (f" + {', '.join(self.after)}" if with_after and self.after else "")


def _steps(tr: Trace, calls: list[Call]) -> list[_Step]:
    """The steps (convs, pools, SE, ghost concats) of a run of calls, with the norms/activations after each."""
    steps: list[_Step] = []
    done: set[int] = set()
    for d in calls:
        if d.index in done or d.parent in done:
            done.add(d.index)
            continue
        if _is_ghost(d.module):
            parts = [_steps(tr, [p] if p.leaf else tr.descendants(p)) for p in tr.calls if p.parent == d.index]
            inner = "; ".join(" → ".join(s.words() for s in part) for part in parts)
            stride = math.prod(s.stride for part in parts for s in part)
            steps.append(_Step(f"Ghost concat {d.out_shape[1]} ({inner})", stride))
            done.add(d.index)
        elif _SE_NAMES.search(d.type_name):
            steps.append(_Step(_se_words(d.module), 1))
            done.add(d.index)
        elif _atomic(d) and (words := op_words(d.module, with_stride=True)) is not None:
            steps.append(_Step(words, window_params(d.module)[0][1], call=d))
        elif _atomic(d) and (w := after_word(d.module)) is not None and steps:
            steps[-1].after.append(w)
    return steps


def _layer_row(c: Call) -> _Row | None:
    """A conv/pool/FC call as a new row; None for layers that belong in the After cell or nowhere."""
    m = c.module
    if (words := op_words(m)) is not None:
        k_s_p_d = window_params(m)
        return _Row(_size(c.in_shape), words, square([s for _, s, _, _ in k_s_p_d]),
                    square([p for _, _, p, _ in k_s_p_d]))
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and c.out_shape[2:] == (1, 1):
        return _Row(_size(c.in_shape), f"Global {'avg' if isinstance(m, nn.AdaptiveAvgPool2d) else 'max'} pool")
    if isinstance(m, nn.Linear):
        return _Row(str(m.in_features), f"FC {m.out_features}")
    return None


def _unit_row(c: Call, tr: Trace) -> _Row:
    """A residual unit as one row: its steps, overall stride, shortcut and final norms/activations.

    A unit of one conv reads exactly like a plain row with a Shortcut; a deeper
    one is ``Label: step → step → ...``, each inner step with the norms and
    activations after it; the last step's (BN before the addition, the
    activation after it) are the After cell.
    """
    unit = residual_unit(c.module)
    sc_ids = {id(m) for m in unit.shortcut.modules()} if unit.shortcut is not None else set()
    steps = _steps(tr, [d for d in tr.descendants(c) if id(d.module) not in sc_ids])
    shortcut = _shortcut_words(unit.shortcut)
    last_after = steps[-1].after if steps else []
    if len(steps) == 1 and steps[0].call is not None:
        row = _layer_row(steps[0].call)
        row.input, row.shortcut, row.after = _size(c.in_shape), shortcut, last_after
        return row
    label = getattr(c.module, "table_label", "") or c.type_name
    ops = " → ".join([s.words() for s in steps[:-1]] + [s.words(with_after=False) for s in steps[-1:]])
    stride = math.prod(s.stride for s in steps)
    return _Row(_size(c.in_shape), f"{label}: {ops}", str(stride), "", shortcut, last_after)


def _functional_pool(last_out: tuple[int, ...] | None, in_shape: tuple[int, ...] | None) -> _Row | None:
    """A global pool the model runs as a function (torchvision's ``adaptive_avg_pool2d``), which no hook sees:
    a map C×H×W followed by a layer taking C values. Written as ``Global avg pool``, the families' pool."""
    if not last_out or not in_shape or len(last_out) != 4 or last_out[2:] == (1, 1):
        return None
    if in_shape[1] == last_out[1] and math.prod(in_shape[1:]) == last_out[1]:
        return _Row(_size(last_out), "Global avg pool")
    return None


def table_rows(tr: Trace) -> list[_Row]:
    """The rows of a recorded forward pass (see :func:`to_table`)."""
    rows: list[_Row] = []
    inside: set[int] = set()
    last_out = None  # what the last row's layers gave

    def add(row: _Row, c: Call) -> None:
        nonlocal last_out
        if (pool := _functional_pool(last_out, c.in_shape)) is not None:
            rows.append(pool)
        rows.append(row)
        last_out = c.out_shape if isinstance(c.out_shape, tuple) else None

    for c in tr.calls[1:]:
        if c.index in inside or c.parent in inside:
            inside.add(c.index)
            continue
        unit = None if c.leaf else residual_unit(c.module)
        if unit is not None and unit.kind != "none":
            add(_unit_row(c, tr), c)
            inside.add(c.index)
            continue
        if _is_ghost(c.module) or _SE_NAMES.search(c.type_name):  # outside a unit: a row of its own
            add(_Row(_size(c.in_shape), _steps(tr, [c])[0].text), c)
            inside.add(c.index)
            continue
        if not _atomic(c) or isinstance(c.module, _SILENT):
            continue
        if (row := _layer_row(c)) is not None:
            add(row, c)
        elif (w := after_word(c.module)) is not None and rows:
            rows[-1].after.append(w)
            last_out = c.out_shape if isinstance(c.out_shape, tuple) else last_out
        else:
            add(_Row(_size(c.in_shape), type(c.module).__name__), c)
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
    ``shortcut``): a unit with a single conv reads exactly like a table row; a
    deeper unit lists its steps, each inner one with the norms and activations
    after it, as ``Bottleneck: Conv 1×1×64 + BN, ReLU → ...`` with its overall
    stride (GhostNet's ghost modules as ``Ghost concat C (A; B)``, squeeze-excite
    as ``SE r``). A global pool the model runs as a function gets its row too.
    ``from_table(to_table(m))`` rebuilds the model with the same shapes row by
    row and the same parameter count (tested for every registered model).
    """
    from ..blocks.res2net import Bottle2neck
    from ..blocks.split_attention import SplitAttention

    untabled = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (Bottle2neck, SplitAttention))})
    if untabled:  # rows would describe another network: refuse rather than mislead
        raise TableError(f"to_table cannot write {' and '.join(untabled)} as table rows yet (hierarchical 3×3 "
                         "slices and split attention have no row form); rk.summary and rk.explain describe the model")
    if input_size is None:
        input_size = default_input_size(model)
    return render(table_rows(trace(model, input_size)))
