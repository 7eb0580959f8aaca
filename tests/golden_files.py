"""Golden-file checks for printed reports (torchinfo's practice): any change to a table shows as a diff.

Regenerate after an intended change with ``RESNETKIT_UPDATE_GOLDEN=1 pytest tests/test_...py``
and review ``git diff tests/golden``. A golden file is written by the code under test, so each
one also carries FACTS: lines a person can check by hand (published totals, the output-size
formula, receptive-field arithmetic), which must hold whether the file is compared or rewritten.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"


def _row(*cells: str) -> str:
    """A table row whose cells are these, whatever the column padding."""
    return r"\|\s*" + r"\s*\|\s*".join(re.escape(c) for c in cells) + r"\s*\|"


def _size(name: str, h: int, k: int, p: int, s: int) -> str:
    """explain's output-size line, with the arithmetic done here: (h − k + 2p) // s + 1."""
    return re.escape(f"{name}: ({h} − {k} + 2·{p}) // {s} + 1 = {(h - k + 2 * p) // s + 1}")


def _num(n: int) -> str:
    return re.escape(f"{n:,}")


# ResNet-18 at 224×224, by hand: conv = out_h·out_w·c_out·c_in·k² multiply-accumulates.
_R18_CONV1 = 112 * 112 * 64 * 3 * 7 * 7
_R18_STAGES = (56 * 56 * 64 * 64 * 9 * 4                                         # layer1: four 3×3 convs
               + sum(hw * hw * c * (c // 2) * 9 + hw * hw * c * c * 9 * 3 + hw * hw * c * (c // 2)
                     for hw, c in ((28, 128), (14, 256), (7, 512))))            # strided conv, 3 convs, 1×1 shortcut
_R18_MACS = _R18_CONV1 + _R18_STAGES + 512 * 1000
# The CONTRACT's seed table at 112×112: rows 1, 3-5 are convs with 1×1 projection shortcuts.
_SEED_MACS = (56 * 56 * 64 * 3 * 25 + 14 * 14 * 128 * 64 * 9 + 14 * 14 * 128 * 64
              + 14 * 14 * 256 * 128 * 9 + 14 * 14 * 256 * 128 + 14 * 14 * 128 * 256 * 9 + 14 * 14 * 128 * 256)

FACTS: dict[str, list[str]] = {
    "summary_resnet18_depth2.txt": [
        r"Total params:\s+11,689,512 ",                # torchvision's published count for resnet18
        rf"MACs per image:\s+{_num(_R18_MACS)} \(1\.81 GMACs\)",  # torchvision's docs: 1.81 G
        rf"conv1 \(Conv2d\)\s+\[1, 64, 112, 112\]\s+{_num(7 * 7 * 3 * 64)}\s+{_num(_R18_CONV1)}",
        rf"fc \(Linear\)\s+\[1, 1000\]\s+{_num(512 * 1000 + 1000)}\s+{_num(512 * 1000)}",
        r"level 1\s+layer1\s+\[1, 64, 56, 56\]\s+4\s+43",  # 7 + (3−1)·2 (max pool) + 4 convs · (3−1)·4
        r"level 4\s+layer4\s+\[1, 512, 7, 7\]\s+32\s+435",  # Araujo et al., Distill 2019: 435 px
    ],
    "summary_seed_table.txt": [
        rf"row1 \(Sequential\)\s+\[1, 64, 56, 56\]\s+{_num(5 * 5 * 3 * 64 + 2 * 64)}\s+{_num(56 * 56 * 64 * 75)}",
        rf"MACs per image:\s+{_num(_SEED_MACS)} ",
        r"row5\s+row5\s+\[1, 128, 14, 14\]\s+8\s+49",      # 5, +2·2, +2·4, +2·8, +2·8
    ],
    "explain_resnet18.txt": [
        _size("conv1", 224, 7, 3, 2), _size("maxpool", 112, 3, 1, 2),
        _size("layer2.0.conv1", 56, 3, 1, 2), _size("layer2.0.downsample.0", 56, 1, 0, 2),
        _size("layer4.0.conv1", 14, 3, 1, 2),
        r"layer1\.0 \(BasicBlock\): shortcut = identity",
        r"layer2\.0 \(BasicBlock\): shortcut = projection `downsample` \(Conv 1×1×128 Stride=2, BN\)",
    ],
    "explain_seed_table.txt": [
        _size("row1.0", 112, 5, 2, 2), _size("row2.0", 56, 3, 1, 2), _size("row3.branch.0", 28, 3, 1, 2),
        r"row3 \(TableResidual\): shortcut = projection",
        r"row5 \(row5\): 128×14×14, stride 8, receptive field 49",
    ],
    "to_table_resnet18.txt": [  # torchvision's ResNet-18: 7×7/2 stem, 3×3/2 max pool, projections at /2
        _row("224×224×3", "Conv 7×7×64", "2", "3", "", "BN, ReLU"),
        _row("112×112×64", "Max pool 3×3", "2", "1", "", ""),
        r"\|\s*56×56×64\s*\|\s*BasicBlock: Conv 3×3×128 Stride=2 .*\|\s*Conv 1×1×128 Stride=2, BN\s*\|",
        _row("7×7×512", "Global avg pool", "", "", "", ""),
        _row("512", "FC 1000", "", "", "", ""),
    ],
    "to_table_seed.txt": [  # the CONTRACT's table, rows 1-3 cell for cell
        _row("112×112×3", "Conv 5×5×64", "2", "2", "", "BN, ReLU"),
        _row("56×56×64", "Max pool 3×3", "2", "1", "", ""),
        _row("28×28×64", "Conv 3×3×128", "2", "1", "Conv 1×1×128 Stride=2", "BN, ReLU"),
    ],
}


def check_facts(name: str, text: str) -> None:
    """Every hand-checkable fact of golden file ``name`` must be in ``text``."""
    assert FACTS.get(name), f"golden file {name} has no FACTS in tests/golden_files.py: add lines a person can check"
    missing = [f for f in FACTS[name] if not re.search(f, text)]
    assert not missing, f"{name} contradicts its hand-checked facts (tests/golden_files.py FACTS): {missing}"


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    text = text.rstrip("\n") + "\n"
    check_facts(name, text)  # before writing too: a regenerated file must not bless a wrong number
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
