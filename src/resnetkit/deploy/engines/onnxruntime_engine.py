"""The ONNX Runtime engine: the model exported to ONNX (BN folded, dynamic batch), run by the CPU provider.

fp32 runs the exported graph with every graph optimisation on. int8 is static
QDQ quantization as ONNX Runtime's documentation recommends for CNNs on x86:
``quant_pre_process`` (shape inference and graph optimisation: without it the
QDQ model ran 5× slower here), then ``quantize_static`` with per-channel int8
weights and uint8 activations, calibrated on the given batches. ONNX Runtime
has no bf16 convolution kernels on the CPU, so bf16 is not offered.
The file keeps a free batch; each batch size met gets its own session with that size fixed
(``add_free_dimension_override_by_name``, ONNX Runtime's way to give a free dimension its value so
shapes fold and memory is planned once; at most 4 kept, :class:`PerShape`). On resnet50 and ghostnet_100
a static export ran at the same speed (0.99–1.01×, benchmarks/peer_setups.md), but on resnest50d,
whose split attention reshapes by the batch, the free batch ran 0.92× (batch 16, fp32: 27.9 against
30.1 images/s with the size fixed). ``reduce_range`` made no difference; s8 activations ran 3–4× slower
than u8.
Threads: the same count as torch's, with spinning left on (it shortens batch-1
latency on the depthwise nets, where each op is too short to wake sleeping threads).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..cpu import INT8_FLAGS, cpu, names
from .base import NATIVE, BuildRequest, Engine, PerShape, Runner, Support, as_numpy_batches, build_folder, thread_count


class OrtRunner(Runner):
    def __init__(self, path: str, dtype: str, input_size: tuple[int, ...] | None = None) -> None:
        import onnx

        with open(path, "rb") as f:  # kept in memory: the build's temporary folder is removed
            self.model_bytes = f.read()
        self.dtype = dtype
        graph_input = onnx.load_model_from_string(self.model_bytes).graph.input[0]
        self.input_name = graph_input.name
        dims = graph_input.type.tensor_type.shape.dim
        self.batch_dim = dims[0].dim_param if not dims[0].HasField("dim_value") else None
        self.dynamic_batch = self.batch_dim is not None
        chw = tuple(d.dim_value for d in dims[1:])
        first = (input_size[0] if input_size else 1) if self.dynamic_batch else dims[0].dim_value
        self._sessions = PerShape(self._session)
        self._sessions.get((first, *chw))

    def _session(self, shape: tuple[int, ...]) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = thread_count()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.batch_dim:
            opts.add_free_dimension_override_by_name(self.batch_dim, shape[0])
        return ort.InferenceSession(self.model_bytes, opts, providers=["CPUExecutionProvider"])

    @property
    def session(self) -> Any:
        """The session of the built (first) batch size."""
        return self._sessions.first

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes that have a session, the built one first."""
        return self._sessions.shapes

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        session = self._sessions.get(tuple(x.shape))
        outs = session.run(None, {self.input_name: x.detach().float().contiguous().numpy()})
        return [torch.from_numpy(o) for o in outs]

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"engine": f"onnxruntime {ort.__version__}", "provider": "CPUExecutionProvider",
                "threads": thread_count(), "graph_optimization": "ORT_ENABLE_ALL",
                "compute": "int8 (static QDQ: per-channel s8 weights, u8 activations)" if self.dtype == "int8"
                else "fp32", "compiled_shapes": ["×".join(map(str, shape)) for shape in self.shapes]}

    def save(self, directory: str) -> list[str]:
        with open(os.path.join(directory, "model.onnx"), "wb") as f:
            f.write(self.model_bytes)
        return ["model.onnx"]


def saturation_safe() -> bool:
    """Whether u8×s8 products need ``reduce_range`` here: without VNNI, MLAS multiplies with AVX2's
    VPMADDUBSW, whose 16-bit pair sums can saturate; ONNX Runtime's quantization guide names
    ``reduce_range`` (7-bit weights) as the remedy and says VNNI machines do not have the issue."""
    return cpu().first(*INT8_FLAGS, uncapped=True) is None


def quantize_qdq(path: str, calibration: list[torch.Tensor], workdir: str, input_name: str = "input") -> str:
    """Static QDQ int8 copy of the ONNX file at ``path`` (ONNX Runtime's recommended recipe for CNNs;
    7-bit weights where the CPU has no VNNI, see :func:`saturation_safe`)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: b} for b in as_numpy_batches(calibration)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepped = os.path.join(workdir, "model.prep.onnx")
    quant_pre_process(path, prepped)
    qpath = os.path.join(workdir, "model.int8.onnx")
    quantize_static(prepped, qpath, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=saturation_safe())
    return qpath


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    packages = ("onnxruntime", "onnx")
    dtypes = ("fp32", "int8")
    file_format = "onnx"

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def support(self, dtype: str) -> Support:
        """int8 runs on MLAS's u8×s8 kernels: VNNI where the CPU has it, else AVX2's VPMADDUBSW
        (MLAS reads the CPU itself: ONEDNN_MAX_CPU_ISA does not cap it)."""
        here = cpu()
        if dtype == "int8":
            if flag := here.first(*INT8_FLAGS, "avx2", uncapped=True):
                return Support(NATIVE, kernels=f"MLAS {names(flag)}")
        if dtype == "fp32":
            flag = here.first("avx512f", "avx2", uncapped=True)
            return Support(NATIVE, kernels=f"MLAS {names(flag)}" if flag else "MLAS")
        return super().support(dtype)

    def build(self, request: BuildRequest) -> OrtRunner:
        from ..onnx import export_onnx

        with build_folder(request, "ort") as workdir:
            path = export_onnx(request.model, os.path.join(workdir, "model.fp32.onnx"), request.input_size)
            if request.dtype == "int8":
                path = quantize_qdq(path, request.calibration, workdir)
            return OrtRunner(path, request.dtype, tuple(request.input_size))

    def load(self, directory: str, meta: dict[str, Any]) -> OrtRunner:
        return OrtRunner(os.path.join(directory, "model.onnx"), meta["dtype"],
                         tuple(meta["input_size"]) if meta.get("input_size") else None)
