"""The words of a table's Operation and Shortcut cells -> checked :class:`Op`s, and the shapes they give.

Nothing here touches PyTorch: sizes are computed symbolically, so a table is
fully checked before a single module is built and every mistake is a
:class:`TableError` naming its row.

Accepted spellings: ``Conv 3×3×64``, ``conv 3x3, 64``, ``3×3 conv, 64`` (``×``,
``x`` or ``*``); ``Max pool 3×3`` or ``3×3 max pool``; ``Global avg pool``;
``FC 10`` or ``1000-d fc``; options ``Stride=2`` or ``stride 2``. A residual
unit's Operation chains steps, ``BasicBlock: Conv 3×3×64 Padding=1 + BN, ReLU →
Conv 3×3×64 Padding=1`` (the words after ``+`` follow that step), and may hold
``SE 16`` (squeeze-excite to 16 channels) and ``Ghost concat 16 (A; B)`` (GhostNet:
the maps of chain A and of chain B run on A's output, concatenated, first 16 kept).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ..inspect.formulas import window_out
from ..inspect.units import AFTER_LAYERS
from .errors import TableError

Shape = tuple[int, ...]          # (C, H, W) for maps, (F,) for vectors
MAX_LAYER_PARAMS = 2 ** 27       # 134 M weights (VGG's fc6 has 103 M): more is a typo, and 0.5 GB of float32
MAX_CHANNELS = 2 ** 20           # likewise for a channel count (a BN over it is built without a weight check)
MAX_WINDOW = 2 ** 16             # kernel, stride, padding, dilation: more is a typo that overflows in forward

OP_FORMS = ("Conv K×K×C (or conv K×K, C / K×K conv, C), Max pool K×K, Avg pool K×K, Global avg pool, "
            "Global max pool, FC N, SE N, Ghost concat N (A; B), steps joined by → "
            "(options: Stride=s Padding=p Groups=g Dilation=d Ceil Bias)")
SHORTCUT_FORMS = ", BN, Identity, Zero-pad C Stride=s"
_X = r"\s*[×xX*]\s*"
_N = "[0-9]+"  # ASCII only: str.isdigit() takes '²' (int() then fails) and \d takes '３'; tables write 0-9
_K = rf"({_N}){_X}({_N})"
_POOLWORD = r"(max|avg|average)\s*-?\s*pool(?:ing)?"
_CONVS = [re.compile(p, re.I) for p in (
    rf"^conv\s*{_K}{_X}({_N})(?P<rest>.*)$",              # Conv 3×3×64
    rf"^conv\s*{_K}\s*,?\s*({_N})(?P<rest>(?:[\s,].*)?)$",  # conv 3x3, 64
    rf"^{_K}\s*conv\s*,?\s*({_N})(?P<rest>(?:[\s,].*)?)$",  # 3×3 conv, 64
)]
_POOLS = [re.compile(rf"^{_POOLWORD}\s*,?\s*{_K}(?P<rest>.*)$", re.I),
          re.compile(rf"^{_K}\s*{_POOLWORD}(?P<rest>.*)$", re.I)]
_GLOBAL = re.compile(rf"^(?:(?:global|adaptive)\s*)?{_POOLWORD}$", re.I)
_FC = [re.compile(rf"^(?:fc|linear|dense)\s*,?\s*({_N})$", re.I), re.compile(rf"^({_N})\s*-?\s*d\s*fc$", re.I)]
_SE = re.compile(rf"^SE\s*({_N})(?:\s+(\w+))?$", re.I)
_GHOST = re.compile(rf"^ghost\s*concat\s*({_N})\s*\((.*)\)$", re.I)
_ZEROPAD = re.compile(rf"^zero\s*-?\s*pad\s*({_N})(?P<rest>.*)$", re.I)
_LABEL = re.compile(r"^([A-Za-z_][\w.]*)\s*:\s*(.*)$")
_OPTION = re.compile(rf"(\w+)\s*(?:=\s*|\s+)({_N}(?:{_X}{_N})?)(?!\w)|(\w+)", re.I)
_FLAGS = {"ceil", "bias"}
_AFTER = {k.lower(): k for k in AFTER_LAYERS} | {"batchnorm": "BN", "swish": "SiLU"}
STEP_KINDS = ("conv", "maxpool", "avgpool", "se", "ghost")
SHORTCUT_KINDS = ("conv", "maxpool", "avgpool", "bn", "identity", "zeropad")


@dataclass(frozen=True)
class Op:
    """One operation: a layer, or (``chain``) the steps of a residual unit's branch."""

    kind: str              # conv | maxpool | avgpool | gap | gmp | fc | bn | identity | zeropad | se | ghost | chain
    text: str
    out: int = 0           # conv/SE/ghost/zero-pad channels, fc features
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    ceil: bool = False
    bias: bool = False
    gate: str = "Sigmoid"  # SE's gate
    steps: tuple["Step", ...] = ()  # chain: its steps; ghost: its two chains as one step each
    label: str = ""        # chain: the unit's name (``Bottleneck``)

    @property
    def total_stride(self) -> int:
        """The stride of the whole operation (a chain's is the product of its steps')."""
        if self.kind == "chain":
            return math.prod(s.op.total_stride for s in self.steps)
        if self.kind == "ghost":
            return self.steps[0].op.total_stride * self.steps[1].op.total_stride
        return self.stride[0]


@dataclass(frozen=True)
class Step:
    """A step of a chain: an operation and the norms/activations after it."""

    op: Op
    after: tuple[str, ...] = ()


def normal_text(text: str) -> str:
    """One space between words, the posts' full-width comma as ','."""
    return " ".join(text.replace("，", ",").split())


def split_top(text: str, seps: tuple[str, ...]) -> list[str]:
    """``text`` cut at every separator that is outside parentheses and brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        sep = next((s for s in seps if text.startswith(s, i)), None) if depth == 0 else None
        if sep:
            parts.append(text[start:i])
            i = start = i + len(sep)
            continue
        i += 1
    return parts + [text[start:]]


def pair(text: str, what: str, row: int | None, minimum: int, maximum: int = MAX_WINDOW,
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


def _options(rest: str, allowed: set[str], row: int | None, head: str) -> dict[str, str]:
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
        if (m.group(2) is None) != (key in _FLAGS):
            raise TableError(f"option {key!r} of {head!r} is malformed: write "
                             f"{key.capitalize() + ('' if key in _FLAGS else '=N')}", row)
        out[key] = m.group(2) or "1"
        pos = m.end()
    if rest[pos:].strip():
        raise TableError(f"cannot read {rest[pos:].strip()!r} in operation {head!r}; write options as "
                         "Stride=2 Padding=1 Groups=32 Dilation=2 Ceil Bias", row)
    return out


def after_word(word: str, row: int | None) -> str:
    """An After-cell word in its table spelling (``relu`` -> ``ReLU``)."""
    key = _AFTER.get(word.strip().lower())
    if key is None:
        raise TableError(f"unknown layer {word.strip()!r} in the After cell; known: {', '.join(AFTER_LAYERS)} "
                         "(comma-separated)", row)
    return key


def after_words(text: str, row: int | None) -> tuple[str, ...]:
    return tuple(after_word(w, row) for w in normal_text(text).split(",") if w.strip())


def _window(op: Op, opts: dict[str, str], row: int | None) -> Op:
    changes = {}
    for key in ("stride", "padding", "dilation"):
        if key in opts:
            changes[key] = pair(opts[key], key.capitalize(), row, 0 if key == "padding" else 1)
    return replace(op, **changes)


def parse_op(text: str, row: int | None, where: str = "Operation") -> Op:
    """Read one operation in table words (see ``OP_FORMS``); raise TableError otherwise."""
    t = normal_text(text)
    label = ""
    if (m := _LABEL.match(t)) and not re.fullmatch(r"[0-9]+", m[1]):
        label, t = m[1], m[2]
    if label or len(split_top(t, ("→", "->", "+"))) > 1:
        if where == "Shortcut":
            raise TableError(f"a shortcut is a comma-separated list of layers, not a chain: {text.strip()!r}", row)
        return _chain(t, label, row)
    return _single(t, row, where)


def _chain(t: str, label: str, row: int | None) -> Op:
    steps = []
    for part in split_top(t, ("→", "->")):
        op_text, *rest = split_top(part, ("+",))
        if len(rest) > 1:
            raise TableError(f"step {part.strip()!r} has more than one '+': write Conv 3×3×64 + BN, ReLU", row)
        op = _single(normal_text(op_text), row, "step")
        if op.kind not in STEP_KINDS:
            raise TableError(f"{op.text!r} cannot be a step of a chain; steps are convs, pools, SE and Ghost "
                             "concat", row)
        steps.append(Step(op, after_words(rest[0], row) if rest else ()))
    text = (f"{label}: " if label else "") + " → ".join(
        s.op.text + (f" + {', '.join(s.after)}" if s.after else "") for s in steps)
    return Op("chain", text, steps=tuple(steps), label=label)


def _single(t: str, row: int | None, where: str) -> Op:
    if not t:
        raise TableError(f"an empty {where.lower()}; known forms: {OP_FORMS}", row)
    for rx in _CONVS:
        if m := rx.match(t):
            kh, kw, c = int(m[1]), int(m[2]), int(m[3])
            opts = _options(m["rest"], {"stride", "padding", "groups", "dilation", "bias"}, row, t)
            op = Op("conv", t, out=c, kernel=(kh, kw), bias="bias" in opts,
                    groups=pair(opts.get("groups", "1"), "Groups", row, 1, MAX_CHANNELS, pairs=False)[0])
            return _checked(_window(op, opts, row), row)
    for rx in _POOLS:
        if m := rx.match(t):
            kind, (kh, kw) = (m[1], (m[2], m[3])) if rx is _POOLS[0] else (m[3], (m[1], m[2]))
            is_max = kind.lower() == "max"
            opts = _options(m["rest"], {"stride", "padding", "ceil"} | ({"dilation"} if is_max else set()), row, t)
            op = Op("maxpool" if is_max else "avgpool", t, kernel=(int(kh), int(kw)), ceil="ceil" in opts)
            return _checked(_window(op, opts, row), row)
    if m := _GLOBAL.match(t):
        return Op("gmp" if m[1].lower() == "max" else "gap", t)
    for rx in _FC:
        if m := rx.match(t):
            return _checked(Op("fc", t, out=int(m[1])), row)
    if m := _SE.match(t):
        gate = after_word(m[2], row) if m[2] else "Sigmoid"
        return _checked(Op("se", t, out=int(m[1]), gate=gate), row)
    if m := _GHOST.match(t):
        parts = split_top(m[2], (";",))
        if len(parts) != 2:
            raise TableError(f"{t!r}: a Ghost concat holds two chains separated by ';' (the primary conv and "
                             "the cheap one run on its output)", row)
        chains = tuple(Step(_chain(normal_text(p), "", row)) for p in parts)
        return _checked(Op("ghost", t, out=int(m[1]), steps=chains), row)
    low = t.lower()
    if where == "Shortcut":
        if low in ("bn", "batchnorm"):
            return Op("bn", "BN")
        if low == "identity":
            return Op("identity", "Identity")
        if m := _ZEROPAD.match(t):
            opts = _options(m["rest"], {"stride"}, row, t)
            stride = pair(opts.get("stride", "1"), "Stride", row, 1, pairs=False)
            return _checked(Op("zeropad", t, out=int(m[1]), stride=stride), row)
    extra = SHORTCUT_FORMS if where == "Shortcut" else ""
    raise TableError(f"unknown {where.lower()} {t!r}; known forms: {OP_FORMS}{extra}", row)


def _checked(op: Op, row: int | None) -> Op:
    if min(op.kernel) < 1 or op.out < (1 if op.kind in ("conv", "se", "ghost", "zeropad") else 0) or op.groups < 1:
        raise TableError(f"{op.text!r}: kernel sizes, channels and groups must be at least 1", row)
    if op.out > MAX_CHANNELS:
        raise TableError(f"{op.text!r}: more than {MAX_CHANNELS:,} channels", row)
    if max(op.kernel) > MAX_WINDOW:
        raise TableError(f"{op.text!r}: a kernel larger than {MAX_WINDOW:,}", row)
    return op


def size_numbers(text: str) -> list[int] | None:
    """``56×56×64`` (or ``56x56x64``, ``56*56*64``) -> [56, 56, 64]; None if the text is not such a size."""
    t = text.strip()
    return [int(n) for n in re.split(_X, t)] if re.fullmatch(rf"{_N}(?:{_X}{_N})*", t) else None


def fmt_size(shape: Shape) -> str:
    """(C, H, W) -> ``H×W×C`` (the papers' order); (F,) -> ``F``."""
    return "×".join(map(str, (*shape[1:], shape[0]))) if len(shape) == 3 else "×".join(map(str, shape))


def _weights(op: Op, count: int, what: str, row: int | None) -> None:
    if count > MAX_LAYER_PARAMS:
        raise TableError(f"{op.text} on {what} would have {count:,} weights; the limit is {MAX_LAYER_PARAMS:,}", row)


def apply(op: Op, shape: Shape, row: int | None) -> tuple[Shape, str]:
    """Shape after ``op`` and the formula that gave it; TableError if ``op`` cannot take ``shape``."""
    if op.kind in ("bn", "identity"):
        return shape, op.text
    if op.kind == "fc":
        n_in = math.prod(shape)
        _weights(op, n_in * op.out, f"{n_in} inputs", row)
        return (op.out,), f"{op.text} outputs {op.out} features"
    if len(shape) != 3:
        raise TableError(f"{op.text} needs a feature map H×W×C, but its input is a vector of {shape[0]}", row)
    c, h, w = shape
    if op.kind in ("gap", "gmp"):
        return (c, 1, 1), f"{op.text} reduces {h}×{w} to 1×1"
    if op.kind == "chain":
        return _apply_chain(op, shape, row)
    if op.kind == "ghost":
        return _apply_ghost(op, shape, row)
    if op.kind == "se":
        _weights(op, 2 * c * op.out, f"{c} channels", row)
        return shape, f"{op.text} keeps {fmt_size(shape)}"
    if op.kind == "zeropad":
        if op.out < c:
            raise TableError(f"{op.text} can only add channels, but its input has {c}", row)
        s = op.stride[0]
        size = (-(-h // s), -(-w // s))
        return (op.out, *size), f"⌈{h} / {s}⌉ = {size[0]}; zero-padded from {c} to {op.out} channels"
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
        _weights(op, op.out * (c // op.groups) * op.kernel[0] * op.kernel[1], f"{c} channels", row)
        out_c = op.out
    steps = [window_out(size, k, s, p, d, op.ceil)
             for size, k, s, p, d in zip((h, w), op.kernel, op.stride, op.padding, op.dilation)]
    formula = steps[0].formula if steps[0].formula == steps[1].formula else \
        f"H: {steps[0].formula}; W: {steps[1].formula}"
    if out_c != c:
        formula += f"; {op.text} outputs {out_c} channels"
    if min(s.size for s in steps) < 1:
        raise TableError(f"{op.text} does not fit its {h}×{w} input: {formula}", row, formula=formula)
    return (out_c, steps[0].size, steps[1].size), formula


def _apply_chain(op: Op, shape: Shape, row: int | None) -> tuple[Shape, str]:
    formulas = []
    for step in op.steps:
        new, formula = apply(step.op, shape, row)
        if new[1:] != shape[1:]:
            formulas.append(f"{step.op.text}: {formula}")
        shape = new
    formulas.append(f"outputs {shape[0]} channels")
    return shape, "; ".join(formulas)


def _apply_ghost(op: Op, shape: Shape, row: int | None) -> tuple[Shape, str]:
    first, _ = apply(op.steps[0].op, shape, row)
    second, _ = apply(op.steps[1].op, first, row)
    if first[1:] != second[1:]:
        raise TableError(f"{op.text}: its two parts give {fmt_size(first)} and {fmt_size(second)}, which "
                         "cannot be concatenated (give the second part stride 1 and 'same' padding)", row)
    if op.out > first[0] + second[0]:
        raise TableError(f"{op.text}: the parts give {first[0]} + {second[0]} channels, fewer than the "
                         f"{op.out} to keep", row)
    out = (op.out, *first[1:])
    return out, f"concat {first[0]} + {second[0]} channels, keep {op.out}: {fmt_size(out)}"
