"""``resnetkit list [PATTERN]``: registered model names."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models (optionally filtered by an fnmatch PATTERN)")
    p.add_argument("pattern", nargs="?", default=None, help='e.g. "resnet*"')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import list_models

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try `resnetkit list` for all names")
    print("\n".join(names))
    return 0
