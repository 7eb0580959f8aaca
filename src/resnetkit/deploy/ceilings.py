"""This machine's peak arithmetic per precision, measured on the spot with a kernel that really exists here.

fp32 and bf16: a 3×3 convolution, 256→256 channels, 28×28, batch 8,
channels_last (oneDNN's best case). int8: a 1024² integer matrix product on
the engine whose int8 is native on this CPU (:mod:`.cpu`): torch's
``_int_mm`` with VNNI or AMX-INT8; without them torch falls back to a
reference kernel (1–2 GOP/s on an AVX2 EPYC, no ceiling at all), so ONNX
Runtime's ``MatMulInteger`` (MLAS's AVX2 u8×s8 kernel) is measured instead.
A precision with no kernel here has no ceiling (``None``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ResnetkitValueError


@dataclass(frozen=True)
class Ceiling:
    """Peak G(FL)OP/s of one precision and the kernel that reached it."""

    value: float | None
    kernel: str

    def text(self, kind: str) -> str:
        unit = "GOP/s" if kind == "int8" else "GFLOP/s"
        return f"{kind} {self.value:,.0f} {unit} ({self.kernel})" if self.value else f"{kind}: none ({self.kernel})"


def _best_rate(fn: Callable[[], object], flops: float, seconds: float) -> float:
    fn()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def _conv(dtype: torch.dtype) -> tuple[Callable[[], object], float]:
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(dtype, memory_format=torch.channels_last)
    x = torch.randn(8, 256, 28, 28, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return (lambda: conv(x)), 2 * 8 * 256 * 256 * 9 * 28 * 28


def _torch_int_mm(n: int = 1024) -> tuple[Callable[[], object], float]:
    a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    return (lambda: torch._int_mm(a, b)), 2 * n ** 3


def _ort_matmul_integer(n: int = 1024) -> tuple[Callable[[], object], float]:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .engines.base import thread_count

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 127, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_ceiling",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = thread_count()
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    return (lambda: session.run(None, {"a": a})), 2 * n ** 3


@torch.no_grad()
def ceiling(kind: str, seconds: float = 0.5) -> Ceiling:
    """Peak of ``kind`` ("fp32", "bf16", "int8") on this CPU: best of repeated calls within about ``seconds``."""
    from .engines import ENGINES
    from .engines.base import NOT_OFFERED

    torch_support = ENGINES["torch"].support(kind)
    if kind == "fp32":
        return Ceiling(_best_rate(*_conv(torch.float32), seconds), "torch conv 3×3, oneDNN")
    if kind == "bf16":
        if torch_support.level == NOT_OFFERED:
            return Ceiling(None, f"no bf16 convolution here: needs {torch_support.needs}")
        return Ceiling(_best_rate(*_conv(torch.bfloat16), seconds),
                       f"torch conv 3×3, {torch_support.kernels or 'oneDNN ' + torch_support.level}")
    if kind == "int8":
        if torch_support.native:
            return Ceiling(_best_rate(*_torch_int_mm(), seconds), f"torch._int_mm, {torch_support.kernels}")
        if ENGINES["onnxruntime"].available("int8"):
            kernels = ENGINES["onnxruntime"].support("int8").kernels
            return Ceiling(_best_rate(*_ort_matmul_integer(), seconds), f"onnxruntime MatMulInteger, {kernels}")
        return Ceiling(_best_rate(*_torch_int_mm(), seconds), "torch._int_mm without VNNI (reference kernel)")
    raise ResnetkitValueError(f"unknown precision {kind!r}; use fp32, bf16 or int8")


def measure_ceiling(kind: str, seconds: float = 0.5) -> float:
    """:func:`ceiling`'s value alone (0.0 where the precision has no kernel here)."""
    return ceiling(kind, seconds).value or 0.0
