"""``explain``: how every output size follows from its formula, and why each shortcut is what it is."""
from __future__ import annotations

from typing import Sequence, TextIO

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from .formulas import SizeStep, transposed_out, window_out
from .summary import axes_text, batched_size, default_input_size, per_axis, stage_ends
from .trace import ADAPTIVE, Call, Trace, trace, window_params
from .units import block_inside, describe_layers, residual_unit

HEADER = ("Output size per spatial axis: (H + 2p − d·(k−1) − 1) // s + 1, written (H − k + 2p) // s + 1 "
          "when the dilation d is 1 (pools with ceil_mode round up).")


class Explanation(list):
    """The lines ``explain`` wrote; ``str()`` joins them."""

    def __str__(self) -> str:
        return "\n".join(self)

    def __repr__(self) -> str:
        return f"<Explanation: {len(self)} lines>"


def _shape(shape: tuple[int, ...] | None) -> str:
    return "×".join(map(str, shape[1:])) if shape else "?"


def axis_steps(module: nn.Module, in_hw: Sequence[int]) -> list[SizeStep] | None:
    """The size formula of each spatial axis of a conv, transposed conv or pool (None for other layers)."""
    if isinstance(module, _ConvTransposeNd):
        return [transposed_out(h, k, s, p, d, op) for h, k, s, p, d, op in
                zip(in_hw, module.kernel_size, module.stride, module.padding, module.dilation,
                    module.output_padding)]
    params = window_params(module)
    if params is None:
        return None
    if isinstance(module, _ConvNd) and module.padding == "same":
        return [SizeStep(h, f"padding='same' keeps {h}") for h in in_hw]
    ceil = bool(getattr(module, "ceil_mode", False))
    return [window_out(h, k, s, p, d, ceil) for h, (k, s, p, d) in zip(in_hw, params)]


def _layer_line(c: Call) -> str | None:
    m, shape_in, shape_out = c.module, c.in_shape, c.out_shape
    if shape_in is None or not isinstance(shape_out, tuple):
        return None
    io = f"[{_shape(shape_in)} → {_shape(shape_out)}]"
    steps = axis_steps(m, shape_in[2:])
    if steps is not None:
        if len({s.formula for s in steps}) == 1:
            text = steps[0].formula
        else:
            text = "; ".join(f"{axis}: {s.formula}" for axis, s in zip("HWD" if len(steps) < 3 else "DHW", steps))
        kind = type(m).__name__
        if isinstance(m, _ConvNd) and m.groups > 1:
            kind += " depthwise" if m.groups == m.in_channels == m.out_channels else f" groups={m.groups}"
        computed = tuple(s.size for s in steps)
        check = "" if computed == tuple(shape_out[2:]) else f"  (!) PyTorch gave {shape_out[2:]}"
        return f"{c.name}: {text}   {io} {kind}{check}"
    if isinstance(m, ADAPTIVE):
        return f"{c.name}: adaptive pool to {'×'.join(map(str, shape_out[2:]))} whatever the input   {io}"
    if isinstance(m, nn.Linear):
        return f"{c.name}: Linear {m.in_features} → {m.out_features}   {io}"
    return None


def _unit_line(c: Call) -> str | None:
    unit = residual_unit(c.module)
    if unit is None or c.in_shape is None or not isinstance(c.out_shape, tuple):
        return None
    (ci, *hw_in), (co, *hw_out) = c.in_shape[1:], c.out_shape[1:]
    changes = []
    if hw_in != hw_out:
        changes.append(f"the size changes {'×'.join(map(str, hw_in))} → {'×'.join(map(str, hw_out))}")
    if ci != co:
        changes.append(f"the channels change {ci} → {co}")
    head = f"{c.name} ({type(c.module).__name__}): " if c.name else f"{type(c.module).__name__}: "
    if unit.kind == "none":
        why = " and ".join(changes) or "the unit is configured without one"
        return head + f"no shortcut: {why}, so the input could not be added to the output"
    if unit.kind == "identity":
        return head + (f"shortcut = identity: input and output are both {_shape(c.out_shape)}, so x is added "
                       "unchanged")
    why = " and ".join(changes) or "the unit's configuration asks for one although the shapes agree"
    learned = next(iter(unit.shortcut.parameters()), None) is not None
    kind = "projection" if learned else "parameter-free"
    return head + (f"shortcut = {kind} `{unit.shortcut_name}` ({describe_layers(unit.shortcut)}): {why}, "
                   f"so x must be mapped to {_shape(c.out_shape)} before the addition")


def call_lines(c: Call) -> list[str]:
    """``explain``'s lines for one call, indented relative to it: why a residual unit's shortcut is what it
    is, or how a leaf layer's output size follows from its formula, then what a block does inside (Res2Net,
    ResNeSt); none for other calls (and for repeated calls of a container)."""
    out = []
    if not (c.repeat and not c.leaf) and (text := _unit_line(c) or (_layer_line(c) if c.leaf else None)):
        out.append(text)
    if not c.repeat and (inside := block_inside(c.module)):
        out.append("  inside: " + inside[1])
    return out


def explain_lines(tr: Trace, note: str | None = None) -> Explanation:
    """The explanation of one recorded forward pass (see :func:`explain`); ``note`` says what was assumed."""
    lines = Explanation([f"{type(tr.model).__name__}, input {'×'.join(map(str, tr.input_shape))}",
                         *([f"Note: {note}"] if note else []), HEADER, ""])
    if residual_unit(tr.calls[0].module) is not None:  # the model is itself one residual unit (a block)
        lines += call_lines(tr.calls[0])
    for c in tr.calls[1:]:
        lines += ["  " * (c.depth - 1) + text for text in call_lines(c)]
    last = {c.name: c for c in tr.calls}
    stages = [(label, last[name]) for label, name in stage_ends(tr) if name in last and last[name].field]
    if stages:
        lines += ["", "Stride and receptive field where each stage ends "
                  "(r_out = r_in + d·(k−1)·j_in, j_out = j_in·s over every conv and pool):"]
        for label, c in stages:
            j, r = (axes_text(per_axis(tuple(f[i] for f in c.field))) for i in (0, 1))
            lines.append(f"  {label} ({c.name}): {_shape(c.out_shape)}, stride {j}, receptive field {r}")
    return lines


def explain(model: nn.Module, input_size: Sequence[int] | None = None, *, file: TextIO | None = None,
            input_data: torch.Tensor | None = None) -> Explanation:
    """How each conv/pool output size follows from its formula, with the numbers put in.

    For every conv and pool, in the order the forward pass runs them:
    ``conv1: (224 − 7 + 2·3) // 2 + 1 = 112`` followed by its input → output
    shape; for every residual unit, why its shortcut is an identity (same shape)
    or a projection (stride and/or channels change); at the end the stride and
    receptive field of each stage. ``input_size`` includes the batch (without it,
    batch 1 is assumed and said). The lines are returned (``print(rk.explain(...))``
    shows them) and also written to ``file`` when one is given (the CLI prints).
    """
    if input_size is None and input_data is None:
        input_size = default_input_size(model)
    input_size, note = batched_size(model, input_size)
    lines = explain_lines(trace(model, input_size, input_data), note)
    if file is not None:
        print(str(lines), file=file)
    return lines
