"""The torch engine: resnetkit's own fast path, needing nothing beyond PyTorch (the default).

What it does, and why (measured in benchmarks/results.md and benchmarks/profile_engines.py):

* BatchNorm folded into the convs (:mod:`..fold`): one op fewer per conv.
* channels_last weights and inputs: oneDNN's convs work in NHWC; with NCHW
  tensors it reorders around every conv.
* conv weights reordered into oneDNN's blocked layout once (:mod:`..prepack`),
  not on every call as eager PyTorch does; ReLU/ReLU6 run as conv post-ops.
* bf16: weights cast to bf16 once (cheaper than autocast, which recasts each
  call); oneDNN then uses AVX512-BF16 / AMX kernels.
* ``compile=True``: ``torch.compile`` with inductor *weight freezing*, which
  constant-folds the weights and pre-packs them in oneDNN's blocked layout;
  without freezing compile reaches only about half of this speed.
* int8: FX graph-mode static quantization, x86 backend (:mod:`..quantize`).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..fold import fold_batchnorm
from ..prepack import fuse_activations, prepack_convs
from ..cpu import BF16_FLAGS, INT8_FLAGS, cpu, fp32_isa, names, torch_bf16_runs
from .base import EMULATED, NATIVE, NOT_OFFERED, BuildRequest, Engine, Runner, Support, flat_outputs

_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _map_tensors(out: Any, fn) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_map_tensors(o, fn) for o in out)
    if isinstance(out, dict):
        return {k: _map_tensors(v, fn) for k, v in out.items()}
    return out


class FastTorchModule(nn.Module):
    """Eval-only: casts/lays out the input, runs the folded model, returns float32 in the model's structure.

    ``.model`` is the folded (and cast) model; ``.runner`` what forward calls:
    the ``torch.compile`` wrapper when compiling, else a graph with fused
    activations (or the model itself).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool, compile: bool,
                 runner: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.compute_dtype = dtype
        self.channels_last = channels_last
        # Freezing is passed per compile (options=) so the global inductor config stays untouched.
        self.runner = torch.compile(model, options={"freezing": True}) if compile else (runner or model)
        self.eval()

    def forward(self, x: torch.Tensor) -> Any:
        if x.dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # freezing applies only to graphs compiled without grad
            out = self.runner(x)
        return _map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)


def fast_torch_module(model: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                      compile: bool = False, example_input: torch.Tensor | None = None) -> FastTorchModule:
    """An eval-only copy of ``model``: BN folded, channels_last, prepacked convs, optional bf16 and compile."""
    folded = fold_batchnorm(copy.deepcopy(model), example_input=example_input, inplace=True)
    for p in folded.parameters():
        p.requires_grad_(False)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        folded = folded.to(dtype)
    if compile:  # inductor's freezing packs weights and fuses activations itself
        return FastTorchModule(folded, dtype, channels_last, compile=True)
    prepack_convs(folded)
    return FastTorchModule(folded, dtype, channels_last, compile=False, runner=fuse_activations(folded))


class TorchRunner(Runner):
    """Runs a torch module; flat float32 outputs."""

    def __init__(self, module: nn.Module, settings: dict[str, Any]) -> None:
        self.module = module
        self.settings = settings

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [t.float() for t in flat_outputs(self.module(x))]

    def describe(self) -> dict[str, Any]:
        return {"engine": f"torch {torch.__version__}", "threads": torch.get_num_threads(), **self.settings}


class TorchEngine(Engine):
    name = "torch"
    file_format = None

    def version(self) -> str:
        return torch.__version__

    def support(self, dtype: str) -> Support:
        """bf16: native with AMX-BF16 or AVX512-BF16; oneDNN emulates it with AVX-512 BW/VL/DQ (or
        AVX-NE-CONVERT) and refuses it below. int8 (FBGEMM/oneDNN): native with VNNI or AMX-INT8;
        without them its u8×s8 products take three instructions and it ran at 0.3× fp32 on an AVX2 EPYC."""
        here = cpu()
        if dtype == "fp32":
            return Support(NATIVE, kernels=f"oneDNN {fp32_isa()}")
        if dtype == "bf16":
            need = names(*reversed(BF16_FLAGS))
            if flag := here.first(*BF16_FLAGS):
                return Support(NATIVE, kernels=f"oneDNN {names(flag)}")
            if torch_bf16_runs():
                return Support(EMULATED, needs=need, note="oneDNN converts bf16 to fp32 around each "
                               "multiply (no bf16 dot-product instruction): slower than fp32")
            return Support(NOT_OFFERED, needs=need, note="oneDNN refuses bf16 convolutions below AVX-512 "
                           "BW/VL/DQ or AVX-NE-CONVERT")
        if dtype == "int8":
            if flag := here.first(*INT8_FLAGS):
                return Support(NATIVE, kernels=f"FBGEMM/oneDNN {names(flag)}")
            return Support(EMULATED, needs=names("avx512_vnni", "avx_vnni", "amx_int8"),
                           note="no VNNI: torch's int8 kernels are slower than its fp32 ones here")
        return super().support(dtype)

    def build(self, request: BuildRequest) -> TorchRunner:
        opts = request.options
        channels_last = opts.get("channels_last", True)
        example = opts.get("example_input")
        if example is None:
            example = torch.randn(min(2, request.input_size[0]), *request.input_size[1:])
        if request.dtype == "int8":
            from ..quantize import quantize_int8

            module = quantize_int8(request.model, request.calibration, channels_last=channels_last)
            return TorchRunner(module, {"int8": "FX graph mode, x86 backend (oneDNN/FBGEMM)",
                                        "channels_last": channels_last})
        compile = bool(opts.get("compile", False))
        module = fast_torch_module(request.model, _TORCH_DTYPES[request.dtype], channels_last, compile, example)
        support = self.support(request.dtype)
        return TorchRunner(module, {"compute": request.dtype, "kernels": support.kernels or support.level,
                                    "channels_last": channels_last,
                                    "compile": "inductor, weight freezing" if compile else False})
