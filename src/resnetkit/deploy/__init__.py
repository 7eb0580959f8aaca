"""Fast inference: BatchNorm folding, bf16/channels_last/compile, int8 quantization, ONNX export."""
from .fold import count_batchnorms, fold_batchnorm
from .onnx import export_onnx
from .optimize import InferenceModule, optimize_for_inference
from .quantize import quantize_int8

__all__ = ["fold_batchnorm", "count_batchnorms", "optimize_for_inference", "InferenceModule",
           "quantize_int8", "export_onnx"]
