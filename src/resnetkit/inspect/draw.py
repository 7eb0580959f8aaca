"""``draw``: a picture of the network (stem, stages, blocks, shortcuts) drawn with matplotlib.

Each column is the stem, a stage or the head: a header with the stage's output
shape, total stride, parameters and MACs, then one box per block with its
output shape. Every shortcut is an arc beside its block, labelled identity or
projection with the reason (stride, channels). The layout is computed in
inches, so text never scales: a deep net gets a larger figure, not smaller
letters. Matplotlib is used without pyplot (an Agg canvas), so drawing never
opens a window or touches the user's backend.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import IO, Sequence

from torch import nn

from ..errors import ResnetkitTypeError, ResnetkitValueError
from ..train._deps import require
from .diagram import Box, Column, columns, shape_text
from .summary import batched_size, count_params, default_input_size, human
from .trace import Trace, trace

FORMATS = {".png": "png", ".svg": "svg"}
DPI = 100
FONT = 8                                       # points; every length below is in inches
BOX_H, PAD, GAP, LABEL_H, ROW_GAP, MARGIN = 0.5, 0.2, 0.32, 0.42, 0.22, 0.25
TITLE_H, FOOT_H, HUMP, STACK = 0.45, 0.45, 0.13, 0.05
COLORS = {"identity": "#2b7a2b", "projection": "#c0561b", "none": "#888888"}
FILL = {"head": "#dde4ee", "unit": "#e8f1fb", "layer": "#fbf4e2"}
FOOTER = ("MACs: multiply-accumulates per image (FLOPs = 2 × MACs). ×N: N identical blocks.\n"
          "Arc over a block: its shortcut, identity (x added unchanged) or projection (x mapped to the new shape).")


def _width(text: str, size: float = FONT, bold: bool = False) -> float:
    """Width of ``text`` in inches, as the Agg renderer lays it out."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    renderer = RendererAgg(1, 1, DPI)  # hinting depends on the resolution: measure at the one we save at
    return max(renderer.get_text_width_height_descent(line, prop, ismath=False)[0]
               for line in text.split("\n")) / DPI


def _header(col: Column) -> tuple[str, str]:
    stride = f" · stride {col.stride}" if col.stride else ""
    return col.title + stride, f"→ {col.shape}\n{col.summary()}"


def _label(box: Box) -> str:
    """The shortcut's words above the block: kind, then why."""
    kind = "no shortcut" if box.shortcut == "none" else box.shortcut
    return kind + (f"\n{box.reason}" if box.reason else "")


def _box_lines(box: Box) -> tuple[str, str]:
    """The card's title, then its output shape (and, for blocks that say it, what they do inside)."""
    return box.title, f"→ {box.shape}" + (f"\n{box.detail}" if box.detail else "")


def _box_w(box: Box) -> float:
    title, rest = _box_lines(box)
    words = [_width(title, bold=box.shortcut is not None), _width(rest, FONT - (1 if "\n" in rest else 0))]
    if box.shortcut:
        words.append(_width(_label(box), FONT - 1))
    return max(words) + PAD


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], color: str = "#444444", **kw) -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, color=color, lw=1.0,
                                 shrinkA=0, shrinkB=0, **kw))


def _card(ax, x: float, y: float, w: float, fill: str, lines: tuple[str, str], bold: bool,
          stacked: bool = False, gid: str | None = None) -> None:
    """A rounded box with a title line and a detail line; ``stacked``: a folded run, a second card behind.
    ``gid`` becomes the front card's ``id`` in SVG output (``rk.view`` makes the cards clickable by it)."""
    from matplotlib.patches import FancyBboxPatch

    for dx in ((STACK, 0.0) if stacked else (0.0,)):
        card = ax.add_patch(FancyBboxPatch((x + dx, y - dx), w, BOX_H, boxstyle="round,pad=0,rounding_size=0.06",
                                           fc=fill, ec="#555555", lw=0.8))
    card.set_gid(gid)
    top, rest = lines
    two = "\n" in rest
    ax.text(x + w / 2, y + (0.13 if two else 0.17), top, ha="center", va="center", fontsize=FONT,
            fontweight="bold" if bold else "normal")
    ax.text(x + w / 2, y + (0.34 if two else 0.36), rest, ha="center", va="center",
            fontsize=FONT - (1 if two else 0), linespacing=1.2)


def _shortcut(ax, box: Box, x: float, y: float, w: float) -> None:
    """The arc from the block's input to its sum, above the box, with its label."""
    color = COLORS[box.shortcut]
    if box.shortcut != "none":
        chord = w - 0.24  # a hump of the same height (HUMP) whatever the box's width
        _arrow(ax, (x + 0.12, y), (x + w - 0.12, y), color, connectionstyle=f"arc3,rad={-2 * HUMP / chord:.3f}")
    ax.text(x + w / 2, y - HUMP - 0.04, _label(box), ha="center", va="bottom", fontsize=FONT - 1, color=color,
            linespacing=1.1, style="italic" if box.shortcut == "none" else "normal")


def render(cols: list[Column], title: str):
    """The matplotlib Figure of the given columns, one row each (see :func:`draw`).

    In SVG output, column ``i``'s header card has the id ``rk-col-i`` and its ``j``-th box ``rk-box-i-j``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    head_w = max(max(_width(t, bold=True), _width(d, FONT - 1)) for t, d in map(_header, cols)) + PAD
    rows_w = [sum(_box_w(b) + GAP + (STACK if b.count > 1 else 0) for b in c.boxes) for c in cols]
    width = max(MARGIN + head_w + max(rows_w) + MARGIN, _width(FOOTER, FONT - 1) + 2 * MARGIN,
                _width(title, FONT + 3, bold=True) + 2 * MARGIN)
    tops, y = [], TITLE_H  # where each row's boxes start: below the shortcut labels, if it has any
    for col in cols:
        tops.append(y + (LABEL_H if any(b.shortcut for b in col.boxes) else 0.1))
        y = tops[-1] + BOX_H + ROW_GAP
    width, height = (math.ceil(v * DPI) / DPI for v in (width, y + FOOT_H))  # whole pixels
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards, in inches
    ax.set_axis_off()
    ax.text(MARGIN, TITLE_H / 2, title, ha="left", va="center", fontsize=FONT + 3, fontweight="bold")
    for i, (col, y) in enumerate(zip(cols, tops)):
        _card(ax, MARGIN, y, head_w, FILL["head"], _header(col), bold=True, gid=f"rk-col-{i}")
        if i:  # the stages follow each other down the left
            _arrow(ax, (MARGIN + head_w / 2, tops[i - 1] + BOX_H), (MARGIN + head_w / 2, y))
        x = MARGIN + head_w
        for j, b in enumerate(col.boxes):
            w = _box_w(b)
            _arrow(ax, (x, y + BOX_H / 2), (x + GAP, y + BOX_H / 2))
            x += GAP
            _card(ax, x, y, w, FILL["unit" if b.shortcut else "layer"], _box_lines(b),
                  bold=b.shortcut is not None, stacked=b.count > 1, gid=f"rk-box-{i}-{j}")
            if b.shortcut:
                _shortcut(ax, b, x, y, w)
            x += w + (STACK if b.count > 1 else 0)
    ax.text(MARGIN, height - FOOT_H / 2, FOOTER, ha="left", va="center", fontsize=FONT - 1, color="#555555",
            linespacing=1.3)
    return fig


def output_format(path: str | Path) -> str:
    """``png`` or ``svg`` from the file's suffix; any other suffix or a missing folder is a clear error."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ResnetkitValueError(f"cannot draw to {str(path)!r}: unknown file type {path.suffix or '(none)'!r}; "
                                  "give a path ending in .png or .svg")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot draw to {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return fmt


def save(fig, path: str | Path | IO) -> None:
    """Write ``fig`` as PNG or SVG by the file's suffix (SVG keeps its text as text, the same bytes every time);
    a text stream gets SVG."""
    import matplotlib

    fmt = "svg" if isinstance(path, io.TextIOBase) else output_format(path)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "resnetkit"}):
        fig.savefig(path, format=fmt, dpi=DPI, facecolor="white", metadata={"Date": None} if fmt == "svg" else None)


def title_line(model: nn.Module, recorded: Trace) -> str:
    """The picture's title line: the model's class, input, parameters and MACs."""
    return (f"{type(model).__name__} · input {shape_text(recorded.input_shape)} · {human(count_params(model)[0])} "
            f"params · {human(recorded.calls[0].total_macs)} MACs")


def draw(model: nn.Module, input_size: Sequence[int] | None = None, path: str | Path | None = None, *,
         fold: int = 3):
    """Draw ``model`` as stem, stages and blocks, and return the matplotlib ``Figure``.

    One forward pass on zeros of ``input_size`` (``(1, 3, 224, 224)``, or
    ``(3, 224, 224)`` for batch 1; default: the model's ``default_input_size``)
    gives each block's output shape and each stage's parameters and MACs. Every residual block shows its shortcut as an
    arc labelled identity or projection, with the reason (stride, channels).
    Runs of at least ``fold`` identical blocks are drawn once as ``×N``
    (``fold=0`` draws every block). Given a ``path`` ending in ``.png`` or
    ``.svg``, the figure is also written there.

    >>> import resnetkit as rk
    >>> fig = rk.draw(rk.create_model("resnet20"), (1, 3, 32, 32))
    >>> "layer1.0 … layer1.2 · BasicBlock ×3" in {t.get_text() for t in fig.axes[0].texts}
    True
    """
    require("matplotlib", purpose="rk.draw")
    if input_size is None:
        input_size = default_input_size(model)
    input_size, _ = batched_size(model, input_size)  # (3, 224, 224) means batch 1, as for summary
    if not isinstance(fold, int) or isinstance(fold, bool):
        raise ResnetkitTypeError(f"fold must be an int (the shortest run of identical blocks drawn as ×N), got {fold!r}")
    if fold < 0:
        raise ResnetkitValueError(f"fold must be >= 0 (0 draws every block), got {fold}")
    if path is not None:
        output_format(path)  # a wrong path fails before the forward pass
    recorded = trace(model, input_size)
    fig = render(columns(recorded, fold), title_line(model, recorded))
    if path is not None:
        save(fig, path)
    return fig
