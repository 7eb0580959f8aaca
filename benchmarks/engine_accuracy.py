"""Top-1 accuracy of trained models through every engine and precision, with ``resnetkit eval``.

For each checkpoint written by ``resnetkit train`` (the ``make demo`` model and
any others given), runs ``resnetkit eval --backend B --dtype D`` for every
engine × precision it offers, plus the eager fp32 model and ``--backend auto
--dtype auto``; int8 is calibrated on the run's own training digits (the
default of ``--calib``). Writes a Markdown table to ``benchmarks/accuracy.md``.

    resnetkit train --out runs/demo                                   # make demo
    resnetkit train --model mobilenet_v2 --epochs 10 --out runs/mbv2
    resnetkit train --model ghostnet_100 --epochs 10 --out runs/ghost
    python benchmarks/engine_accuracy.py runs/demo runs/mbv2 runs/ghost
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import re
import sys

from resnetkit.cli import main as cli

CELLS = [("eager", None), ("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"), ("onnxruntime", "fp32"),
         ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
         ("auto", "auto")]


def accuracy(run: str, backend: str, dtype: str | None) -> tuple[float, str]:
    args = ["eval", "--checkpoint", os.path.join(run, "best.safetensors"),
            "--confusion-png", "/tmp/resnetkit-accuracy-confusion.png"]
    if backend != "eager":
        args += ["--backend", backend, "--dtype", dtype]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(args)
    text = out.getvalue()
    if code != 0:
        return float("nan"), "failed"
    acc = float(re.search(r"accuracy ([\d.]+)%", text).group(1))
    chosen = re.search(r"running \S+ on (\S+ \S+?),", text)  # eval's first line names what runs
    return acc, f"chose {chosen.group(1)}" if chosen and backend == "auto" else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders written by resnetkit train")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "accuracy.md"))
    args = ap.parse_args()
    head = "| model (run) | " + " | ".join("eager fp32" if b == "eager" else f"{b} {d}" for b, d in CELLS) + " |"
    lines = [head, "|" + " --- |" * (len(CELLS) + 1)]
    notes = []
    for run in args.runs:
        accs = {}
        for backend, dtype in CELLS:
            accs[(backend, dtype)], note = accuracy(run, backend, dtype)
            print(f"{run} {backend} {dtype}: {accs[(backend, dtype)]:.2f}% {note}", flush=True)
            if note:
                notes.append(f"- {run}: auto {note}")
        base = accs[("eager", None)]
        cells = [f"{base:.2f}%"] + [f"{a:.2f}% ({a - base:+.2f})" for k, a in accs.items() if k[0] != "eager"]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    with open(args.out, "w") as f:
        f.write(f"# Accuracy through each engine ({datetime.date.today()})\n\n"
                f"`python benchmarks/engine_accuracy.py {' '.join(args.runs)}`: mnist5k test split (1,000 digits), "
                "top-1, points against the eager fp32 model in brackets; int8 calibrated on 512 of the run's own "
                "training digits with the run's preprocessing.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n")
    print("\n".join(lines))
    sys.exit(0)


if __name__ == "__main__":
    main()
