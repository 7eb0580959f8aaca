"""The README's inference table: resnetkit against every peer, each engine set up as its own documentation says.

For each model, batch size and precision, every contender runs in ONE process on
the same input (``resnetkit.deploy.bench.contenders``), timed in rotating
blocks (``time_contenders``: engine threads that keep spinning after a call do
not slow the next contender). Contenders: torchvision's (timm's for GhostNet)
eager fp32 model = 1.00×; ``torch.compile`` of that model with inductor
freezing in the precision; ONNX Runtime and OpenVINO on that model in their own
documented setup; resnetkit's ``optimize_for_inference`` on each engine; and
resnetkit's ``backend="auto"``. Each cell compares auto with the best peer
(eager, torch.compile, ORT own, OpenVINO own); the geometric means over all
cells close the table. Then an accuracy check on real MNIST digits (a model
trained here) on every engine and precision, and a profile of the depthwise
nets. Everything is written to ``benchmarks/results.md``.

Compiling takes tens of seconds per model and precision on 2 cores: the full
run takes about an hour or more. Each finished cell is saved to a state file
(``benchmarks/results.json``) at once, and results.md rewritten; ``--resume``
skips the cells already there (measured on this CPU model), so an interrupted
run continues where it stopped.

    python benchmarks/inference.py                       # everything (about 70 min on 2 busy cores)
    python benchmarks/inference.py --resume              # continue an interrupted run
    python benchmarks/inference.py --quick               # resnet18, batch 1, few iterations (about 3 min)
    python benchmarks/inference.py --models resnet50 --batches 16 --dtypes bf16 int8
    python benchmarks/inference.py --models resnest50d res2net50_26w_4s --batches 16 --dtypes fp32 int8
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time

import torch

import resnetkit as rk
from resnetkit.deploy.bench import best_peer, contenders, count_macs, model_pair, time_rows
from resnetkit.deploy.ceilings import ceiling
from resnetkit.deploy.engines import ENGINES
from resnetkit.deploy.peers import cpu_info, cpu_line, refuse_openvino_telemetry

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "ghostnet_100"]
DTYPES = ["fp32", "bf16", "int8"]
# Res2Net's hierarchical slices and ResNeSt's split attention (timm's models as the reference): batch 16,
# fp32 and int8, added to the default run
SPLIT_CELLS = [(m, 16, d) for m in ("resnest50d", "res2net50_26w_4s") for d in ("fp32", "int8")]
HERE = os.path.dirname(os.path.abspath(__file__))
# Table columns: (heading, how to find the contender in a cell's rows)
PEER_COLUMNS = [("torch.compile freezing", "torch.compile"), ("ORT own", "onnxruntime"),
                ("OpenVINO own", "openvino")]


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def machine() -> str:
    return (f"{cpu_line()}; torch {torch.__version__} with {torch.get_num_threads()} threads (every engine gets "
            f"the same), Python {platform.python_version()}")


# ----------------------------------------------------------------- one cell
def run_cell(pair: tuple, name: str, batch: int, dtype: str, args: argparse.Namespace, workdir: str) -> dict:
    """Build and time every contender for one (model, batch, precision); a JSON-able record."""
    size = (batch, 3, 224, 224)
    x = torch.randn(size, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    rows, ours = contenders(pair, dtype, x, list(ENGINES), compile_peer=args.compile, auto_budget_s=args.auto_budget,
                            workdir=os.path.join(workdir, f"{name}-{batch}-{dtype}"),
                            progress=lambda msg: print(f"    {msg}", flush=True))
    built_s = time.perf_counter() - t0
    iters = args.iters * (10 if batch == 1 else 1)  # batch-1 calls are short and noisy: take more
    print(f"    timing {sum(r.runner is not None for r in rows)} contenders, {iters} calls each ...", flush=True)
    timings = time_rows(rows, x, iters, args.warmup)
    macs = count_macs(ours, size)
    out = {"model": name, "batch": batch, "dtype": dtype, "macs": macs, "iters": iters, "build_s": built_s,
           "time_s": time.perf_counter() - t0, "load": load(), "date": str(datetime.date.today()), "rows": []}
    for r in rows:
        t = timings.get(r.label)
        out["rows"].append({"label": r.label, "kind": r.kind, "engine": r.engine, "dtype": r.dtype,
                            "status": r.status, "note": r.note, "build_s": round(r.build_s, 1),
                            "img_s": t.images_per_s if t else None, "median_ms": 1e3 * t.median if t else None,
                            "p90_ms": 1e3 * t.p90 if t else None})
    peer = best_peer(rows, timings)
    auto = rows[-1]
    if peer is not None and auto.label in timings:
        out["auto_vs_best_peer"] = timings[auto.label].images_per_s / timings[peer.label].images_per_s
        out["best_peer"] = peer.label
    base = timings[rows[0].label].images_per_s
    for r in rows:
        if r.label in timings:
            ips = timings[r.label].images_per_s
            print(f"    {r.label:34s}{ips:8.1f} img/s {ips / base:6.2f}x  {r.note}", flush=True)
    del rows, timings
    gc.collect()  # free engine sessions (and their threads) before the next cell
    return out


# ------------------------------------------------------------------- tables
def _row(cell: dict, kind: str, engine: str | None = None) -> dict | None:
    for r in cell["rows"]:
        if r["kind"] == kind and (engine is None or r["engine"] == engine or r["engine"].startswith(f"{engine}:")):
            return r
    return None


def _peer_row(cell: dict, peer: str) -> dict | None:
    engine = "torch" if peer == "torch.compile" else peer
    return _row(cell, "peer", engine)


def _ratio(r: dict | None, base: float) -> str:
    if r is None:
        return "–"
    if r["img_s"] is None:
        return {"not offered": "n/o", "not installed": "n/i"}.get(r["status"], r["status"])
    return f"{r['img_s'] / base:.2f}×"


def speed_tables(cells: list[dict], ceilings: dict) -> list[str]:
    out: list[str] = []
    engines = list(ENGINES)
    for dtype in DTYPES:
        mine = [c for c in cells if c["dtype"] == dtype]
        if not mine:
            continue
        heads = ["eager fp32 img/s", *[h for h, _ in PEER_COLUMNS], *[f"resnetkit {e}" for e in engines],
                 "resnetkit auto", "auto chose", "auto / best peer", "≥ 0.95"]
        out += [f"### {dtype}: images/s as a multiple of eager fp32 (same process, same input)", "",
                "| model | batch | " + " | ".join(heads) + " |", "|" + " --- |" * (len(heads) + 2)]
        for c in mine:
            base_row = c["rows"][0]
            base = base_row["img_s"]
            auto = _row(c, "auto")
            vs = c.get("auto_vs_best_peer")
            chose = auto["note"].replace("chose ", "") if auto and auto["img_s"] else (auto or {}).get("note", "–")
            cols = [f"{base:.1f}", *[_ratio(_peer_row(c, p), base) for _, p in PEER_COLUMNS],
                    *[_ratio(_row(c, "resnetkit", e), base) for e in engines], _ratio(auto, base), chose,
                    f"{vs:.2f} ({c['best_peer']})" if vs else "–",
                    ("yes" if vs >= 0.95 else "**no**") if vs else "–"]
            ref = "" if base_row["label"].startswith("torchvision") else " (timm)"
            out.append(f"| {c['model']}{ref} | {c['batch']} | " + " | ".join(cols) + " |")
        out.append("")
    # geometric means of auto against each single peer
    peers = [("eager fp32", lambda c: c["rows"][0])] + [(f"{h}", (lambda p: lambda c: _peer_row(c, p))(p))
                                                        for h, p in PEER_COLUMNS]
    lines = ["### resnetkit auto against each peer: geometric mean over the cells above", "",
             "| peer | cells | geometric mean of auto / peer | cells where auto ≥ 0.95× that peer |",
             "| --- | --- | --- | --- |"]
    for head, get in peers + [("best peer of each cell", None)]:
        ratios = []
        for c in cells:
            auto = _row(c, "auto")
            if not auto or not auto["img_s"]:
                continue
            if get is None:
                if c.get("auto_vs_best_peer"):
                    ratios.append(c["auto_vs_best_peer"])
                continue
            p = get(c)
            if p and p["img_s"]:
                ratios.append(auto["img_s"] / p["img_s"])
        if ratios:
            g = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            lines.append(f"| {head} | {len(ratios)} | {g:.2f}× | {sum(r >= 0.95 for r in ratios)} of {len(ratios)} |")
    out += lines + [""]
    out += ["### Details: latency, achieved GFLOP/s (2 × MACs) against the measured ceiling, build time", "",
            "| model | batch | precision | contender | img/s | median ms | p90 ms | GFLOP/s | of ceiling | × eager | "
            "built in s | note |", "|" + " --- |" * 12]
    for c in cells:
        base = c["rows"][0]["img_s"]
        for r in c["rows"]:
            if r["img_s"] is None:
                out.append(f"| {c['model']} | {c['batch']} | {c['dtype']} | {r['label']} | {r['status']} | | | | | | | "
                           f"{r['note']} |")
                continue
            gflops = 2 * c["macs"] * r["img_s"] / 1e9
            ceil = ceilings[r["dtype"]].value if r["dtype"] in ceilings else None
            pct = f"{100 * gflops / ceil:.0f}% {r['dtype']}" if ceil else "–"
            out.append(f"| {c['model']} | {c['batch']} | {c['dtype']} | {r['label']} | {r['img_s']:.1f} | "
                       f"{r['median_ms']:.1f} | {r['p90_ms']:.1f} | {gflops:.0f} | {pct} | {r['img_s'] / base:.2f}× | "
                       f"{r['build_s']:.0f} | {r['note']} |")
    return out


def _calls(cells: list[dict]) -> str:
    """How many timed calls the cells made per contender, by batch size (a resumed run may mix counts)."""
    per = {}
    for c in cells:
        per.setdefault(c["batch"], set()).add(c["iters"])
    return "; ".join(f"{' or '.join(map(str, sorted(n)))} at batch {b}" for b, n in sorted(per.items(), reverse=True))


# ----------------------------------------------------------------- accuracy
def accuracy_table(args: argparse.Namespace, workdir: str) -> list[str]:
    """Top-1 on the mnist5k test split of a model trained by ``resnetkit train``, on every engine and precision.

    ``--checkpoint`` takes a run's ``best.safetensors`` (e.g. ``runs/demo`` from
    ``make demo``); without it a model is trained here with the same code
    (``resnetkit.fit``, defaults but ``--epochs``). int8 calibrates on 512 real
    training digits; ``dtype="auto"`` keeps a precision only within 0.5 points of
    fp32's top-1 on them.
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
    size = (1, *calibration.shape[1:])
    variants = {"fp32 eager (the trained model)": model}
    for engine in ENGINES:
        for dtype in DTYPES:
            if dtype not in ENGINES[engine].dtypes or not ENGINES[engine].available(dtype):
                continue
            try:
                variants[f"{engine} {dtype}"] = rk.optimize_for_inference(
                    model, dtype, backend=engine, input_size=size,
                    calibration=calibration if dtype == "int8" else None)
            except Exception as e:  # noqa: BLE001 - report, keep going
                print(f"    {engine} {dtype} failed: {type(e).__name__}: {e}", flush=True)
    auto = rk.optimize_for_inference(model, "auto", backend="auto", input_size=size, calibration=calibration,
                                     budget_s=5.0)
    variants[f"auto (dtype and backend; chose {auto.backend} {auto.dtype})"] = auto
    accs = {k: 100 * evaluate(m, test, spec).accuracy for k, m in variants.items()}
    ref = accs["fp32 eager (the trained model)"]
    rows = [f"| {k} | {a:.2f} | {a - ref:+.2f} |" for k, a in accs.items()]
    return [f"### Accuracy: {meta['model']} trained by `resnetkit train` ({path}), top-1 on the "
            f"{len(test):,} test digits", "", "| variant | top-1 % | change (points) |", "| --- | --- | --- |", *rows]


def profile_tables(args: argparse.Namespace) -> list[str]:
    """Where the time goes in the depthwise nets, on the engine that is fastest on them (OpenVINO):
    its per-layer counters by op type, resnetkit's graph, every batch size and precision of the run.
    GhostNet's stage-by-stage before/after (timm's graph against resnetkit's) is ghostnet_profile.py's."""
    from profile_engines import ov_profile, static_ov_model, top_shares

    out = []
    for name in [m for m in args.models if m in ("mobilenet_v2", "ghostnet_100")]:
        try:
            _, _, ours, who = model_pair(name)
        except (ValueError, KeyError):
            continue
        out += [f"### {name} ({who}) on resnetkit's OpenVINO engine: per-layer counters by op type", "",
                "| batch | precision | ms per call | op calls | µs per op | top op types (share of the time) |",
                "| --- | --- | --- | --- | --- | --- |"]
        calibration = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        for batch in args.batches:
            x = torch.randn(batch, 3, 224, 224)
            for dtype in [d for d in args.dtypes if d != "bf16" or ENGINES["openvino"].support(d).native]:
                fast = rk.optimize_for_inference(ours, dtype, backend="openvino", input_size=tuple(x.shape),
                                                 calibration=calibration if dtype == "int8" else None)
                by_op, calls = ov_profile(static_ov_model(fast, tuple(x.shape)), dtype, x, 10)
                total = sum(by_op.values())
                out.append(f"| {batch} | {dtype} | {total:.2f} | {calls} | {1e3 * total / max(calls, 1):.0f} | "
                           + top_shares(by_op, 5) + " |")
        out.append("")
    return out


# -------------------------------------------------------------------- state
def read_state(path: str | None, cpu: str) -> dict:
    if not path or not os.path.exists(path):
        return {"cpu": cpu, "cells": {}}
    with open(path) as f:
        state = json.load(f)
    if state.get("cpu") != cpu:
        print(f"{path} was measured on {state.get('cpu')!r}, not this CPU: starting over", flush=True)
        return {"cpu": cpu, "cells": {}}
    return state


def write_state(path: str | None, state: dict) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def write_results(args: argparse.Namespace, argv: list[str], ceilings: dict, cells: list[dict],
                  extra: list[str], load_before: str, started: float, todo: int) -> None:
    dates = sorted({c["date"] for c in cells}) or [str(datetime.date.today())]
    lines = ["# Inference benchmark", "",
             f"Generated by `{' '.join(['python', 'benchmarks/inference.py', *argv])}` "
             f"on {dates[0] if len(dates) == 1 else dates[0] + ' to ' + dates[-1]}.", "",
             f"Machine: {machine()}. Input 3×224×224, random weights (speed does not depend on them); int8 is "
             "calibrated on random data (speed only: accuracy is checked on real digits below).",
             "Ceilings measured at start, each with a kernel that exists on this CPU: "
             + ", ".join(c.text(k) for k, c in ceilings.items()) + ".",
             f"Each contender: {args.warmup} warm-up calls, then timed calls ({_calls(cells)}) in 5 rotating blocks per cell, each block after a 50 ms pause and one untimed re-warm call (ONNX "
             "Runtime's and OpenVINO's threads keep spinning after a call: blocks keep that off the next "
             "contender). "
             "Median latency. Peers: eager fp32 (1.00×), torch.compile with inductor freezing (bf16: weights "
             "cast first), ONNX Runtime (legacy export opset 17, ORT_ENABLE_ALL; int8 quant_pre_process + "
             "static QDQ per-channel) and OpenVINO (convert_model with the input's static shape, LATENCY, "
             "precision hint; int8 NNCF), each on the reference model with the same thread count (their "
             "default setups against these: the A/B tables at the end). resnetkit auto = "
             f"`optimize_for_inference(backend=\"auto\", dtype=<that precision>, budget_s={args.auto_budget:g})`. "
             "n/o = the engine does not offer that precision. Runs on a shared machine: absolute figures move "
             "±10–25% between runs; ratios within a cell are what counts.", ""]
    if todo:
        lines += [f"**Partial: {len(cells)} of {len(cells) + todo} cells so far** "
                  f"({time.perf_counter() - started:.0f} s into this run).", ""]
    lines += speed_tables(cells, ceilings) if cells else ["No cell measured yet."]
    lines += extra
    lines += ["", f"Load average (1/5/15 min) at start: {load_before}; now: {load()}."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="resnet18, batch 1, 3 iterations, auto budget 5 s, no state file, no accuracy check")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=DTYPES)
    p.add_argument("--iters", type=int, default=10, help="timed calls per contender (x10 at batch 1)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--auto-budget", type=float, default=30.0,
                   help="budget_s of resnetkit's backend='auto' (default 30, the API's)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile peer")
    p.add_argument("--state", default=None,
                   help="JSON file the finished cells are saved to (default: benchmarks/results.json; "
                   "none with --quick)")
    p.add_argument("--resume", action="store_true", help="skip the cells already in the state file")
    p.add_argument("--epochs", type=int, default=3, help="training epochs for the accuracy check")
    p.add_argument("--checkpoint", default=None,
                   help="best.safetensors of a `resnetkit train` run for the accuracy check (default: train here)")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=os.path.join(HERE, "results.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.iters, args.accuracy = ["resnet18"], [1], 3, False
        args.auto_budget = min(args.auto_budget, 5.0)
    state_path = args.state or (None if args.quick else os.path.join(HERE, "results.json"))
    if args.threads:
        torch.set_num_threads(args.threads)
    refuse_openvino_telemetry()  # before anything imports OpenVINO's converter or NNCF
    workdir = tempfile.mkdtemp(prefix="resnetkit-bench-")
    started, load_before = time.perf_counter(), load()
    ceilings = {k: ceiling(k, seconds=1.0) for k in DTYPES}
    print(machine(), flush=True)
    print("ceilings: " + ", ".join(c.text(k) for k, c in ceilings.items()), flush=True)
    state = read_state(state_path, cpu_info()[0])  # cells of other filters stay in the file
    keys = [(m, b, d) for m in args.models for b in args.batches for d in args.dtypes]
    if args.models == MODELS and not args.quick:
        keys += [k for k in SPLIT_CELLS if k not in keys]
    key = lambda m, b, d: f"{m}|{b}|{d}"  # noqa: E731
    todo = [k for k in keys if not (args.resume and key(*k) in state["cells"])]
    fresh: set = set()  # cells measured in this run
    done = lambda: [state["cells"][key(*k)] for k in keys  # noqa: E731
                    if key(*k) in state["cells"] and (args.resume or key(*k) in fresh)]
    print(f"{len(keys)} cells, {len(keys) - len(todo)} already in {state_path}; {len(todo)} to run", flush=True)
    pairs: dict[str, tuple] = {}
    for i, (name, batch, dtype) in enumerate(todo):
        print(f"== [{i + 1}/{len(todo)}] {name} batch {batch} {dtype}  (load {load()}, "
              f"{time.perf_counter() - started:.0f} s so far)", flush=True)
        try:
            if name not in pairs:
                pairs = {name: model_pair(name)}  # one model's modules alive at a time
        except (ValueError, KeyError) as e:
            print(f"    skipped: {e}", flush=True)
            continue
        cell = run_cell(pairs[name], name, batch, dtype, args, workdir)
        print(f"    cell done in {cell['time_s']:.0f} s", flush=True)
        state["cells"][key(name, batch, dtype)] = cell
        fresh.add(key(name, batch, dtype))
        write_state(state_path, state)
        write_results(args, argv, ceilings, done(), [], load_before, started, len(todo) - i - 1)
    extra: list[str] = []
    if args.accuracy:
        print("== accuracy on MNIST", flush=True)
        extra += [""] + accuracy_table(args, workdir)
    if args.profile:
        extra += [""] + profile_tables(args)
    ab = os.path.join(HERE, "peer_setups.md")
    if os.path.exists(ab):  # benchmarks/peer_setups.py: each peer's default setup against the one used here
        with open(ab) as f:
            extra += ["", f.read().strip()]
    write_results(args, argv, ceilings, done(), extra, load_before, started, 0)
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
