"""``export`` / ``load_inference``: engine files plus a small JSON of what produced them.

A folder holds ``model.onnx`` (ONNX Runtime) or ``model.xml``/``model.bin``
(OpenVINO IR) and ``resnetkit.json``: backend, precision, input size, output
structure, the model's name, preprocessing and classes when known, what the
engine reported about itself, and the ``auto`` report, so that loading does
not time the candidates again. Files are written into a temporary folder
first and moved into place, the JSON last, so a crash never leaves a folder
that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..errors import ResnetkitValueError
from .autoselect import Report
from .engines import ENGINES, get_engine
from .engines.base import EngineError
from .runtime import InferenceModel

META_FILE = "resnetkit.json"
FORMATS = {"onnx": "onnxruntime", "openvino": "openvino"}


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if k == "feature_info":
            out[k] = [dict(level) for level in v]
        elif isinstance(v, (int, float, str, list, tuple)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _attributes(saved: dict[str, Any]) -> dict[str, Any]:
    from ..features import FeatureInfo

    out = dict(saved)
    if "feature_info" in out:
        out["feature_info"] = FeatureInfo(out["feature_info"])
    if "default_input_size" in out:
        out["default_input_size"] = tuple(out["default_input_size"])
    return out


def export(model: nn.Module, path: str | os.PathLike, format: str | None = None, dtype: Any = "fp32",
           input_size: Sequence[int] | None = None, calibration: Any = None, meta: dict[str, Any] | None = None,
           **options: Any) -> Path:
    """Write ``model`` for an engine into the folder ``path`` and return it.

    ``format``: "onnx" (run by ONNX Runtime; the default), "openvino" (IR), or "auto" (both
    engines are built, checked and timed as in ``optimize_for_inference(backend="auto")``
    and the faster is written, with the report). ``model`` may also be what
    ``optimize_for_inference`` returned (``format=None`` then keeps its engine,
    and its ``auto`` report is saved with it). ``meta`` adds facts to the JSON
    (``model`` name, ``input`` preprocessing, ``classes``); other keyword
    arguments go to ``optimize_for_inference`` (``budget_s``, ``input_spec``...).
    """
    from .optimize import optimize_for_inference

    out = Path(path)
    if out.suffix in (".onnx", ".xml", ".json"):
        raise ResnetkitValueError(f"export writes a folder (engine files + {META_FILE}); pass a folder path, not {out.name}")
    if isinstance(model, InferenceModel):
        built = model
        if format not in (None, ENGINES[built.backend].file_format):
            raise EngineError(f"this model runs on {built.backend}; it exports only as format="
                              f"{ENGINES[built.backend].file_format!r} (rebuild from the original model for {format!r})")
    else:
        format = format or "onnx"
        if format not in (*FORMATS, "auto"):
            raise ResnetkitValueError(f"format must be 'onnx', 'openvino' or 'auto', got {format!r}")
        backend: Any = list(FORMATS.values()) if format == "auto" else FORMATS[format]
        built = optimize_for_inference(model, dtype=dtype, backend=backend, input_size=input_size,
                                       calibration=calibration, **options)
    engine = get_engine(built.backend)
    if engine.file_format is None:
        raise EngineError(f"backend {built.backend!r} has no file format; export with format='onnx' or 'openvino'")
    out.mkdir(parents=True, exist_ok=True)
    info = {"resnetkit": _version(), "format": engine.file_format, "backend": built.backend, "dtype": built.dtype,
            "input_size": list(built.input_size), "structure": built.structure,
            "attributes": _jsonable(built._kept), "engine": built.runner.describe(),
            "report": built.report.to_dicts() if built.report is not None else None,
            **{**built.meta, **(meta or {})}}
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        files = built.runner.save(str(tmp))
        info["files"] = files
        (tmp / META_FILE).write_text(json.dumps(info, indent=2, default=str))
        for name in [*files, META_FILE]:  # the JSON last: a folder with it is complete
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``resnetkit.json`` of an exported folder."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder} holds no {META_FILE}: it was not written by resnetkit.export "
                                "(or `resnetkit export`)")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ResnetkitValueError(f"{meta_path} is not valid JSON ({e}); export the model again") from e


def load_inference(path: str | os.PathLike, backend: str | None = None) -> InferenceModel:
    """The callable model saved by :func:`export` (the folder, or a file in it), on its engine.

    ``backend`` overrides the engine recorded in the JSON where the files allow
    it (OpenVINO also runs an ``.onnx`` file). No timing is repeated: the saved
    choice and its report come back as they were.
    """
    meta = read_meta(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    name = backend or meta["backend"]
    engine = get_engine(name)
    engine.require(meta["dtype"] if meta["dtype"] != "int8" else None)
    runner = engine.load(str(folder), meta)
    report = Report.from_dicts(meta["report"]) if meta.get("report") else None
    extra = {k: v for k, v in meta.items() if k in ("model", "input", "classes", "num_classes", "data", "graph")}
    return InferenceModel(runner, name, meta["dtype"], meta["input_size"], meta["structure"],
                          _attributes(meta.get("attributes", {})), report=report, meta=extra)


def _version() -> str:
    from .._version import __version__

    return __version__

