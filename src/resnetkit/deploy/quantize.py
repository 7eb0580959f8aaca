"""Static int8 quantization for CPUs (x86: oneDNN / FBGEMM kernels, VNNI and AMX-INT8).

Why FX graph mode with the ``x86`` backend: torch 2.14 no longer ships the
PT2E ``X86InductorQuantizer`` (it moved to ``torchao``), while FX graph-mode
quantization still works and runs the int8 convs through oneDNN; on the
machines of PERF_NOTES it is 2-3× faster than ONNX Runtime's static QDQ model.
We fold BatchNorm ourselves first (exactly, see :mod:`.fold`), so FX only
fuses conv+ReLU and inserts observers. The classifier (a Linear) stays float32.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Iterable

import torch
from torch import nn

from .fold import fold_batchnorm


def _has_vnni() -> bool:
    """True when the CPU has 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def qconfig_mapping(backend: str, reduce_range: bool):
    """The backend's default mapping, with 8-bit (not 7-bit) activations when ``reduce_range`` is off,
    and every ``nn.Linear`` (the classifier: <1% of the work) left in float32."""
    from torch.ao.quantization import QConfig, get_default_qconfig, get_default_qconfig_mapping

    default = get_default_qconfig(backend)
    qconfig = QConfig(activation=default.activation.with_args(reduce_range=reduce_range), weight=default.weight)
    return get_default_qconfig_mapping(backend).set_global(qconfig).set_object_type(nn.Linear, None)


def _batches(calibration_data: Any) -> list[torch.Tensor]:
    """Calibration input as a list of float batches: a tensor (split in chunks of 32) or an
    iterable of tensors or of (inputs, targets) pairs, such as a DataLoader."""
    if isinstance(calibration_data, torch.Tensor):
        if calibration_data.ndim != 4:
            raise ValueError(f"calibration_data must be a N×C×H×W batch, got shape {tuple(calibration_data.shape)}")
        return list(calibration_data.split(32))
    out = []
    for item in calibration_data:
        x = item[0] if isinstance(item, (list, tuple)) else item
        if not isinstance(x, torch.Tensor):
            raise ValueError("calibration_data must yield tensors or (inputs, targets) pairs, "
                             f"got {type(x).__name__}")
        out.append(x)
    if not out:
        raise ValueError("calibration_data is empty: pass a few representative input batches "
                         "(e.g. 100-500 training images)")
    return out


class QuantizedModule(nn.Module):
    """Float32 in, float32 out around an FX-converted int8 graph (quantize → int8 ops → dequantize)."""

    def __init__(self, graph: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.model = graph
        self.channels_last = channels_last
        self.eval()

    def forward(self, x: torch.Tensor) -> Any:
        if x.dtype != torch.float32:
            x = x.float()
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.model(x)


@torch.no_grad()
def quantize_int8(model: nn.Module, calibration_data: torch.Tensor | Iterable[Any], backend: str = "x86",
                  channels_last: bool = True, reduce_range: bool | None = None) -> QuantizedModule:
    """A static int8 copy of ``model``, calibrated on ``calibration_data``.

    Weights are quantized per output channel (symmetric int8), activations per
    tensor (uint8) with ranges observed while running ``calibration_data``
    (a N×C×H×W tensor or an iterable of batches / (x, y) pairs: use a few
    hundred real training images, not random noise). The result takes and
    returns float32 tensors; accuracy on a trained model typically moves by
    well under one point. ``backend`` is "x86" (default, oneDNN/FBGEMM) or
    "qnnpack" (ARM). ``reduce_range`` (7-bit activations, which avoids int16
    overflow on CPUs without VNNI) defaults to on only for such CPUs: on a
    trained MNIST ResNet-18 it cost 0.5-1.2 points of top-1 that full 8-bit
    activations plus a float32 classifier kept. The original model is not modified.
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantization backend {backend!r} is not available here; "
                         f"choose one of {torch.backends.quantized.supported_engines}")
    batches = _batches(calibration_data)
    torch.backends.quantized.engine = backend
    example = batches[0][:2]
    folded = fold_batchnorm(copy.deepcopy(model), example_input=example, inplace=True)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice is not actionable here
        warnings.simplefilter("ignore")
        if reduce_range is None:
            reduce_range = backend == "x86" and not _has_vnni()
        prepared = prepare_fx(folded, qconfig_mapping(backend, reduce_range), (example,))
        for x in batches:
            prepared(x.float().contiguous(memory_format=torch.channels_last) if channels_last else x.float())
        converted = convert_fx(prepared)
    return QuantizedModule(converted, channels_last)
