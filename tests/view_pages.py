"""What the view tests compare a page with: its table read back with html.parser, and the values
``rk.summary`` and ``rk.explain`` compute on their own."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from html.parser import HTMLParser

import resnetkit as rk
from resnetkit.inspect.view.server import LiveServer


class LayerTable(HTMLParser):
    """The rows of every ``rk-table`` in a document: ``{"id", "cells"}`` per body row, cells as text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.data: dict | None = None
        self._in_table = self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "rk-table" in (attrs.get("class") or "").split():
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append({"id": attrs.get("id"), "cells": []})
        elif self._in_body and tag == "td":
            self._cell = []
        elif tag == "script" and attrs.get("id") == "rk-data":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell))
            self._cell = None
        elif tag == "script" and self._cell is not None:
            self.data = json.loads("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def read_page(html: str) -> LayerTable:
    parser = LayerTable()
    parser.feed(html)
    parser.close()
    return parser


def shape_text(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def count_text(n: int | None) -> str:
    """Params or MACs as the table writes them: thousands separated, ``--`` for none, ``(shared)`` for a reused module."""
    return "(shared)" if n is None else f"{n:,}" if n else "--"


def expected_rows(model, size, depth: int = 99) -> list[tuple[str, str, str, str]]:
    """(``name (type)``, output shape, params, MACs) of every row ``rk.summary`` computes."""
    report = rk.summary(model, size, depth=depth)
    return [(f"{r.name} ({r.type})", shape_text(r.output_shape), count_text(r.params), count_text(r.macs))
            for r in report.rows]


def explain_by_name(model, size) -> dict[str, list[str]]:
    """``rk.explain``'s lines of the layers (header and stage table left out), keyed by the layer's name."""
    lines = list(rk.explain(model, size))
    body = lines[lines.index("") + 1:]
    body = body[:body.index("")] if "" in body else body
    out: dict[str, list[str]] = {}
    name = ""
    for line in body:
        if not line.strip().startswith("inside: "):  # (an "inside:" line belongs to the block above it)
            name = line.strip().split(":")[0].split(" (")[0]
        out.setdefault(name, []).append(line.strip())
    return out


def explain_subtree(model, size, name: str) -> list[str]:
    """explain's lines (stripped) of ``name`` and of every layer nested in it, in order."""
    lines = []
    for key, found in explain_by_name(model, size).items():
        if key == name or key.startswith(name + "."):
            lines += found
    return lines


@contextmanager
def running_server(*args):
    """``resnetkit view --serve``'s server (``LiveServer(*args)``: the example table by default) on a free port,
    in a thread."""
    srv = LiveServer(*args)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
