"""``resnetkit view NAME|TABLE_FILE [-o FILE.html]`` and ``resnetkit view --serve [TABLE_FILE]``: see a network."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ..errors import ResnetkitValueError
from .summary_cmd import add_target_arguments, load_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="one self-contained HTML page of a model or a layer table (or a live editor)",
                       description="Runs one forward pass on zeros and writes one HTML file that opens offline: "
                       "the header (input, parameters, MACs, feature maps), the diagram of `resnetkit draw` "
                       "(zoomable), the layers as a collapsible tree with a filter, and the output-size derivation "
                       "of the layer you click. With --serve, serves the page on 127.0.0.1 with a layer-table "
                       "editor that rebuilds it as you type. TARGET is a registered model name (see `resnetkit "
                       "list`) or a file holding a layer table.")
    add_target_arguments(p, optional=True)
    p.add_argument("-o", "--out", default=None, metavar="FILE.html",
                   help="the page to write (default: TARGET's name with .html, in this folder)")
    p.add_argument("--fold", type=int, default=3,
                   help="draw runs of at least this many identical blocks once, as xN (default 3; 0: never)")
    p.add_argument("--serve", action="store_true",
                   help="serve the page with a table editor on 127.0.0.1 (TARGET: the table to start from; a model "
                   "name starts from its table) until Ctrl-C")
    p.add_argument("--port", type=int, default=0, help="with --serve: the port (default: a free one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.bench import parse_input_size
    from ..inspect.view import check_path, view

    if args.serve:
        return serve(args)
    if args.target is None:
        raise ResnetkitValueError("give a model name or a table file, e.g. `resnetkit view resnet50 -o r50.html`, "
                                  "or --serve for the live editor")
    out = Path(args.out or f"{Path(args.target).stem}.html")
    check_path(out)  # a wrong path fails before the model is built
    size = parse_input_size(args.input, batch_one=True) if args.input else None
    page = view(load_target(args.target, args.column), size, out, fold=args.fold)
    print(f"wrote {out} ({len(page.html.encode()) / 1e3:.0f} kB): {page.data.name}, input {page.data.input}, "
          f"{page.data.params:,} parameters, {page.data.macs:,} MACs per image")
    return 0


def _start_table(target: str | None, column: str | None, input_text: str | None) -> str:
    """The editor's first text: the table file given, a registered model written as a table, or the example."""
    from ..deploy.bench import parse_input_size
    from ..inspect.view.server import EXAMPLE_TABLE
    from ..tables import to_table

    if target is None:
        return EXAMPLE_TABLE
    if Path(target).is_file():
        return Path(target).read_text(encoding="utf-8")
    size = parse_input_size(input_text, batch_one=True) if input_text else None
    return to_table(load_target(target, column), size)


def serve(args: argparse.Namespace) -> int:
    from ..inspect.view.server import LiveServer

    if args.out is not None:
        raise ResnetkitValueError("--serve shows the page in the browser; leave -o out (or drop --serve to write it)")
    if not 0 <= args.port <= 65535:
        raise ResnetkitValueError(f"--port {args.port}: give a port between 1 and 65535, or leave it out for a free one")
    server = LiveServer(_start_table(args.target, args.column, args.input), args.column, args.input, args.port)
    # Ctrl-C stops it, as printed, even where the parent started it with SIGINT ignored (Python then keeps
    # the signal ignored: a pytest-xdist worker, a script's background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"resnetkit view: serving on {server.url} (this computer only); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("resnetkit view: stopped")
    finally:
        server.server_close()
    return 0
