"""One forward pass with hooks, recorded once for ``summary``, ``explain`` and ``to_table``.

Every module call becomes a :class:`Call` in the order the calls *start*, with
its nesting, input and output shapes, its own multiply-accumulates (per image)
and the total of everything it ran. MACs come from the aten ops the pass really
executes (convolutions, matrix products, fused attention: FLOPs ÷ 2 by
``torch.utils.flop_counter``'s formulas), each credited to the innermost module
call running it, so ``F.conv2d`` in a user's ``forward`` or the functional
projections of ``nn.MultiheadAttention`` count too. A module called twice
(shared, or reused like torchvision's one ``relu`` per block) gives two calls:
MACs are counted per call, parameters once per module.

Receptive fields are followed tensor by tensor: each conv/pool output gets
``r_out = r_in + d·(k−1)·j_in`` and jump ``j_out = j_in·s``. Tensors made
outside modules (``out + identity``, ``torch.cat``) inherit the widest field
among the same-sized tensors produced inside the module that made them,
which is exact for residual additions and concatenations.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..errors import ResnetkitValueError

# (jump, receptive field) per spatial axis
Field = tuple[tuple[int, int], ...]
ADAPTIVE = (_AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd)
# Larger inputs are typos (4 GiB of float32 before the first layer): refuse them before allocating.
MAX_INPUT_ELEMENTS = 2 ** 30

_aten = torch.ops.aten
# torch's FLOP formulas per aten op; its table lacks the CPU kernel of fused attention, which takes
# the same (query, key, value) as the flash kernel, so it gets that formula.
FLOP_FORMULAS = dict(flop_registry)
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    FLOP_FORMULAS[_aten._scaled_dot_product_flash_attention_for_cpu] = \
        flop_registry[_aten._scaled_dot_product_flash_attention]


@dataclass
class Call:
    """One call of one module during the traced forward pass."""

    index: int
    name: str                       # dotted path from named_modules() ("" = the model itself)
    module: nn.Module
    depth: int                      # nesting of the call (model = 0, its children = 1, ...)
    parent: int | None
    in_shape: tuple[int, ...] | None
    repeat: bool                    # the module was called before: its parameters are counted there
    out_shape: Any = None           # a shape tuple, or a list/dict of them
    macs: int = 0                   # MACs per image of the ops run by this call itself, not its children
    total_macs: int = 0             # own + everything called inside, per image
    out_bytes: int = 0
    field: Field | None = None      # receptive field of the output, per axis

    @property
    def leaf(self) -> bool:
        return next(iter(self.module.children()), None) is None

    @property
    def type_name(self) -> str:
        return type(self.module).__name__


@dataclass
class Trace:
    """All calls of one forward pass plus what the totals need."""

    model: nn.Module
    input_shape: tuple[int, ...]
    calls: list[Call] = field(default_factory=list)
    output_shape: Any = None

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def descendants(self, call: Call) -> list[Call]:
        inside, out = {call.index}, []
        for c in self.calls[call.index + 1:]:
            if c.parent in inside:
                inside.add(c.index)
                out.append(c)
        return out


def window_params(module: nn.Module) -> list[tuple[int, int, int, int]] | None:
    """(kernel, stride, padding, dilation) per spatial axis of a conv or pool; None otherwise.

    ``padding='same'`` is resolved to the symmetric padding it stands for at
    stride 1; ``'valid'`` to 0.
    """
    if isinstance(module, _ConvNd) and not isinstance(module, _ConvTransposeNd):
        n = len(module.kernel_size)
        pad = module.padding
        if isinstance(pad, str):
            pad = tuple(d * (k - 1) // 2 if pad == "same" else 0
                        for k, d in zip(module.kernel_size, module.dilation))
        return list(zip(module.kernel_size, module.stride, pad, module.dilation))[:n]
    if isinstance(module, (_MaxPoolNd, _AvgPoolNd)):
        n = 1 if isinstance(module, (nn.MaxPool1d, nn.AvgPool1d)) else \
            3 if isinstance(module, (nn.MaxPool3d, nn.AvgPool3d)) else 2
        dil = getattr(module, "dilation", 1)
        vals = [_ntuple(v, n) for v in (module.kernel_size, module.stride or module.kernel_size,
                                          module.padding, dil)]
        return list(zip(*vals))
    return None


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class _MacCounter(TorchDispatchMode):
    """Hands the MACs (FLOPs ÷ 2) of every aten op that has a FLOP formula to ``credit``.

    Sees the ops the forward pass really runs, functional or not. A depthwise
    conv costs its kernel area per output element, a transposed one
    ``out_channels/groups · kernel area`` per *input* element; biases, norms
    and activations are not counted (neither do fvcore nor the papers).
    """

    def __init__(self, credit: Any) -> None:
        super().__init__()
        self.credit = credit

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = getattr(func, "_overloadpacket", None)
        formula = FLOP_FORMULAS.get(packet) or flop_registry.get(packet)  # the latter: ops registered later (DCN)
        if formula is not None:
            self.credit(formula(*args, **kwargs, out_val=out) // 2)
        return out


def shapes_of(value: Any) -> Any:
    """Shapes of a nested output: tensor -> tuple, list/tuple -> list, dict -> dict."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)):
        return [shapes_of(v) for v in value]
    if isinstance(value, dict):
        return {k: shapes_of(v) for k, v in value.items()}
    return None


def tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


class _FieldTracker:
    """Receptive field and jump of every spatial tensor seen (weak references: ids get reused)."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[weakref.ref, Field]] = {}
        self.produced: list[tuple[tuple[int, ...], Field]] = []

    def put(self, t: torch.Tensor, f: Field) -> None:
        self.known[id(t)] = (weakref.ref(t), f)
        self.produced.append((tuple(t.shape[2:]), f))

    def get(self, t: torch.Tensor, frames: Sequence[int]) -> Field | None:
        """The field of ``t``; for a tensor made outside modules, the widest same-sized field made
        inside the innermost open module call (``frames``: where each open call began, innermost first)."""
        hit = self.known.get(id(t))
        if hit is not None and hit[0]() is t:
            return hit[1]
        hw = tuple(t.shape[2:])
        for since in frames:
            local = [f for shape, f in self.produced[since:] if shape == hw]
            if local:
                return max(local, key=lambda f: sum(r for _, r in f))
        return None

    @staticmethod
    def step(module: nn.Module, f: Field, in_hw: Sequence[int], out_hw: Sequence[int]) -> Field:
        params = window_params(module)
        if params is not None and len(params) == len(f):
            return tuple((j * s, r + d * (k - 1) * j) for (j, r), (k, s, _, d) in zip(f, params))
        if isinstance(module, ADAPTIVE) and len(in_hw) == len(f):
            return tuple((j * max(1, h // max(o, 1)), r + (h - 1) * j) for (j, r), h, o in zip(f, in_hw, out_hw))
        return f


def zeros_input(model: nn.Module, input_size: Sequence[int] | None) -> torch.Tensor:
    """Zeros of ``input_size`` (with batch) on the model's device and float dtype, or a ``ValueError``
    saying what is wrong with the size."""
    if input_size is None:
        raise ResnetkitValueError("give input_size, e.g. (1, 3, 224, 224), or input_data")
    size = tuple(int(s) for s in input_size)
    if len(size) < 2 or min(size) < 1:
        raise ResnetkitValueError(f"input_size must be (N, C, ...) with positive sizes, got {tuple(input_size)}")
    text = "x".join(map(str, size))
    if math.prod(size) > MAX_INPUT_ELEMENTS:
        raise ResnetkitValueError(f"an input of size {text} has {math.prod(size):,} elements, more than the limit of "
                                  f"{MAX_INPUT_ELEMENTS:,}; give a smaller input size, e.g. 1x3x224x224")
    ref = next(iter(model.parameters()), None)
    ref = ref if ref is not None else next(iter(model.buffers()), None)
    kw = {"device": ref.device} if ref is not None else {}
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    try:
        return torch.zeros(size, dtype=dtype, **kw)
    except (RuntimeError, MemoryError) as e:  # out of (device) memory below the cap
        raise ResnetkitValueError(f"cannot allocate an input of size {text}: out of memory; give a smaller "
                                  "input size") from e


class _Recorder:
    """Forward hooks that turn each module call into a :class:`Call` of ``result``.

    ``pre`` opens a call, ``credit`` books the MACs of an aten op on the innermost
    open call, ``post`` closes it: shapes, MACs per image, and receptive field.
    """

    def __init__(self, model: nn.Module, input_data: torch.Tensor) -> None:
        self.result = Trace(model, tuple(input_data.shape))
        self.names = {id(m): n for n, m in model.named_modules()}
        self.seen: set[int] = set()
        self.stack: list[tuple[Call, int]] = []  # open calls and where their tensors start in fields.produced
        self.fields = _FieldTracker()
        self.fields.put(input_data, tuple((1, 1) for _ in input_data.shape[2:]))
        self.raw_macs: dict[int, int] = {}  # call index -> MACs of the whole batch run by that call itself

    def credit(self, macs: int) -> None:
        if self.stack:  # the innermost open call ran the op
            index = self.stack[-1][0].index
            self.raw_macs[index] = self.raw_macs.get(index, 0) + macs

    def pre(self, module: nn.Module, args: tuple) -> None:
        inputs = tensors_in(args)
        stack = self.stack
        call = Call(index=len(self.result.calls), name=self.names[id(module)], module=module, depth=len(stack),
                    parent=stack[-1][0].index if stack else None,
                    in_shape=tuple(inputs[0].shape) if inputs else None, repeat=id(module) in self.seen)
        self.seen.add(id(module))
        self.result.calls.append(call)
        stack.append((call, len(self.fields.produced)))

    def post(self, module: nn.Module, args: tuple, output: Any) -> None:
        call, since = self.stack.pop()
        outputs = tensors_in(output)
        call.out_shape = shapes_of(output)
        call.macs = self.raw_macs.pop(call.index, 0) // self.result.batch
        if call.leaf:
            call.out_bytes = sum(t.numel() * t.element_size() for t in outputs)
        call.total_macs += call.macs
        if self.stack:
            self.stack[-1][0].total_macs += call.total_macs
        self._follow_fields(call, module, tensors_in(args), outputs, since)

    def _follow_fields(self, call: Call, module: nn.Module, inputs: list[torch.Tensor],
                       outputs: list[torch.Tensor], since: int) -> None:
        """Receptive field of each spatial output: inherited (tensors made inside a container) or
        one window step from the input (a conv or pool)."""
        frames = [s for _, s in reversed(self.stack)] + [0]
        f_in = self.fields.get(inputs[0], frames) if inputs and inputs[0].dim() > 2 else None
        for t in outputs:
            if t.dim() <= 2:
                continue
            f = self.fields.get(t, [since, *frames]) if not call.leaf else None
            if f is None and f_in is not None:
                f = self.fields.step(module, f_in, inputs[0].shape[2:], t.shape[2:])
            if f is not None:
                self.fields.put(t, f)
                call.field = call.field or f


def _run_recorded(model: nn.Module, input_data: torch.Tensor, recorder: _Recorder) -> Any:
    """One eval-mode, no-grad forward pass with ``recorder``'s hooks and MAC counter; hooks removed and
    train/eval flags restored afterwards. A failing forward pass becomes a ``ValueError`` naming the input."""
    flags = {m: m.training for m in model.modules()}
    handles = []
    for m in {id(m): m for m in model.modules()}.values():
        handles.append(m.register_forward_pre_hook(recorder.pre))
        handles.append(m.register_forward_hook(recorder.post))
    # MultiheadAttention's eval fast path is one fused op without a FLOP formula; the regular path
    # computes the same result through counted matrix products
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), _MacCounter(recorder.credit):
            return model(input_data)
    except (RuntimeError, ValueError, TypeError, IndexError, MemoryError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResnetkitValueError(f"the forward pass of {type(model).__name__} on an input of size "
                                  f"{'x'.join(map(str, input_data.shape))} failed: {first}") from e
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag


def trace(model: nn.Module, input_size: Sequence[int] | None = None,
          input_data: torch.Tensor | None = None) -> Trace:
    """Run ``model`` once (eval mode, no grad) on zeros of ``input_size`` and record every call.

    ``input_size`` includes the batch, e.g. ``(1, 3, 224, 224)``. The model's
    train/eval flags are restored afterwards. An input of more than
    ``MAX_INPUT_ELEMENTS`` elements, one that cannot be allocated, or a forward
    pass that fails (wrong channel count, input too small) raises
    ``ValueError`` naming the input.
    """
    if input_data is None:
        input_data = zeros_input(model, input_size)
    recorder = _Recorder(model, input_data)
    recorder.result.output_shape = shapes_of(_run_recorded(model, input_data, recorder))
    return recorder.result
