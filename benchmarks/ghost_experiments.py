"""Issue 21's experiments: where OpenVINO spends GhostNet's time, and graph rewrites that might remove it.

GhostNet's ghost module is ``cat([P, dw(P)])`` with P a 1×1 conv's output. On
OpenVINO the concat runs as a separate reference kernel (``Concat (ref_…)`` in
the per-layer counters): a whole extra pass over every ghost output. Each
variant below changes the graph so that the concat could go away, with random
weights (trained-like BN statistics): speed does not depend on the values, and
a variant only becomes a rewrite of the real model if it wins here.

- ``orig``: resnetkit's ghostnet_100 as it is (timm's graph, without timm's no-op slice).
- ``timm-slice``: the same with timm's ``out[:, :out_chs]`` after every concat, a no-op on ghostnet_100
  that stays in the converted graph (resnetkit dropped it: this row measures what that bought).
- ``dw-x2``: the cheap depthwise conv made a depthwise conv with channel multiplier 2 (identity kernel +
  cheap kernel, interleaved channels), so one conv writes both halves and no concat is left; the
  interleave could be folded into the neighbours' weights.
- ``pad16``: every ghost's half-width rounded up to a multiple of 16 (zero channels, exact if the
  neighbours' weights are zero there), so that a blocked-layout concat may be done in place.
- ``dup-early`` / ``dup-all``: the primary conv's weights stacked twice, so it writes ``[P, P]``, then one
  ordinary depthwise conv over both copies (an identity kernel on the first, the cheap kernel on the
  second) writes ``[P, dw(P)]``: no concat, for twice the primary MACs. Early = only the ghosts reading
  ≤ 16 channels (where the concats are largest and the primary conv cheapest); all = every ghost. Exact.
- ``pairs``: resnetkit's ``ghost-pairs`` rewrite (deploy/ghost_pairs.py, exact): every tensor carried as
  its two halves, dense convs split by input channel and summed, channel-wise layers per half.

Each variant goes through resnetkit's OpenVINO engine (static shape, LATENCY hint), timed interleaved in
shuffled rounds with a pause between contenders; then OpenVINO's per-layer counters by op type.

    python benchmarks/ghost_experiments.py            # batch 16, fp32 and int8 -> ghost_experiments.md
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import statistics
import sys
import time
from types import SimpleNamespace
from unittest import mock

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import resnetkit as rk
from resnetkit.blocks.conv import ConvBNAct
from resnetkit.blocks import ghost
from resnetkit.blocks.ghost import GhostModule
from resnetkit.deploy.bench import give_trained_like_bn_stats
from resnetkit.deploy.ghost_pairs import ghost_pairs
from resnetkit.deploy.peers import cpu_line

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from profile_engines import ov_profile, static_ov_model, top_shares  # noqa: E402


class GhostDwX2(nn.Module):
    """Timing stand-in: the primary conv, then one depthwise conv with channel multiplier 2, no concat."""

    def __init__(self, g: GhostModule) -> None:
        super().__init__()
        self.primary_conv = g.primary_conv
        c = g.primary_conv.out_channels
        act = g.cheap_operation[2] if len(g.cheap_operation) > 2 else None
        self.dw = ConvBNAct(c, 2 * c, 3, groups=c, act_layer=(lambda: copy.deepcopy(act)) if act else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.primary_conv(x))


class GhostDup(nn.Module):
    """Exact stand-in (BN folded): primary conv with stacked weights → ``[P, P]``, one depthwise conv
    (identity | cheap kernel) → ``[P, dw(P)]``; ReLU is idempotent, so the first half stays P."""

    def __init__(self, g: GhostModule) -> None:
        super().__init__()
        p = fuse_conv_bn_eval(g.primary_conv[0], g.primary_conv[1])
        c = fuse_conv_bn_eval(g.cheap_operation[0], g.cheap_operation[1])
        n = p.out_channels
        self.primary = nn.Conv2d(p.in_channels, 2 * n, p.kernel_size, p.stride, p.padding)
        self.dw = nn.Conv2d(2 * n, 2 * n, 3, 1, 1, groups=2 * n)
        identity = torch.zeros(n, 1, 3, 3)
        identity[:, 0, 1, 1] = 1
        with torch.no_grad():
            self.primary.weight.copy_(torch.cat([p.weight, p.weight]))
            self.primary.bias.copy_(torch.cat([p.bias, p.bias]))
            self.dw.weight.copy_(torch.cat([identity, c.weight]))
            self.dw.bias.copy_(torch.cat([torch.zeros(n), c.bias]))
        self.act = nn.ReLU() if len(g.primary_conv) > 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dw(self.act(self.primary(x))))


class TimmSlice(nn.Module):
    """A ghost module followed by timm's slice to ``out_chs`` (a no-op here, kept in the graph)."""

    def __init__(self, g: GhostModule) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(x)[:, : self.g.out_chs]


def _swap(module: nn.Module, make=GhostDwX2, keep=lambda g: True) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, GhostModule):
            if keep(child):
                setattr(module, name, make(child))
        else:
            _swap(child, make, keep)
    return module


def variants() -> dict[str, nn.Module]:
    orig = rk.create_model("ghostnet_100").eval()
    pad_to_16 = SimpleNamespace(ceil=lambda v: 16 * math.ceil(math.ceil(v) / 16))  # the ghost's half-width
    with mock.patch.object(ghost, "math", pad_to_16):
        pad16 = rk.create_model("ghostnet_100").eval()
    out = {k: give_trained_like_bn_stats(m.eval())
           for k, m in {"orig": orig, "dw-x2": _swap(copy.deepcopy(orig)), "pad16": pad16}.items()}
    out["timm-slice"] = _swap(copy.deepcopy(out["orig"]), TimmSlice).eval()
    out["dup-early"] = _swap(copy.deepcopy(out["orig"]), GhostDup,
                             lambda g: g.primary_conv[0].in_channels <= 16).eval()
    out["dup-all"] = _swap(copy.deepcopy(out["orig"]), GhostDup).eval()
    out["pairs"] = ghost_pairs(out["orig"])   # exact: tests/test_ghost_pairs.py
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        for k in ("timm-slice", "dup-early", "dup-all", "pairs"):   # the exact ones really are
            torch.testing.assert_close(out[k](x), out["orig"](x), rtol=1e-4, atol=1e-4)
    return out


def time_interleaved(runs: dict, x: torch.Tensor, rounds: int, calls: int) -> dict[str, float]:
    for r in runs.values():
        for _ in range(3):
            r(x)
    times: dict[str, list[float]] = {k: [] for k in runs}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(runs.items())
        rng.shuffle(order)
        for k, r in order:
            time.sleep(0.05)   # the previous contender's worker threads stop spinning
            r(x)
            t = time.perf_counter()
            for _ in range(calls):
                r(x)
            times[k].append((time.perf_counter() - t) / calls * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "int8"])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "ghost_experiments.md"))
    args = p.parse_args()
    from resnetkit.deploy.engines.openvino_engine import OpenVinoEngine

    if "bf16" in args.dtypes and not OpenVinoEngine().support("bf16").native:
        args.dtypes.remove("bf16")   # OpenVINO would run it in f32: nothing of its own to measure
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    calib = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    models = variants()
    macs = {k: rk.summary(m, (1, 3, 224, 224)).total_macs for k, m in models.items()}
    lines = [f"## GhostNet graph experiments (`python benchmarks/ghost_experiments.py`)", "",
             f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
             f"224×224, resnetkit's OpenVINO engine; median ms per call of {args.rounds} shuffled rounds", "",
             "| variant | MMACs/image | " + " | ".join(f"{d} ms" for d in args.dtypes) + " | "
             + " | ".join(f"{d} vs orig" for d in args.dtypes) + " |", "|" + " --- |" * (2 + 2 * len(args.dtypes))]
    results, profiles = {}, []
    for dtype in args.dtypes:
        runs = {k: rk.optimize_for_inference(m, dtype=dtype, backend="openvino", input_size=tuple(x.shape),
                                             calibration=calib) for k, m in models.items()}
        results[dtype] = time_interleaved(runs, x, args.rounds, args.calls)
        for k, fast in runs.items():
            by_op, calls = ov_profile(static_ov_model(fast, tuple(x.shape)), dtype, x, 5)
            total = sum(by_op.values())
            profiles.append(f"| {k} | {dtype} | {calls} | {top_shares(by_op, 5)} | "
                            f"{100 * sum(v for n, v in by_op.items() if n.startswith('Concat')) / total:.0f}% |")
        print(dtype, results[dtype], flush=True)
    for k in models:
        lines.append(f"| {k} | {macs[k] / 1e6:.0f} | " + " | ".join(f"{results[d][k]:.2f}" for d in args.dtypes) + " | "
                     + " | ".join(f"{results[d]['orig'] / results[d][k]:.2f}×" for d in args.dtypes) + " |")
    lines += ["", "OpenVINO's per-layer counters (PERF_COUNT), share of the time by op type (exec kernel):", "",
              "| variant | precision | op calls | top op types | Concat |", "| --- | --- | --- | --- | --- |", *profiles]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
