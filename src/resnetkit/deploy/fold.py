"""Fold every BatchNorm of a model into the convolution (or Linear) that feeds it.

In eval mode a BatchNorm is a per-channel affine map ``y = s·x + t`` with
``s = γ/√(var+ε)`` and ``t = β − s·mean``; when its input is the output of a
conv, ``s`` can be multiplied into the conv's output filters and ``t`` becomes
the conv's bias, so the BN costs nothing at inference time.

Which conv feeds which BN is found by running the model once with hooks, not
by knowing the family: a BN whose input tensor *is* (same object) the output
of a conv called exactly once is folded into it. That works for any module
tree (ResNet, MobileNetV2, GhostNet, d2l, user models), keeps the model's own
class and methods (``forward_features``, ``features_only`` ...), and is
checked against the unfused model before it is returned. A BN that follows no
conv (e.g. after an addition) becomes a plain :class:`ChannelAffine`, so the
result never contains a BatchNorm. timm's norm+act layers (``BatchNormAct2d``)
keep their activation.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ResnetkitValueError

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (dim 1): an eval-mode BatchNorm with nothing to fold into."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def bn_scale_shift(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode affine map of ``bn`` as (scale, shift), computed in float64 for exactness."""
    if bn.running_var is None or bn.running_mean is None:
        raise ResnetkitValueError(f"{bn} has track_running_stats=False: it normalises by batch statistics "
                                  "at inference time too, so it cannot be folded into a conv")
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - scale * mean


@torch.no_grad()
def fold_into(layer: nn.Module, bn: _BatchNorm) -> None:
    """Fold ``bn`` (which consumes ``layer``'s output) into ``layer``'s weight and bias, in place."""
    scale, shift = bn_scale_shift(bn)
    w = layer.weight
    # Output channels are dim 0 of the weight for Conv{1,2,3}d and Linear.
    new_w = w.double() * scale.view((-1,) + (1,) * (w.ndim - 1))
    old_b = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    new_b = old_b * scale + shift
    layer.weight = nn.Parameter(new_w.to(w.dtype), requires_grad=False)
    layer.bias = nn.Parameter(new_b.to(w.dtype), requires_grad=False)


def find_bn_producers(model: nn.Module, example_input: Any) -> dict[str, str]:
    """Map each BatchNorm's name to the name of the conv/Linear whose output it normalises.

    Runs ``model`` once on ``example_input`` with hooks. Only pairs whose link is
    certain are returned: the BN's input is the very tensor the layer returned,
    and both modules were called exactly once (a shared module cannot be folded).
    """
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    calls: dict[str, int] = {}
    last_output: dict[int, tuple[str, torch.Tensor]] = {}
    bn_input: dict[str, torch.Tensor] = {}
    handles = []

    def after_layer(mod: nn.Module, _inp: Any, out: Any) -> None:
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(out, torch.Tensor):
            last_output[id(out)] = (name, out)  # keep `out` alive so its id stays unique

    def before_bn(mod: nn.Module, inp: tuple) -> None:
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        bn_input[name] = inp[0]

    for m in model.modules():
        if isinstance(m, _FOLDABLE):
            handles.append(m.register_forward_hook(after_layer))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()

    pairs = {}
    for bn_name, x in bn_input.items():
        producer = last_output.get(id(x))
        if producer is not None and producer[1] is x and calls[bn_name] == 1 and calls[producer[0]] == 1:
            pairs[bn_name] = producer[0]
    if len(set(pairs.values())) != len(pairs):  # two BNs reading one conv: fold neither
        seen: dict[str, list[str]] = {}
        for b, p in pairs.items():
            seen.setdefault(p, []).append(b)
        pairs = {b: p for b, p in pairs.items() if len(seen[p]) == 1}
    return pairs


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _tail_of(bn: _BatchNorm) -> list[nn.Module]:
    """What a norm+act layer (timm's ``BatchNormAct2d``: normalise, then ``drop``, then ``act``)
    does after normalising; it must survive the folding. Empty for a plain BatchNorm."""
    if type(bn) in _PLAIN_BN:
        return []
    return [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
            if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def example_input_for(model: nn.Module, size: int = 64) -> torch.Tensor:
    """A small probe batch: channels from the model's first conv, ``size``×``size`` pixels."""
    default = getattr(model, "default_input_size", None)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ResnetkitValueError("cannot guess an input for a model without Conv2d layers; pass example_input")
    chans = default[0] if default else first.in_channels
    p = next(model.parameters())
    return torch.randn(2, chans, size, size, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_input: Any = None, inplace: bool = False,
                   check: bool = True, atol: float = 1e-4) -> nn.Module:
    """Return ``model`` in eval mode with every BatchNorm folded away.

    Each BN that reads a conv's (or Linear's) output is folded into that layer's
    weight and bias and replaced by ``nn.Identity``; any other BN becomes a
    :class:`ChannelAffine`. ``example_input`` (default: a 2×C×64×64 random
    batch) is run once to find the pairs and, with ``check``, to verify that the
    folded model's outputs equal the original's within ``atol`` (relative to
    the output scale); a mismatch raises ``RuntimeError`` - it would mean a
    conv's output was also used somewhere other than its BN.
    """
    folded = model if inplace else copy.deepcopy(model)
    folded.eval()
    if example_input is None:
        example_input = example_input_for(folded)
    reference = folded(example_input) if check else None
    pairs = find_bn_producers(folded, example_input)
    for bn_name, bn in list(folded.named_modules()):
        if not isinstance(bn, _BatchNorm):
            continue
        if type(bn) not in _PLAIN_BN and not hasattr(bn, "act"):
            warnings.warn(f"{bn_name}: {type(bn).__name__} subclasses BatchNorm with its own forward; left unfolded")
            continue
        if bn_name in pairs:
            fold_into(folded.get_submodule(pairs[bn_name]), bn)
            new: nn.Module = nn.Identity()
        else:
            scale, shift = bn_scale_shift(bn)
            dtype = bn.running_mean.dtype
            new = ChannelAffine(scale.to(dtype), shift.to(dtype))
        tail = _tail_of(bn)
        _set_submodule(folded, bn_name, nn.Sequential(new, *tail) if tail else new)
    if check:
        _check_same(reference, folded(example_input), atol)
    return folded


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """A model's output as a flat list of tensors (tensor → [tensor]; list/tuple/dict → its tensors)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in flat_outputs(o)]


def _check_same(ref: Any, got: Any, atol: float) -> None:
    for i, (a, b) in enumerate(zip(flat_outputs(ref), flat_outputs(got), strict=True)):
        err = (a.float() - b.float()).abs().max().item()
        tol = atol * max(1.0, a.abs().max().item())
        if err > tol:
            raise RuntimeError(f"BatchNorm folding changed output {i} by {err:.3g} (> {tol:.3g}); "
                               "a folded conv's output must be used elsewhere too - please report this model")


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers ``model`` still contains."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())
