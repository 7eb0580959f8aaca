"""``resnetkit bench NAME``: resnetkit's optimised model next to torchvision's (or timm's) eager one."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="images/s of resnetkit's optimised model vs torchvision's eager fp32 model",
                       description="Runs the reference eager fp32 model (torchvision's, or timm's for GhostNet) and "
                       "resnetkit's optimised one in the same process, alternating after warm-up, and prints "
                       "images/s, latency median/p90, achieved GFLOP/s against this machine's measured ceiling, "
                       "and the speed-up. Weights are random (speed does not depend on them).")
    p.add_argument("name", help="registered model name, e.g. resnet50")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: N of --input, else 1)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="what resnetkit computes in (int8: static quantization, calibrated on random data)")
    p.add_argument("--input", default=None, help="N x C x H x W, e.g. 1x3x224x224 (default: the model's own size)")
    p.add_argument("--iters", type=int, default=10, help="timed calls per contender (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contender first (default 2)")
    p.add_argument("--compile", action="store_true",
                   help="also torch.compile resnetkit's model (inductor, weight freezing); the first call compiles")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..deploy.bench import (count_macs, format_report, measure_ceiling, model_pair, parse_input_size,
                                resnetkit_variant, time_alternating)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.dtype == "int8" and args.compile:
        raise ValueError("--compile applies to fp32/bf16; int8 models run through their own quantized kernels")
    ref_model, baseline, ours, who = model_pair(args.name)
    default = getattr(ours, "default_input_size", (3, 224, 224))
    n, c, h, w = parse_input_size(args.input) if args.input else (1, *default)
    size = (args.batch or n, c, h, w)
    x = torch.randn(size)
    calibration = torch.randn(max(8, size[0]), *size[1:]) if args.dtype == "int8" else None
    label = f"{who} {args.dtype}" + (" compiled" if args.compile else "")
    fast = resnetkit_variant(ours, args.dtype, compile=args.compile, calibration=calibration)

    timings = time_alternating({baseline: ref_model, label: fast}, x, iters=args.iters, warmup=args.warmup)
    macs = count_macs(ours, size)
    ceilings = {k: measure_ceiling(k) for k in {"fp32", args.dtype}}
    print(f"{args.name}  input {'x'.join(map(str, size))}  {macs / 1e9:.3f} GMACs/image  "
          f"threads {torch.get_num_threads()}  iters {args.iters} (after {args.warmup} warm-up, alternating)")
    print("ceilings (measured now): " + ", ".join(f"{k} {v:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s"
                                                 for k, v in sorted(ceilings.items())))
    print(format_report(timings, baseline, macs, ceilings, {baseline: "fp32", label: args.dtype}))
    print(f"speed-up of {label} over {baseline}: "
          f"{timings[label].images_per_s / timings[baseline].images_per_s:.2f}x")
    return 0
