"""``optimize_for_inference``: the fastest correct form of a model on this CPU, through one call.

One engine (``backend="torch"|"onnxruntime"|"openvino"``) and one precision
(``dtype="fp32"|"bf16"|"int8"``) build directly. ``backend="auto"`` and/or
``dtype="auto"`` build every installed candidate, refuse those that deviate
from the float32 model (:mod:`.autoselect`), time the rest and return the
fastest, with ``.report`` listing them all.
"""
from __future__ import annotations

import functools
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .autoselect import TOLERANCE, Candidate, choose, relative_error, top1_agreement
from .calibration import DEFAULT_IMAGES, calibration_batches
from .engines import ENGINES, BuildRequest, get_engine
from .engines.base import DTYPES, EngineError, flat_outputs
from .ghost_pairs import GHOST_PAIRS, ghost_pairs
from .ghost_pairs import applies as ghost_applies
from .onnx import check_input_size
from .runtime import InferenceModel, kept_attributes, output_structure

_DTYPE_NAMES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "bf16": "bf16", "bfloat16": "bf16",
                "int8": "int8", "auto": "auto"}


def dtype_name(dtype: torch.dtype | str) -> str:
    """"fp32"/"bf16"/"int8"/"auto" from a name or ``torch.float32``/``torch.bfloat16``."""
    if isinstance(dtype, torch.dtype):
        names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.qint8: "int8"}
        if dtype not in names:
            raise ResnetkitValueError(f"dtype {dtype} is not supported; use torch.float32 or torch.bfloat16 "
                                      "(or 'fp32', 'bf16', 'int8', 'auto')")
        return names[dtype]
    if str(dtype).lower() not in _DTYPE_NAMES:
        raise ResnetkitValueError(f"dtype {dtype!r} is not supported; use 'fp32', 'bf16', 'int8' or 'auto' "
                                  "(torch.float32 / torch.bfloat16 work too)")
    return _DTYPE_NAMES[str(dtype).lower()]


def _model_in_chans(model: nn.Module) -> int:
    size = getattr(model, "default_input_size", None)
    if size:
        return int(size[0])
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ResnetkitValueError("cannot tell the model's input channels; pass input_size=(N, C, H, W)")
    return first.in_channels


def _input_size(model: nn.Module, input_size: Sequence[int] | None, example_input: Any,
                calib: list[torch.Tensor] | None) -> tuple[int, int, int, int]:
    if input_size is not None:
        size = tuple(input_size)
        return check_input_size((1, *size) if len(size) == 3 else size)  # type: ignore[return-value]
    if isinstance(example_input, torch.Tensor) and example_input.ndim == 4:
        return tuple(example_input.shape)  # type: ignore[return-value]
    if calib:
        return (1, *calib[0].shape[1:])  # type: ignore[return-value]
    default = getattr(model, "default_input_size", None) or (_model_in_chans(model), 224, 224)
    return (1, *default)  # type: ignore[return-value]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def _candidates(backend: str | Sequence[str], dtype: str, compile: bool, ghost: bool = False) -> list[Candidate]:
    """Every engine × precision asked for; torch.compile'd torch with ``compile``; for a GhostNet
    classifier (``ghost``) also its concat-free form on the exported engines (:mod:`.ghost_pairs`)."""
    if isinstance(backend, str):
        backends = list(ENGINES) if backend == "auto" else [get_engine(backend).name]
    else:
        backends = [get_engine(b).name for b in backend]
    dtypes = list(DTYPES) if dtype == "auto" else [dtype]
    out = []
    for b in backends:
        for d in dtypes:
            out.append(Candidate(b, d))
            if b == "torch" and compile and d != "int8" and len(backends) > 1:
                out.append(Candidate(b, d, "compiled"))
            if ghost and get_engine(b).file_format and len(backends) > 1:  # engines that export the graph
                out.append(Candidate(b, d, GHOST_PAIRS))
    return out


def _build(c: Candidate, model: nn.Module, size: tuple[int, ...], calib: list[torch.Tensor] | None,
           options: dict[str, Any], outputs: list[str], workdir: str | None) -> None:
    engine = get_engine(c.backend)
    opts = {**options, "compile": c.variant == "compiled"}
    t = time.perf_counter()
    c.runner = engine.build(BuildRequest(model, c.dtype, size, calib, outputs, workdir, opts))
    c.build_s = time.perf_counter() - t


def _screen(c: Candidate, calib: list[torch.Tensor] | None) -> bool:
    """Mark candidates that cannot be built here; True if it can."""
    engine = get_engine(c.backend)
    if c.dtype not in engine.dtypes:
        c.status, c.note = "not offered", f"{c.backend} has no {c.dtype} CPU kernels"
    elif not engine.available(c.dtype):
        c.status, c.note = "not installed", f"needs {', '.join(engine.missing(c.dtype))}"
    elif not (support := engine.support(c.dtype)).native:  # never spend build or timing budget on it
        c.status = "not on this CPU"
        c.note = f"{support.level}: needs {support.needs}" if support.needs else support.note
    elif c.dtype == "int8" and calib is None:
        c.status, c.note = "skipped", "int8 needs calibration data"
    return c.status == "pending"


def optimize_for_inference(model: nn.Module, dtype: torch.dtype | str = "fp32",
                           backend: str | Sequence[str] = "torch",
                           input_size: Sequence[int] | None = None, calibration: Any = None,
                           channels_last: bool = True, compile: bool = False,
                           example_input: torch.Tensor | None = None, *, budget_s: float = 30.0,
                           accuracy_budget: float = 0.5, max_calibration_images: int = DEFAULT_IMAGES,
                           input_spec: Any = None, workdir: str | None = None) -> InferenceModel:
    """An eval-only, engine-backed copy of ``model`` that runs fast; the original is not modified.

    ``backend``: "torch" (default; needs nothing more: BN folded, channels_last,
    prepacked oneDNN convs, optional ``compile`` with inductor freezing),
    "onnxruntime", "openvino", "auto" or a list of them to choose from. ``dtype``: "fp32", "bf16", "int8" (FX
    on torch, static QDQ on ONNX Runtime, NNCF on OpenVINO; needs
    ``calibration``), "auto", or ``torch.float32``/``torch.bfloat16``.
    ``input_size`` (N, C, H, W) is what the engines build for (default: the
    model's own size, batch 1); ONNX Runtime and OpenVINO accept any batch
    size, but only that C×H×W. ``calibration``: a tensor, an iterable of
    batches or (inputs, targets), or a data spec such as ``"mnist5k"`` (read
    and preprocessed as ``resnetkit train`` does; ``input_spec`` overrides the
    preprocessing); at most ``max_calibration_images`` are used.

    ``backend="auto"`` builds every installed candidate for that shape, refuses
    any whose outputs deviate from the float32 model beyond its precision's
    tolerance (fp32 1e-3, bf16 5e-2, int8 0.25 relative error), times the rest
    for about ``budget_s`` seconds and returns the fastest. ``dtype="auto"``
    considers fp32, bf16 and (with calibration) int8, and keeps only those
    whose top-1 agrees with the float32 model on the calibration data to
    within ``accuracy_budget`` points. The result's ``.report`` lists every
    candidate with its latency and deviation. With ``compile=True`` and
    ``backend="auto"`` torch.compile'd candidates join (each compiles for tens of seconds).
    """
    dtype = dtype_name(dtype)
    auto = not isinstance(backend, str) or backend == "auto" or dtype == "auto"
    if isinstance(backend, str) and backend != "auto":
        get_engine(backend).require(None if dtype == "auto" else dtype)
        if dtype != "auto":
            get_engine(backend).check_dtype(dtype)
    if dtype == "int8" and calibration is None:
        raise ResnetkitValueError("dtype='int8' needs calibration data: pass calibration= a few hundred real inputs "
                                  "(a tensor, a DataLoader, or a data spec such as 'mnist5k')")
    chw = tuple(input_size)[-3:] if input_size is not None else None
    calib = None
    if calibration is not None:
        calib = calibration_batches(calibration, chw, input_spec, max_calibration_images,
                                    in_chans=_model_in_chans(model))
    size = _input_size(model, input_size, example_input, calib)

    with torch.no_grad(), _eval_mode(model):
        x = example_input if example_input is not None else torch.randn(size, generator=torch.Generator().manual_seed(0))
        ref_out = model(x.float())
        structure = output_structure(ref_out)
        outputs = ["logits"] if structure == "tensor" else [f"feat{i}" for i in range(len(flat_outputs(ref_out)))]
        options = {"channels_last": channels_last, "example_input": example_input}
        if not auto:
            name = get_engine(backend).name
            c = Candidate(name, dtype, "compiled" if compile and name == "torch" else "")
            _build(c, model, size, calib, options, outputs, workdir)
            return InferenceModel(c.runner, c.backend, c.dtype, size, structure, kept_attributes(model))

        # Candidates only ever see the built shape: oneDNN's packed weights and compiled graphs are
        # specialised for it, and a second shape would make torch.compile recompile with a dynamic batch.
        n = size[0]
        pool = torch.cat(calib) if calib else None
        check = pool[:n] if pool is not None and len(pool) >= n else x
        ref_check = model(check)
        classifier = structure == "tensor" and ref_out.ndim == 2
        agree_on = list(pool[:len(pool) // n * n].split(n)) if pool is not None and len(pool) >= n else None
        ref_top1 = (torch.cat([model(b).argmax(1) for b in agree_on])
                    if agree_on and classifier and dtype == "auto" else None)
        ghost = ghost_applies(model)
        paired = functools.cache(lambda: ghost_pairs(model))  # one rewrite serves every engine's candidate
        candidates = _candidates(backend, dtype, compile, ghost)
        buildable = [c for c in candidates if _screen(c, calib)]
        if not buildable and any(c.status == "not on this CPU" for c in candidates):
            # bf16 (or int8) has no kernels on this CPU: the fastest fp32 form is the best auto can give
            warnings.warn(f"optimize_for_inference: no engine runs {dtype} natively on this CPU; choosing among "
                          "fp32 candidates (`resnetkit doctor` shows what runs here)", stacklevel=2)
            fallback = _candidates(backend, "fp32", compile, ghost)
            for c in fallback:
                c.note = f"instead of {dtype}"
            candidates += fallback
            buildable = [c for c in fallback if _screen(c, calib)]
        for c in buildable:
            try:
                _build(c, paired() if c.variant == GHOST_PAIRS else model, size, calib, options, outputs, workdir)
                c.deviation = relative_error(ref_check, c.runner(check))
            except Exception as e:  # noqa: BLE001 - one engine failing must not stop the others
                first = next(iter(str(e).splitlines()), "")[:120]  # a bare ``assert`` has no message at all
                c.status, c.runner = "failed", None
                c.note = f"{type(e).__name__}: {first}" if first else type(e).__name__
                warnings.warn(f"optimize_for_inference: {c.label} could not be built: {c.note}")
                continue
            if not c.deviation <= TOLERANCE[c.dtype]:
                c.status, c.note = "inaccurate", f"deviation above {TOLERANCE[c.dtype]:g}"
                continue
            if ref_top1 is not None:
                c.agreement = top1_agreement(ref_top1, c.runner, agree_on)
                if 100 * (1 - c.agreement) > accuracy_budget:
                    c.status, c.note = "inaccurate", f"top-1 agreement below {100 - accuracy_budget:g}%"
                    continue
            c.status = "ok"
        x_timed = torch.randn(size, generator=torch.Generator().manual_seed(1))
        report = choose(candidates, x_timed, budget_s)
    best = report.chosen
    for c in report:  # keep only the winner's engine alive
        if c is not best:
            c.runner = None
    if best is None:
        raise EngineError("no candidate was accurate enough to choose:\n" + str(report))
    model_out = InferenceModel(best.runner, best.backend, best.dtype, size, structure, kept_attributes(model),
                               report=report, meta={"graph": best.variant} if best.variant == GHOST_PAIRS else None)
    best.runner = None
    return model_out
