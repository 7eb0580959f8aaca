"""``optimize_for_inference``: the fast CPU (and GPU) path for any resnetkit model.

What it does, and why (measured in PERF_NOTES and benchmarks/results.md):

* BatchNorm folded into the convs (:mod:`.fold`): one op fewer per conv.
* channels_last weights and inputs: oneDNN's convs work in NHWC; with NCHW
  tensors it reorders around every conv.
* conv weights reordered into oneDNN's blocked layout once (:mod:`.prepack`),
  not on every call as eager PyTorch does.
* bf16: weights cast to bf16 once (cheaper than autocast, which recasts each
  call); oneDNN then uses AVX512-BF16 / AMX kernels.
* ``compile=True``: ``torch.compile`` with inductor *weight freezing*, which
  constant-folds the weights and pre-packs them in oneDNN's blocked layout;
  without freezing compile reaches only about half of this speed.

The returned module takes and returns float32 tensors whatever it computes in.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .fold import fold_batchnorm
from .prepack import fuse_activations, prepack_convs

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32``/``torch.bfloat16`` from a dtype or its short name ("fp32", "bf16")."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported here; use 'fp32' or 'bf16' "
                             "(for int8 use resnetkit.quantize_int8)")
        return _DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype {dtype} is not supported; use torch.float32 or torch.bfloat16")
    return dtype


def _map_tensors(out: Any, fn) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_map_tensors(o, fn) for o in out)
    if isinstance(out, dict):
        return {k: _map_tensors(v, fn) for k, v in out.items()}
    return out


class InferenceModule(nn.Module):
    """An eval-only wrapper: casts/lays out the input, runs the optimised model, returns float32.

    ``.model`` is the folded (and cast) model itself; ``.runner`` what forward
    calls: the ``torch.compile`` wrapper when compiling, else ``runner`` (a
    graph with fused activations) or the model. ``train(True)`` is refused
    because the BatchNorms are gone.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool, compile: bool,
                 runner: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        # Freezing is passed per compile (options=) so the global inductor config stays untouched.
        self.runner = torch.compile(model, options={"freezing": True}) if compile else (runner or model)
        super().train(False)

    def train(self, mode: bool = True) -> "InferenceModule":
        if mode:
            raise RuntimeError("an optimize_for_inference module is eval-only (its BatchNorms are folded); "
                               "train the original model instead")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> Any:
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # freezing applies only to graphs compiled without grad
            out = self.runner(x)
        return _map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # expose the wrapped model's attributes (feature_info, num_classes, ...)
            return getattr(super().__getattr__("model"), name)


def optimize_for_inference(model: nn.Module, dtype: torch.dtype | str = torch.float32, channels_last: bool = True,
                           compile: bool = False, example_input: torch.Tensor | None = None) -> InferenceModule:
    """An eval-only copy of ``model`` that runs fast: BN folded, channels_last, optional bf16 and compile.

    Works for every registered family and for ``features_only`` backbones (list
    outputs). ``dtype=torch.bfloat16`` casts the weights once and computes in
    bf16 (AVX512-BF16/AMX through oneDNN); inputs and outputs stay float32, and
    results match the float32 model within bf16 precision (~1e-2 relative).
    ``compile=True`` adds ``torch.compile`` with inductor weight freezing: the
    first call compiles (tens of seconds), later calls are the fastest path.
    All families share one ``forward``, and dynamo compiles a function for at
    most ``torch._dynamo.config.recompile_limit`` (8) models/shapes per process,
    then silently runs eager: raise that limit when compiling more.
    ``example_input`` is used to find conv→BN pairs and verify the folding
    (default: a random 2×C×64×64 batch). The original model is not modified.
    """
    dtype = as_dtype(dtype)
    folded = fold_batchnorm(copy.deepcopy(model), example_input=example_input, inplace=True)
    for p in folded.parameters():
        p.requires_grad_(False)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        folded = folded.to(dtype)
    if compile:  # inductor's freezing packs weights and fuses activations itself
        return InferenceModule(folded, dtype, channels_last, compile=True)
    prepack_convs(folded)
    return InferenceModule(folded, dtype, channels_last, compile=False, runner=fuse_activations(folded))
