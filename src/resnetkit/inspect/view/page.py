"""The page ``rk.view`` writes: Jinja2 templates filled from one recorded forward pass.

Everything is inline (CSS, JS, the diagram's SVG, the data the clicks show), and
the page's Content-Security-Policy forbids any request, so it opens from
``file://`` offline. The diagram is ``rk.draw``'s figure written as SVG, its cards
carrying ids the page's script links to the table's rows.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Sequence

from torch import nn

from ..diagram import columns
from ..explain import HEADER
from ..summary import SummaryReport, axes_text, batched_size, default_input_size, human
from ..trace import trace
from .layers import Layer, layers, links

TEMPLATES = "templates"


@dataclass
class Feature:
    """A stage end as the header lists it: C2 … C5 for a model's feature levels, else the module's name."""

    label: str
    module: str
    channels: int | str
    size: str
    stride: str
    field: str


@dataclass
class PageData:
    """What one page shows."""

    name: str
    input: str
    params: int
    trainable: int
    macs: int
    note: str | None
    features: list[Feature]
    layers: list[Layer]
    svg: str
    picks: dict[str, list[int]]     # card id -> trace indices of the rows it selects
    lit: dict[int, list[str]]       # trace index -> card ids lit with its row

    def script_data(self) -> dict[str, Any]:
        """What the page's script needs beyond the table's cells: derivations, inputs and links."""
        return {"header": HEADER, "picks": self.picks,
                "rows": {lay.index: {"lines": lay.lines, "in": lay.in_shape, "stride": lay.stride,
                                     "cards": self.lit.get(lay.index, [])} for lay in self.layers}}


def _features(report: SummaryReport) -> list[Feature]:
    out = []
    for s in report.stages:
        shape = s.output_shape if isinstance(s.output_shape, tuple) else ()
        level = s.name.removeprefix("level ")
        out.append(Feature(f"C{int(level) + 1}" if level.isdigit() else s.name, s.module,
                           shape[1] if len(shape) > 1 else "?", "×".join(map(str, shape[2:])),
                           axes_text(s.stride), axes_text(s.receptive_field)))
    return out


def _svg(recorded, cols) -> str:
    """``rk.draw``'s figure of ``cols`` as inline SVG (the XML prolog, DOCTYPE and RDF metadata dropped)."""
    from ..draw import render, save, title_line

    buf = io.StringIO()
    save(render(cols, title_line(recorded.model, recorded)), buf)
    text = buf.getvalue()
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):], count=1, flags=re.S)


def build(model: nn.Module, input_size: Sequence[int] | None = None, *, fold: int = 3) -> PageData:
    """Run ``model`` once on zeros of ``input_size`` and gather everything the page shows."""
    from ...train._deps import require

    require("matplotlib", purpose="rk.view's diagram")  # before the forward pass
    if input_size is None:
        input_size = default_input_size(model)
    input_size, note = batched_size(model, input_size)
    recorded = trace(model, input_size)
    depth = max(c.depth for c in recorded.calls)
    report = SummaryReport(recorded, depth, note)
    cols = columns(recorded, fold)
    picks, lit = links(recorded, cols)
    return PageData(getattr(model, "model_name", type(model).__name__),
                    "×".join(map(str, recorded.input_shape)), report.total_params, report.trainable_params,
                    report.total_macs, note, _features(report), layers(report), _svg(recorded, cols), picks, lit)


@cache
def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader(__package__, TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["human"] = human
    env.globals["asset"] = asset
    return env


@cache
def asset(name: str) -> str:
    """A CSS or JS file of the templates folder, as text to put inline."""
    return files(__package__).joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def body_html(data: PageData) -> str:
    """The page's content (header, diagram, table, data): what the live editor swaps in on a rebuild."""
    return _env().get_template("body.html.j2").render(data=data, script_data=data.script_data())


def page_html(data: PageData | None, live: dict[str, Any] | None = None) -> str:
    """The whole page; ``live`` (the table text, column and input) adds the editor of ``view --serve``."""
    body = body_html(data) if data is not None else ""
    return _env().get_template("page.html.j2").render(title=data.name if data else "layer table", body=body,
                                                      live=live)


def summary_html(report: SummaryReport) -> str:
    """A summary as the page's layer table, for Jupyter (``SummaryReport._repr_html_``)."""
    return _env().get_template("summary.html.j2").render(report=report, layers=layers(report))
