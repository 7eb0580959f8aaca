"""``resnetkit view --serve``: the page with a layer-table editor, served on 127.0.0.1 only.

The server answers two requests: ``GET /`` (the page, built from the table it
was started with) and ``POST /build`` (a JSON ``{"table", "column", "input"}``,
answered with the rebuilt page's content or the table's error and the line of
its row). It reads nothing but what it is sent (no file, no path from a
request), refuses bodies over ``MAX_BODY`` bytes and requests addressed to any
host but its own (a web page elsewhere cannot reach it through DNS rebinding).
"""
from __future__ import annotations

import json
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ...errors import ResnetkitError, ResnetkitValueError
from ...tables import TableError, from_table
from ...tables.parse import row_line
from .page import body_html, build, page_html

HOST = "127.0.0.1"
MAX_BODY = 256 * 1024  # bytes: a layer table is a few kB; ResNet-152's Table 1 form is under 2 kB
# The contract's small residual net (1×3×112×112 → 1×128×14×14): the editor's text when no table is given.
EXAMPLE_TABLE = """
| Input size | Operation   | Stride | Padding | Shortcut              | After    |
| 112×112×3  | Conv 5×5×64 | 2      | 2       |                       | BN, ReLU |
| 56×56×64   | Max pool 3×3| 2      | 1       |                       |          |
| 28×28×64   | Conv 3×3×128| 2      | 1       | Conv 1×1×128 Stride=2 | BN, ReLU |
| 14×14×128  | Conv 3×3×256| 1      | 1       | Conv 1×1×256 Stride=1 | BN, ReLU |
| 14×14×256  | Conv 3×3×128| 1      | 1       | Conv 1×1×128 Stride=1 | BN, ReLU |
"""


def build_table(table: str, column: str | None = None, input_text: str | None = None) -> tuple[Any, dict]:
    """(the page's data or None, the answer for the editor) for one edit of the table."""
    from ...deploy.bench import parse_input_size

    try:
        size = parse_input_size(input_text, batch_one=True) if input_text else None
        data = build(from_table(table, column=column or None), size)
    except TableError as e:
        line = row_line(table, e.row) if e.row is not None else None
        return None, {"ok": False, "error": str(e), "row": e.row, "line": line}
    except ResnetkitError as e:
        return None, {"ok": False, "error": str(e), "row": None, "line": None}
    return data, {"ok": True, "name": data.name,
                  "summary": f"{len(data.layers)} layers, {data.params:,} parameters, {data.macs:,} MACs per image"}


class _Handler(BaseHTTPRequestHandler):
    server: "LiveServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per keystroke would drown the URL the user needs

    def _send(self, status: HTTPStatus, body: str, kind: str) -> None:
        raw = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(raw)

    def _refuse(self, status: HTTPStatus, why: str) -> None:
        self._send(status, json.dumps({"ok": False, "error": why}), "application/json")

    def _own_host(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"{HOST}:{port}", f"localhost:{port}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._own_host():
            return self._refuse(HTTPStatus.FORBIDDEN, "this server answers requests for its own address only")
        if self.path.split("?")[0] != "/":
            return self._refuse(HTTPStatus.NOT_FOUND, "not found: the page is at /")
        self._send(HTTPStatus.OK, self.server.page(), "text/html")

    def do_POST(self) -> None:  # noqa: N802
        if not self._own_host():
            return self._refuse(HTTPStatus.FORBIDDEN, "this server answers requests for its own address only")
        if self.path != "/build":
            return self._refuse(HTTPStatus.NOT_FOUND, "not found: POST the table to /build")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._refuse(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body is left unread
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"a request of {length:,} bytes is over the limit of {MAX_BODY:,}: send a smaller table")
        try:
            sent = json.loads(self.rfile.read(length).decode("utf-8"))
            if not isinstance(sent, dict) or not isinstance(sent.get("table"), str) \
                    or not all(isinstance(sent.get(k) or "", str) for k in ("column", "input")):
                raise ValueError
        except ValueError:
            return self._refuse(HTTPStatus.BAD_REQUEST, 'send JSON {"table": "...", "column": "...", "input": "..."}')
        answer = self.server.rebuild(sent["table"], sent.get("column") or None, sent.get("input") or None)
        self._send(HTTPStatus.OK, json.dumps(answer), "application/json")


class LiveServer(ThreadingHTTPServer):
    """The editor's server on 127.0.0.1 (``port=0``: a free port). ``serve_forever()`` runs it;
    ``url`` is where the page is."""

    daemon_threads = True

    def __init__(self, table: str = EXAMPLE_TABLE, column: str | None = None, input_text: str | None = None,
                 port: int = 0) -> None:
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as e:
            raise ResnetkitValueError(f"cannot listen on {HOST}:{port} ({e.strerror}); pick another --port, or "
                                      "leave --port out for a free one") from e
        self.lock = threading.Lock()  # one build at a time: each takes the CPU for a forward pass
        self.table, self.column, self.input_text = table, column, input_text

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def page(self) -> str:
        """The page for the table the server started with (the editor holds it; a bad one shows its error)."""
        with self.lock:
            data, first = build_table(self.table, self.column, self.input_text)
        return page_html(data, {"table": self.table, "column": self.column, "input": self.input_text,
                                "first": first})

    def rebuild(self, table: str, column: str | None, input_text: str | None) -> dict:
        """The editor's answer for one edit: the rebuilt content, or the error and the line of its row."""
        try:
            with self.lock:
                data, answer = build_table(table, column, input_text)
                if data is not None:
                    answer["body"] = body_html(data)
        except Exception as e:  # a bug: the editor says so, the traceback goes to the terminal
            traceback.print_exc(file=sys.stderr)
            return {"ok": False, "error": f"internal error ({type(e).__name__}: {e}); please report it",
                    "row": None, "line": None}
        return answer
