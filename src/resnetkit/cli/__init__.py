"""The ``resnetkit`` command line. Each subcommand lives in its own module with
``register(subparsers)``; errors users can fix print one line and exit 2, bugs keep
their traceback, and ``resnetkit --debug COMMAND`` shows the traceback of both."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ResnetkitError, is_user_error

# Subcommand modules, in the order ``resnetkit --help`` lists them.
COMMANDS = ["list_cmd", "summary_cmd", "draw_cmd", "view_cmd", "bench_cmd", "export_cmd", "train_cmd", "doctor_cmd"]


class CLIError(ResnetkitError):
    """A mistake the user can fix: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnetkit", description="Residual CNNs: models, summaries, "
                                     "training and fast inference.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of every error, including the one-line ones")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        if args.debug or not is_user_error(e):
            raise  # a bug (or --debug): the traceback says where
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"resnetkit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnetkit {args.command}: interrupted", file=sys.stderr)
        return 130
