"""The README's inference table: resnetkit vs torchvision/timm eager fp32 vs ONNX Runtime, side by side.

For each model and batch size, every contender runs in ONE process on the same
input, alternating after warm-up (``resnetkit.deploy.bench.time_alternating``),
so ratios hold even when other processes load the machine. Contenders:
torchvision's (timm's for GhostNet) eager fp32 NCHW model = 1.00×; resnetkit
fp32 / bf16 (eager, and compiled with inductor freezing) and int8 (FX, x86);
ONNX Runtime fp32 and int8 (static QDQ). Then an accuracy check on real MNIST
digits (a ResNet-18 trained here for a few epochs) and a profiler breakdown of
the depthwise nets. Everything is written to ``benchmarks/results.md``.

    python benchmarks/inference.py            # full run (about 15-25 min on 2 cores)
    python benchmarks/inference.py --quick    # resnet18 only, few iterations (about 2 min)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch
from torch import nn

import resnetkit as rk
from resnetkit.deploy.bench import (Timing, count_macs, measure_ceiling, model_pair, ort_runner,
                                    resnetkit_variant, time_alternating)

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "ghostnet_100"]
KINDS = {"fp32": "fp32", "fp32 compiled": "fp32", "bf16": "bf16", "bf16 compiled": "bf16", "int8": "int8",
         "ORT fp32": "fp32", "ORT int8": "int8"}


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
        isa = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
        cpu += f" ({', '.join(isa) or 'no AVX-512'})"
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def contenders(name: str, batch: int, size: tuple[int, ...], args: argparse.Namespace,
               workdir: str) -> tuple[dict, str, str, nn.Module]:
    ref, baseline, ours, who = model_pair(name)
    calib = torch.randn(max(16, batch), *size[1:])  # speed only; accuracy is checked on real digits below
    runners = {baseline: ref}
    for kind in ("fp32", "bf16"):
        runners[f"{who} {kind}"] = resnetkit_variant(ours, kind)
        if args.compile:
            t = time.perf_counter()
            runners[f"{who} {kind} compiled"] = resnetkit_variant(ours, kind, compile=True)
            runners[f"{who} {kind} compiled"](torch.randn(size))  # compile now, outside the timing
            print(f"    compiled {kind} in {time.perf_counter() - t:.0f} s", flush=True)
    runners[f"{who} int8"] = resnetkit_variant(ours, "int8", calibration=calib)
    if args.ort:
        runners["ORT fp32"] = ort_runner(ours, size, workdir=os.path.join(workdir, f"{name}-fp32"))
        runners["ORT int8"] = ort_runner(ours, size, int8=True, calibration=calib,
                                         workdir=os.path.join(workdir, f"{name}-int8"))
    return runners, baseline, who, ours


def kind_of(label: str) -> str:
    return next(k for suffix, k in sorted(KINDS.items(), key=lambda kv: -len(kv[0])) if label.endswith(suffix))


def time_in_groups(runners: dict, x: torch.Tensor, iters: int, warmup: int) -> dict[str, Timing]:
    """Time the PyTorch contenders (baseline included) in one alternating loop, then each ONNX
    Runtime session on its own, right after.

    An ORT session's worker threads keep spinning after each call (its fastest setting), which
    steals the cores from whatever runs next: mixed into the loop they cut the eager baseline at
    batch 1 to a third, and two sessions side by side slowed each other. Alone, each runs at its best.
    """
    ort = [k for k in runners if k.startswith("ORT")]
    timings = time_alternating({k: v for k, v in runners.items() if k not in ort}, x, iters=iters, warmup=warmup)
    for k in ort:
        timings.update(time_alternating({k: runners[k]}, x, iters=iters, warmup=warmup))
    return {k: timings[k] for k in runners}  # in the table's column order


def speed_tables(args: argparse.Namespace, ceilings: dict[str, float], workdir: str) -> list[str]:
    ratio_rows, detail_rows, columns = [], [], None
    for name in args.models:
        for batch in args.batches:
            size = (batch, 3, 224, 224)
            print(f"== {name} batch {batch}  (load {load()})", flush=True)
            try:
                runners, baseline, who, ours = contenders(name, batch, size, args, workdir)
            except (ValueError, KeyError) as e:
                print(f"    skipped: {e}")
                continue
            iters = args.iters * (3 if batch == 1 else 1)  # batch-1 calls are short and noisy: take more
            timings = time_in_groups(runners, torch.randn(size), iters, args.warmup)
            macs = count_macs(ours, size)
            base = timings[baseline].images_per_s
            cols = [lbl.replace(f"{who} ", "") for lbl in runners if lbl != baseline]
            columns = columns or cols
            ratio_rows.append(f"| {name}{'' if who == 'resnetkit' else '†'} | {batch} | {base:.1f} | " + " | ".join(
                f"{timings[lbl].images_per_s / base:.2f}×" for lbl in runners if lbl != baseline) + " |")
            for lbl, t in timings.items():
                kind = "fp32" if lbl == baseline else kind_of(lbl)
                gflops = 2 * macs * t.images_per_s / 1e9
                detail_rows.append(f"| {name} | {batch} | {lbl} | {t.images_per_s:.1f} | {1e3 * t.median:.1f} | "
                                   f"{1e3 * t.p90:.1f} | {gflops:.0f} | {100 * gflops / ceilings[kind]:.0f}% {kind} | "
                                   f"{t.images_per_s / base:.2f}× |")
            for lbl, t in timings.items():
                print(f"    {lbl:32s}{t.images_per_s:8.1f} img/s  {t.images_per_s / base:6.2f}×", flush=True)
    if columns is None:
        return ["No model could be benchmarked."]
    return [
        "### Speed-up over torchvision/timm eager fp32 (images/s ratio, same process, alternating)",
        "",
        "| model | batch | eager fp32 img/s | " + " | ".join(columns) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |",
        *ratio_rows,
        "",
        *(["† resnetkit does not register this model yet: the optimisations were applied to the reference model.",
           ""] if any("†" in r for r in ratio_rows) else []),
        "### Details: latency, achieved GFLOP/s (2 × MACs) and share of the measured ceiling",
        "",
        "| model | batch | contender | img/s | median ms | p90 ms | GFLOP/s | of ceiling | × eager |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *detail_rows,
    ]


def accuracy_table(args: argparse.Namespace, workdir: str) -> list[str]:
    """Top-1 on the mnist5k test split of a model trained by ``resnetkit train``, in fp32, bf16 and int8.

    ``--checkpoint`` takes a run's ``best.safetensors`` (e.g. ``runs/demo`` from
    ``make demo``); without it a model is trained here with the same code
    (``resnetkit.fit``, defaults but ``--epochs``).
    """
    from resnetkit.train import evaluate, load_dataset, load_trained
    from resnetkit.train.transforms import InputSpec, prepare_batch

    path = args.checkpoint
    if path is None:
        t = time.perf_counter()
        run = rk.fit(data="mnist5k", epochs=args.epochs, out=os.path.join(workdir, "mnist-run"), progress=False,
                     verbose=False)
        path = run.out / "best.safetensors"
        print(f"    trained for {args.epochs} epochs in {time.perf_counter() - t:.0f} s", flush=True)
    model, meta = load_trained(path)
    spec = InputSpec.from_dict(meta["input"])
    test = load_dataset(meta.get("data", "mnist5k"), "test")
    train = load_dataset(meta.get("data", "mnist5k"), "train")
    calibration = prepare_batch(train.images[:512], spec)  # 512 real training digits
    variants = {
        "fp32 (eager, unfused)": model,
        "fp32 optimised": rk.optimize_for_inference(model),
        "bf16 optimised": rk.optimize_for_inference(model, torch.bfloat16),
        "int8 (static, 512 calibration images)": rk.quantize_int8(model, calibration),
    }
    accs = {k: 100 * evaluate(m, test, spec).accuracy for k, m in variants.items()}
    ref = accs["fp32 (eager, unfused)"]
    rows = [f"| {k} | {a:.2f} | {a - ref:+.2f} |" for k, a in accs.items()]
    return [f"### Accuracy: {meta['model']} trained by `resnetkit train` ({path}), top-1 on the "
            f"{len(test):,} test digits", "", "| variant | top-1 % | change (points) |", "| --- | --- | --- |", *rows]


def profile_tables(args: argparse.Namespace) -> list[str]:
    """Where the time goes in the depthwise nets: self CPU time per op, resnetkit fp32 and bf16, batch 16."""
    out = []
    for name in [m for m in args.models if m in ("mobilenet_v2", "ghostnet_100")]:
        try:
            _, _, ours, who = model_pair(name)
        except (ValueError, KeyError):
            continue
        x = torch.randn(16, 3, 224, 224)
        for kind in ("fp32", "bf16"):
            model = resnetkit_variant(ours, kind)
            model(x)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    model(x)
            events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            total = sum(e.self_cpu_time_total for e in events)
            out += [f"### {name} ({who}) {kind}, batch 16: self CPU time by op (3 calls)", "",
                    "| op | calls | self CPU ms | share |", "| --- | --- | --- | --- |"]
            out += [f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                    f"{100 * e.self_cpu_time_total / total:.0f}% |" for e in events[:10]]
            out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="resnet18 only, 4 iterations, 1 training epoch")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="training epochs for the accuracy check")
    p.add_argument("--checkpoint", default=None,
                   help="best.safetensors of a `resnetkit train` run for the accuracy check (default: train here)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile contenders")
    p.add_argument("--no-ort", dest="ort", action="store_false", help="skip ONNX Runtime")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.iters, args.epochs = ["resnet18"], 4, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    # Every family shares ResidualNet.forward, and dynamo stops compiling a code object after 8 variants
    # (falling back to eager without an error): this run compiles 4 models × 2 batches × 2 dtypes.
    torch._dynamo.config.recompile_limit = 64
    import tempfile

    workdir = tempfile.mkdtemp(prefix="resnetkit-bench-")
    load_before = load()
    ceilings = {k: measure_ceiling(k, seconds=1.0) for k in ("fp32", "bf16", "int8")}
    print("ceilings: " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()), flush=True)
    lines = ["# Inference benchmark", "",
             f"Generated by `{' '.join(['python', 'benchmarks/inference.py', *(argv or sys.argv[1:])])}` on "
             f"{datetime.date.today()}.", "",
             f"Machine: {machine()}. Input 3×224×224, random weights (speed does not depend on them).",
             f"Ceilings measured at start (3×3 conv 256ch channels_last; int8: torch._int_mm): " +
             ", ".join(f"{k} {v:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s" for k, v in ceilings.items()) + ".",
             f"Median of {args.iters} alternating calls ({3 * args.iters} at batch 1) after {args.warmup} warm-up "
             "calls each. Each ONNX Runtime "
             "session is timed on its own right after the others: its spinning threads would slow whichever "
             "contender runs next.", ""]
    body = speed_tables(args, ceilings, workdir)
    if args.accuracy:
        print("== accuracy on MNIST", flush=True)
        body += [""] + accuracy_table(args, workdir)
    if args.profile:
        body += [""] + profile_tables(args)
    lines += body + ["", f"Load average (1/5/15 min) before: {load_before}; after: {load()}."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
