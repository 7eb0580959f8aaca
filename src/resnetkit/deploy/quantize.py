"""Static int8 quantization for CPUs (x86: oneDNN / FBGEMM kernels, VNNI and AMX-INT8).

Why FX graph mode with the ``x86`` backend: torch 2.14 no longer ships the
PT2E ``X86InductorQuantizer`` (it moved to ``torchao``), while FX graph-mode
quantization still works and runs the int8 convs through oneDNN. It is the int8
that needs nothing beyond PyTorch, not the fastest: in benchmarks/results.md (a loaded 2-core
EPYC) ONNX Runtime's static QDQ model runs resnet50 about 2× and mobilenet_v2 at
batch 1 about 20× faster, which is why ``backend="auto"`` times every engine.
We fold BatchNorm ourselves first (exactly, see :mod:`.fold`), so FX only
fuses conv+ReLU and inserts observers. The classifier (a Linear) stays float32.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .fold import fold_batchnorm


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
            raise ResnetkitValueError(f"calibration_data must be a N×C×H×W batch, got shape {tuple(calibration_data.shape)}")
        return list(calibration_data.split(32))
    out = []
    for item in calibration_data:
        x = item[0] if isinstance(item, (list, tuple)) else item
        if not isinstance(x, torch.Tensor):
            raise ResnetkitValueError("calibration_data must yield tensors or (inputs, targets) pairs, "
                                      f"got {type(x).__name__}")
        out.append(x)
    if not out:
        raise ResnetkitValueError("calibration_data is empty: pass a few representative input batches "
                                  "(e.g. 100-500 training images)")
    return out


# A quantized cat whose inputs have their own scales (Res2Net's slices, GhostNet's halves) requantizes them to
# the output's: exact to int8 rounding (the model's error is measured after conversion), so torch's warning at
# every such cat, once per graph line, is not something a user can act on. Filtered around each run of the
# graph: a filter set once at build time was gone when the build ran inside the caller's catch_warnings().
@contextlib.contextmanager
def _quiet_cat_scales() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All inputs of this cat operator must share the same quantization")
        yield


class QuantizedModule(nn.Module):
    """Float32 in, float32 out around an FX-converted int8 graph (quantize → int8 ops → dequantize)."""

    def __init__(self, graph: nn.Module, channels_last: bool, backend: str = "x86") -> None:
        super().__init__()
        self.model = graph
        self.channels_last = channels_last
        self.backend = backend
        self.eval()

    def forward(self, x: torch.Tensor) -> Any:
        if x.dtype != torch.float32:
            x = x.float()
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.backend
        try:
            with torch.no_grad(), _quiet_cat_scales():
                return self.model(x)
        finally:
            torch.backends.quantized.engine = previous


def _convert(folded: nn.Module, batches: list[torch.Tensor], backend: str, reduce_range: bool,
             channels_last: bool) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice is not actionable here
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(folded), qconfig_mapping(backend, reduce_range), (batches[0][:2],))
        for x in batches:
            prepared(_layout(x, channels_last))
        return convert_fx(prepared)


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.float().contiguous(memory_format=torch.channels_last) if channels_last else x.float()


def _error(reference: list, graph: nn.Module, batches: list[torch.Tensor], channels_last: bool) -> float:
    """Relative error of ``graph``'s outputs against the float model's over the calibration batches."""
    from .autoselect import relative_error

    with _quiet_cat_scales():
        return max(relative_error(ref, graph(_layout(x, channels_last))) for ref, x in zip(reference, batches))


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
    "qnnpack" (ARM). ``reduce_range`` (7-bit activations) avoids int16
    saturation in the u8×s8 kernels that do not use VNNI; full 8-bit ranges are
    more precise where nothing saturates. Which wins depends on the model and
    the CPU (trained on mnist5k: an MNIST ResNet-18 lost 0.5-1.2 points to 7 bits,
    mobilenet_v2 on an AVX512-VNNI EPYC 1.2 points to 8 bits), so by default
    (``None``) both are built and the one whose outputs are closer to the float
    model's on the calibration data is kept. The original model is not modified.
    """
    if backend not in torch.backends.quantized.supported_engines:
        raise ResnetkitValueError(f"quantization backend {backend!r} is not available here; "
                                  f"choose one of {torch.backends.quantized.supported_engines}")
    batches = _batches(calibration_data)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        folded = fold_batchnorm(copy.deepcopy(model), example_input=batches[0][:2], inplace=True)
        if channels_last:
            folded = folded.to(memory_format=torch.channels_last)
        if reduce_range is not None:
            return QuantizedModule(_convert(folded, batches, backend, reduce_range, channels_last), channels_last, backend)
        reference = [folded(_layout(x, channels_last)) for x in batches]
        graphs = [_convert(folded, batches, backend, r, channels_last) for r in (False, True)]
        best = min(graphs, key=lambda g: _error(reference, g, batches, channels_last))
        return QuantizedModule(best, channels_last, backend)
    finally:
        # The engine is process-wide state: quantized ops read it when they run. Our graphs are built
        # for it; put back what the user had and set ours per call (QuantizedModule.forward).
        torch.backends.quantized.engine = previous
