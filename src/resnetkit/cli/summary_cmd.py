"""``resnetkit summary NAME|TABLE_FILE``: layers, parameters, MACs and receptive fields of a model."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ResnetkitValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="layer-by-layer summary (params, MACs, shapes) of a model or a layer table",
                       description="Runs one forward pass on zeros and prints each layer's output shape, "
                       "parameters and multiply-accumulates (MACs per image; FLOPs = 2 x MACs), the totals, and "
                       "the stride and receptive field of each stage. TARGET is a registered model name "
                       "(see `resnetkit list`) or a file holding a layer table (see resnetkit.from_table).")
    add_target_arguments(p)
    p.add_argument("--depth", type=int, default=3, help="nesting levels shown (default 3)")
    p.add_argument("--explain", action="store_true",
                   help="also derive every conv/pool output size from its formula and explain each shortcut")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    p.set_defaults(func=run)


def add_target_arguments(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """TARGET (a model name or a layer-table file) and ``--input``, as every inspection command takes them."""
    p.add_argument("target", metavar="NAME|TABLE_FILE", help="e.g. resnet50, or my_net.md",
                   **({"nargs": "?"} if optional else {}))
    p.add_argument("--column", default=None, metavar="NAME",
                   help="for a table with several architecture columns (the ResNet paper's Table 1): the one to "
                   "build, e.g. 50-layer")
    p.add_argument("--input", default=None,
                   help="N x C x H x W, e.g. 1x3x224x224, or C x H x W for batch 1 (default: the model's or "
                   "table's own size, batch 1)")


def load_target(target: str, column: str | None = None):
    """A registered model by name, or the network a layer-table file describes (``column``: which of its
    architecture columns)."""
    from ..registry import create_model, list_models
    from ..tables import from_table

    path = Path(target)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:  # the codec's message alone does not say which file
            raise ResnetkitValueError(f"table file {target!r} is not UTF-8 text ({e.reason} at byte {e.start}); "
                                      "save it as UTF-8") from e
        return from_table(text, column=column)
    if column is not None:
        raise ResnetkitValueError(f"--column {column}: {target!r} is a model name; --column picks a column of a "
                                  "layer-table file")
    if target not in list_models() and (path.suffix or "/" in target):
        raise FileNotFoundError(f"no such table file or model: {target!r}")
    return create_model(target)


def run(args: argparse.Namespace) -> int:
    from ..deploy.bench import parse_input_size
    from ..inspect.explain import explain_lines
    from ..inspect.summary import SummaryReport, default_input_size
    from ..inspect.trace import trace

    if args.depth < 0:
        raise ResnetkitValueError(f"--depth must be >= 0, got {args.depth}")
    size = parse_input_size(args.input, batch_one=True) if args.input else None
    if size and len(args.input.lower().replace("×", "x").split("x")) == 3 and args.format == "table":
        print(f"input {args.input} taken as batch 1: {'x'.join(map(str, size))}")
    model = load_target(args.target, args.column)
    size = size or default_input_size(model)
    recorded = trace(model, size)  # one forward pass serves the summary and the explanation
    report = SummaryReport(recorded, args.depth)
    lines = explain_lines(recorded) if args.explain else None
    if args.format == "json":
        data = {"target": args.target, **report.to_dict()}
        if lines is not None:
            data["explain"] = list(lines)
        print(json.dumps(data, indent=2))
    else:
        print(report)
        if lines is not None:
            print()
            print(lines)
    return 0
