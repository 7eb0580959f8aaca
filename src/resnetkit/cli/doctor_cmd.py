"""``resnetkit doctor``: the CPU, its ISA features, the engines and what runs natively here (for bug reports)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="this CPU, the engines installed and which precisions run natively here")
    p.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                   help="skip measuring the fp32/bf16/int8 ceilings (about a second)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.doctor import report

    print(report(measure=args.ceilings))
    return 0
