"""The README's examples print what the code prints: each claim below is read from README.md itself."""
import ast
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import torch

import resnetkit as rk
from resnetkit.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
FAST_COMMANDS = ("resnetkit summary ", "resnetkit list ")  # quick and deterministic; training and benchmarks are not


def _cli_examples():
    """(command, the lines the README shows after it) of every fast `$ resnetkit ...` in a text block."""
    for block in re.findall(r"```text\n(.*?)```", README, re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ ") and line[2:].startswith(FAST_COMMANDS):
                shown = []
                for after in lines[i + 1:]:
                    if after.startswith("$ "):
                        break
                    shown.append(after)
                yield line[2:], shown


CLI_EXAMPLES = list(_cli_examples())


def test_the_readme_has_cli_examples_to_check():
    assert len(CLI_EXAMPLES) >= 3, CLI_EXAMPLES


@pytest.mark.parametrize("command,shown", CLI_EXAMPLES, ids=[c for c, _ in CLI_EXAMPLES])
def test_cli_output_shown_in_the_readme_is_what_it_prints(command, shown):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(shlex.split(command, comments=True)[1:])
    printed = (out.getvalue() + err.getvalue()).splitlines()
    assert printed == shown
    assert code == (2 if any(": error: " in line for line in shown) else 0)


def _claimed(expression: str):
    """The value the README's comment gives for a line of its Python examples that starts with ``expression``:
    the leading literal of the comment (``[1, 64, 224, 224], no shortcut`` -> ``[1, 64, 224, 224]``)."""
    line = next(ln for ln in README.splitlines() if ln.startswith(expression + " ") and "#" in ln)
    comment = line.split("#", 1)[1].strip()
    literal = re.match(r"\[[^\]]*\](?:, \[[^\]]*\])*", comment).group(0)
    return ast.literal_eval(literal)


@torch.no_grad()
@pytest.mark.parametrize("expression,value", [
    ("rk.InvertedResidual(3, 64, 1, 6)(torch.zeros(1, 3, 224, 224)).shape",
     lambda: list(rk.InvertedResidual(3, 64, 1, 6)(torch.zeros(1, 3, 224, 224)).shape)),
    ("rk.GhostBottleneck(16, 48, 24, 3, 2, 0.25)(torch.zeros(1, 16, 56, 56)).shape",
     lambda: list(rk.GhostBottleneck(16, 48, 24, 3, 2, 0.25).eval()(torch.zeros(1, 16, 56, 56)).shape)),
    ("rk.BasicBlock(64, 128, 2)(torch.zeros(1, 64, 56, 56)).shape",
     lambda: list(rk.BasicBlock(64, 128, 2)(torch.zeros(1, 64, 56, 56)).shape)),
    ("f.feature_info.channels(), f.feature_info.reduction()",
     lambda: (lambda f: (f.feature_info.channels(), f.feature_info.reduction()))(
         rk.create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4)))),
    ('rk.create_model("mobilenet_v2", features_only=True).feature_info.channels()',
     lambda: rk.create_model("mobilenet_v2", features_only=True).feature_info.channels()),
    ('rk.create_model("ghostnet_100", features_only=True).feature_info.channels()',
     lambda: rk.create_model("ghostnet_100", features_only=True).feature_info.channels()),
])
def test_values_in_the_readme_python_examples(expression, value):
    assert value() == _claimed(expression)
