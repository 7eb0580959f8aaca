"""``summary``: a torchinfo-style report with exact MACs, for any ``nn.Module``."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..errors import ResnetkitValueError
from .trace import Call, Trace, trace

UNITS_LINE = ("MACs = multiply-accumulates for ONE image (batch excluded) of every convolution, linear layer and "
              "matrix product the forward pass runs (functional calls and attention included; norms, "
              "activations and biases not counted); FLOPs = 2 × MACs.")


@dataclass
class Row:
    """One shown layer call: parameters of its whole subtree (None on a repeated call) and MACs per image."""

    name: str
    type: str
    depth: int
    output_shape: Any
    params: int | None
    trainable_params: int | None
    macs: int


@dataclass
class Stage:
    """Where a stage ends: its output, total stride and theoretical receptive field."""

    name: str
    module: str
    output_shape: Any
    stride: int | tuple[int, ...]
    receptive_field: int | tuple[int, ...]


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters of ``module``, each shared parameter once."""
    params = {id(p): p for p in module.parameters()}.values()
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def per_axis(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """One number when every spatial axis has the same value, else the tuple."""
    return values[0] if len(set(values)) == 1 else values


def axes_text(v: int | tuple[int, ...]) -> str:
    """``per_axis``'s value as text: ``4``, or ``4×2`` where the axes differ."""
    return "×".join(map(str, v)) if isinstance(v, tuple) else str(v)


def fmt_shape(shape: Any) -> str:
    """``(1, 64, 56, 56)`` -> ``[1, 64, 56, 56]``; lists of shapes joined; None -> ``--``."""
    if isinstance(shape, tuple):
        return "[" + ", ".join(map(str, shape)) + "]"
    if isinstance(shape, list):
        return " ".join(fmt_shape(s) for s in shape) if shape else "[]"
    if isinstance(shape, dict):
        return " ".join(f"{k}:{fmt_shape(v)}" for k, v in shape.items())
    return "--"


def params_text(row: Row) -> str:
    """A row's parameters as the table shows them: ``1,234``, ``--`` for none, ``(shared)`` on a repeated call."""
    return "(shared)" if row.params is None else (f"{row.params:,}" if row.params else "--")


def macs_text(row: Row) -> str:
    """A row's MACs per image as the table shows them: ``1,234`` or ``--``."""
    return f"{row.macs:,}" if row.macs else "--"


def human(n: float, unit: str = "") -> str:
    """4089184256 -> ``4.09 G`` (decimal prefixes, as the papers quote MACs and params)."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def stage_ends(tr: Trace) -> list[tuple[str, str]]:
    """(label, module name) of each stage end: a resnetkit model's feature levels, else the top-level modules."""
    levels = getattr(tr.model, "all_levels", None) or getattr(tr.model, "feature_info", None)
    if levels and all(isinstance(lv, dict) and "module" in lv for lv in levels):
        return [(f"level {i}", lv["module"]) for i, lv in enumerate(levels)]
    names = dict.fromkeys(c.name for c in tr.calls if c.depth == 1)  # a child called twice is one stage
    return [(n, n) for n in names]


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """Batch 1 of the model's own input size (``default_input_size``; 3×224×224 for a model that has none)."""
    return (1, *getattr(model, "default_input_size", (3, 224, 224)))


def batched_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[Sequence[int] | None, str | None]:
    """torchsummary's habit: a size without the batch, e.g. ``(3, 224, 224)``, means batch 1.

    The model's first convolution tells how many spatial axes an input has (2 for
    Conv2d), so a Conv1d model's ``(N, C, L)`` is left alone, and so is the input of
    a model without convolutions (an attention layer's ``(N, L, E)``). Returns the
    size to run and the note saying what was assumed (None when nothing was).
    """
    first = next((m for m in model.modules() if isinstance(m, _ConvNd)), None)
    if input_size is None or first is None or len(input_size) != len(first.kernel_size) + 1:
        return input_size, None
    size = (1, *input_size)
    return size, (f"input_size {tuple(input_size)} has no batch dimension: assumed batch 1 "
                  f"(input {'×'.join(map(str, size))})")


class SummaryReport:
    """What ``summary`` measured. ``str(report)`` is the table; ``to_dict()`` is JSON-ready.

    Attributes: ``rows`` (the shown :class:`Row` s), ``total_params``,
    ``trainable_params``, ``total_macs`` (per image), ``total_flops`` (2 × MACs),
    ``activation_bytes`` (outputs of every leaf call, whole batch), ``stages``
    (:class:`Stage` s: stride and receptive field where each stage ends).
    """

    def __init__(self, tr: Trace, depth: int, note: str | None = None) -> None:
        self.model_name = type(tr.model).__name__
        self.note = note
        self.input_size = tr.input_shape
        self.output_shape = tr.output_shape
        self.depth = depth
        self.total_params, self.trainable_params = count_params(tr.model)
        root = tr.calls[0]
        self.total_macs = root.total_macs
        self.total_flops = 2 * self.total_macs
        self.activation_bytes = sum(c.out_bytes for c in tr.calls)
        self.param_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in tr.model.parameters()}.values())
        self.rows: list[Row] = []
        self.calls: list[Call] = []  # the recorded call of each row (its module, input shape, receptive field)
        for c in tr.calls[1:]:
            if c.depth > depth:
                continue
            total, trainable = (None, None) if c.repeat else count_params(c.module)
            self.rows.append(Row(c.name, c.type_name, c.depth, c.out_shape, total, trainable, c.total_macs))
            self.calls.append(c)
        last = {c.name: c for c in tr.calls}  # the last call of a module is where its stage ends
        self.stages: list[Stage] = []
        for label, name in stage_ends(tr):
            c = last.get(name)
            if c is None or c.field is None:
                continue
            self.stages.append(Stage(label, name, c.out_shape, per_axis(tuple(j for j, _ in c.field)),
                                     per_axis(tuple(r for _, r in c.field))))

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """Everything in plain JSON types (shapes as lists)."""
        def plain(v: Any) -> Any:
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return plain({
            "model": self.model_name, "input_size": self.input_size, "output_shape": self.output_shape,
            "depth": self.depth, "note": self.note,
            "total_params": self.total_params, "trainable_params": self.trainable_params,
            "total_macs": self.total_macs, "total_flops": self.total_flops, "units": UNITS_LINE,
            "activation_bytes": self.activation_bytes, "param_bytes": self.param_bytes,
            "rows": [asdict(r) for r in self.rows], "stages": [asdict(s) for s in self.stages],
        })

    def __str__(self) -> str:
        head = ("Layer (type)", "Output shape", "Params", "MACs")
        body = []
        for r in self.rows:
            body.append(("  " * (r.depth - 1) + f"{r.name} ({r.type})", fmt_shape(r.output_shape), params_text(r),
                         macs_text(r)))
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]

        def line(cells: Sequence[str]) -> str:
            return (f"{cells[0]:<{widths[0]}}   {cells[1]:<{widths[1]}}   "
                    f"{cells[2]:>{widths[2]}}   {cells[3]:>{widths[3]}}").rstrip()

        rule_w = max(sum(widths) + 9, 60)
        out = [f"{self.model_name} summary, input {'×'.join(map(str, self.input_size))}, depth {self.depth}",
               *([f"Note: {self.note}"] if self.note else []),
               "=" * rule_w, line(head), "=" * rule_w, *(line(b) for b in body), "=" * rule_w]
        n_input = 1
        for s in self.input_size:
            n_input *= s
        out += [
            f"Total params:         {self.total_params:,} ({human(self.total_params)})",
            f"Trainable params:     {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"MACs per image:       {self.total_macs:,} ({human(self.total_macs, 'MACs')})",
            f"FLOPs per image:      {self.total_flops:,} ({human(self.total_flops, 'FLOPs')})",
            f"Units: {UNITS_LINE}",
            "-" * rule_w,
            f"Input size (MB):          {n_input * 4 / 1e6:.2f}",
            f"Activations (MB):         {self.activation_bytes / 1e6:.2f}   "
            f"(outputs of every leaf call, batch {self.input_size[0]})",
            f"Params size (MB):         {self.param_bytes / 1e6:.2f}",
        ]
        if self.stages:
            out += ["-" * rule_w, "Stage ends: stride and receptive field (pixels of the input)"]
            cells = [("stage", "module", "output", "stride", "receptive field")] + [
                (s.name, s.module, fmt_shape(s.output_shape), axes_text(s.stride), axes_text(s.receptive_field))
                for s in self.stages]
            w = [max(len(c[i]) for c in cells) for i in range(5)]
            out += [f"{c[0]:<{w[0]}}   {c[1]:<{w[1]}}   {c[2]:<{w[2]}}   {c[3]:>{w[3]}}   {c[4]:>{w[4]}}".rstrip()
                    for c in cells]
        out.append("=" * rule_w)
        return "\n".join(out)

    def _repr_html_(self) -> str:
        """Jupyter shows the report as ``rk.view``'s layer table (the plain-text repr stays as it is)."""
        from .view.page import summary_html

        return summary_html(self)

    def __repr__(self) -> str:
        return (f"SummaryReport({self.model_name}, params={self.total_params:,}, "
                f"macs={self.total_macs:,}, rows={len(self.rows)})")


def summary(model: nn.Module, input_size: Sequence[int] | None = None, depth: int = 3,
            input_data: torch.Tensor | None = None) -> SummaryReport:
    """Run one forward pass and report every layer down to ``depth`` levels of nesting.

    ``input_size`` includes the batch, e.g. ``(1, 3, 224, 224)``; without it, as
    torchsummary users write ``(3, 224, 224)``, batch 1 is assumed and the printed
    summary says so (default: the model's ``default_input_size`` with batch 1,
    else 1×3×224×224). Each row shows
    a module call's output shape, the parameters of its subtree and the MACs
    per image of the convolutions and matrix products it ran (functional ones
    included); deeper layers are folded into their shown parent. Shared modules
    count their parameters once and their MACs per call.
    Totals: parameters (all/trainable), MACs and FLOPs (= 2 × MACs), activation
    memory, and the stride and receptive field at the end of each stage.

    >>> import resnetkit as rk
    >>> r = rk.summary(rk.create_model("resnet18"), (1, 3, 224, 224), depth=1)
    >>> r.total_params, r.total_macs
    (11689512, 1814073344)
    """
    if depth < 0:
        raise ResnetkitValueError(f"depth must be >= 0, got {depth}")
    if input_size is None and input_data is None:
        input_size = default_input_size(model)
    input_size, note = batched_size(model, input_size)
    return SummaryReport(trace(model, input_size, input_data), depth, note)
