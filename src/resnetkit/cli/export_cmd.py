"""``resnetkit export SOURCE``: a registered model or a trained run written for ONNX Runtime or OpenVINO.

Writes the engine files and ``resnetkit.json`` (:func:`resnetkit.export`) into
``--out``, then loads the folder back as a user would (:func:`resnetkit.load_inference`),
times it and, for a trained run, evaluates it against the fp32 eager model on the
run's test split; the report is printed and saved as ``report.txt`` next to the files.

Also here: how ``resnetkit eval``/``predict`` get their model with ``--backend``
or from an exported folder (:func:`inference_model`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from ..deploy.runtime import size_text
from . import CLIError

BACKENDS = ("torch", "onnxruntime", "openvino", "auto")
DTYPES = ("fp32", "bf16", "int8", "auto")
_CALIB_HELP = "mnist5k or a data folder (as for --data); its train split, preprocessed as the model's inputs"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model or a trained run for ONNX Runtime or OpenVINO, with a report",
                       description="Builds SOURCE for an inference engine and writes the engine files and "
                       "resnetkit.json into --out (load them with resnetkit.load_inference, or evaluate them with "
                       "`resnetkit eval --checkpoint DIR`). SOURCE is a registered model name (random weights) or "
                       "a run's best.safetensors / last.pt / run folder written by `resnetkit train`: its input "
                       "size, preprocessing, classes and training data then come from the run. The report "
                       "(also DIR/report.txt) gives the engine, latency and, for a trained run, test accuracy "
                       "of the exported model next to the fp32 eager model.")
    p.add_argument("source", metavar="SOURCE", help="e.g. resnet50, or runs/mnist/best.safetensors")
    p.add_argument("--format", choices=["onnx", "openvino", "auto"], default="onnx",
                   help="onnx (run by ONNX Runtime), openvino (IR), or auto: build both, time them, keep the "
                   "faster (default onnx)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="fp32 (default), bf16 (openvino only), int8 (needs calibration data) or auto: the fastest "
                   "precision whose top-1 agrees with fp32")
    p.add_argument("--calib", default=None, metavar="DATA",
                   help=f"calibration data for int8/auto: {_CALIB_HELP} (default: a trained run's own data)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if needed)")
    p.add_argument("--input", default=None, metavar="NxCxHxW",
                   help="what the engine is built for, e.g. 1x3x224x224 (default: the model's own size, or the "
                   "run's; batch 1). Any batch runs later; C x H x W is fixed")
    p.add_argument("--budget", type=float, default=30.0, metavar="SECONDS",
                   help="timing budget of --format/--dtype auto (default 30)")
    p.set_defaults(func=run)


def _guard(fn):  # noqa: ANN001, ANN202
    """Data a user can fix (a missing folder, a missing package of the train extra): one line."""
    def run(args: argparse.Namespace) -> int:
        from ..train import MissingExtraError

        try:
            return fn(args)
        except MissingExtraError as e:
            raise CLIError(str(e)) from e
    return run


def exported_folder(path: str) -> Path | None:
    """The folder written by ``resnetkit export`` that ``path`` is (or is a file of), else None."""
    from ..deploy.artifacts import META_FILE

    p = Path(path)
    if p.is_dir():
        return p if (p / META_FILE).is_file() else None
    # a file of the folder (model.onnx, model.xml ...), never a run's checkpoint exported next to it
    return p.parent if p.suffix in (".onnx", ".xml", ".bin", ".json") and (p.parent / META_FILE).is_file() else None


def load_source(source: str) -> tuple[Any, dict[str, Any] | None, str]:
    """(model, training metadata or None, what it is) for a model name or a checkpoint path."""
    from ..registry import create_model, list_models
    from ..train import load_trained

    path = Path(source)
    if path.exists():
        if exported_folder(source):
            raise CLIError(f"{source} is already an exported folder; export from the run's best.safetensors "
                           "(or evaluate this one with `resnetkit eval --checkpoint`)")
        model, meta = load_trained(path)
        return model, meta, f"trained run {path}"
    if source not in list_models() and (path.suffix or "/" in source):
        raise FileNotFoundError(f"no such checkpoint or registered model: {source!r}")
    return create_model(source), None, "random weights"


def _input_size(args: argparse.Namespace, model: Any, spec: Any) -> tuple[int, int, int, int]:
    from ..deploy.bench import parse_input_size
    from ..inspect.summary import default_input_size

    given = parse_input_size(args.input) if args.input else None
    if spec is None:
        return given or default_input_size(model)
    chw = (spec.in_chans, *spec.image_size)
    if given and tuple(given[1:]) != chw:
        raise CLIError(f"--input {args.input}: this run's model takes {size_text(chw)} inputs (its preprocessing); "
                       f"only the batch may differ, e.g. --input {'x'.join(map(str, (given[0], *chw)))}")
    return (given[0] if given else 1, *chw)


def _calibration(given: str | None, default: str | None, dtype: str, auto: bool, this: str) -> str | None:
    """The calibration data a build uses: ``--calib``, else ``default`` (a run's own data); None when the
    build needs none. ``auto``: --format/--backend auto, which also checks candidates on real images;
    ``this`` describes the build for the error."""
    uses = dtype in ("int8", "auto") or auto
    if given and not uses:
        raise CLIError(f"--calib is used by --dtype int8/auto or --format/--backend auto only ({this})")
    calib = (given or default) if uses else None
    if dtype == "int8" and not calib:
        raise CLIError("--dtype int8 needs calibration data: pass --calib DATA (mnist5k or a data folder), "
                       "a few hundred images like the model's real inputs")
    return calib


def _latency(model: Any, size: tuple[int, ...], max_calls: int = 30, max_s: float = 2.0) -> tuple[float, int]:
    """Median seconds per call on random inputs of ``size`` (the timer of ``backend="auto"``: about
    ``max_s`` seconds, at most ``max_calls`` calls), and the number of timed calls."""
    import torch

    from ..deploy.autoselect import time_blocks

    x = torch.randn(size, generator=torch.Generator().manual_seed(0))
    times = time_blocks({"exported": model}, x, budget_s=max_s, max_calls=max_calls, cooldown_s=0)["exported"]
    return statistics.median(times), len(times)


def _engine_line(m: Any) -> str:
    info = m.describe()
    details = [str(info[k]) for k in ("engine", "device", "provider", "performance_hint") if info.get(k)]
    if info.get("threads"):
        details.append(f"{info['threads']} thread{'s' if info['threads'] != 1 else ''}")
    if info.get("compute"):
        details.append(f"compute {info['compute']}")
    return f"{m.backend} {m.dtype} ({', '.join(details)})"


def _accuracy_lines(model: Any, exported: Any, meta: dict[str, Any], built_batch: int) -> list[str]:
    from ..train import DataError, InputSpec, MissingExtraError, evaluate, load_dataset

    spec = InputSpec.from_dict(meta["input"])
    data = meta.get("data") or "mnist5k"
    try:
        dataset = load_dataset(data, "test", image_size=spec.image_size)
    except (DataError, MissingExtraError) as e:
        return [f"accuracy:    not measured: the run's data cannot be read here ({e})"]
    batch = 256 if exported.runner.dynamic_batch else built_batch
    if len(dataset) % batch and not exported.runner.dynamic_batch:
        return [f"accuracy:    not measured: the engine runs batch {batch} only and the test split has "
                f"{len(dataset)} images"]
    ref = evaluate(model, dataset, spec, "cpu", batch_size=batch)
    got = evaluate(exported, dataset, spec, "cpu", batch_size=batch)
    n = int(ref.confusion.sum())
    diff = 100 * (got.accuracy - ref.accuracy)
    return [f"accuracy:    {Path(str(data)).name} test split, {n} images, same preprocessing (the run's InputSpec)",
            f"  fp32 eager model   {100 * ref.accuracy:6.2f}%",
            f"  exported model     {100 * got.accuracy:6.2f}%  ({exported.backend} {exported.dtype})",
            f"  difference         {diff:+6.2f} points"]


@_guard
def run(args: argparse.Namespace) -> int:
    import torch

    from ..deploy import export, load_inference
    from ..deploy.artifacts import META_FILE, read_meta
    from ..train import InputSpec

    if args.budget <= 0:
        raise CLIError(f"--budget must be > 0 seconds, got {args.budget:g}")
    model, meta, kind = load_source(args.source)
    spec = InputSpec.from_dict(meta["input"]) if meta else None
    size = _input_size(args, model, spec)
    calib = _calibration(args.calib, meta.get("data") if meta else None, args.dtype,
                         args.format == "auto", f"this export is {args.format} {args.dtype}")
    name = meta["model"] if meta else args.source
    export_meta: dict[str, Any] = {"model": name}
    if meta:
        export_meta.update({k: meta[k] for k in ("input", "classes", "num_classes", "data") if k in meta})
    if calib:
        export_meta["calibration"] = str(calib)
    out = Path(args.out)
    print(f"building {name} (--format {args.format}, --dtype {args.dtype}) for {size_text(size)} inputs"
          + (f", calibrated on {calib}" if calib else "") + " ...", flush=True)
    export(model, out, format=args.format, dtype=args.dtype, input_size=size, calibration=calib, meta=export_meta,
           budget_s=args.budget, input_spec=spec)
    loaded = load_inference(out)   # what a user gets back: the report describes these files

    files = [f for f in read_meta(out).get("files", []) if f != META_FILE]
    batch, chw = size[0], size[1:]
    shape_note = f"any batch, {size_text(chw)} only" if loaded.runner.dynamic_batch else f"batch {batch} only"
    lines = [f"resnetkit export {args.source}",
             f"source:      {name}, " + (f"{kind} ({len(meta['classes'])} classes, trained on {meta.get('data')})"
                                         if meta else "a registered model with RANDOM WEIGHTS (no checkpoint): the "
                                         "files compute correctly but its predictions mean nothing"),
             f"engine:      {_engine_line(loaded)}",
             f"input:       built for {size_text(size)} ({shape_note})"
             + (", preprocessing = the run's InputSpec" if spec else ""),
             f"calibration: {calib}, train split, preprocessed "
             + ("with the run's InputSpec" if spec else "with the data's own mean/std") if calib
             else f"calibration: none (not needed for {args.format} {args.dtype})"]
    if loaded.report is not None:
        lines += ["auto report (candidates built, checked against fp32 eager, timed):",
                  *("  " + row for row in str(loaded.report).splitlines())]
    lines.append(f"files:       {out}/: {', '.join(files)} + {META_FILE}")
    per_call, calls = _latency(loaded, size)
    lines.append(f"latency:     {1e3 * per_call:.3f} ms per call at batch {batch} (median of {calls} calls of the "
                 f"folder loaded back, {torch.get_num_threads()} torch threads), {batch / per_call:,.0f} images/s")
    if meta:
        lines += _accuracy_lines(model, loaded, meta, batch)
    else:
        lines.append("accuracy:    not measured (random weights; export a trained run to compare accuracy)")
    report = "\n".join(lines) + "\n"
    (out / "report.txt").write_text(report)
    sys.stdout.write(report)
    print(f"report saved to {out / 'report.txt'}")
    return 0


# ------------------------------------------------------------------ eval / predict with --backend


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend``/``--dtype``/``--calib`` of ``resnetkit eval`` and ``predict``."""
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="run through resnetkit.optimize_for_inference on this engine (CPU); default: the eager "
                   "PyTorch model. auto: the fastest accurate one, with a report")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="precision with --backend (default fp32); int8 is calibrated on --calib")
    p.add_argument("--calib", default=None, metavar="DATA",
                   help=f"calibration data for --dtype int8/auto: {_CALIB_HELP} (default: the data the "
                   "checkpoint was trained on)")


def _cpu_only(args: argparse.Namespace, what: str) -> Any:
    import torch

    if str(args.device).split(":")[0] not in ("auto", "cpu"):
        raise CLIError(f"{what} runs on the CPU, not --device {args.device}: use --device cpu (or evaluate the "
                       "checkpoint without --backend for the eager model on that device)")
    return torch.device("cpu")


def _from_export(args: argparse.Namespace, folder: Path) -> tuple[Any, dict[str, Any], Any, str]:
    from ..deploy import load_inference
    from ..deploy.artifacts import read_meta

    saved = read_meta(folder)
    if args.backend in ("torch", "auto"):
        raise CLIError(f"{folder} is an exported {saved['format']} folder: it runs on its own engine "
                       "(--backend onnxruntime or openvino, or leave --backend out)")
    if args.backend == "onnxruntime" and "model.onnx" not in saved.get("files", []):
        raise CLIError(f"{folder} holds an OpenVINO IR (model.xml), which only --backend openvino runs")
    if args.dtype not in (None, saved["dtype"]):
        raise CLIError(f"{folder} was exported as {saved['dtype']}; --dtype applies when building from a "
                       f"checkpoint (export again with --dtype {args.dtype})")
    if args.calib:
        raise CLIError(f"{folder} is already built; --calib applies when building from a checkpoint")
    device = _cpu_only(args, f"the exported folder {folder}")
    model = load_inference(folder, backend=args.backend)
    meta = dict(model.meta)
    if not meta.get("input") or not meta.get("classes"):
        raise CLIError(f"{folder} was exported from a model without training metadata (no preprocessing or "
                       "classes); eval/predict need an export of a trained run (resnetkit export best.safetensors)")
    meta.setdefault("model", "exported model")
    line = (f"running the exported folder {folder}: {meta['model']} on {model.backend} {model.dtype}, built for "
            f"{size_text(model.input_size)}")
    return model, meta, device, line


def inference_model(args: argparse.Namespace, batch: int) -> tuple[Any, dict[str, Any], Any, str | None]:
    """(model, metadata, device, what runs) for ``eval``/``predict``.

    Without ``--backend`` the checkpoint's eager model, as before (the line is None).
    With it, the model built by ``optimize_for_inference`` for ``batch`` images of the
    run's input size and preprocessing. A folder written by ``resnetkit export`` is
    loaded as it is, with the preprocessing and classes saved in its JSON.
    """
    from ..deploy import optimize_for_inference
    from ..train import InputSpec, load_trained
    from ..train.distributed import resolve_device

    folder = exported_folder(args.checkpoint)
    if folder is not None:
        return _from_export(args, folder)
    if args.backend is None:
        if args.dtype or args.calib:
            raise CLIError("--dtype and --calib choose how --backend builds the model: add --backend "
                           "(torch, onnxruntime, openvino or auto)")
        device = resolve_device(args.device)
        model, meta = load_trained(args.checkpoint, device)
        return model, meta, device, None
    device = _cpu_only(args, f"--backend {args.backend}")
    model, meta = load_trained(args.checkpoint, device)
    spec = InputSpec.from_dict(meta["input"])
    dtype = args.dtype or "fp32"
    calib = _calibration(args.calib, meta.get("data"), dtype, args.backend == "auto",
                         f"this is --backend {args.backend} --dtype {dtype}")
    size = (batch, spec.in_chans, *spec.image_size)
    fast = optimize_for_inference(model, dtype=dtype, backend=args.backend, input_size=size, calibration=calib,
                                  input_spec=spec)
    line = (f"running {meta['model']} on {fast.backend} {fast.dtype}, built for {size_text(size)}"
            + (f", calibrated on {calib}" if calib and (dtype == "auto" or fast.dtype == "int8") else ""))
    if fast.report is not None:
        line += f" (chosen by --backend {args.backend} --dtype {dtype}):\n" + str(fast.report)
    return fast, meta, device, line
