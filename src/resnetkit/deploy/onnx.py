"""ONNX export with the TorchScript-based exporter (opset 17).

The legacy exporter needs nothing beyond ``onnx``; the dynamo exporter would
also need ``onnxscript``. BatchNorm is folded first (our exact folding, see
:mod:`.fold`), so the file holds plain Conv nodes with biases; the batch axis
is dynamic.
"""
from __future__ import annotations

import copy
import os
import warnings
from typing import Sequence

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .fold import fold_batchnorm


def check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    """``input_size`` as (N, C, H, W) ints, or a ValueError saying the form."""
    size = tuple(int(s) for s in input_size)
    if len(size) != 4 or min(size) < 1:
        raise ResnetkitValueError(f"input_size must be (N, C, H, W) with positive sizes, e.g. (1, 3, 224, 224); got {input_size}")
    return size


def export_onnx(model: nn.Module, path: str | os.PathLike, input_size: Sequence[int] = (1, 3, 224, 224),
                opset: int = 17, fold_bn: bool = True, dynamic_batch: bool = True) -> str:
    """Write ``model`` (eval mode, float32) to an ONNX file at ``path`` and return the path.

    ``input_size`` is the (N, C, H, W) of the example input used for tracing;
    with ``dynamic_batch`` the batch size is free at run time. Outputs are
    named ``logits`` for classifiers and ``feat0``, ``feat1``, ... for
    ``features_only`` backbones (one per level). ONNX Runtime reproduces the
    PyTorch outputs within 1e-4. The original model is not modified.
    """
    size = check_input_size(input_size)
    model = copy.deepcopy(model).float().eval()
    example = torch.randn(size)
    if fold_bn:
        model = fold_batchnorm(model, example_input=example, inplace=True)
    with torch.no_grad():
        out = model(example)
    n_out = len(out) if isinstance(out, (list, tuple)) else 1
    outputs = ["logits"] if n_out == 1 and isinstance(out, torch.Tensor) else [f"feat{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in ["input", *outputs]} if dynamic_batch else None
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice is not actionable for users
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path, input_names=["input"], output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    return path
