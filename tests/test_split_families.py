"""Res2Net and ResNeSt through the cross-cutting features: explain and draw say what their blocks do
inside (with the numbers of timm's own modules), and `resnetkit train` trains one on the digits."""
import csv
import subprocess
import sys

import pytest
import timm
import torch

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.inspect.diagram import columns
from resnetkit.inspect.trace import trace


def _inside_lines(name, size=64):
    return [line.strip() for line in rk.explain(rk.create_model(name), (1, 3, size, size)) if "inside:" in line]


def test_explain_res2net_slices_with_timms_widths():
    ref = timm.create_model("res2net50_26w_4s")
    lines = _inside_lines("res2net50_26w_4s")
    assert len(lines) == 3 + 4 + 6 + 3   # one per block
    for stage, first in zip((ref.layer1, ref.layer2, ref.layer3, ref.layer4), (0, 3, 7, 13)):
        w, s = stage[0].width, stage[0].scale       # timm's Bottle2neck: slice width and count
        assert f"conv1's {w * s} channels are split into {s} slices of {w}" in lines[first]
        assert "(no chain)" in lines[first] and "average-pooled" in lines[first]
        assert f"for i = 2…{s - 1}" in lines[first + 1] and "passed on unchanged" in lines[first + 1]
    assert "3×3/2" in lines[3] and "3×3/2" not in lines[0]   # stage 2's first block is strided, stage 1's not


def test_explain_split_attention_with_timms_widths():
    ref = timm.create_model("resnest14d")
    lines = _inside_lines("resnest14d")
    assert len(lines) == 4
    for line, stage in zip(lines, (ref.layer1, ref.layer2, ref.layer3, ref.layer4)):
        sa = stage[0].conv2
        width, hidden = sa.conv.out_channels // sa.radix, sa.fc1.out_channels
        assert f"makes {sa.radix} versions of {width} channels" in line
        assert f"fc1 {width}→{hidden} and fc2 {hidden}→{width * sa.radix}" in line
    assert "average pool after it" in lines[1] and "average pool" not in lines[0]
    gate = _inside_lines("resnest50d_1s4x24d")[0]   # radix 1: a sigmoid gate, the pool before the conv
    assert "radix 1" in gate and "sigmoid" in gate


def test_draw_labels_the_blocks_inside():
    def details(name):
        cols = columns(trace(rk.create_model(name).eval(), (1, 3, 64, 64)))
        return [b.detail for c in cols for b in c.boxes if b.shortcut]

    assert details("res2net50_26w_4s")[:2] == ["4 slices × 26 ch, parallel 3×3s", "4 slices × 26 ch, hierarchical 3×3s"]
    assert set(details("resnest14d")) == {"split attention: radix 2, 1 group"}
    assert set(details("resnet18")) == {""}   # plain blocks have nothing to add


def test_train_resnest14d_on_the_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "resnest14d", "--epochs", "4", "--max-samples", "2000", "--image-size", "32",
                 "--batch-size", "64", "--out", str(out), "--no-progress"]) == 0
    assert "training resnest14d on mnist5k" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 4
    best = max(float(r["test_acc"]) for r in rows)
    assert best > 0.9, rows   # 10 classes: chance is 0.1
    m = rk.create_model("resnest14d", num_classes=10)
    rk.load_weights(m, out / "best.safetensors")   # strict: the file is a resnest14d
    assert m.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore:All inputs of this cat operator")   # pytest shows what resnetkit filters: below
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("name", ["res2net50_26w_4s", "resnest14d"])
def test_int8_on_every_engine(name, backend):
    """Split attention's softmax and Res2Net's concatenated slices quantize on each engine: outputs within
    5% of fp32 (trained-like BN statistics, calibrated on inputs of the same distribution)."""
    from helpers import give_trained_bn_stats

    m = rk.create_model(name).eval()
    give_trained_bn_stats(m)
    g = torch.Generator().manual_seed(1)
    x, calib = torch.randn(3, 3, 32, 32, generator=g), torch.randn(32, 3, 32, 32, generator=g)
    with torch.no_grad():
        ref = m(x)
    fast = rk.optimize_for_inference(m, dtype="int8", backend=backend, input_size=(1, 3, 32, 32), calibration=calib)
    out = fast(x)
    assert (fast.backend, fast.dtype) == (backend, "int8")
    assert ((out - ref).norm() / ref.norm()).item() <= 5e-2


def test_torch_int8_concat_says_nothing_a_user_cannot_act_on():
    """torch warns at each quantized cat whose inputs have their own scales (16 in a Res2Net-50), once per graph
    line; the user cannot act on it. Run in a fresh process: pytest's own warning capture would show it."""
    # built inside the caller's catch_warnings(), as the bench does: a filter set at build time is gone after it
    code = ("import warnings, torch, resnetkit as rk; m = rk.create_model('res2net50_26w_4s').eval()\n"
            "with warnings.catch_warnings():\n"
            "    f = rk.optimize_for_inference(m, dtype='int8', input_size=(1, 3, 32, 32), "
            "calibration=torch.randn(8, 3, 32, 32))\n"
            "f(torch.randn(2, 3, 32, 32)); print('ran')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ran", run.stderr[-2000:]
    assert "quantization parameters" not in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("name", ["res2net50_26w_4s", "resnest14d"])
def test_output_stride_8_equals_timm(name):
    """timm's output_stride on these families (its ResNet class): stages 3 and 4 dilated instead of strided."""
    from helpers import give_trained_bn_stats

    torch.manual_seed(0)
    ref = timm.create_model(name, output_stride=8).eval()
    give_trained_bn_stats(ref)
    ours = rk.create_model(name, output_stride=8).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.feature_info.reduction() == [2, 4, 8, 8, 8]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
