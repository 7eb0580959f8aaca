"""What ``draw`` shows, taken from one recorded forward pass: columns of boxes, no drawing yet.

The stem is every layer before the first residual unit, the head every layer
after the last one; the units in between are grouped into stages at the
model's feature levels (``stage_ends``), or, for models without levels, where
the output resolution changes. A run of identical units (same type, shapes,
shortcut and parameter count) folds into one box ``×N``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from torch import nn

from .summary import count_params, human, stage_ends
from .trace import ADAPTIVE, Call, Trace, window_params
from .units import after_word, block_inside, op_words, residual_unit

_SILENT = (nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout2d)


def shape_text(shape: object) -> str:
    """``(1, 64, 56, 56)`` -> ``64×56×56`` (the batch left out); other outputs -> ``?``."""
    return "×".join(map(str, shape[1:])) if isinstance(shape, tuple) else "?"


@dataclass
class Box:
    """One drawn box: a residual unit (or a folded run of them) or a stem/head layer."""

    title: str
    shape: str                      # output per image, e.g. "128×28×28"
    params: int
    macs: int
    shortcut: str | None = None     # "identity", "projection" or "none"; None for a plain layer
    reason: str = ""                # why a projection (or no shortcut): "stride 2, 64→128 ch"
    detail: str = ""                # what the block does inside, e.g. "4 slices × 26 ch, hierarchical 3×3s"
    count: int = 1                  # units folded into this box
    key: tuple = ()                 # what makes two units identical
    names: list[str] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)  # indices in the trace of the calls the box stands for


@dataclass
class Column:
    """The stem, one stage or the head: its boxes and their totals."""

    title: str
    boxes: list[Box] = field(default_factory=list)
    stride: str = ""                # total stride at the column's output, e.g. "/8"

    @property
    def params(self) -> int:
        return sum(b.params for b in self.boxes)

    @property
    def macs(self) -> int:
        return sum(b.macs for b in self.boxes)

    @property
    def shape(self) -> str:
        return self.boxes[-1].shape if self.boxes else "?"

    def summary(self) -> str:
        return f"{human(self.params)} params · {human(self.macs)} MACs"


def _named(name: str, what: str) -> str:
    """``layer1.0 · BasicBlock``; the model itself (name "") is just what it is."""
    return f"{name} · {what}" if name else what


def _unit_box(c: Call) -> Box:
    unit = residual_unit(c.module)
    (ci, *hw_in), (co, *hw_out) = c.in_shape[1:], c.out_shape[1:]
    why = []
    if hw_in != hw_out:
        steps = {i // max(o, 1) for i, o in zip(hw_in, hw_out)}
        why.append(f"stride {steps.pop()}" if len(steps) == 1 else f"{'×'.join(map(str, hw_in))}→"
                   f"{'×'.join(map(str, hw_out))}")
    if ci != co:
        why.append(f"{ci}→{co} ch")
    kind = unit.kind
    if kind == "projection" and next(iter(unit.shortcut.parameters()), None) is None:
        why.append("no params")  # He et al.'s option A: subsample and zero-pad
    params = count_params(c.module)[0] if not c.repeat else 0
    reason = ", ".join(why) or ("configured" if kind == "projection" else "")
    detail = inside[0] if (inside := block_inside(c.module)) else ""
    key = (c.type_name, c.in_shape, c.out_shape, kind, reason, params, detail)
    return Box(_named(c.name, c.type_name), shape_text(c.out_shape), params, c.total_macs, kind, reason, detail,
               key=key, names=[c.name], calls=[c.index])


def _layer_words(c: Call) -> str | None:
    """A stem/head layer in table words, with its stride; None for norms, activations and silent layers."""
    m = c.module
    if (words := op_words(m)) is not None:
        strides = {s for _, s, _, _ in window_params(m)}
        return words + (f" stride {strides.pop()}" if strides != {1} and len(strides) == 1 else "")
    if isinstance(m, ADAPTIVE):
        return f"{'Global ' if set(c.out_shape[2:]) == {1} else 'Adaptive '}" \
               f"{'max' if 'Max' in c.type_name else 'avg'} pool"
    if isinstance(m, nn.Linear):
        return f"FC {m.in_features}→{m.out_features}"
    if isinstance(m, _SILENT) or after_word(m) is not None:
        return None
    return c.type_name


def _layer_boxes(calls: list[Call], tr: Trace) -> list[Box]:
    """Leaf calls outside any unit as boxes: each conv, pool or FC starts one; norms and activations join it."""
    boxes: list[Box] = []
    for top in calls:
        for c in [top, *tr.descendants(top)]:
            if not c.leaf:
                continue
            params = 0 if c.repeat else count_params(c.module)[0]
            words = _layer_words(c)
            if words is not None or not boxes:
                boxes.append(Box(_named(c.name, words or c.type_name), shape_text(c.out_shape), params, c.macs,
                                 calls=[c.index]))
                continue
            last = boxes[-1]
            last.calls.append(c.index)
            if (w := after_word(c.module)) is not None:
                last.title += (", " if " + " in last.title else " + ") + w
            last.params, last.macs = last.params + params, last.macs + c.macs
            if isinstance(c.out_shape, tuple):
                last.shape = shape_text(c.out_shape)
    return boxes


def _items(tr: Trace) -> list[tuple[Call, bool]]:
    """(call, is_unit) for the outermost residual units and the largest calls holding no unit, in order."""
    root = tr.calls[0]
    if residual_unit(root.module) is not None and isinstance(root.out_shape, tuple):
        return [(root, True)]  # a block drawn on its own
    units: set[int] = set()
    holds_unit: set[int] = set()
    inside: set[int] = set()
    for c in tr.calls[1:]:
        if c.parent in inside or c.parent in units:
            inside.add(c.index)
        elif not c.leaf and residual_unit(c.module) is not None and isinstance(c.out_shape, tuple):
            units.add(c.index)
            p = c.parent
            while p is not None and p not in holds_unit:
                holds_unit.add(p)
                p = tr.calls[p].parent
    return [(c, c.index in units) for c in tr.calls[1:]
            if c.index not in holds_unit and (c.parent == 0 or c.parent in holds_unit)]


def _last_index(tr: Trace, call: Call) -> int:
    inner = tr.descendants(call)
    return inner[-1].index if inner else call.index


def _stage_ends(tr: Trace, units: list[Call]) -> list[int]:
    """Index of the last call of each stage: the model's feature levels, else each resolution run."""
    has_levels = getattr(tr.model, "all_levels", None) or getattr(tr.model, "feature_info", None)
    if has_levels:
        last = {c.name: c for c in tr.calls}
        ends = sorted(_last_index(tr, last[n]) for _, n in stage_ends(tr) if n in last)
        if ends and ends[-1] >= units[-1].index:
            return ends
    ends = [_last_index(tr, u) for u, nxt in zip(units, units[1:]) if u.out_shape[2:] != nxt.out_shape[2:]]
    return ends + [_last_index(tr, units[-1])]


def _fold(boxes: list[Box], min_run: int) -> list[Box]:
    """Runs of at least ``min_run`` identical units become one box ``first … last · Type ×N`` (0: no folding)."""
    out: list[Box] = []
    for _, group in groupby(boxes, key=lambda b: b.key or id(b)):
        run = list(group)
        if min_run < 2 or len(run) < min_run:
            out += run
            continue
        first = run[0]
        out.append(Box(f"{first.names[0]} … {run[-1].names[0]} · {first.key[0]} ×{len(run)}", first.shape,
                       sum(b.params for b in run), sum(b.macs for b in run), first.shortcut, first.reason,
                       first.detail, len(run), first.key, [n for b in run for n in b.names],
                       [i for b in run for i in b.calls]))
    return out


def _stride(c: Call) -> str:
    if not c.field:
        return ""
    jumps = {j for j, _ in c.field}
    return str(jumps.pop()) if len(jumps) == 1 else ""


def columns(tr: Trace, fold: int = 3) -> list[Column]:
    """The stem, the stages and the head of a recorded forward pass (see :func:`resnetkit.draw`)."""
    items = _items(tr)
    units = [c for c, is_unit in items if is_unit]
    if not units:
        return [Column("layers", _layer_boxes([c for c, _ in items] or tr.calls[:1], tr))]
    first, last = units[0].index, units[-1].index
    ends = _stage_ends(tr, units)
    stem = Column("stem", _layer_boxes([c for c, _ in items if c.index < first], tr))
    head = Column("head", _layer_boxes([c for c, _ in items if c.index > last], tr))
    stages: dict[int, list[tuple[Call, bool]]] = {}
    for c, is_unit in items:
        if first <= c.index <= last:
            k = next((i for i, end in enumerate(ends) if c.index <= end), len(ends))
            stages.setdefault(k, []).append((c, is_unit))
    out = [stem] if stem.boxes else []
    for n, group in enumerate(stages.values(), 1):
        boxes = [b for c, is_unit in group for b in ([_unit_box(c)] if is_unit else _layer_boxes([c], tr))]
        title = "block" if group[0][0].index == 0 else f"stage {n}"  # index 0: the model is one block
        out.append(Column(title, _fold(boxes, fold), _stride(group[-1][0])))
    return out + ([head] if head.boxes else [])
