"""The OpenVINO engine: the model converted by ``openvino.convert_model``, compiled for the CPU.

Configured as OpenVINO's documentation says for latency on a CPU: precision
and threading are compile-time *config*: ``INFERENCE_PRECISION_HINT`` f32 (set
explicitly: on AMX CPUs OpenVINO would otherwise pick bf16 by itself) or bf16,
``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_NUM_THREADS`` = torch's thread count.
int8 is NNCF post-training quantization (``nncf.quantize``) of the OpenVINO
model, calibrated on the given batches; its non-quantized layers run in the
CPU's default inference precision.

The converted model keeps a free batch (and is saved that way); :class:`OpenVinoRunner`
compiles a static copy for each batch size it meets, the built one first: on
ghostnet_100 at batch 16 (an AMX Xeon, benchmarks/peer_setups.md) that ran fp32
1.34× and int8 2.71× faster than the free-batch model.

The model is converted from the torch module rather than read
from our ONNX export: fp32 ran at the same speed either way, but NNCF's int8 of
the converted graph was 26% faster on mobilenet_v2. Telemetry: the
converter and NNCF count a *missing* consent file as consent (``openvino_telemetry``'s
check with the dialog off), so :func:`refuse_openvino_telemetry` makes that
check answer "declined" in this process before OpenVINO or NNCF is used.
resnetkit never writes a consent file and never runs ``opt_in_out`` (its
``--opt_out`` itself sends an event).
"""
from __future__ import annotations

import copy
import ctypes
import importlib.util
import os
import sys
import warnings
from typing import Any

import torch

from ..cpu import BF16_FLAGS, INT8_FLAGS, cpu, names, openvino_capabilities
from .base import (AS_FP32, EMULATED, NATIVE, BuildRequest, Engine, EngineError, PerShape, Runner, Support,
                   as_numpy_batches, thread_count)

_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def refuse_openvino_telemetry() -> bool:
    """Make OpenVINO's telemetry (used by ``convert_model`` and NNCF) decline in this process.

    ``openvino_telemetry`` treats a missing consent file as consent for the
    converter and NNCF. Here its consent check answers "declined" and the
    shared instance, if one exists, forgets any consent: nothing is collected or
    sent. No consent file is written and ``opt_in_out`` is not run. Returns
    False when ``openvino_telemetry`` is not installed (then nothing can send).
    """
    if importlib.util.find_spec("openvino_telemetry") is None:
        return False
    from openvino_telemetry import main as tm_main
    from openvino_telemetry.utils import opt_in_checker

    declined = opt_in_checker.ConsentCheckResult.DECLINED
    opt_in_checker.OptInChecker.check = lambda self, *args, **kwargs: declined
    instance = getattr(tm_main.Telemetry, "_SingletonMetaClass__single_instance", None)
    if instance is not None:
        instance.consent = False
    return True


class _SignalStack(ctypes.Structure):  # stack_t of sigaltstack(2)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SIGNAL_STACKS: list[ctypes.Array] = []  # ours, alive for the process: the kernel points at them
_SS_DISABLE = 2


def keep_signal_stack_usable(min_bytes: int = 1 << 16) -> bool:
    """Give this thread an alternate signal stack of ours if OpenVINO left it one of its own.

    OpenVINO's ``compile_model`` gives the calling thread an 11,568-byte
    alternate signal stack and, when that compiled model is freed, puts back
    the one it found. Models freed in any order but the reverse of building
    (as garbage collection frees them) leave the thread pointing at freed
    memory; Python runs its C signal handler there (``SA_ONSTACK``), so once a
    Python SIGCHLD handler exists (torch's DataLoader installs one with
    workers), the next child process to exit killed the whole process with
    SIGSEGV. A 256 KiB stack of ours, never freed, replaces OpenVINO's right
    after each compile, so whatever OpenVINO puts back later is either "none"
    or ours. Linux only; returns True when it replaced one.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = _SignalStack()
        if libc.sigaltstack(None, ctypes.byref(current)) != 0:
            return False
        if current.ss_flags & _SS_DISABLE or current.ss_size >= min_bytes:
            return False
        buffer = ctypes.create_string_buffer(1 << 18)
        ours = _SignalStack(ctypes.addressof(buffer), 0, ctypes.sizeof(buffer))
        if libc.sigaltstack(ctypes.byref(ours), None) != 0:
            return False
    except (OSError, AttributeError):
        return False
    _SIGNAL_STACKS.append(buffer)
    return True


def compile_on_cpu(ov_model: Any, config: dict) -> Any:
    """``ov.Core().compile_model(ov_model, "CPU", config)``, leaving this thread a usable signal stack."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    keep_signal_stack_usable()
    return compiled


def precision_name(compiled: Any) -> str:
    """The precision a compiled model really runs in, as OpenVINO names it ("f32", "bf16")."""
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return getattr(precision, "to_string", lambda: str(precision))()


def compile_config(dtype: str) -> dict[str, Any]:
    """LATENCY hint, torch's thread count and the precision hint; bf16 only where OpenVINO has bf16 kernels
    (elsewhere it would run a bf16 hint in f32 anyway, and under ONEDNN_MAX_CPU_ISA its capped kernels fail)."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": thread_count()}
    if dtype in _PRECISION:
        bf16_here = dtype != "bf16" or OpenVinoEngine().support("bf16").native
        config["INFERENCE_PRECISION_HINT"] = _PRECISION[dtype] if bf16_here else "f32"
    elif dtype == "int8" and not OpenVinoEngine().support("bf16").native:
        # the layers int8 leaves run in OpenVINO's default precision, bf16 wherever its capability list says
        # BF16, which ignores ONEDNN_MAX_CPU_ISA: under an AVX2 cap its Softmax then had no kernel at all
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


class OpenVinoRunner(Runner):
    """One OpenVINO model, compiled for each input shape it meets (static shapes, as OpenVINO's docs advise
    when the shape is known), the built one first. ``ov_model`` keeps a free batch (saved that way), so any
    batch size runs: a new one is compiled on its first call (at most 4 kept, :class:`PerShape`).
    On ghostnet_100 at batch 16, an AVX2 EPYC ran int8 at 300 images/s static against 186 with a free batch."""

    def __init__(self, ov_model: Any, dtype: str, input_size: tuple[int, ...] | None = None) -> None:
        self.ov_model, self.dtype = ov_model, dtype
        self.config = compile_config(dtype)
        self._compiled = PerShape(self._compile)
        static = ov_model.inputs[0].get_partial_shape().is_static
        first = tuple(ov_model.inputs[0].get_partial_shape().to_shape()) if static else input_size
        if first is None:
            raise EngineError("an OpenVINO model with a free batch needs the input size it is built for")
        self._compiled.get(tuple(first))
        self.dynamic_batch = not static

    def _compile(self, shape: tuple[int, ...]) -> tuple[Any, Any, list]:
        """(compiled model, infer request, outputs) for ``shape``."""
        model = self.ov_model
        if not model.inputs[0].get_partial_shape().is_static:
            import openvino as ov

            model = self.ov_model.clone()
            model.reshape(ov.PartialShape(list(shape)))
        compiled = compile_on_cpu(model, self.config)
        return compiled, compiled.create_infer_request(), list(compiled.outputs)

    @property
    def compiled(self) -> Any:
        """The compiled model of the built (first) shape: what describe() reads its settings from."""
        return self._compiled.first[0]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes compiled so far, the built one first."""
        return self._compiled.shapes

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, request, outputs = self._compiled.get(tuple(x.shape))
        res = request.infer(x.detach().float().contiguous().numpy(), share_inputs=True, share_outputs=False)
        return [torch.from_numpy(res[o]) for o in outputs]

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        return {"engine": f"openvino {ov.get_version().split('-')[0]}", "device": "CPU",
                "threads": self.compiled.get_property("INFERENCE_NUM_THREADS"),
                "performance_hint": str(self.compiled.get_property("PERFORMANCE_HINT")),
                "compute": ("int8 (NNCF post-training quantization), other layers " if self.dtype == "int8" else "")
                + precision_name(self.compiled)
                + (" (bf16 asked: no bf16 kernels on this CPU)" if self.dtype == "bf16"
                   and precision_name(self.compiled) != "bf16" else ""),
                "compiled_shapes": ["×".join(map(str, shape)) for shape in self.shapes]}

    def save(self, directory: str) -> list[str]:
        import openvino as ov

        # compress_to_fp16 would store fp32 weights as fp16: keep the model exactly as it was built.
        ov.save_model(self.ov_model, os.path.join(directory, "model.xml"), compress_to_fp16=False)
        return ["model.xml", "model.bin"]


def nncf_quantize(ov_model: Any, calibration: list[torch.Tensor], **options: Any) -> Any:
    """NNCF's post-training int8 quantization of an OpenVINO model, on every calibration batch.

    Preset PERFORMANCE (symmetric activations). Measured on an AMX Xeon, batch 16
    (benchmarks/peer_setups.md and its notes): the MIXED preset ran 0.97× on resnet50 and
    0.90× on ghostnet_100; ``fast_bias_correction=False`` ran at the same speed (651 against
    643 images/s on ghostnet_100); an ``ignored_scope`` by name pattern for the SE 1×1 convs
    matched no node of the converted graph, so keeping them in float was not measured.
    ``options`` go to ``nncf.quantize`` as they are.

    Its progress bars, INFO lines and torch's "no CUDA runtime" notice (NNCF
    imports torch's extension loader) are not the user's business: kept quiet.
    """
    import contextlib
    import io
    import logging

    refuse_openvino_telemetry()

    quiet = [logging.getLogger(n) for n in ("nncf", "torch.utils.cpp_extension")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import nncf

            batches = as_numpy_batches(calibration)
            options.setdefault("preset", nncf.QuantizationPreset.PERFORMANCE)
            return nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches), **options)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


class OpenVinoEngine(Engine):
    name = "openvino"
    packages = ("openvino",)
    file_format = "openvino"

    def packages_for(self, dtype: str | None) -> tuple[str, ...]:
        return ("nncf",) if dtype == "int8" else ()

    def version(self) -> str:
        import openvino as ov

        return ov.get_version()

    def support(self, dtype: str) -> Support:
        """As OpenVINO's CPU plugin reports it (``OPTIMIZATION_CAPABILITIES``). Without BF16 there it
        accepts a bf16 hint and runs f32 (its compiled model reads back f32): reported, never hidden."""
        caps = openvino_capabilities()
        # OpenVINO's list ignores ONEDNN_MAX_CPU_ISA, which its kernels honour: the capped flags decide too
        if dtype == "bf16" and ("BF16" not in caps or not cpu().first(*BF16_FLAGS)):
            return Support(AS_FP32, needs=names(*reversed(BF16_FLAGS)),
                           note="OpenVINO accepts a bf16 hint here and runs f32")
        if dtype == "int8" and "INT8" not in caps:
            return Support(EMULATED, needs="INT8 in OpenVINO's OPTIMIZATION_CAPABILITIES",
                           note="OpenVINO reports no int8 kernels for this CPU")
        flags = {"fp32": ("avx512f", "avx2"), "bf16": BF16_FLAGS, "int8": (*INT8_FLAGS, "avx2")}[dtype]
        flag = cpu().first(*flags)
        return Support(NATIVE, kernels=names(flag) if flag else "")

    def build(self, request: BuildRequest) -> OpenVinoRunner:
        refuse_openvino_telemetry()
        import openvino as ov

        # convert_model on the torch graph, not read_model on our ONNX export: the same fp32 speed, but
        # NNCF quantized the converted graph better (mobilenet_v2 int8, batch 16: 12.6 ms against 15.9 ms).
        chw = request.input_size[1:]
        example = torch.randn(request.input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing notices are not the user's business
            ov_model = ov.convert_model(copy.deepcopy(request.model).float().eval(), example_input=example,
                                        input=ov.PartialShape([-1, *chw]))
        if request.dtype == "int8":
            ov_model = nncf_quantize(ov_model, request.calibration)
        return OpenVinoRunner(ov_model, request.dtype, tuple(request.input_size))

    def load(self, directory: str, meta: dict[str, Any]) -> OpenVinoRunner:
        import openvino as ov

        files = [f for f in ("model.xml", "model.onnx") if os.path.isfile(os.path.join(directory, f))]
        if not files:
            raise EngineError(f"{directory} holds neither model.xml nor model.onnx")
        return OpenVinoRunner(ov.Core().read_model(os.path.join(directory, files[0])), meta["dtype"],
                              tuple(meta["input_size"]) if meta.get("input_size") else None)
