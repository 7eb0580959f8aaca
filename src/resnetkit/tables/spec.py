"""A checked unit of a table (:class:`RowSpec`), made the same way for both table forms."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import TableError
from .ops import Op, Shape, apply, fmt_size, normal_text, parse_op, split_top


@dataclass(frozen=True)
class RowSpec:
    """A checked unit of the network: its operation, norms/activations, shortcut and shapes.

    ``number`` is the table row it comes from (data rows count from 1) and
    ``group`` the name of the module it builds into (``row3``; a paper table's
    ``conv2_x`` groups its blocks).
    """

    number: int
    op: Op
    after: tuple[str, ...]
    shortcut: tuple[Op, ...] | None
    in_shape: Shape
    out_shape: Shape
    formula: str
    group: str = ""


def make_spec(number: int, op: Op, after: tuple[str, ...], shortcut: tuple[Op, ...] | None, shape: Shape,
              group: str = "") -> RowSpec:
    """Check one unit on its input ``shape`` (the shortcut must give what the operation gives)."""
    out, formula = apply(op, shape, number)
    if shortcut is not None:
        if op.kind not in ("conv", "maxpool", "avgpool", "chain"):
            raise TableError(f"a shortcut needs a conv, pool or chain row, not {op.text}", number)
        sc_shape, sc_formula = shape, ""
        for sc in shortcut:
            sc_shape, sc_formula = apply(sc, sc_shape, number)
        if sc_shape != out:
            text = ", ".join(sc.text for sc in shortcut)
            raise TableError(f"the shortcut ({text}) gives {fmt_size(sc_shape)} but the row's operation gives "
                             f"{fmt_size(out)}, so they cannot be added; give the shortcut the same stride and "
                             f"channel count (e.g. Conv 1×1×{out[0]} Stride={op.total_stride})", number,
                             fmt_size(sc_shape), fmt_size(out), sc_formula or None)
    return RowSpec(number, op, after, shortcut, shape, out, formula, group or f"row{number}")


def parse_shortcut(text: str, row: int) -> tuple[Op, ...]:
    """A Shortcut cell: layers separated by commas (``Conv 1×1×128 Stride=2, BN``; ``conv 1x1, 128, stride 2``)."""
    pieces: list[str] = []
    for piece in split_top(normal_text(text), (",",)):
        piece = piece.strip()
        # a bare number or option continues the layer before it (the comma notation: conv 1x1, 128)
        if pieces and re.fullmatch(r"[0-9]+|(?:stride|padding|groups|dilation)\s*=?\s*[0-9]+(?:\s*[×xX*]\s*[0-9]+)?"
                                   r"|ceil|bias", piece, re.I):
            pieces[-1] += ", " + piece
        elif piece:
            pieces.append(piece)
    return tuple(parse_op(p, row, "Shortcut") for p in pieces)
