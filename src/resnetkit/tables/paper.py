"""The ResNet paper's Table 1 form: ``| conv2_x | 56×56 | [1×1, 64; 3×3, 64; 1×1, 256] ×3 |``.

Columns: layer name, output size and one architecture column per network
(``50-layer``). A cell lists layers (``7×7, 64, stride 2``; ``3×3 max pool,
stride 2``), blocks (``[3×3, 64; 3×3, 64] ×2``) and the head (``average pool,
1000-d fc, softmax``). What the paper leaves implicit is filled in as He et
al. and torchvision do: "same" padding (k // 2), BN and ReLU after every conv
(the block's last ReLU after the addition), the stride a block needs to reach
the row's output size on the first conv with a kernel above 1×1 of its first
block, 1×1 projection shortcuts (+ BN) where the shape changes and identities
elsewhere, RGB input. ``softmax`` is left to the loss: the network returns logits.
"""
from __future__ import annotations

import re
from dataclasses import replace

from .errors import TableError
from .ops import Op, Shape, apply, normal_text, parse_op, size_numbers, split_top
from .spec import RowSpec, make_spec, parse_shortcut

PAPER_COLUMNS = {"output size", "输出大小", "输出尺寸"}
_NAME_COLUMNS = {"layer name", "layer", "name", "层名", "层"}
_SKIPPED_ROWS = {"flops", "params", "parameters"}
MAX_BLOCKS = 1000  # blocks in one row (ResNet-1202 has 200 per stage): more is a typo that would build for minutes
_BLOCK = re.compile(r"^\[(.*)\]\s*(?:[×xX*]\s*([0-9]+))?$")
_CONV = re.compile(r"^([0-9]+\s*[×xX*]\s*[0-9]+)\s*,\s*([0-9]+)(.*)$")
_CONTINUES = re.compile(r"^(?:[0-9]+|stride\s*=?\s*[0-9]+)$", re.I)


def _key(cell: str) -> str:
    return " ".join(cell.lower().split())


def _arch_column(header: list[str], column: str | None) -> tuple[int, int | None, int]:
    """(output size, layer name or None, architecture) column indices."""
    keys = [_key(c) for c in header]
    out_i = next(i for i, k in enumerate(keys) if k in PAPER_COLUMNS)
    name_i = next((i for i, k in enumerate(keys) if k in _NAME_COLUMNS), None)
    arch = [i for i in range(len(keys)) if i not in (out_i, name_i)]
    titles = ", ".join(repr(header[i]) for i in arch)
    if column is not None:
        hits = [i for i in arch if _key(header[i]) == _key(column)]
        if not hits:
            raise TableError(f"no architecture column {column!r}; the table has {titles or 'none'}")
        return out_i, name_i, hits[0]
    if len(arch) != 1:
        raise TableError(f"a paper table needs exactly one architecture column besides 'layer name' and "
                         f"'output size', found {len(arch)} ({titles or 'none'}); pick one with "
                         "from_table(text, column='50-layer')")
    return out_i, name_i, arch[0]


def _items(cell: str, row: int) -> list[str]:
    """A cell's layers: commas split them, except before a bare number or a stride (``7×7, 64, stride 2``)."""
    items: list[str] = []
    for piece in split_top(normal_text(cell.replace("<br>", ",")), (",",)):
        piece = piece.strip()
        if items and _CONTINUES.match(piece):
            items[-1] += ", " + piece
        elif piece:
            items.append(piece)
    if not items:
        raise TableError("the architecture cell is empty", row)
    return items


def _same_padding(op: Op) -> Op:
    return replace(op, padding=tuple(k // 2 for k in op.kernel)) if op.padding == (0, 0) else op


def _layer(item: str, row: int) -> Op | None:
    """A plain item as an Op (None for ``softmax``)."""
    if item.lower() == "softmax":
        return None
    m = _CONV.match(item)
    op = parse_op(f"conv {m[1]}, {m[2]}{m[3]}" if m else item, row)
    if op.kind == "chain":
        raise TableError(f"cannot read {item!r}; write layers as '7×7, 64, stride 2', '3×3 max pool, "
                         "stride 2', blocks as '[3×3, 64; 3×3, 64] ×2' and the head as 'average pool, "
                         "1000-d fc, softmax'", row)
    return _same_padding(op)


def _block_stride(kernel: int, shape: Shape, target: tuple[int, int] | None, row: int) -> int:
    """The stride that takes ``shape`` to the row's output size through a k×k "same" conv."""
    if target is None:
        return 1
    h = shape[1]
    for s in sorted({max(1, h // target[0] + d) for d in (-1, 0, 1)}):
        if all((n + 2 * (kernel // 2) - kernel) // s + 1 == t for n, t in zip(shape[1:], target)):
            return s
    raise TableError(f"output size {target[0]}×{target[1]} cannot follow {shape[1]}×{shape[2]} with one "
                     f"whole stride", row)


def _blocks(item: str, shape: Shape, target: tuple[int, int] | None, row: int, group: str) -> list[RowSpec]:
    m = _BLOCK.match(item)
    convs = []
    for part in split_top(m[1], (";",)):
        c = _CONV.match(part.strip())
        if not c or size_numbers(c[1]) is None or c[3].strip():
            raise TableError(f"block {item!r}: write each conv as 'K×K, C' separated by ';', e.g. "
                             "[1×1, 64; 3×3, 64; 1×1, 256] ×3", row)
        k = size_numbers(c[1])
        convs.append((k[0], k[1], int(c[2])))
    count = int(m[2] or 1)
    if not 1 <= count <= MAX_BLOCKS:
        raise TableError(f"block {item!r} is repeated {count:,} times; write ×1 to ×{MAX_BLOCKS:,}", row)
    first_big = next((i for i, (kh, kw, _) in enumerate(convs) if max(kh, kw) > 1), 0)
    stride = _block_stride(convs[first_big][0], shape, target, row)
    label = {2: "BasicBlock", 3: "Bottleneck"}.get(len(convs), "Block")
    specs = []
    for b in range(count):
        s = stride if b == 0 else 1
        steps = [f"Conv {kh}×{kw}×{c}" + (f" Stride={s}" if i == first_big and s > 1 else "")
                 + (f" Padding={kh // 2}×{kw // 2}" if max(kh, kw) > 1 else "")
                 for i, (kh, kw, c) in enumerate(convs)]
        op = parse_op(f"{label}: " + " → ".join(t + " + BN, ReLU" for t in steps[:-1]) + " → " + steps[-1]
                      if len(steps) > 1 else f"{label}: {steps[0]}", row)
        out, _ = apply(op, shape, row)
        sc = "Identity" if out == shape else f"Conv 1×1×{out[0]}" + (f" Stride={s}" if s > 1 else "") + ", BN"
        specs.append(make_spec(row, op, ("BN", "ReLU"), parse_shortcut(sc, row), shape, group))
        shape = out
    return specs


def _group(name: str, row: int, taken: set[str]) -> str:
    group = re.sub(r"\W", "_", name.strip())
    if not group or group[0].isdigit() or group in taken:
        group = f"row{row}"
    taken.add(group)
    return group


def _first_input(items: list[str], target: tuple[int, int] | None, row: int) -> Shape:
    """The RGB input a paper table implies: the first row's output size times its strides."""
    ops = [_layer(it, row) for it in items if not _BLOCK.match(it)]
    if target is None or len(ops) != len(items) or not ops:
        raise TableError("the first row must give its output size and plain layers with their strides "
                         "(e.g. | conv1 | 112×112 | 7×7, 64, stride 2 |), from which the input size follows", row)
    factor = 1
    for op in ops:
        factor *= op.stride[0] if op is not None else 1
    return (3, target[0] * factor, target[1] * factor)


def paper_specs(header: list[str], body: list[list[str]], column: str | None) -> list[RowSpec]:
    """Check a Table 1 form table (``body`` = its data rows' cells) and compute every unit's shapes."""
    out_i, name_i, arch_i = _arch_column(header, column)
    if body and all(re.fullmatch(r":?-{2,}:?", c) for c in body[0]):
        body = body[1:]
    body = [cells for cells in body if name_i is None or len(cells) <= name_i
            or _key(cells[name_i]) not in _SKIPPED_ROWS]
    if not body:
        raise TableError("the table has a header but no data rows")
    specs: list[RowSpec] = []
    shape: Shape | None = None
    taken: set[str] = set()
    for number, cells in enumerate(body, start=1):
        if len(cells) != len(header):
            raise TableError(f"has {len(cells)} cells but the header has {len(header)} columns", number)
        target = _output_size(cells[out_i], number)
        items = _items(cells[arch_i], number)
        group = _group(cells[name_i] if name_i is not None else "", number, taken)
        if shape is None:
            shape = _first_input(items, target, number)
        last_map = shape
        for item in items:
            if _BLOCK.match(item):
                new = _blocks(item, shape, target, number, group)
            elif (op := _layer(item, number)) is not None:
                after = ("BN", "ReLU") if op.kind == "conv" else ()
                new = [make_spec(number, op, after, None, shape, group)]
            else:
                continue
            specs += new
            shape = new[-1].out_shape
            last_map = shape if len(shape) == 3 else last_map
        if target is not None and last_map[1:] != target:
            declared, computed = f"{target[0]}×{target[1]}", f"{last_map[1]}×{last_map[2]}"
            formula = specs[-1].formula if specs else ""
            raise TableError(f"output size {declared} but the row computes {computed}: {formula}", number,
                             declared, computed, formula)
    return specs


def _output_size(text: str, row: int) -> tuple[int, int] | None:
    if not text.strip():
        return None
    nums = size_numbers(text)
    if nums is None or len(nums) not in (1, 2) or min(nums) < 1:
        raise TableError(f"output size {text.strip()!r} must be H×W (e.g. 56×56) or blank", row)
    return (nums[0], nums[-1])

