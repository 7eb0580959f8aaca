"""``resnetkit list [PATTERN] [-v]``: registered model names, with ``-v`` their family, size and cost."""
from __future__ import annotations

import argparse

from ..errors import ResnetkitValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models (optionally filtered by an fnmatch PATTERN)")
    p.add_argument("pattern", nargs="?", default=None, help='e.g. "resnet*"')
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also each model's family, parameters, MACs per image at its default input, and that input")
    p.set_defaults(func=run)


def describe(name: str) -> tuple[str, str, int, int, str]:
    """(name, family, parameters, MACs per image, default C×H×W) of a registered model with default arguments.

    Built on the meta device: shapes only, no memory and no weight init, so
    all models take a few seconds together.
    """
    import torch

    from ..inspect.trace import trace
    from ..registry import create_model, get_entry

    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    macs = trace(model, (1, *model.default_input_size)).calls[0].total_macs
    family = (get_entry(name).cls or type(model)).__name__
    return name, family, params, macs, "×".join(map(str, model.default_input_size))


def run(args: argparse.Namespace) -> int:
    from ..inspect.summary import human
    from ..registry import list_models

    names = list_models(args.pattern)
    if not names:
        raise ResnetkitValueError(f"no model matches {args.pattern!r}; try `resnetkit list` for all names")
    if not args.verbose:
        print("\n".join(names))
        return 0
    rows = [("name", "family", "params", "MACs", "default input")]
    for name, family, params, macs, size in map(describe, names):
        rows.append((name, family, human(params), human(macs), size))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}")
    return 0
