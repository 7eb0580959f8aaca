"""The engine of ``resnetkit bench`` and ``benchmarks/inference.py``.

Every contender runs in the same process on the same input, *alternating*
(A, B, C, A, B, C, ... with the order rotated each round) after a warm-up, so
that machine noise - other processes, frequency changes - hits all of them
alike and the ratios stay meaningful even when absolute numbers drift.
Achieved GFLOP/s are set against a ceiling measured on the spot: a
channels_last 3×3 convolution for fp32/bf16 and ``torch._int_mm`` for int8.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

Runner = Callable[[torch.Tensor], Any]


# ------------------------------------------------------------------ counting
def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates for ONE image (paper convention; ResNet-50 at 224×224: 4.09 G), from ``summary``."""
    from ..inspect import summary

    return summary(model, (1, *input_size[1:]), depth=0).total_macs


@torch.no_grad()
def measure_ceiling(kind: str, seconds: float = 0.5) -> float:
    """Peak GFLOP/s (GOP/s for int8) of this machine for ``kind`` in fp32/bf16/int8, quickly.

    fp32/bf16: a 3×3 conv, 256→256 channels, 28×28, batch 8, channels_last
    (oneDNN's best case); int8: ``torch._int_mm`` on 1024² matrices. Best of
    a few repetitions within about ``seconds``.
    """
    if kind == "int8":
        a = torch.randint(-128, 127, (1024, 1024), dtype=torch.int8)
        b = torch.randint(-128, 127, (1024, 1024), dtype=torch.int8)
        fn, flops = (lambda: torch._int_mm(a, b)), 2 * 1024 ** 3
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[kind]
        conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(dtype, memory_format=torch.channels_last)
        x = torch.randn(8, 256, 28, 28, dtype=dtype).contiguous(memory_format=torch.channels_last)
        fn, flops = (lambda: conv(x)), 2 * 8 * 256 * 256 * 9 * 28 * 28
    fn()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


# ------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Per-call wall times (seconds) of one contender, and what they mean for ``batch`` images."""

    name: str
    batch: int
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        s = sorted(self.times)
        return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median


@torch.no_grad()
def time_alternating(runners: dict[str, Runner], x: torch.Tensor, iters: int = 10,
                     warmup: int = 2) -> dict[str, Timing]:
    """Time each runner on ``x`` ``iters`` times, interleaved, after ``warmup`` untimed calls each."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name](x)
    out = {n: Timing(n, x.shape[0]) for n in names}
    for i in range(iters):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            t = time.perf_counter()
            runners[name](x)
            out[name].times.append(time.perf_counter() - t)
    return out


# ---------------------------------------------------------------- contenders
def reference_model(name: str) -> tuple[nn.Module, str] | None:
    """The model users would otherwise run: torchvision's of that name, else timm's; None if neither."""
    try:
        import torchvision.models as tvm

        if name in tvm.list_models(module=tvm):
            return tvm.get_model(name, weights=None).eval(), "torchvision"
    except ImportError:
        pass
    try:
        import timm

        if name in timm.list_models():
            return timm.create_model(name, pretrained=False).eval(), "timm"
    except ImportError:
        pass
    return None


def model_pair(name: str) -> tuple[nn.Module, str, nn.Module, str]:
    """(reference model, its label, resnetkit model, its label) with the same weights, in eval mode.

    The reference is torchvision's/timm's model of that name (layouts are
    identical, so resnetkit's loads its state dict). Without a reference the
    baseline is resnetkit's own eager model; a name that torchvision/timm know
    but resnetkit has not registered gets the reference model itself as
    "ours", so the optimisations can still be measured on the same graph.
    """
    from ..registry import _REGISTRY, create_model

    ref = reference_model(name)
    if name not in _REGISTRY:
        if ref is None:
            create_model(name)  # raises the registry's "unknown model ... did you mean" error
        return ref[0], f"{ref[1]} eager fp32", ref[0], f"{ref[1]} model"
    ours = create_model(name).eval()
    if ref is None:
        return ours, "resnetkit eager fp32", ours, "resnetkit"
    ours.load_state_dict(ref[0].state_dict())
    return ref[0], f"{ref[1]} eager fp32", ours, "resnetkit"


def resnetkit_variant(model: nn.Module, dtype: str, compile: bool = False,
                      calibration: torch.Tensor | None = None) -> nn.Module:
    """resnetkit's fast form of ``model`` for ``dtype`` in fp32/bf16/int8."""
    from .optimize import optimize_for_inference
    from .quantize import quantize_int8

    if dtype == "int8":
        if calibration is None:
            raise ValueError("int8 needs calibration data")
        return quantize_int8(model, calibration)
    return optimize_for_inference(model, dtype, compile=compile)


def ort_runner(model: nn.Module, input_size: Sequence[int], int8: bool = False,
               calibration: torch.Tensor | None = None, workdir: str | None = None) -> Runner:
    """ONNX Runtime (CPU, all graph optimisations, same thread count as torch) on ``model``.

    ``int8`` quantizes the exported file statically to QDQ form (per-channel
    int8 weights, uint8 activations) with ``onnxruntime.quantization`` after
    its ``quant_pre_process``, calibrated on ``calibration``.
    """
    import os
    import tempfile

    import onnxruntime as ort

    from .onnx import export_onnx

    workdir = workdir or tempfile.mkdtemp(prefix="resnetkit-bench-")
    path = export_onnx(model, os.path.join(workdir, "model.onnx"), input_size)
    if int8:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"input": b.numpy()} for b in calibration.split(8)])

            def get_next(self) -> dict | None:
                return next(self.batches, None)

        from onnxruntime.quantization.shape_inference import quant_pre_process

        # ORT's recommended pre-processing (shape inference + graph optimisation): without it the
        # QDQ model ran 5x slower in our measurements.
        prepped = os.path.join(workdir, "model.prep.onnx")
        quant_pre_process(path, prepped)
        qpath = os.path.join(workdir, "model.int8.onnx")
        quantize_static(prepped, qpath, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        path = qpath
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x.numpy()})


# ------------------------------------------------------------------- report
def format_report(timings: dict[str, Timing], baseline: str, macs: int,
                  ceilings: dict[str, float], kinds: dict[str, str]) -> str:
    """A plain-text table: images/s, latency median/p90, GFLOP/s, % of ceiling and × baseline.

    ``kinds`` maps each contender to the arithmetic it runs (fp32/bf16/int8),
    which picks the ceiling it is compared with.
    """
    base = timings[baseline].images_per_s
    width = max(len(n) for n in timings) + 2
    lines = [f"{'':{width}}{'img/s':>9}{'median ms':>11}{'p90 ms':>9}{'GFLOP/s':>9}{'of ceiling':>16}{'speed-up':>10}"]
    for name, t in timings.items():
        gflops = 2 * macs * t.images_per_s / 1e9
        kind = kinds.get(name, "fp32")
        ceil = ceilings.get(kind)
        pct = f"{100 * gflops / ceil:.0f}% of {kind}" if ceil else "-"
        lines.append(f"{name:{width}}{t.images_per_s:9.1f}{1e3 * t.median:11.1f}{1e3 * t.p90:9.1f}"
                     f"{gflops:9.1f}{pct:>16}{t.images_per_s / base:9.2f}x")
    return "\n".join(lines)


def parse_input_size(text: str) -> tuple[int, int, int, int]:
    """'1x3x224x224' (or with ×) → (1, 3, 224, 224)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        raise ValueError(f"--input must look like 1x3x224x224 (N x C x H x W), got {text!r}")
    return size  # type: ignore[return-value]
