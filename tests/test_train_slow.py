"""The headline target: `resnetkit train` with its defaults (d2l_resnet18 on the embedded
mnist5k digits) reaches >= 98% test accuracy. Minutes of CPU: `make test-all` only."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_training_reaches_98_percent(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "resnetkit", "train", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training d2l_resnet18 on mnist5k: 4000 train / 1000 test images" in proc.stdout
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    final = float(rows[-1]["test_acc"])   # the last epoch's, not the best: no picking on the test set
    assert final >= 0.98, proc.stdout
    ev = subprocess.run([sys.executable, "-m", "resnetkit", "eval", "--checkpoint", str(out / "last.pt")],
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert f"accuracy {100 * final:.2f}%" in ev.stdout
