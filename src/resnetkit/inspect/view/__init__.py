"""``view``: a network as one self-contained HTML page (diagram, layer tree, derivations), and its live editor."""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

from torch import nn

from ...errors import ResnetkitTypeError, ResnetkitValueError
from .page import PageData, build, page_html

__all__ = ["view", "View"]


class View:
    """One page: ``html`` (the document), ``save(path)``, and inline display in Jupyter."""

    def __init__(self, data: PageData) -> None:
        self.data = data
        self.html = page_html(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` (an ``.html`` file in an existing folder) and return the path."""
        path = Path(path)
        check_path(path)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        # In a frame of its own, as folium and plotly do: the page's styles, ids and script stay inside it.
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="{html.escape(self.data.name)}" '
                'style="width: 100%; height: 720px; border: 1px solid #ddd;" sandbox="allow-scripts"></iframe>')

    def __repr__(self) -> str:
        return (f"View({self.data.name}, input {self.data.input}, {len(self.data.layers)} layers, "
                f"{len(self.html.encode()) / 1e3:.0f} kB page)")


def check_path(path: Path) -> None:
    """A page goes to an ``.html`` file in a folder that exists; anything else is a clear error."""
    if path.suffix.lower() not in (".html", ".htm"):
        raise ResnetkitValueError(f"cannot write the page to {str(path)!r}: give a path ending in .html")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write the page to {str(path)!r}: folder {str(path.parent)!r} does not exist")


def _network(model_or_table: nn.Module | str | os.PathLike, column: str | None) -> nn.Module:
    """The module to show: a module, a registered model's name, a layer table or a table file."""
    from ...registry import create_model
    from ...tables import from_table

    if isinstance(model_or_table, nn.Module):
        return model_or_table
    if isinstance(model_or_table, os.PathLike):
        return from_table(Path(model_or_table).read_text(encoding="utf-8"), column=column)
    if isinstance(model_or_table, str):  # a table has cells; anything else is a name (a wrong one gets the close ones)
        return from_table(model_or_table, column=column) if "|" in model_or_table else create_model(model_or_table)
    raise ResnetkitTypeError(f"view takes a module, a model name or a layer table, got {type(model_or_table).__name__}")


def view(model_or_table: nn.Module | str | os.PathLike, input_size: Sequence[int] | None = None,
         path: str | os.PathLike | None = None, *, column: str | None = None, fold: int = 3) -> View:
    """See a network: one HTML page, with no request to anything, that opens from ``file://`` offline.

    ``model_or_table`` is a module, a registered model's name, a layer table's
    text or a ``Path`` to a table file (``column`` picks a paper table's
    architecture column, e.g. ``"50-layer"``). One forward pass on zeros of
    ``input_size`` (``(1, 3, 224, 224)``, or ``(3, 224, 224)`` for batch 1;
    default: the model's own) fills the page: a header (input, parameters,
    MACs, each feature map's channels and stride), ``rk.draw``'s diagram as
    zoomable SVG, ``summary``'s layers as a collapsible tree with a filter and
    each layer's receptive field, and, for the layer clicked in either,
    ``explain``'s derivation of its output size. Runs of ``fold`` identical
    blocks are drawn once as ×N. Given ``path`` (``.html``), the page is
    written there. The returned :class:`View` displays inline in Jupyter.

    >>> import resnetkit as rk
    >>> page = rk.view("resnet18", (3, 224, 224))
    >>> "layer2.0.conv1" in page.html and page.html.startswith("<!DOCTYPE html>")
    True
    """
    if path is not None:
        check_path(Path(path))  # a wrong path fails before the forward pass
    if not isinstance(fold, int) or isinstance(fold, bool) or fold < 0:
        raise ResnetkitValueError(f"fold must be an int >= 0 (the shortest run of identical blocks drawn as ×N; "
                                  f"0: none), got {fold!r}")
    page = View(build(_network(model_or_table, column), input_size, fold=fold))
    if path is not None:
        page.save(path)
    return page
