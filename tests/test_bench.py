"""``resnetkit bench`` and its engine (resnetkit.deploy.bench, .peers). No timings are asserted:
these tests check that every contender is built, run and listed, and that mistakes are one-line errors."""
from __future__ import annotations

import re

import pytest
import torch

import resnetkit as rk
from helpers import SPLIT_FAMILIES_SLOW
from resnetkit.cli import main
from resnetkit.deploy.engines import ENGINES
from resnetkit.deploy.engines.base import NOT_OFFERED

TINY = ["--input", "1x3x32x32", "--iters", "2", "--warmup", "1", "--auto-budget", "1"]


def test_count_macs_resnet50_matches_paper():
    from resnetkit.deploy.bench import count_macs

    # He et al. 2015 / torchvision: ResNet-50 = 4.09 G multiply-accumulates at 224×224.
    assert round(count_macs(rk.create_model("resnet50"), (1, 3, 224, 224)) / 1e9, 2) == 4.09


def test_bench_models_have_trained_like_bn_stats_so_int8_is_not_refused():
    """A fresh mobilenet_v2 in eval mode outputs ~1e-9 for every input, so every int8 build
    "deviates" 100% and auto refuses it: bench's models carry trained-like BN statistics."""
    from resnetkit.deploy.autoselect import TOLERANCE, relative_error
    from resnetkit.deploy.bench import model_pair

    ref, _, ours, _ = model_pair("mobilenet_v2")
    bn = ours.features[0][1]
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)  # same weights as torchvision's
        assert y.abs().max() > 1e-3  # not the degenerate all-zero logits of a fresh net
        fast = rk.optimize_for_inference(ours, dtype="int8", backend="torch", input_size=(2, 3, 64, 64),
                                         calibration=torch.randn(8, 3, 64, 64))
        assert relative_error(y, fast(x)) < TOLERANCE["int8"]


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_bench_cli_end_to_end(dtype, capsys):
    """Without --backends: the baseline and resnetkit's torch engine only, as before."""
    assert main(["bench", "resnet18", *TINY, "--dtype", dtype]) == 0
    out = capsys.readouterr().out
    assert "torchvision eager fp32" in out and f"resnetkit torch {dtype}" in out
    assert "img/s" in out and "speed-up" in out and "flags:" in out
    assert "ONNX Runtime" not in out and "OpenVINO" not in out and "resnetkit auto" not in out


def _rows(out: str) -> dict[str, str]:
    """Report lines by contender label (the text before the first run of two spaces)."""
    return {line.split("  ")[0]: line for line in out.splitlines() if "  " in line}


def test_bench_backends_all_lists_every_contender(capsys):
    """One run with every engine: the peers in their own setup, resnetkit on each engine, auto."""
    assert main(["bench", "resnet18", *TINY, "--dtype", "fp32", "--backends", "all"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    for label in ("torchvision eager fp32", "torch.compile freezing fp32", "ONNX Runtime own fp32",
                  "OpenVINO own fp32", "resnetkit torch fp32", "resnetkit onnxruntime fp32",
                  "resnetkit openvino fp32", "resnetkit auto fp32"):
        assert label in rows, f"{label!r} missing from:\n{out}"
        assert re.search(r"\d\.\d\dx", rows[label]), f"{label} was not timed: {rows[label]}"
        assert "failed" not in rows[label] and "not installed" not in rows[label], rows[label]
    assert "chose " in rows["resnetkit auto fp32"]
    cpu = next(line for line in out.splitlines() if line.startswith("CPU:"))
    assert "flags:" in cpu and ("avx2" in cpu or "none of" in cpu)
    assert "best peer" in out


def test_bench_bf16_lists_ort_as_not_offered(capsys):
    assert main(["bench", "resnet18", *TINY, "--dtype", "bf16", "--backends", "all", "--no-compile-peer"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "not offered" in rows["ONNX Runtime own bf16"]
    assert "not offered" in rows["resnetkit onnxruntime bf16"]
    assert "torch.compile freezing bf16" not in rows  # --no-compile-peer
    torch_bf16 = ENGINES["torch"].support("bf16")
    if torch_bf16.level == NOT_OFFERED:  # AVX2: refused before building, with what it needs
        assert "not on this CPU" in rows["resnetkit torch bf16"] and torch_bf16.needs in rows["resnetkit torch bf16"]
    else:
        assert "of bf16" in rows["resnetkit torch bf16"], rows["resnetkit torch bf16"]
    native = [e for e in ENGINES if ENGINES[e].available("bf16") and ENGINES[e].support("bf16").native]
    # auto: bf16 where an engine runs it natively, else the fastest fp32 (and it says which it chose)
    assert f"of {'bf16' if native else 'fp32'}" in rows["resnetkit auto bf16"], rows["resnetkit auto bf16"]
    for label in ("OpenVINO own bf16", "resnetkit openvino bf16"):
        assert re.search(r"\d\.\d\dx", rows[label]), rows[label]
        if not ENGINES["openvino"].support("bf16").native:
            assert "runs f32" in rows[label], rows[label]


def test_bench_backends_list_only_those_engines(capsys):
    assert main(["bench", "resnet18", *TINY, "--backends", "onnxruntime"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "ONNX Runtime own fp32" in rows and "resnetkit onnxruntime fp32" in rows
    assert not any(w in label.lower() for label in rows for w in ("openvino", "torch.compile", "resnetkit torch"))
    assert "chose onnxruntime fp32" in rows["resnetkit auto fp32"]


def test_bench_unknown_backend_is_one_line_error(capsys):
    assert main(["bench", "resnet18", "--backends", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nosuch" in err and "onnxruntime" in err


def test_bench_cli_bad_input(capsys):
    assert main(["bench", "resnet18", "--input", "1x3x32"]) == 2
    assert "1x3x224x224" in capsys.readouterr().err


def test_time_contenders_counts_calls():
    from resnetkit.deploy.bench import time_contenders

    calls = {"a": 0, "b": 0}

    def runner(name):
        def run(x):
            calls[name] += 1
            return x
        return run

    t = time_contenders({"a": runner("a"), "b": runner("b")}, torch.zeros(4, 1), iters=6, warmup=3, rounds=3)
    assert [len(t[n].times) for n in "ab"] == [6, 6]
    assert t["a"].batch == 4 and t["a"].images_per_s > 0
    # 2 extra warm-ups, time_blocks' warm-up and single timing, one re-warm per block, 6 timed
    assert calls == {"a": 2 + 2 + 3 + 6, "b": 2 + 2 + 3 + 6}
    with pytest.raises(ValueError, match="iters"):
        time_contenders({"a": runner("a")}, torch.zeros(1), iters=0)


def test_openvino_telemetry_refused():
    pytest.importorskip("openvino_telemetry")
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    from resnetkit.deploy.engines.openvino_engine import refuse_openvino_telemetry

    assert refuse_openvino_telemetry() is True
    assert OptInChecker().check(False, True) == ConsentCheckResult.DECLINED


# Published parameter counts (torchvision's model docs) above 40 M: built twice (ours and the reference), 2-10 s each.
HEAVY = {"resnet101": 44.5e6, "resnet152": 60.2e6, "wide_resnet50_2": 68.9e6, "resnext101_64x4d": 83.5e6, "resnext101_32x8d": 88.8e6,
         "wide_resnet101_2": 126.9e6}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in HEAVY or n in SPLIT_FAMILIES_SLOW
                                                  else [])
                                  for n in rk.list_models()])
def test_bench_runs_for_every_registered_name(name, capsys, one_thread):
    """`resnetkit bench NAME` at 32×32 (H x W only: the model's own channels, 1 for d2l_resnet18), fp32, torch."""
    assert main(["bench", name, "--input", "32x32", "--iters", "1", "--warmup", "1", "--no-ceiling"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert header.startswith(f"{name}  input 1x{1 if name == 'd2l_resnet18' else 3}x32x32"), header
    assert "not measured (--no-ceiling)" in out
    rows = _rows(out)
    assert re.search(r"\d\.\d\dx", rows["resnetkit torch fp32"]), out


def test_bench_input_hw_is_checked(capsys):
    assert main(["bench", "resnet18", "--input", "32x0"]) == 2
    assert "224x224 (H x W)" in capsys.readouterr().err
