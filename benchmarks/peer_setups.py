"""A/B of each peer engine's setup: its default against the one the bench uses, in one process per model.

So that anyone can see the peers in ``results.md`` were not weakened: for
resnet50 and ghostnet_100 (timm's) at batch 16, fp32 and int8, each engine's
plain setup is timed next to the documented improvements the bench adopts,
in rotating blocks (``resnetkit.deploy.bench.time_contenders``). Variants:

* OpenVINO: ``convert_model(example_input=x)`` (input ``[?,3,?,?]``) against
  the input fixed to the batch's shape (``static=True``, the bench's peer).
* resnetkit's own engine (``optimize_for_inference(backend=..., input_size=(16, 3, 224, 224))``) beside each.
* OpenVINO int8: NNCF's PERFORMANCE preset (the bench's) against MIXED.
* torch.compile: inductor freezing alone against freezing + ``max_autotune`` (the bench's).
* ONNX Runtime: the export with a free batch against the static export (the
  peer), and int8 QDQ with u8 activations/s8 per-channel weights (ORT's CNN
  recipe, the peer) against the same with ``reduce_range`` (ORT's advice for
  AVX2/AVX-512 CPUs without VNNI) and against s8 activations.

Writes ``benchmarks/peer_setups.md``; ``python benchmarks/inference.py`` copies it into results.md.

    python benchmarks/peer_setups.py                      # both models, fp32 and int8 (about 10 min)
    python benchmarks/peer_setups.py --models ghostnet_100 --dtypes int8
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import tempfile
import warnings

import torch

import resnetkit as rk
from resnetkit.deploy.bench import model_pair, time_contenders
from resnetkit.deploy.engines.base import thread_count
from resnetkit.deploy.peers import (cpu_line, export_reference_onnx, openvino_peer, refuse_openvino_telemetry,
                                   torch_compile_peer)

HERE = os.path.dirname(os.path.abspath(__file__))


def _ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = thread_count()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda inp: sess.run(None, {name: inp.numpy()})


def _ort_int8(path: str, calib: list[torch.Tensor], workdir: str, tag: str, **options) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": b.numpy()} for b in calib])

        def get_next(self):
            return next(self.batches, None)

    prepped = os.path.join(workdir, f"{tag}.prep.onnx")
    quant_pre_process(path, prepped)
    out = os.path.join(workdir, f"{tag}.int8.onnx")
    quantize_static(prepped, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=options.pop("activation_type", QuantType.QUInt8),
                    weight_type=QuantType.QInt8, **options)
    return out


def ort_variants(model, dtype: str, x: torch.Tensor, calib: list[torch.Tensor], workdir: str) -> dict:
    """label -> runner: ONNX Runtime's setups for one model and precision."""
    from onnxruntime.quantization import QuantType

    os.makedirs(workdir, exist_ok=True)
    static = export_reference_onnx(model, x, os.path.join(workdir, "static.onnx"))
    dynamic = os.path.join(workdir, "dynamic.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model).eval(), (x,), dynamic, input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    if dtype == "fp32":
        return {"ORT free batch": _ort_session(dynamic), "ORT static shape (bench)": _ort_session(static)}
    return {"ORT int8 u8/s8 per-channel, free batch": _ort_session(_ort_int8(dynamic, calib, workdir, "dyn")),
            "ORT int8 u8/s8 per-channel (bench)": _ort_session(_ort_int8(static, calib, workdir, "u8")),
            "ORT int8 u8/s8 reduce_range": _ort_session(_ort_int8(static, calib, workdir, "rr", reduce_range=True)),
            "ORT int8 s8/s8": _ort_session(_ort_int8(static, calib, workdir, "s8",
                                                     activation_type=QuantType.QInt8))}


def ov_variants(model, dtype: str, x: torch.Tensor, calib: list[torch.Tensor]) -> dict:
    out = {"OpenVINO [?,3,?,?] (example_input only)": openvino_peer(model, dtype, x, calib, static=False)[0],
           "OpenVINO static shape (bench)": openvino_peer(model, dtype, x, calib, static=True)[0]}
    if dtype == "int8":  # NNCF's presets: PERFORMANCE (symmetric activations, the bench's) against MIXED
        import nncf

        out["OpenVINO static, NNCF MIXED preset"] = openvino_peer(
            model, dtype, x, calib, nncf_options={"preset": nncf.QuantizationPreset.MIXED})[0]
    return out


def compile_variants(model, dtype: str, x: torch.Tensor) -> dict:
    """torch.compile with inductor freezing alone against freezing + max_autotune (the bench's)."""
    return {"torch.compile freezing": torch_compile_peer(model, dtype, x, max_autotune=False),
            "torch.compile freezing + max_autotune (bench)": torch_compile_peer(model, dtype, x)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "ghostnet_100"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "int8"], choices=["fp32", "bf16", "int8"])
    p.add_argument("--append", action="store_true", help="add the rows to --out instead of rewriting it")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--engines", nargs="+", default=["openvino", "onnxruntime", "torch"],
                   choices=["openvino", "onnxruntime", "torch"])
    p.add_argument("--out", default=os.path.join(HERE, "peer_setups.md"))
    args = p.parse_args(argv)
    refuse_openvino_telemetry()
    workdir = tempfile.mkdtemp(prefix="resnetkit-ab-")
    lines = ["## Peer setups: each engine's default against the bench's (A/B)", "",
             f"`python benchmarks/peer_setups.py {' '.join(argv or sys.argv[1:])}`".replace(" `", "`") +
             f" on {datetime.date.today()}; {cpu_line()}; {torch.get_num_threads()} threads. "
             f"Batch {args.batch}, 224×224, images/s (median of {args.iters} calls in rotating blocks, one "
             "process per model); int8 calibrated on 4 random batches (speed only).", "",
             "| model | precision | setup | img/s | × engine default |", "| --- | --- | --- | --- | --- |"]
    for name in args.models:
        ref, ref_label, ours, _ = model_pair(name)
        ref_label = ref_label.replace(" eager fp32", f" {name}")
        x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        calib = [torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(4)]
        for dtype in args.dtypes:
            print(f"== {name} {dtype}", flush=True)
            groups = {"openvino": lambda: ov_variants(ref, dtype, x, calib),
                      "onnxruntime": lambda: ort_variants(ref, dtype, x, calib, os.path.join(workdir, f"{name}-{dtype}")),
                      "torch": lambda: compile_variants(ref, dtype, x)}
            for engine in args.engines:
                if (engine, dtype) in (("torch", "int8"), ("onnxruntime", "bf16")):
                    continue   # torch.compile's int8 (PT2E) lives in torchao; ONNX Runtime has no bf16: no peer
                runners = groups[engine]()
                if engine != "torch":
                    runners[f"resnetkit {engine}"] = rk.optimize_for_inference(
                        ours, dtype=dtype, backend=engine, input_size=tuple(x.shape),
                        calibration=calib if dtype == "int8" else None)
                timings = time_contenders(runners, x, iters=args.iters)
                base = next(iter(timings.values())).images_per_s
                for label, t in timings.items():
                    print(f"   {label:44s}{t.images_per_s:8.1f} img/s  {t.images_per_s / base:.2f}x", flush=True)
                    lines.append(f"| {ref_label} | {dtype} | {label} | {t.images_per_s:.1f} | "
                                 f"{t.images_per_s / base:.2f}× |")
                del runners, timings
    if args.append and os.path.exists(args.out):
        lines = [f"| | | (rows below: `python benchmarks/peer_setups.py {' '.join(argv or sys.argv[1:])}`, "
                 f"{datetime.date.today()}) | | |"] + [row for row in lines if row.startswith("| ") and "img/s" not in row
                                                    and "---" not in row]
    with open(args.out, "a" if args.append and os.path.exists(args.out) else "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
