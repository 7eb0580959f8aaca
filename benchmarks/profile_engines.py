"""Where each engine's time goes on the depthwise nets (MobileNetV2, GhostNet), op type by op type.

For each model and batch size, the same weights run through resnetkit's torch
path (``torch.profiler``), ONNX Runtime (its own per-node profiler) and
OpenVINO (``PERF_COUNT`` per-layer counters), and the time per call is split
by operator type, with how many operator calls a forward makes. The question
it answers: is the gap arithmetic (the convs themselves) or per-op overhead
(many small ops, each paying dispatch and a pass over memory)?

    python benchmarks/profile_engines.py                      # mobilenet_v2, ghostnet_100; batch 1 and 16
    python benchmarks/profile_engines.py --models mobilenet_v2 --batches 1 --iters 20
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict

import torch

import resnetkit as rk
from resnetkit.deploy.peers import cpu_line


def torch_profile(fast, x, iters: int) -> tuple[dict[str, float], int]:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fast(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            fast(x)
    by_op: dict[str, float] = defaultdict(float)
    calls = 0
    for ev in prof.key_averages():
        if ev.key.startswith(("aten::", "mkldnn::")) and ev.self_cpu_time_total > 0:
            by_op[ev.key.split("::")[1]] += ev.self_cpu_time_total / 1e3 / iters
            calls += ev.count
    return dict(by_op), calls // iters


def ort_profile(onnx_model: bytes, x, iters: int) -> tuple[dict[str, float], int]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(onnx_model, opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    for _ in range(3):
        sess.run(None, feed)
    for _ in range(iters):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    by_op: dict[str, float] = defaultdict(float)
    calls = 0
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            by_op[ev["args"]["op_name"]] += ev["dur"] / 1e3
            calls += 1
    runs = iters + 3
    return {k: v / runs for k, v in by_op.items()}, calls // runs


def ov_counters(ov_model, dtype: str, x, iters: int):
    """Compile ``ov_model`` as resnetkit's engine does, with OpenVINO's per-layer counters on; after 3 warm-up
    calls, ``iters`` timed calls. Returns (compiled model, wall ms of each call, each call's executed nodes as
    (node name, op type, kernel, ms))."""
    import time

    from resnetkit.deploy.engines.openvino_engine import compile_config, compile_on_cpu

    compiled = compile_on_cpu(ov_model, {**compile_config(dtype), "PERF_COUNT": True})
    req = compiled.create_infer_request()
    for _ in range(3):
        req.infer(x.numpy())
    walls, nodes = [], []
    for _ in range(iters):
        t = time.perf_counter()
        req.infer(x.numpy())
        walls.append((time.perf_counter() - t) * 1e3)
        nodes.append([(i.node_name, i.node_type, i.exec_type, i.real_time.total_seconds() * 1e3)
                      for i in req.get_profiling_info() if i.real_time.total_seconds() > 0])
    return compiled, walls, nodes


def ov_profile(ov_model, dtype: str, x, iters: int) -> tuple[dict[str, float], int]:
    """({op type (kernel): ms per call}, executed nodes per call) from OpenVINO's counters."""
    _, _, nodes = ov_counters(ov_model, dtype, x, iters)
    by_op: dict[str, float] = defaultdict(float)
    for call in nodes:
        for _, op, kernel, ms in call:
            by_op[f"{op} ({kernel})"] += ms / iters
    return dict(by_op), len(nodes[-1])


def static_ov_model(fast, shape: tuple[int, ...]):
    """An OpenVINO-engine model's graph with the input fixed to ``shape``, as its runner compiles it."""
    import openvino as ov

    model = fast.runner.ov_model.clone()
    model.reshape(ov.PartialShape(list(shape)))
    return model


def top_shares(by_op: dict[str, float], top: int) -> str:
    """The ``top`` largest op types with their share of the time: "Convolution (…) 43%, …"."""
    total = sum(by_op.values())
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:top])


def show(label: str, by_op: dict[str, float], calls: int, top: int = 6) -> None:
    total = sum(by_op.values())
    print(f"  {label:22} {total:7.2f} ms/call in {calls:4d} op calls ({1e3 * total / max(calls, 1):5.1f} µs each): "
          + top_shares(by_op, top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,ghostnet_100")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    print(cpu_line(), f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        model = rk.create_model(name).eval()
        for batch in map(int, args.batches.split(",")):
            size = (batch, 3, args.size, args.size)
            x = torch.randn(size)
            print(f"{name} batch {batch} ({args.size}×{args.size}), per call, operator self time:")
            for dtype in ("fp32", "bf16"):
                fast = rk.optimize_for_inference(model, dtype=dtype, input_size=size)
                show(f"resnetkit torch {dtype}", *torch_profile(fast, x, args.iters))
            ort_model = rk.optimize_for_inference(model, backend="onnxruntime", input_size=size)
            show("ONNX Runtime fp32", *ort_profile(ort_model.runner.model_bytes, x, args.iters))
            ov_model = rk.optimize_for_inference(model, backend="openvino", input_size=size)
            for dtype in ("fp32", "bf16"):
                show(f"OpenVINO {dtype}", *ov_profile(ov_model.runner.ov_model, dtype, x, args.iters))


if __name__ == "__main__":
    main()
