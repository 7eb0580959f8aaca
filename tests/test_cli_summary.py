"""`resnetkit summary`: output, formats, exit codes; one real call of the installed console script."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resnetkit.cli import main
from test_table import SEED


def run(capsys, *argv):
    code = main(["summary", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_model_name_table_output(capsys):
    code, out, err = run(capsys, "resnet18", "--input", "1x3x64x64", "--depth", "1")
    assert code == 0 and err == ""
    assert "Total params:         11,689,512 (11.69 M)" in out
    assert "MACs per image:" in out and "FLOPs per image:" in out and "FLOPs = 2 × MACs" in out
    assert "layer1.0" not in out and "layer1 (Sequential)" in out   # --depth 1


def test_json_format_and_explain(capsys):
    code, out, _ = run(capsys, "resnet18", "--input", "1×3×64×64", "--format", "json", "--explain", "--depth", "0")
    data = json.loads(out)
    assert code == 0 and data["target"] == "resnet18" and data["total_params"] == 11_689_512
    assert data["total_flops"] == 2 * data["total_macs"] and data["rows"] == []
    assert "conv1: (64 − 7 + 2·3) // 2 + 1 = 32" in "\n".join(data["explain"])


def test_table_file_uses_its_declared_input(tmp_path, capsys):
    path = tmp_path / "net.md"
    path.write_text(SEED, encoding="utf-8")
    code, out, _ = run(capsys, str(path), "--explain")
    assert code == 0
    assert "TableNet summary, input 1×3×112×112" in out
    assert "row3 (TableResidual): shortcut = projection" in out


@pytest.mark.parametrize("argv, message", [
    (["resnt50"], "unknown model 'resnt50'. Did you mean: resnet50"),
    (["resnet18", "--input", "224x224"], "--input 224x224: give 4 sizes N x C x H x W"),
    (["resnet18", "--input", "1x1x64x64"], "forward pass of ResNet on an input of size 1x1x64x64 failed"),
    (["resnet18", "--depth", "-1"], "--depth must be >= 0"),
    (["missing_table.md"], "no such table file or model: 'missing_table.md'"),
    (["resnet18", "--input", "1x3x99999999999x99999999999"], "more than the limit of 1,073,741,824"),
    (["resnet18", "--input", "1x3x1000000x1000000"], "3,000,000,000,000 elements"),
])
def test_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("resnetkit summary: error: ")


def test_bad_table_file_names_the_row(tmp_path, capsys):
    path = tmp_path / "bad.md"
    path.write_text(SEED.replace("| 28×28×64 ", "| 27×27×64 "), encoding="utf-8")
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert "row 3: declared input size 27×27×64 but row 2 (Max pool 3×3) gives 28×28×64" in err


def test_installed_console_script(tmp_path):
    script = Path(sys.executable).with_name("resnetkit")
    if not script.exists():
        pytest.skip("the resnetkit console script is not installed next to this Python")
    ok = subprocess.run([str(script), "summary", "resnet18", "--input", "1x3x32x32", "--depth", "0"],
                        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert ok.returncode == 0, ok.stderr
    assert "Total params:         11,689,512" in ok.stdout
    bad = subprocess.run([str(script), "summary", "no_such_model"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "unknown model 'no_such_model'" in bad.stderr


def test_table_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.md"
    path.write_bytes(SEED.replace("×", "x").replace("Operation", "Opération").encode("latin-1"))
    code, out, err = run(capsys, str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"table file {str(path)!r} is not UTF-8 text" in err and "save it as UTF-8" in err
