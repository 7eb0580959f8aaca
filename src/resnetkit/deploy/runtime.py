"""``InferenceModel``: what ``optimize_for_inference`` and ``load_inference`` return, whatever the engine.

Called like the model: a float32 N×C×H×W torch tensor in, float32 torch
tensor(s) out in the model's own structure (a tensor for a classifier, a list
for a ``features_only`` backbone). ``.backend``/``.dtype`` say what runs,
``.report`` (``backend="auto"``/``dtype="auto"``) what else was tried.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ResnetkitTypeError, ResnetkitValueError
from .engines.base import EngineError, Runner

# Attributes of the source model that stay readable on the inference model.
KEPT_ATTRIBUTES = ("feature_info", "num_classes", "default_input_size", "num_features")


def size_text(s: Sequence[int]) -> str:
    """(3, 224, 224) → "3×224×224"."""
    return "×".join(map(str, s))


class InferenceModel(nn.Module):
    """Eval-only, engine-backed stand-in for a model. See the module docstring."""

    def __init__(self, runner: Runner, backend: str, dtype: str, input_size: Sequence[int] | None,
                 structure: str, attributes: dict[str, Any] | None = None, report: Any = None,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.runner = runner
        if isinstance(runner.__dict__.get("module"), nn.Module):
            self.module = runner.module  # registered: state_dict(), modules() and copies see the torch graph
        self.backend, self.dtype = backend, dtype
        self.input_size = tuple(input_size) if input_size else None
        self.structure = structure
        self.report = report
        if report is not None:
            report.shapes = lambda: self.compiled_shapes
        self.meta = dict(meta or {})
        self._kept = dict(attributes or {})
        super().train(False)

    # -------------------------------------------------------------- calling
    def _check_input(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ResnetkitTypeError(f"expected a float32 torch tensor N×C×H×W, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ResnetkitTypeError(f"expected a float tensor (normalised images), got {x.dtype}")
        if x.ndim != 4:
            raise ResnetkitValueError(f"expected an N×C×H×W batch, got shape {tuple(x.shape)}")
        if self.input_size is not None and self.backend != "torch":
            n, *chw = self.input_size
            if tuple(x.shape[1:]) != tuple(chw):
                raise EngineError(f"this {self.backend} model was built for {size_text(chw)} inputs and got "
                                  f"{size_text(x.shape[1:])}; rebuild it with input_size=(N, {', '.join(map(str, x.shape[1:]))})")
            if not self.runner.dynamic_batch and x.shape[0] != n:
                raise EngineError(f"this {self.backend} model was built for batch {n} and got {x.shape[0]}; "
                                  f"rebuild it with input_size=({x.shape[0]}, {', '.join(map(str, chw))})")
        return x if x.dtype == torch.float32 else x.float()

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes the engine has compiled (OpenVINO: one static model each, the built one first;
        engines with one model for every batch: the built shape)."""
        shapes = getattr(self.runner, "shapes", None)
        return list(shapes) if shapes is not None else ([self.input_size] if self.input_size else [])

    def forward(self, x: torch.Tensor) -> Any:
        outs = self.runner(self._check_input(x))
        if self.structure == "tensor":
            return outs[0]
        return tuple(outs) if self.structure == "tuple" else list(outs)

    # -------------------------------------------------------------- the rest
    def train(self, mode: bool = True) -> "InferenceModel":
        if mode:
            raise RuntimeError("an optimize_for_inference model is eval-only (BatchNorms folded, weights "
                               "compiled for an engine); train the original model instead")
        return super().train(False)

    def describe(self) -> dict[str, Any]:
        """Backend, precision, input size and what the engine reports about itself."""
        graph = {"graph": self.meta["graph"]} if "graph" in self.meta else {}   # a rewritten graph (ghost-pairs)
        return {"backend": self.backend, "dtype": self.dtype,
                "input_size": list(self.input_size) if self.input_size else None, **graph, **self.runner.describe()}

    def extra_repr(self) -> str:
        size = f", input_size={size_text(self.input_size)}" if self.input_size else ""
        return f"backend={self.backend!r}, dtype={self.dtype!r}{size}"

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            kept = self.__dict__.get("_kept", {})
            if name in kept:
                return kept[name]
            raise


def output_structure(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return "tensor"
    if isinstance(out, tuple):
        return "tuple"
    if isinstance(out, list):
        return "list"
    raise ResnetkitTypeError(f"optimize_for_inference supports models returning a tensor or a list/tuple of tensors, "
                             f"not {type(out).__name__}")


def kept_attributes(model: nn.Module) -> dict[str, Any]:
    return {k: getattr(model, k) for k in KEPT_ATTRIBUTES if hasattr(model, k)}
