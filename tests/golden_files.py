"""Golden-file checks for printed reports (torchinfo's practice): any change to a table shows as a diff.

Regenerate after an intended change with ``RESNETKIT_UPDATE_GOLDEN=1 pytest tests/test_...py``
and review ``git diff tests/golden``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    text = text.rstrip("\n") + "\n"
    if os.environ.get("RESNETKIT_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path}; create it with RESNETKIT_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"golden/{name}", "now"))
        raise AssertionError(f"printed output differs from tests/golden/{name} "
                             f"(RESNETKIT_UPDATE_GOLDEN=1 regenerates it):\n{diff}")
