"""Fast inference: engines (torch, ONNX Runtime, OpenVINO), precisions, auto-selection, export."""
from .artifacts import export, load_inference
from .engines import ENGINES, EngineError, MissingEngineError, register_engine
from .fold import count_batchnorms, fold_batchnorm
from .onnx import export_onnx
from .optimize import optimize_for_inference
from .quantize import quantize_int8
from .runtime import InferenceModel

__all__ = ["fold_batchnorm", "count_batchnorms", "optimize_for_inference", "InferenceModel", "quantize_int8",
           "export_onnx", "export", "load_inference", "ENGINES", "register_engine", "EngineError",
           "MissingEngineError"]
