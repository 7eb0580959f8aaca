"""Deployment from the command line: ``resnetkit export`` and ``eval``/``predict`` with ``--backend``.

One tiny run (resnet20 at 16x16, 1,000 mnist5k digits, one epoch: ~2 s) per test
process; everything else exports or evaluates it end to end through ``main``.
No timings are asserted.
"""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch
from PIL import Image

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.deploy.engines import ENGINES
from resnetkit.train import TrainConfig, Trainer, load_dataset

TINY = dict(model="resnet20", data="mnist5k", image_size=16, max_samples=1000, batch_size=32, epochs=2,
            warmup=0.5, lr=0.05, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("run")
    Trainer(TrainConfig(**TINY, out=str(out)), progress=False, verbose=False).fit()
    return out


@pytest.fixture(scope="module")
def ov_int8(run, tmp_path_factory):
    """``resnetkit export best.safetensors --format openvino --dtype int8``: (folder, what it printed)."""
    out = tmp_path_factory.mktemp("export") / "ov_int8"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["export", str(run / "best.safetensors"), "--format", "openvino", "--dtype", "int8",
                   "--out", str(out)])
    assert rc == 0
    return out, printed.getvalue()


def _accuracy(text: str) -> float:
    """The percentage of ``resnetkit eval``'s accuracy line."""
    return float(re.search(r"accuracy (\d+\.\d+)%", text).group(1))


def _eval(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["eval", *args]) == 0
    return capsys.readouterr().out


def test_export_of_a_trained_run_writes_engine_files_and_an_accuracy_report(ov_int8, run, tmp_path, capsys):
    out, printed = ov_int8
    assert {p.name for p in out.iterdir()} == {"model.xml", "model.bin", "resnetkit.json", "report.txt"}
    info = json.loads((out / "resnetkit.json").read_text())
    meta = rk.train.load_trained(run / "best.safetensors")[1]
    assert (info["backend"], info["dtype"], info["input_size"]) == ("openvino", "int8", [1, 3, 16, 16])
    assert (info["model"], info["input"], info["classes"], info["data"]) == \
        ("resnet20", meta["input"], meta["classes"], "mnist5k")
    report = (out / "report.txt").read_text()
    assert report in printed                                   # printed, and saved word for word
    assert "engine:      openvino int8 (openvino " in report and "NNCF" in report
    assert "calibration: mnist5k, train split, preprocessed with the run's InputSpec" in report
    assert re.search(r"latency: +\d+\.\d+ ms per call at batch 1 .*, [\d,]+ images/s", report)
    eager = float(re.search(r"fp32 eager model +(\d+\.\d+)%", report).group(1))
    exported = float(re.search(r"exported model +(\d+\.\d+)%  \(openvino int8\)", report).group(1))
    diff = float(re.search(r"difference +([-+]\d+\.\d+) points", report).group(1))
    assert diff == pytest.approx(exported - eager, abs=0.011)
    assert eager > 30 and abs(diff) < 5                        # a trained model, int8 close to it
    # The report's fp32 number is what `resnetkit eval` says of the checkpoint.
    assert eager == _accuracy(_eval(capsys, "--checkpoint", str(run / "best.safetensors"), "--device", "cpu",
                                    "--confusion-png", str(tmp_path / "cm.png")))


def test_export_of_a_model_name_says_random_weights_and_runs_like_the_model(tmp_path, capsys):
    out = tmp_path / "onnx"
    torch.manual_seed(0)   # create_model inside export draws the same random weights as below;
    # mobilenet_v2 is built for 3×224×224 unless --input is honoured
    assert main(["export", "mobilenet_v2", "--format", "onnx", "--input", "1x3x32x32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text and "accuracy:    not measured (random weights" in text
    assert "calibration: none" in text
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.txt", "resnetkit.json"]
    loaded = rk.load_inference(out)
    assert (loaded.backend, loaded.dtype, loaded.input_size) == ("onnxruntime", "fp32", (1, 3, 32, 32))
    assert loaded.meta == {"model": "mobilenet_v2"}
    torch.manual_seed(0)
    model = rk.create_model("mobilenet_v2").eval()
    x = torch.randn(3, 3, 32, 32)                              # another batch than built: the batch is dynamic
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)


def test_eval_of_the_export_folder_equals_eval_with_the_same_backend_and_dtype(ov_int8, run, tmp_path, capsys):
    out, _ = ov_int8
    from_folder = _eval(capsys, "--checkpoint", str(out), "--confusion-png", str(tmp_path / "a.png"))
    assert from_folder.splitlines()[0] == (f"running the exported folder {out}: resnet20 on openvino int8, "
                                           "built for 1×3×16×16")
    built = _eval(capsys, "--checkpoint", str(run / "best.safetensors"), "--backend", "openvino", "--dtype", "int8",
                  "--confusion-png", str(tmp_path / "b.png"))
    assert built.splitlines()[0] == "running resnet20 on openvino int8, built for 256×3×16×16, calibrated on mnist5k"
    assert "resnet20 on mnist5k (test, 1000 images)" in from_folder
    assert _accuracy(from_folder) == _accuracy(built)


def test_fp32_onnxruntime_eval_equals_eager_eval(run, tmp_path, capsys):
    ckpt = str(run / "best.safetensors")
    eager = _eval(capsys, "--checkpoint", ckpt, "--device", "cpu", "--confusion-png", str(tmp_path / "a.png"))
    ort = _eval(capsys, "--checkpoint", ckpt, "--backend", "onnxruntime", "--confusion-png", str(tmp_path / "b.png"))
    assert ort.splitlines()[0] == "running resnet20 on onnxruntime fp32, built for 256×3×16×16"
    assert ort.splitlines()[2:-1] == eager.splitlines()[1:-1]    # the same confusion matrix, row for row
    assert _accuracy(ort) == _accuracy(eager)
    loss = [float(re.search(r"loss (\d+\.\d+)", t).group(1)) for t in (eager, ort)]
    assert loss[1] == pytest.approx(loss[0], abs=2e-4)


def test_predict_with_onnxruntime_gives_the_eager_top1(run, tmp_path, capsys):
    test = load_dataset("mnist5k", "test")
    png = tmp_path / "digit.png"
    Image.fromarray(test.images[7, 0].numpy(), "L").save(png)
    ckpt = str(run / "best.safetensors")
    assert main(["predict", "--checkpoint", ckpt, "--device", "cpu", str(png)]) == 0
    eager = capsys.readouterr().out.strip().splitlines()
    assert main(["predict", "--checkpoint", ckpt, "--backend", "onnxruntime", str(png)]) == 0
    ort = capsys.readouterr().out.strip().splitlines()
    assert ort[0] == "running resnet20 on onnxruntime fp32, built for 1×3×16×16" and len(ort) == 2
    top1 = [line.split(": ")[1].split(",")[0].split() for line in (eager[0], ort[1])]
    assert top1[1][0] == top1[0][0]
    assert float(top1[1][1].rstrip("%")) == pytest.approx(float(top1[0][1].rstrip("%")), abs=0.02)


def _error(capsys, argv: list[str], command: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnetkit {command}: error: ")
    return lines[0]


def test_mistakes_are_one_line_errors(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"
    assert "--calib" in _error(capsys, ["export", "resnet20", "--dtype", "int8", "--out", str(out)], "export")
    assert "1x3x32" in _error(capsys, ["export", "resnet20", "--input", "1x3x32", "--out", str(out)], "export")
    assert "3×16×16" in _error(capsys, ["export", str(run), "--input", "1x3x32x32", "--out", str(out)], "export")
    assert "--device cpu" in _error(capsys, ["eval", "--checkpoint", str(run), "--backend", "onnxruntime",
                                             "--device", "cuda"], "eval")
    assert "add --backend" in _error(capsys, ["predict", "--checkpoint", str(run), "--dtype", "int8",
                                              str(tmp_path / "x.png")], "predict")
    assert not out.exists()
    monkeypatch.setattr(ENGINES["openvino"], "packages", ("no_such_pkg_xyz",))
    for argv, command in ((["export", "resnet20", "--format", "openvino", "--out", str(out)], "export"),
                          (["eval", "--checkpoint", str(run), "--backend", "openvino"], "eval")):
        line = _error(capsys, argv, command)
        assert "no_such_pkg_xyz" in line and "resnetkit[deploy]" in line
