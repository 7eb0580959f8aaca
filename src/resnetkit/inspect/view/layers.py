"""The rows of ``rk.view``'s layer table and how they link to the diagram's cards.

A row is one call of ``summary`` (same shape, parameters and MACs text) with
what the page adds: its receptive field, its input and ``explain``'s line.
Cards link to rows by the trace indices of the calls they stand for.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..diagram import Column
from ..explain import call_lines
from ..summary import SummaryReport, axes_text, fmt_shape, macs_text, params_text, per_axis
from ..trace import Trace


@dataclass
class Layer:
    """One row of the layer table."""

    index: int              # the call's index in the trace: the row's id on the page
    parent: int | None      # the index of the row it is nested in (None at depth 1)
    name: str
    type: str
    depth: int
    shape: str              # output shape as summary prints it, e.g. "[1, 64, 56, 56]"
    params: str
    macs: str
    field: str              # receptive field of the output, pixels of the input ("--" for vectors)
    stride: str             # total stride at the output ("--" for vectors)
    in_shape: str
    lines: list[str]        # explain's lines for the call (none for most containers, norms, activations)
    nested: bool = False    # other rows are nested in it


def _field(call, which: int) -> str:
    return axes_text(per_axis(tuple(f[which] for f in call.field))) if call.field else "--"


def layers(report: SummaryReport) -> list[Layer]:
    """The rows of ``report`` (a summary) with receptive field, stride, input and derivation."""
    out = []
    for row, c in zip(report.rows, report.calls, strict=True):
        out.append(Layer(c.index, c.parent or None, row.name, row.type, row.depth, fmt_shape(row.output_shape),
                         params_text(row), macs_text(row), _field(c, 1), _field(c, 0), fmt_shape(c.in_shape),
                         call_lines(c)))
    parents = {lay.parent for lay in out}
    for lay in out:
        lay.nested = lay.index in parents
    return out


def _children(tr: Trace) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {c.index: [] for c in tr.calls}
    for c in tr.calls[1:]:
        kids[c.parent].append(c.index)
    return kids


def _subtree(kids: dict[int, list[int]], i: int) -> list[int]:
    out, todo = [], [i]
    while todo:
        k = todo.pop()
        out.append(k)
        todo += kids[k]
    return out


def _covering(tr: Trace, kids: dict[int, list[int]], calls: list[int]) -> list[int]:
    """The fewest calls whose subtrees hold exactly ``calls``' subtrees: a stage's own container where it
    has one (``layer2``), else its blocks or layers (``blocks.5``, ``blocks.6``)."""
    inside = {k for i in calls for k in _subtree(kids, i)}
    out: list[int] = []
    for i in calls:
        while (p := tr.calls[i].parent) and set(kids[p]) <= inside:  # (kids are inside: so are theirs)
            inside.add(p)
            i = p
        if i not in out:
            out.append(i)
    return out


def links(tr: Trace, cols: list[Column]) -> tuple[dict[str, list[int]], dict[int, list[str]]]:
    """(what each card selects, which cards light up for each call).

    A block or layer card selects the calls it draws; a stage's header card selects its container (or
    its blocks). A call lights up its own card, else the card of the block drawn around it, else the
    cards of everything drawn inside it.
    """
    kids = _children(tr)
    picks: dict[str, list[int]] = {}
    card_of: dict[int, str] = {}
    for i, col in enumerate(cols):
        tops: list[int] = []
        for j, box in enumerate(col.boxes):
            own = set(box.calls)
            picks[f"rk-box-{i}-{j}"] = [k for k in box.calls if tr.calls[k].parent not in own]
            card_of.update(dict.fromkeys(box.calls, f"rk-box-{i}-{j}"))
            tops += picks[f"rk-box-{i}-{j}"]
        picks[f"rk-col-{i}"] = _covering(tr, kids, tops)
        if len(picks[f"rk-col-{i}"]) == 1:
            card_of.setdefault(picks[f"rk-col-{i}"][0], f"rk-col-{i}")
    lit: dict[int, list[str]] = {}
    for c in tr.calls[1:]:
        up = c
        while up is not None and up.index not in card_of:
            up = tr.calls[up.parent] if up.parent is not None else None
        if up is not None and up.index:
            lit[c.index] = [card_of[up.index]]
        else:
            lit[c.index] = list(dict.fromkeys(card_of[k] for k in _subtree(kids, c.index) if k in card_of))
    return picks, lit
