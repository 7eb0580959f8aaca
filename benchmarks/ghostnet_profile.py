"""GhostNet on OpenVINO, layer by layer: the peer's graph (timm's) against the graphs resnetkit runs (issue 21).

For each precision and batch size, the same weights (timm's ghostnet_100 with
trained-like BN statistics, loaded into resnetkit's) are converted three ways and
compiled as the engines do (static shape, LATENCY hint, torch's threads; int8 =
NNCF on the same calibration batches):

- ``timm``: timm's model, what the "OpenVINO own" peer runs (before);
- ``resnetkit``: resnetkit's model (no-op slices dropped), what resnetkit's OpenVINO engine runs;
- ``ghost-pairs``: the concat-free rewrite (deploy/ghost_pairs.py), auto's other candidate.

OpenVINO's per-layer counters (``PERF_COUNT``) are summed by stage (each executed
node goes to the first ``blocks.S`` its original layers name; ghost-pairs' flat block
index is mapped back to timm's stages) and by op type, and set against the wall
time of the same calls. Writes ``ghostnet_profile.md``.

    python benchmarks/ghostnet_profile.py                  # batch 1 and 16, fp32 bf16 int8 (~6 min)
    python benchmarks/ghostnet_profile.py --batches 16 --dtypes int8
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import warnings
from collections import defaultdict

import torch

import resnetkit as rk
from resnetkit.deploy.bench import give_trained_like_bn_stats
from resnetkit.deploy.engines.openvino_engine import OpenVinoEngine, nncf_quantize, refuse_openvino_telemetry
from resnetkit.deploy.ghost_pairs import ghost_pairs
from resnetkit.deploy.peers import cpu_line

from profile_engines import ov_counters  # benchmarks/, the script's own folder

HERE = os.path.dirname(os.path.abspath(__file__))


def graphs(name: str) -> tuple[dict[str, torch.nn.Module], list[int]]:
    """The three graphs of the same weights, and the number of blocks in each timm stage."""
    import timm

    theirs = give_trained_like_bn_stats(timm.create_model(name).eval())
    ours = rk.create_model(name).eval()
    ours.load_state_dict(theirs.state_dict())
    stages = [len(stage) for stage in ours.blocks[:-1]]
    return {"timm": theirs, "resnetkit": ours, "ghost-pairs": ghost_pairs(ours)}, stages


def stage_of(names: str, stages: list[int]) -> str:
    """The stage a runtime node belongs to, from its original layers' names."""
    m = re.search(r"blocks\.(\d+)\.(\d+)", names)
    if m:
        return f"stage {m.group(1)}"
    m = re.search(r"blocks\.(\d+)\b", names)
    if m:  # ghost-pairs numbers its blocks flat
        k, s = int(m.group(1)), 0
        while k >= stages[s]:
            k, s = k - stages[s], s + 1
        return f"stage {s}"
    if any(w in names for w in ("stem", "bn1", "act1")) or names.startswith("x"):
        return "stem"
    return "last conv, head" if any(w in names for w in ("blocks", "head", "classifier", "pool", "last")) \
        else "unnamed (quantize, reorder)"


def layer_name(names: str) -> str:
    """The module path of a runtime node's first original layer ("blocks.1.0.ghost1"), or its own name."""
    m = re.search(r"__module\.([\w.]+)/", names)
    return m.group(1) if m else names.split(",")[0][:40]


def profile(ov_model, dtype: str, x: torch.Tensor, stages: list[int], calls: int):
    """(wall ms per call, {stage: ms}, {op type (kernel): ms}, executed nodes, {(layer, op type): ms}) from
    OpenVINO's counters."""
    compiled, walls, nodes = ov_counters(ov_model, dtype, x, calls)
    names = {op.get_friendly_name(): str(op.get_rt_info()["originalLayersNames"].astype(str))
             for op in compiled.get_runtime_model().get_ordered_ops()}
    by_stage, by_op, by_layer = defaultdict(float), defaultdict(float), defaultdict(float)
    for call in nodes:
        for node, op, kernel, ms in call:
            original = names.get(node, node)
            by_stage[stage_of(original, stages)] += ms / calls
            by_op[f"{op} ({kernel})"] += ms / calls
            by_layer[(layer_name(original), op)] += ms / calls
    return statistics.median(walls), dict(by_stage), dict(by_op), len(nodes[-1]), dict(by_layer)


def convert(model: torch.nn.Module, shape: tuple[int, ...], dtype: str, calibration: list[torch.Tensor]):
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(copy.deepcopy(model), example_input=torch.randn(shape),
                                    input=ov.PartialShape([-1, *shape[1:]]))
    if dtype == "int8":  # calibrated with a free batch, then fixed to the shape, as resnetkit's engine does
        ov_model = nncf_quantize(ov_model, calibration)
    ov_model.reshape(ov.PartialShape(list(shape)))
    return ov_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ghostnet_100")
    ap.add_argument("--batches", default="16,1")
    ap.add_argument("--dtypes", default="fp32,bf16,int8")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(HERE, "ghostnet_profile.md"))
    args = ap.parse_args()
    refuse_openvino_telemetry()
    models, stages = graphs(args.model)
    calibration = [torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    lines = [f"## {args.model} on OpenVINO, stage by stage (`python benchmarks/ghostnet_profile.py`)", "",
             f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads. ms per call from "
             f"OpenVINO's per-layer counters (median wall time of {args.calls} calls in the header). "
             "timm = the graph the OpenVINO peer runs; resnetkit = resnetkit's model; ghost-pairs = its "
             "concat-free rewrite. One process, one after the other: compare within a table.", ""]
    for batch in map(int, args.batches.split(",")):
        for dtype in args.dtypes.split(","):
            if dtype == "bf16" and not OpenVinoEngine().support("bf16").native:
                lines += [f"### batch {batch}, bf16: skipped (no native bf16 here)", ""]
                continue
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            got = {k: profile(convert(m, tuple(x.shape), dtype, calibration), dtype, x, stages, args.calls)
                   for k, m in models.items()}
            print(batch, dtype, {k: round(v[0], 2) for k, v in got.items()}, flush=True)
            lines += table(batch, dtype, got)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def conv_ms(by_op: dict[str, float]) -> float:
    return sum(v for k, v in by_op.items() if k.startswith(("Convolution", "GroupConvolution", "FullyConnected")))


def table(batch: int, dtype: str, got: dict) -> list[str]:
    keys = list(got)
    head = " | ".join(f"{k} ms" for k in keys)
    out = [f"### batch {batch}, {dtype}: wall " + ", ".join(f"{k} {got[k][0]:.2f} ms" for k in keys)
           + f" (ghost-pairs {got['timm'][0] / got['ghost-pairs'][0]:.2f}×, resnetkit "
           f"{got['timm'][0] / got['resnetkit'][0]:.2f}× timm's); executed nodes "
           + ", ".join(f"{k} {got[k][3]}" for k in keys), "",
           "Convolution kernels (1×1, depthwise, stem, FullyConnected) of the counters' total: "
           + ", ".join(f"{k} {conv_ms(got[k][2]):.2f} of {sum(got[k][2].values()):.2f} ms" for k in keys)
           + f". With every other kernel free and OpenVINO's convolutions as they are, timm's graph would run at "
           f"most {sum(got['timm'][2].values()) / conv_ms(got['timm'][2]):.2f}× faster.", "",
           f"| stage | {head} |", "| --- |" + " --- |" * len(keys)]
    order = ["stem", *sorted({s for v in got.values() for s in v[1] if s.startswith("stage")},
                             key=lambda s: int(s.split()[1])), "last conv, head", "unnamed (quantize, reorder)"]
    for s in order:
        if any(s in v[1] for v in got.values()):
            out.append(f"| {s} | " + " | ".join(f"{got[k][1].get(s, 0):.2f}" for k in keys) + " |")
    out += ["", f"| op type (kernel) | {head} |", "| --- |" + " --- |" * len(keys)]
    ops = sorted({o for v in got.values() for o in v[2]}, key=lambda o: -max(v[2].get(o, 0) for v in got.values()))
    for o in ops[:10]:
        out.append(f"| {o} | " + " | ".join(f"{got[k][2].get(o, 0):.2f}" for k in keys) + " |")
    out += ["", "The slowest layers of each graph (module path of the node's first original layer, op type, ms):", "",
            "| rank | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    tops = {k: sorted(got[k][4].items(), key=lambda kv: -kv[1])[:8] for k in keys}
    for i in range(8):
        out.append(f"| {i + 1} | " + " | ".join(f"{tops[k][i][0][0]} {tops[k][i][0][1]} {tops[k][i][1]:.2f}"
                                                 if i < len(tops[k]) else "" for k in keys) + " |")
    return out + [""]


if __name__ == "__main__":
    main()
