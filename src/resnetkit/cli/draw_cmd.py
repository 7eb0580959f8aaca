"""``resnetkit draw NAME|TABLE_FILE --out FILE.png|FILE.svg``: a picture of the network."""
from __future__ import annotations

import argparse

from .summary_cmd import add_target_arguments, load_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("draw", help="draw a model or a layer table as stem, stages and blocks (PNG or SVG)",
                       description="Runs one forward pass on zeros and draws the stem, each stage (output shape, "
                       "stride, parameters, MACs) and each block with its output shape and its shortcut "
                       "(identity or projection, and why). Runs of identical blocks are folded as xN. TARGET "
                       "is a registered model name (see `resnetkit list`) or a file holding a layer table.")
    add_target_arguments(p)
    p.add_argument("--out", required=True, help="the picture to write: a path ending in .png or .svg")
    p.add_argument("--fold", type=int, default=3,
                   help="draw runs of at least this many identical blocks once, as xN (default 3; 0: never)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.bench import parse_input_size
    from ..inspect.draw import draw, output_format

    output_format(args.out)  # a wrong suffix or folder fails before the model is built
    size = parse_input_size(args.input, batch_one=True) if args.input else None
    draw(load_target(args.target, args.column), size, args.out, fold=args.fold)
    print(f"wrote {args.out}")
    return 0
