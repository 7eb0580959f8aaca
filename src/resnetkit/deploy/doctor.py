"""``resnetkit doctor``: this CPU, the engines installed, and what each runs natively here.

Made to be pasted into a bug report: the CPU and its ISA features, torch's
view of them, each engine with its version, a table of (engine × precision)
cells from :meth:`~.engines.base.Engine.support` (the same answers
``optimize_for_inference`` acts on) and the ceilings measured now.
"""
from __future__ import annotations

import importlib.metadata
import platform

import torch

from .cpu import cpu, torch_bf16_runs
from .engines import ENGINES
from .engines.base import DTYPES, Support


def cell(engine_name: str, dtype: str) -> Support | str:
    """The engine's :class:`Support` for ``dtype`` here, or "not installed (needs ...)"."""
    engine = ENGINES[engine_name]
    if not engine.available(dtype):
        return f"not installed (pip install 'resnetkit[{engine.extra}]')"
    return engine.support(dtype)


def engine_versions() -> list[str]:
    out = []
    for name, engine in ENGINES.items():
        out.append(f"{name} {engine.version().split('-')[0]}" if engine.available() else f"{name} not installed")
    for extra in ("onnx", "nncf"):
        try:
            out.append(f"{extra} {importlib.metadata.version(extra)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{extra} not installed")
    return out


def table() -> list[str]:
    """The engine × precision table, one line per engine."""
    cells = {(e, d): cell(e, d) for e in ENGINES for d in DTYPES}
    text = {k: v.cell() if isinstance(v, Support) else v for k, v in cells.items()}
    width = [max(len(text[e, d]) for e in ENGINES) for d in DTYPES]
    name_w = max(map(len, ENGINES)) + 2
    lines = [" " * name_w + "  ".join(f"{d:<{w}}" for d, w in zip(DTYPES, width)).rstrip()]
    for e in ENGINES:
        lines.append(f"{e:<{name_w}}" + "  ".join(f"{text[e, d]:<{w}}" for d, w in zip(DTYPES, width)).rstrip())
    return lines


def report(measure: bool = True, seconds: float = 0.3) -> str:
    """The whole doctor text; ``measure=False`` leaves out the ceilings (they take about a second each)."""
    here = cpu()
    lines = [f"CPU:      {here.model} ({platform.machine()}, {here.cores} cores)",
             f"ISA:      {' '.join(here.feature_names()) or 'none of the features below'}",
             f"level:    {here.level}" + (f" (capped by ONEDNN_MAX_CPU_ISA={here.cap})" if here.cap else ""),
             f"torch:    {torch.__version__}, ATen {here.aten}, oneDNN bf16 {'yes' if torch_bf16_runs() else 'no'}, "
             f"{torch.get_num_threads()} threads",
             f"engines:  {', '.join(engine_versions())}", "",
             "native: real kernels for that precision; emulated (slow): runs, slower than fp32;",
             "runs fp32: accepted and computed in fp32; not offered: refused at build", "", *table()]
    if measure:
        from .ceilings import ceiling

        lines += ["", f"ceilings ({torch.get_num_threads()} threads, measured now):"]
        lines += [f"  {ceiling(d, seconds).text(d)}" for d in DTYPES]
    return "\n".join(lines)
