"""The peers ``resnetkit bench`` measures resnetkit against: each engine as ITS OWN documentation sets it up.

All of them run the *reference* model (torchvision's, timm's for GhostNet), not
resnetkit's, so they show what a user gets without resnetkit:

* ``torch.compile``: the reference model, weights cast to bf16 first for bf16,
  compiled with inductor and weight freezing (``options={"freezing": True}``,
  the CPU-inference setting of PyTorch's inductor documentation) and
  ``max_autotune`` (inductor's "max-autotune" mode: it benchmarks its GEMM/conv
  templates; +7-9% in fp32 and +6-7% in bf16 on resnet50 and ghostnet_100 at
  batch 16, an AMX Xeon, benchmarks/peer_setups.md) under ``no_grad``;
  compiled here, outside any timing. torch's int8 inductor path
  (PT2E ``X86InductorQuantizer``) moved to ``torchao``: not offered.
* ONNX Runtime: ``torch.onnx.export`` (legacy exporter, ``dynamo=False``,
  opset 17, static shape), ``InferenceSession`` on the CPU provider with
  ``ORT_ENABLE_ALL`` and torch's thread count; int8 = ``quant_pre_process`` +
  ``quantize_static`` QDQ with per-channel weights (ORT's recipe for CNNs on
  x86; 7-bit weights where the CPU has no VNNI, as its guide advises against
  VPMADDUBSW saturation). No bf16 on ORT's CPU provider: not offered. A static-shape export,
  ``reduce_range`` on a VNNI CPU and s8 activations were measured against this setup
  (benchmarks/peer_setups.md): the same speed, the same, and 0.25-0.32×.
* OpenVINO: ``openvino.convert_model(model, example_input=x, input=<x's shape>)``: a static
  shape, as OpenVINO's "Setting Input Shapes" guide advises when the shape is known (ghostnet_100 int8 at
  batch 16 ran 1.6× faster than with the ``[?,3,?,?]`` input ``example_input`` alone gives, on an
  AVX2 EPYC); ``compile_model("CPU")`` with ``INFERENCE_PRECISION_HINT`` f32/bf16,
  ``PERFORMANCE_HINT=LATENCY`` and ``INFERENCE_NUM_THREADS`` = torch's threads;
  int8 = ``nncf.quantize`` of the converted model.

OpenVINO's converter and NNCF ship ``openvino_telemetry``, configured so that
it *sends* unless a consent file says no (``enable_opt_in_dialog=False``).
:func:`~.engines.openvino_engine.refuse_openvino_telemetry` refuses in this process: no consent is ever
given, ``opt_in_out`` is never run (its ``--opt_out`` itself sends an event)
and no file is written.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .engines.base import thread_count
from .engines.openvino_engine import refuse_openvino_telemetry

Runner = Callable[[torch.Tensor], Any]

# Shown in every bench header: what decides which precision is fast on this CPU.
ISA_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
PEERS = ("torch.compile", "onnxruntime", "openvino")  # the engine each own-config peer belongs to
PEER_LABELS = {"torch.compile": "torch.compile freezing", "onnxruntime": "ONNX Runtime own",
               "openvino": "OpenVINO own"}


@dataclass
class Contender:
    """One row of the bench: a runner, or why there is none (status "not offered"/"not installed"/"failed")."""

    label: str
    dtype: str                        # what it computes in: picks the ceiling it is compared with
    kind: str                         # "baseline", "peer", "resnetkit", "auto"
    engine: str = ""                  # the engine it runs on ("torch", "onnxruntime", "openvino", "auto")
    runner: Runner | None = field(default=None, repr=False)
    status: str = "ok"
    note: str = ""
    build_s: float = 0.0


# ------------------------------------------------------------------ machine
def cpu_info() -> tuple[str, list[str]]:
    """(CPU model name, the flags of :data:`ISA_FLAGS` usable here), from :mod:`.cpu`."""
    from .cpu import cpu

    here = cpu()
    return here.model, [f for f in ISA_FLAGS if here.has(f)]


def cpu_line() -> str:
    """'CPU: <model>; 2 cores; AMX; flags: avx2 avx512f ... (no ...)' for headers."""
    from .cpu import cpu

    name, flags = cpu_info()
    missing = [f for f in ISA_FLAGS if f not in flags]
    capped = f" (capped by ONEDNN_MAX_CPU_ISA={cpu().cap})" if cpu().cap else ""
    return (f"CPU: {name}; {cpu().cores} cores; {cpu().level}{capped}; flags: "
            f"{' '.join(flags) or 'none of ' + ', '.join(ISA_FLAGS)}"
            + (f" (no {', '.join(missing)})" if missing and flags else ""))


# ------------------------------------------------------------------- peers
def _cast_input(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    return (lambda x: x) if dtype == torch.float32 else (lambda x: x.to(dtype))


def torch_compile_peer(model: nn.Module, dtype: str, x: torch.Tensor, max_autotune: bool = True) -> Runner:
    """The reference model under ``torch.compile`` with inductor freezing, compiled now on ``x``."""
    if dtype == "int8":
        raise NotOffered("torch's int8 for inductor (PT2E X86InductorQuantizer) lives in torchao")
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    m = copy.deepcopy(model).eval().to(tdtype)
    for p in m.parameters():
        p.requires_grad_(False)
    # Every torchvision ResNet shares ResNet.forward: dynamo stops compiling a code object after 8
    # variants and silently runs eager. A bench compiles many (models x batches x precisions).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled = torch.compile(m, options={"freezing": True, **({"max_autotune": True} if max_autotune else {})})
    cast = _cast_input(tdtype)

    def run(inp: torch.Tensor) -> Any:
        with torch.no_grad():  # freezing applies to graphs compiled without grad
            return compiled(cast(inp))

    run(x)  # compile here, not in the timing
    return run


def export_reference_onnx(model: nn.Module, x: torch.Tensor, path: str) -> str:
    """``torch.onnx.export`` as its documentation shows it: legacy exporter, opset 17, the example's shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model).eval(), (x,), path, input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False)
    return path


def onnxruntime_peer(model: nn.Module, dtype: str, x: torch.Tensor, calibration: list[torch.Tensor] | None,
                     workdir: str) -> Runner:
    """ONNX Runtime on the reference model: CPU provider, ORT_ENABLE_ALL, torch's threads; int8 static QDQ."""
    if dtype == "bf16":
        raise NotOffered("ONNX Runtime's CPU provider has no bf16 kernels")
    import onnxruntime as ort

    from .engines.onnxruntime_engine import quantize_qdq

    os.makedirs(workdir, exist_ok=True)
    path = export_reference_onnx(model, x, os.path.join(workdir, "reference.onnx"))
    if dtype == "int8":  # the export has a static shape: calibrate in batches of that size
        n = x.shape[0]
        images = torch.cat(calibration)
        if len(images) < n:
            images = images.repeat(-(-n // len(images)), 1, 1, 1)
        batches = [b for b in images.split(n) if len(b) == n]
        path = quantize_qdq(path, batches, workdir, input_name="input")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = thread_count()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda inp: sess.run(None, {"input": inp.numpy()})


def openvino_peer(model: nn.Module, dtype: str, x: torch.Tensor,
                  calibration: list[torch.Tensor] | None, static: bool = True,
                  nncf_options: dict | None = None) -> tuple[Runner, str]:
    """OpenVINO on the reference model (``convert_model``, LATENCY hint, precision hint; int8 via NNCF).

    ``static`` (the bench's setup): the model's input fixed to ``x``'s shape. OpenVINO's "Setting Input
    Shapes" guide recommends static shapes when the shape does not change between inferences, for speed
    and memory (docs.openvino.ai, openvino_docs_MO_DG_prepare_model_convert_model_Converting_Model), and
    its CPU plugin page warns that dynamic shapes add memory-management overhead and limit runtime
    optimizations. ``static=False`` is ``convert_model(model, example_input=x)`` alone, whose input
    stays ``[?,3,?,?]``. Returns the runner and the precision OpenVINO reports it runs in.
    """
    import openvino as ov

    from .engines.openvino_engine import compile_config, compile_on_cpu, nncf_quantize, precision_name

    refuse_openvino_telemetry()
    shape = {"input": ov.PartialShape(list(x.shape))} if static else {}  # convert_model's ``input=``
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(copy.deepcopy(model).eval(), example_input=x, **shape)
    if dtype == "int8":
        ov_model = nncf_quantize(ov_model, calibration, **(nncf_options or {}))
    compiled = compile_on_cpu(ov_model, compile_config(dtype))
    request = compiled.create_infer_request()
    return (lambda inp: request.infer(inp.numpy(), share_inputs=True)), precision_name(compiled)


class NotOffered(Exception):
    """The engine has no such precision on this CPU (a row "not offered", not a failure)."""


def peer_missing(peer: str, dtype: str) -> list[str]:
    """Packages the peer needs that are not installed: its engine's (torch.compile needs none)."""
    from .engines import get_engine

    return [] if peer == "torch.compile" else get_engine(peer).missing(dtype)


def build_peer(peer: str, model: nn.Module, dtype: str, x: torch.Tensor, calibration: list[torch.Tensor] | None,
               workdir: str) -> Contender:
    """One own-config peer as a :class:`Contender` (never raises: a failure becomes its status)."""
    import time

    label = f"{PEER_LABELS[peer]} {dtype}"
    engine = "torch" if peer == "torch.compile" else peer
    missing = peer_missing(peer, dtype)
    if missing:
        return Contender(label, dtype, "peer", engine, status="not installed", note=f"needs {', '.join(missing)}")
    t = time.perf_counter()
    note = ""
    try:
        if peer == "torch.compile":
            runner = torch_compile_peer(model, dtype, x)
        elif peer == "onnxruntime":
            runner = onnxruntime_peer(model, dtype, x, calibration, os.path.join(workdir, f"ort-{dtype}"))
        else:
            runner, precision = openvino_peer(model, dtype, x, calibration)
            note = f"OpenVINO runs {precision}" + (" outside the int8 layers" if dtype == "int8" else "")
        runner(x)
    except NotOffered as e:
        return Contender(label, dtype, "peer", engine, status="not offered", note=str(e))
    except Exception as e:  # noqa: BLE001 - one peer failing must not stop the bench
        return Contender(label, dtype, "peer", engine, status="failed",
                         note=f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}")
    return Contender(label, dtype, "peer", engine, runner, note=note, build_s=time.perf_counter() - t)
