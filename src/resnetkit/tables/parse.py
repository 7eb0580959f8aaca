"""Reading a layer table: cells -> checked row specs, with every size computed symbolically.

Nothing here touches PyTorch: a table is fully checked (operations known,
cells well formed, declared sizes equal to computed ones, shortcuts shaped
like their branch, layers of a sane size) before a single module is built, so
every mistake is a :class:`TableError` naming its row, never a traceback.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..inspect.formulas import window_out
from ..inspect.units import AFTER_LAYERS
from .errors import TableError

Shape = tuple[int, ...]          # (C, H, W) for maps, (F,) for vectors
MAX_LAYER_PARAMS = 2 ** 27       # 134 M weights (VGG's fc6 has 103 M): more is a typo, and 0.5 GB of float32
MAX_CHANNELS = 2 ** 20           # likewise for a channel count (a BN over it is built without a weight check)
MAX_WINDOW = 2 ** 16             # kernel, stride, padding, dilation: more is a typo that overflows in forward

COLUMNS = {"input size": "input", "input": "input", "operation": "op", "op": "op", "layer": "op",
           "stride": "stride", "padding": "padding", "pad": "padding", "shortcut": "shortcut",
           "after": "after", "activation": "after"}
COLUMN_TITLES = ["Input size", "Operation", "Stride", "Padding", "Shortcut", "After"]
OP_FORMS = ("Conv K×K×C, Max pool K×K, Avg pool K×K, Global avg pool, Global max pool, FC N "
            "(options: Stride=s Padding=p Groups=g Dilation=d Ceil)")
_X = r"\s*[×xX]\s*"
_N = "[0-9]+"  # ASCII only: str.isdigit() takes '²' (int() then fails) and \d takes '３'; tables write 0-9
_CONV = re.compile(rf"^conv\s*({_N}){_X}({_N}){_X}({_N})(?P<rest>.*)$", re.I)
_POOL = re.compile(rf"^(max|avg|average)\s*-?\s*pool(?:ing)?\s*({_N}){_X}({_N})(?P<rest>.*)$", re.I)
_GLOBAL = re.compile(r"^global\s*(avg|average|max)\s*-?\s*pool(?:ing)?$", re.I)
_FC = re.compile(rf"^(?:fc|linear|dense)\s*({_N})$", re.I)
_OPTION = re.compile(rf"(\w+)\s*=\s*({_N}(?:{_X}{_N})?)|(\w+)", re.I)
_SIZE = re.compile(rf"^{_N}(?:{_X}{_N})*$")
_AFTER = {k.lower(): k for k in AFTER_LAYERS} | {"batchnorm": "BN", "swish": "SiLU"}


@dataclass(frozen=True)
class Op:
    """One operation of a row or of a shortcut."""

    kind: str                      # conv | maxpool | avgpool | gap | gmp | fc | bn | identity
    text: str
    out: int = 0                   # conv channels / fc features
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    ceil: bool = False


@dataclass(frozen=True)
class RowSpec:
    """A checked data row: its operation, norms/activations, shortcut and shapes."""

    number: int
    op: Op
    after: tuple[str, ...]
    shortcut: tuple[Op, ...] | None
    in_shape: Shape
    out_shape: Shape
    formula: str


def fmt_size(shape: Shape) -> str:
    """(C, H, W) -> ``H×W×C`` (the papers' order); (F,) -> ``F``."""
    return "×".join(map(str, (*shape[1:], shape[0]))) if len(shape) == 3 else "×".join(map(str, shape))


def _pair(text: str, what: str, row: int, minimum: int, maximum: int = MAX_WINDOW,
          pairs: bool = True) -> tuple[int, int]:
    """A cell or option value ``n`` (or ``a×b`` when ``pairs``) within [minimum, maximum], as (a, b)."""
    parts = re.split(_X, text.strip())
    if not all(re.fullmatch(_N, p) for p in parts) or len(parts) not in ((1, 2) if pairs else (1,)):
        raise TableError(f"{what} must be a whole number{' (or a×b)' if pairs else ''}, got {text!r}", row)
    vals = tuple(int(p) for p in parts) * (3 - len(parts))
    if min(vals) < minimum:
        raise TableError(f"{what} must be at least {minimum}, got {text!r}", row)
    if max(vals) > maximum:
        raise TableError(f"{what} must be at most {maximum:,}, got {text!r}", row)
    return vals[0], vals[1]


def _options(rest: str, allowed: set[str], row: int, head: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    rest = rest.replace(",", " ")
    for m in _OPTION.finditer(rest):
        if rest[pos:m.start()].strip():
            break
        key = (m.group(1) or m.group(3)).lower()
        if key not in allowed:
            raise TableError(f"{head!r} has an unknown option {key!r}; it accepts "
                             f"{', '.join(sorted(k.capitalize() for k in allowed))}", row)
        if (m.group(2) is None) != (key == "ceil"):
            raise TableError(f"option {key!r} of {head!r} is malformed: write "
                             f"{'Ceil' if key == 'ceil' else key.capitalize() + '=N'}", row)
        out[key] = m.group(2) or "1"
        pos = m.end()
    if rest[pos:].strip():
        raise TableError(f"cannot read {rest[pos:].strip()!r} in operation {head!r}; write options as "
                         "Stride=2 Padding=1 Groups=32 Dilation=2 Ceil", row)
    return out


def parse_op(text: str, row: int, where: str = "Operation") -> Op:
    """Read one operation in table words (see ``OP_FORMS``); raise TableError otherwise."""
    t = " ".join(text.split())
    if m := _CONV.match(t):
        kh, kw, c = int(m[1]), int(m[2]), int(m[3])
        opts = _options(m["rest"], {"stride", "padding", "groups", "dilation"}, row, t)
        op = Op("conv", t, out=c, kernel=(kh, kw),
                groups=_pair(opts.get("groups", "1"), "Groups", row, 1, MAX_CHANNELS, pairs=False)[0])
    elif m := _POOL.match(t):
        opts = _options(m["rest"], {"stride", "padding", "ceil"}, row, t)
        op = Op("maxpool" if m[1].lower() == "max" else "avgpool", t, kernel=(int(m[2]), int(m[3])),
                ceil="ceil" in opts)
    elif m := _GLOBAL.match(t):
        return Op("gmp" if m[1].lower() == "max" else "gap", t)
    elif m := _FC.match(t):
        return Op("fc", t, out=int(m[1]))
    elif t.lower() in ("bn", "batchnorm") and where == "Shortcut":
        return Op("bn", "BN")
    elif t.lower() == "identity" and where == "Shortcut":
        return Op("identity", "Identity")
    else:
        extra = ", BN, Identity" if where == "Shortcut" else ""
        raise TableError(f"unknown {where.lower()} {text.strip()!r}; known forms: {OP_FORMS}{extra}", row)
    if min(op.kernel) < 1 or op.out < (1 if op.kind == "conv" else 0) or op.groups < 1:
        raise TableError(f"{t!r}: kernel sizes, channels and groups must be at least 1", row)
    if op.out > MAX_CHANNELS:
        raise TableError(f"{t!r}: more than {MAX_CHANNELS:,} channels", row)
    if max(op.kernel) > MAX_WINDOW:
        raise TableError(f"{t!r}: a kernel larger than {MAX_WINDOW:,}", row)
    changes = {}
    for key in ("stride", "padding", "dilation"):
        if key in opts:
            changes[key] = _pair(opts[key], key.capitalize(), row, 0 if key == "padding" else 1)
    return replace(op, **changes)


def _apply(op: Op, shape: Shape, row: int) -> tuple[Shape, str]:
    """Shape after ``op`` and the formula that gave it."""
    if op.kind in ("bn", "identity"):
        return shape, op.text
    if op.kind == "fc":
        n_in = 1
        for s in shape:
            n_in *= s
        if n_in * op.out > MAX_LAYER_PARAMS:
            raise TableError(f"{op.text} on {n_in} inputs would have {n_in * op.out:,} weights; "
                             f"the limit is {MAX_LAYER_PARAMS:,}", row)
        return (op.out,), f"{op.text} outputs {op.out} features"
    if len(shape) != 3:
        raise TableError(f"{op.text} needs a feature map H×W×C, but its input is a vector of {shape[0]}", row)
    c, h, w = shape
    if op.kind in ("gap", "gmp"):
        return (c, 1, 1), f"{op.text} reduces {h}×{w} to 1×1"
    if op.kind in ("maxpool", "avgpool"):
        for k, p in zip(op.kernel, op.padding):
            if p > k // 2:  # PyTorch's rule, on the kernel size even when dilated
                raise TableError(f"{op.text}: padding {p} is more than half the kernel size {k}, which "
                                 "PyTorch pools reject", row)
    out_c = c
    if op.kind == "conv":
        if c % op.groups or op.out % op.groups:
            raise TableError(f"{op.text}: Groups={op.groups} must divide both the input channels ({c}) and "
                             f"the output channels ({op.out})", row)
        weights = op.out * (c // op.groups) * op.kernel[0] * op.kernel[1]
        if weights > MAX_LAYER_PARAMS:
            raise TableError(f"{op.text} on {c} channels would have {weights:,} weights; "
                             f"the limit is {MAX_LAYER_PARAMS:,}", row)
        out_c = op.out
    steps = [window_out(size, k, s, p, d, op.ceil)
             for size, k, s, p, d in zip((h, w), op.kernel, op.stride, op.padding, op.dilation)]
    formula = steps[0].formula if steps[0].formula == steps[1].formula else \
        f"H: {steps[0].formula}; W: {steps[1].formula}"
    if out_c != c:
        formula += f"; {op.text} outputs {out_c} channels"
    if min(s.size for s in steps) < 1:
        raise TableError(f"{op.text} does not fit its {h}×{w} input: {formula}", row, computed=None,
                         formula=formula)
    return (out_c, steps[0].size, steps[1].size), formula


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


def parse_table(text: str) -> list[RowSpec]:
    """Check a layer table and compute every row's shapes; raise :class:`TableError` on any problem."""
    if not isinstance(text, str):
        raise TableError(f"a layer table is text, got {type(text).__name__}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TableError("the table is empty: it needs a header row and at least one data row")
    for i, ln in enumerate(lines):
        if not ln.strip().startswith("|"):
            raise TableError(f"line {i + 1} ({ln.strip()[:40]!r}) is not a table row: rows start with '|'")
    keys = _header(_split(lines[0]))
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
    if not _SIZE.match(t):
        raise TableError(f"input size {t!r} is malformed: write H×W×C (e.g. 56×56×64) or C for a vector", row)
    nums = [int(n) for n in re.split(_X, t)]
    if len(nums) not in (1, 3) or min(nums) < 1:
        raise TableError(f"input size {t!r} must be H×W×C (three numbers ≥ 1) or C for a vector", row)
    if nums[-1] > MAX_CHANNELS:
        raise TableError(f"input size {t!r} has more than {MAX_CHANNELS:,} channels", row)
    return (nums[2], nums[0], nums[1]) if len(nums) == 3 else (nums[0],)


def _flattens_to(declared: Shape, shape: Shape) -> bool:
    """A vector size declared where a map arrives is fine when it is the map flattened (before an FC row)."""
    n = 1
    for v in shape:
        n *= v
    return len(declared) == 1 and declared[0] == n


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
        if cell:
            value = _pair(cell, key.capitalize(), number, 0 if key == "padding" else 1)
            if op.kind not in ("conv", "maxpool", "avgpool"):
                raise TableError(f"{op.text} takes no {key} (the {key.capitalize()} cell must be blank)", number)
            if getattr(op, key) not in (value, (0, 0) if key == "padding" else (1, 1)):
                raise TableError(f"{key} is given twice, differently: in the Operation and as {cell!r}", number)
            op = replace(op, **{key: value})
    after = tuple(_after(w, number) for w in row.get("after", "").split(",") if w.strip())
    out, formula = _apply(op, shape, number)
    shortcut = None
    sc_text = row.get("shortcut", "").strip()
    if sc_text:
        if op.kind not in ("conv", "maxpool", "avgpool"):
            raise TableError(f"a shortcut needs a conv or pool row, not {op.text}", number)
        shortcut = tuple(parse_op(t, number, "Shortcut") for t in sc_text.split(",") if t.strip())
        sc_shape, sc_formula = shape, ""
        for sc in shortcut:
            if sc.kind in ("fc", "gap", "gmp"):
                raise TableError(f"a shortcut cannot contain {sc.text}", number)
            sc_shape, sc_formula = _apply(sc, sc_shape, number)
        if sc_shape != out:
            raise TableError(f"the shortcut ({sc_text}) gives {fmt_size(sc_shape)} but the row's operation gives "
                             f"{fmt_size(out)}, so they cannot be added; give the shortcut the same stride and "
                             f"channel count (e.g. Conv 1×1×{out[0]} Stride={op.stride[0]})", number,
                             fmt_size(sc_shape), fmt_size(out), sc_formula or None)
    return RowSpec(number, op, after, shortcut, shape, out, formula)


def _after(word: str, row: int) -> str:
    key = _AFTER.get(word.strip().lower())
    if key is None:
        raise TableError(f"unknown layer {word.strip()!r} in the After cell; known: {', '.join(AFTER_LAYERS)} "
                         "(comma-separated)", row)
    return key
