"""``resnetkit bench NAME``: resnetkit next to torchvision's (or timm's) eager model and every engine's own setup."""
from __future__ import annotations

import argparse

from ..errors import ResnetkitValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="images/s of resnetkit vs torchvision's eager model and each engine's own setup",
                       description="Runs the reference eager fp32 model (torchvision's, or timm's for GhostNet) and "
                       "resnetkit's optimised one in the same process on the same input, and prints images/s, "
                       "latency median/p90, achieved GFLOP/s against this machine's ceilings measured now, and the "
                       "speed-up. With --backends it also runs each engine as its own documentation configures it "
                       "on the reference model (torch.compile with freezing, ONNX Runtime, OpenVINO), resnetkit on "
                       "each engine, and resnetkit's backend='auto'. Contenders are timed in rotating blocks (engine "
                       "threads that keep spinning after a call do not slow the next contender). Weights are random "
                       "(speed does not depend on them); int8 calibrates on random data (speed only).")
    p.add_argument("name", help="registered model name, e.g. resnet50")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: N of --input, else 1)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="precision of every contender but the fp32 baseline (int8: static quantization)")
    p.add_argument("--backends", default=None, metavar="all|LIST",
                   help="'all' or a comma-separated list of engines (torch,onnxruntime,openvino): each engine's own "
                   "setup, resnetkit on it, and resnetkit's auto over them (default: resnetkit's torch engine only)")
    p.add_argument("--input", default=None, help="N x C x H x W, e.g. 1x3x224x224, or H x W, e.g. 32x32 (batch 1, "
                   "the model's own channels) (default: the model's own size)")
    p.add_argument("--iters", type=int, default=10, help="timed calls per contender (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contender first (default 2)")
    p.add_argument("--compile", action="store_true",
                   help="also torch.compile resnetkit's torch model (inductor, weight freezing), before timing")
    p.add_argument("--no-compile-peer", dest="compile_peer", action="store_false",
                   help="with --backends: skip the torch.compile peer (it compiles for tens of seconds)")
    p.add_argument("--auto-budget", type=float, default=30.0,
                   help="seconds resnetkit's backend='auto' spends timing its candidates (default 30, the API's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads, used by every engine (default: torch's)")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                   help="skip measuring this machine's fp32/bf16/int8 ceilings (about 1 s; 'of ceiling' shows '-')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..deploy.bench import (best_peer, contenders, count_macs, format_report, measure_ceiling,
                                model_pair, parse_backends, time_rows)
    from ..deploy.engines.openvino_engine import refuse_openvino_telemetry
    from ..deploy.peers import cpu_line

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch is not None and args.batch < 1:
        raise ResnetkitValueError(f"--batch must be >= 1, got {args.batch}")
    if args.iters < 1:
        raise ResnetkitValueError(f"--iters must be >= 1, got {args.iters}")
    if args.dtype == "int8" and args.compile:
        raise ResnetkitValueError("--compile applies to fp32/bf16; int8 models run through their own quantized kernels")
    backends = parse_backends(args.backends)
    size_in = _input_size(args.input) if args.input else None
    refuse_openvino_telemetry()  # before anything imports OpenVINO's converter or NNCF

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    pair = model_pair(args.name)
    own = getattr(pair[2], "default_input_size", (3, 224, 224))
    n, c, h, w = (1, own[0], *size_in) if len(size_in or ()) == 2 else size_in or (1, *own)
    size = (args.batch or n, c, h, w)
    x = torch.randn(size, generator=torch.Generator().manual_seed(0))
    rows, ours = contenders(pair, args.dtype, x, backends, compile_peer=args.compile_peer,
                            compile=args.compile, auto_budget_s=args.auto_budget, progress=progress)
    progress(f"timing {sum(r.runner is not None for r in rows)} contenders ...")
    timings = time_rows(rows, x, args.iters, args.warmup)
    macs = count_macs(ours, size)
    ceilings = {k: measure_ceiling(k) for k in sorted({"fp32", args.dtype})} if args.ceiling else {}
    print(f"{args.name}  input {'x'.join(map(str, size))}  {macs / 1e9:.3f} GMACs/image  "
          f"threads {torch.get_num_threads()}  iters {args.iters} (after {args.warmup} warm-up; "
          "rotating blocks per contender)")
    print(cpu_line())
    print("ceilings (measured now): " + (", ".join(f"{k} {v:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s"
                                                  for k, v in ceilings.items()) or "not measured (--no-ceiling)"))
    if args.dtype == "int8":
        print("int8 calibrated on random data: speed only, not accuracy")
    print(format_report(rows, timings, macs, ceilings))
    base = rows[0]
    if backends is None:
        for r in rows[1:]:
            if r.label in timings:
                print(f"speed-up of {r.label} over {base.label}: "
                      f"{timings[r.label].images_per_s / timings[base.label].images_per_s:.2f}x")
        return 0
    auto = rows[-1]
    peer = best_peer(rows, timings)
    if auto.label in timings and peer is not None:
        ratio = timings[auto.label].images_per_s / timings[peer.label].images_per_s
        print(f"{auto.label} ({auto.note}) / best peer ({peer.label}): {ratio:.2f}x"
              f"  {'>=' if ratio >= 0.95 else '<'} 0.95")
    return 0


def _input_size(text: str) -> tuple[int, ...]:
    """``--input``: N x C x H x W, or H x W alone (batch 1 and the model's channels, filled in later)."""
    from ..deploy.bench import parse_input_size

    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2:
        return parse_input_size(text)
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ResnetkitValueError(f"--input must look like 1x3x224x224 (N x C x H x W) or 224x224 (H x W), got {text!r}")
    return tuple(int(p) for p in parts)
