"""Reading a layer table: cells -> checked row specs, with every size computed symbolically.

Nothing here touches PyTorch: a table is fully checked (operations known,
cells well formed, declared sizes equal to computed ones, shortcuts shaped
like their branch, layers of a sane size) before a single module is built, so
every mistake is a :class:`TableError` naming its row, never a traceback.
Two forms are read: the row-per-layer form (this module) and the ResNet
paper's Table 1 form (:mod:`.paper`), recognised by its ``output size`` column.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

from .errors import TableError
from .ops import MAX_CHANNELS, Shape, after_words, fmt_size, pair, parse_op, size_numbers
from .paper import PAPER_COLUMNS, paper_specs
from .spec import RowSpec, make_spec, parse_shortcut

COLUMNS = {"input size": "input", "input": "input", "operation": "op", "op": "op", "layer": "op",
           "stride": "stride", "padding": "padding", "pad": "padding", "shortcut": "shortcut",
           "after": "after", "activation": "after",
           # the Chinese posts' headers
           "输入大小": "input", "输入尺寸": "input", "输入": "input", "操作": "op", "步长": "stride",
           "填充": "padding", "快捷连接": "shortcut", "捷径": "shortcut", "之后": "after", "激活": "after"}
COLUMN_TITLES = ["Input size", "Operation", "Stride", "Padding", "Shortcut", "After"]


def _split(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") else body
    return [c.strip() for c in body.split("|")]


def _header(cells: list[str]) -> list[str]:
    keys = []
    for cell in cells:
        key = COLUMNS.get(" ".join(cell.lower().split()))
        if key is None:
            raise TableError(f"unknown column {cell!r} in the header; the columns are {', '.join(COLUMN_TITLES)}")
        if key in keys:
            raise TableError(f"column {cell!r} appears twice in the header")
        keys.append(key)
    for need in ("input", "op"):
        if need not in keys:
            raise TableError(f"the header has no {COLUMN_TITLES[['input', 'op'].index(need)]!r} column; "
                             f"the columns are {', '.join(COLUMN_TITLES)}")
    return keys


def row_line(text: str, row: int) -> int | None:
    """The line of ``text`` (counting from 1, blank lines included) holding data row ``row``, as
    :class:`TableError` numbers rows: blank lines skipped, the header and markdown's ``|---|`` not counted."""
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()][1:]
    if numbered and all(re.fullmatch(r":?-{2,}:?", c) for c in _split(numbered[0][1])):
        numbered = numbered[1:]
    return numbered[row - 1][0] if 1 <= row <= len(numbered) else None


def parse_table(text: str, column: str | None = None) -> list[RowSpec]:
    """Check a layer table and compute every row's shapes; raise :class:`TableError` on any problem.

    ``column`` picks the architecture column of a paper table that has several
    (``"50-layer"``)."""
    if not isinstance(text, str):
        raise TableError(f"a layer table is text, got {type(text).__name__}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TableError("the table is empty: it needs a header row and at least one data row")
    for i, ln in enumerate(lines):
        if not ln.strip().startswith("|"):
            raise TableError(f"line {i + 1} ({ln.strip()[:40]!r}) is not a table row: rows start with '|'")
    header = _split(lines[0])
    if any(" ".join(c.lower().split()) in PAPER_COLUMNS for c in header):
        return paper_specs(header, [_split(ln) for ln in lines[1:]], column)
    keys = _header(header)
    body = [_split(ln) for ln in lines[1:]]
    if body and all(re.fullmatch(r":?-{2,}:?", c) for c in body[0]):
        body = body[1:]  # markdown's |---|---| separator
    if not body:
        raise TableError("the table has a header but no data rows")
    specs: list[RowSpec] = []
    shape: Shape | None = None
    for number, cells in enumerate(body, start=1):
        if len(cells) != len(keys):
            raise TableError(f"has {len(cells)} cells but the header has {len(keys)} columns", number)
        row = dict(zip(keys, cells))
        spec = _row(number, row, shape, specs[-1] if specs else None)
        specs.append(spec)
        shape = spec.out_shape
    return specs


def _declared(text: str, row: int) -> Shape | None:
    t = text.strip()
    if not t:
        return None
    nums = size_numbers(t)
    if nums is None:
        raise TableError(f"input size {t!r} is malformed: write H×W×C (e.g. 56×56×64) or C for a vector", row)
    if len(nums) not in (1, 3) or min(nums) < 1:
        raise TableError(f"input size {t!r} must be H×W×C (three numbers ≥ 1) or C for a vector", row)
    if nums[-1] > MAX_CHANNELS:
        raise TableError(f"input size {t!r} has more than {MAX_CHANNELS:,} channels", row)
    return (nums[2], nums[0], nums[1]) if len(nums) == 3 else (nums[0],)


def _flattens_to(declared: Shape, shape: Shape) -> bool:
    """A vector size declared where a map arrives is fine when it is the map flattened (before an FC row)."""
    return len(declared) == 1 and declared[0] == math.prod(shape)


def _row(number: int, row: dict[str, str], shape: Shape | None, prev: RowSpec | None) -> RowSpec:
    declared = _declared(row.get("input", ""), number)
    if shape is None:
        if declared is None:
            raise TableError("the first row must declare its input size (e.g. 224×224×3)", number)
        shape = declared
    elif declared is not None and declared != shape and not _flattens_to(declared, shape):
        assert prev is not None
        raise TableError(f"declared input size {fmt_size(declared)} but row {prev.number} ({prev.op.text}) "
                         f"gives {fmt_size(shape)}: {prev.formula}", number, fmt_size(declared),
                         fmt_size(shape), prev.formula)
    op = parse_op(row["op"], number)
    for key in ("stride", "padding"):
        cell = row.get(key, "").strip()
        if not cell:
            continue
        value = pair(cell, key.capitalize(), number, 0 if key == "padding" else 1)
        if op.kind == "chain" and key == "stride":  # a unit's overall stride, as to_table writes it
            if value != (op.total_stride,) * 2:
                raise TableError(f"the Stride cell says {cell} but the steps' strides multiply to "
                                 f"{op.total_stride}", number)
            continue
        if op.kind not in ("conv", "maxpool", "avgpool"):
            raise TableError(f"{op.text} takes no {key} (the {key.capitalize()} cell must be blank)", number)
        if getattr(op, key) not in (value, (0, 0) if key == "padding" else (1, 1)):
            raise TableError(f"{key} is given twice, differently: in the Operation and as {cell!r}", number)
        op = replace(op, **{key: value})
    sc_text = row.get("shortcut", "").strip()
    shortcut = parse_shortcut(sc_text, number) if sc_text else None
    return make_spec(number, op, after_words(row.get("after", ""), number), shortcut, shape)
