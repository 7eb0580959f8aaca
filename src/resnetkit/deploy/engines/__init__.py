"""Inference engines behind ``optimize_for_inference``: one module each, one small interface (:mod:`.base`).

Adding an engine is adding a file with an :class:`~.base.Engine` subclass and
one line in ``ENGINES`` (or ``register_engine`` at run time).
"""
from __future__ import annotations

from ...errors import ResnetkitValueError
from .base import DTYPES, BuildRequest, Engine, EngineError, MissingEngineError, Runner
from .onnxruntime_engine import OnnxRuntimeEngine
from .openvino_engine import OpenVinoEngine
from .torch_engine import TorchEngine

# In the order ``backend="auto"`` lists them; torch first: it needs no extra package.
ENGINES: dict[str, Engine] = {e.name: e for e in (TorchEngine(), OnnxRuntimeEngine(), OpenVinoEngine())}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise EngineError(f"unknown backend {name!r}; choose one of {', '.join(ENGINES)} or 'auto'")
    return ENGINES[name]


def register_engine(engine: Engine, override: bool = False) -> None:
    """Add an engine (an :class:`Engine` instance with a ``name``); refuses to replace one unless ``override``."""
    if engine.name in ENGINES and not override:
        raise ResnetkitValueError(f"backend {engine.name!r} already exists; pass override=True to replace it")
    ENGINES[engine.name] = engine


def unregister_engine(name: str) -> None:
    ENGINES.pop(name, None)


__all__ = ["ENGINES", "DTYPES", "Engine", "Runner", "BuildRequest", "EngineError", "MissingEngineError",
           "get_engine", "register_engine", "unregister_engine"]
