"""Every CPU is first-class: resnetkit.deploy.cpu, ``resnetkit doctor`` and the build-time refusals.

The doctor's table is checked against what the engines really do: each native
or emulated cell builds and runs within its precision's tolerance, each "runs
fp32" cell reports and computes f32, each "not offered" cell is refused by the
engine itself (torch's oneDNN bf16 reorder, ONNX Runtime's missing bf16 Conv)
and by resnetkit at build time. It is checked on this machine's CPU and, on any
x86 CPU with AVX2, on an AVX2-only one: ``ONEDNN_MAX_CPU_ISA=AVX2`` caps the
oneDNN kernels inside torch exactly as such a CPU lacks them (torch then
raises the AVX2 EPYC's error, ``bf16 path needs the cpu support avx_ne_convert
or avx512bw, avx512vl and avx512dq``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import give_trained_bn_stats

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.deploy.autoselect import TOLERANCE, relative_error
from resnetkit.deploy.cpu import apply_cap, cpu
from resnetkit.deploy.engines import DTYPES, ENGINES
from resnetkit.deploy.engines.base import AS_FP32, NOT_OFFERED, EngineError

# inductor's own cache apart: kernels it compiled under the cap crash a normal run that reuses them
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
             "TORCHINDUCTOR_CACHE_DIR": os.path.join(tempfile.gettempdir(), "resnetkit-avx2-inductor")}
ROOT = Path(__file__).resolve().parent


def _proc_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


needs_x86_avx2 = pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or "avx2" not in _proc_flags(),
                                    reason="needs an x86 CPU with AVX2 to stand in for an AVX2-only one")


# ------------------------------------------------------------------ reading the CPU
def test_the_cap_drops_what_onednn_would_not_use():
    """oneDNN's ONEDNN_MAX_CPU_ISA levels (its 'CPU dispatcher controls' page): AVX2 allows no AVX-512
    and no AMX; AVX512_CORE_BF16 allows AVX512-BF16 but not AMX; flags below AVX (sse4_2) always stay."""
    amx_xeon = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
    assert apply_cap(amx_xeon, "AVX2") == {"sse4_2", "avx", "avx2", "fma", "f16c"}
    assert apply_cap(amx_xeon, "avx512_core_bf16") == amx_xeon - {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
    assert apply_cap(amx_xeon, "AVX512_CORE") == {"sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f",
                                                  "avx512bw", "avx512vl", "avx512dq"}
    assert apply_cap(amx_xeon, None) == apply_cap(amx_xeon, "ALL") == amx_xeon


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_cpu_reads_proc_cpuinfo():
    here = cpu()
    assert here.hardware == _proc_flags()
    assert here.flags == (here.hardware if not here.cap else apply_cap(here.hardware, here.cap))
    if "amx_bf16" in here.flags and "amx_int8" in here.flags:
        assert here.level == "AMX"
    elif "avx512f" not in here.flags and "avx2" in here.flags:
        assert here.level in ("AVX2", "AVX2+VNNI")


# ------------------------------------------------------------------ the table against the engines
def _tiny():
    m = rk.create_model("resnet20")
    give_trained_bn_stats(m)
    return m.eval()


def _refused_by_the_engine_itself(backend: str, dtype: str) -> str:
    """Run the engine's own kernel for a cell the table says is not offered; return its error."""
    if (backend, dtype) == ("torch", "bf16"):
        w = torch.randn(8, 3, 3, 3).bfloat16().to_mkldnn()
        with pytest.raises(RuntimeError) as err:
            torch._C._nn.mkldnn_reorder_conv2d_weight(w, [1, 1], [1, 1], [1, 1], 1, [1, 3, 8, 8])
        return str(err.value)
    if (backend, dtype) == ("onnxruntime", "bf16"):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        bf16 = [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, s) for n, s in
                (("x", [1, 3, 8, 8]), ("w", [8, 3, 3, 3]), ("y", [1, 8, 6, 6]))]
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "bf16_conv", bf16[:2], bf16[2:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        with pytest.raises(Exception) as err:  # ORT's NOT_IMPLEMENTED: no bf16 Conv kernel on the CPU
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return str(err.value)
    raise AssertionError(f"no check written for a refused {backend} {dtype}")


def verify_table() -> dict[str, str]:
    """Every installed (engine, precision) cell does what ``Engine.support`` says; returns the cells."""
    model, x = _tiny(), torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    seen = {}
    for backend, engine in ENGINES.items():
        for dtype in DTYPES:
            if not engine.available(dtype):
                continue
            support = engine.support(dtype)
            seen[f"{backend} {dtype}"] = support.level
            kwargs = dict(backend=backend, dtype=dtype, input_size=(4, 3, 16, 16))
            if dtype == "int8":
                kwargs["calibration"] = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))
            if support.level == NOT_OFFERED:
                assert _refused_by_the_engine_itself(backend, dtype)
                with pytest.raises(EngineError, match=f"needs {support.needs or ''}|does not compute in {dtype}"):
                    rk.optimize_for_inference(model, **kwargs)
                continue
            with pytest.warns(UserWarning, match="Native on this CPU") if not support.native else _nothing():
                fast = rk.optimize_for_inference(model, **kwargs)
            err = relative_error(ref, fast(x))
            assert err <= TOLERANCE[dtype], (backend, dtype, err)
            if support.level == AS_FP32:
                assert fast.describe()["compute"].startswith("f32") and err < 1e-4
            elif dtype != "fp32":
                assert err > 1e-5, f"{backend} {dtype} is float32-exact: not computed in {dtype}"
    return seen


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_every_cell_of_the_table_does_what_it_says_on_this_cpu():
    seen = verify_table()
    assert seen["torch fp32"] == seen["onnxruntime fp32"] == seen["openvino fp32"] == "native"
    assert seen["onnxruntime bf16"] == NOT_OFFERED  # no bf16 kernels in ONNX Runtime's CPU provider, any CPU


def _run_avx2(code: str) -> dict:
    env = {**os.environ, **AVX2_ONLY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_x86_avx2
def test_every_cell_of_the_table_does_what_it_says_on_an_avx2_only_cpu():
    seen = _run_avx2("import json, test_cpu; print(json.dumps(test_cpu.verify_table()))")
    assert seen["torch bf16"] == NOT_OFFERED            # oneDNN refuses bf16 below AVX-512 BW/VL/DQ
    assert seen["torch int8"] == "emulated (slow)"      # no VNNI
    assert seen["onnxruntime bf16"] == NOT_OFFERED
    assert seen.get("openvino bf16", AS_FP32) == AS_FP32   # OpenVINO computes f32 for a bf16 hint


@needs_x86_avx2
def test_avx2_only_cpu_refuses_torch_bf16_at_build_and_auto_says_why():
    out = _run_avx2("""
import json, warnings, torch, resnetkit as rk, test_cpu
from resnetkit.deploy.engines import EngineError
m = test_cpu._tiny()
try:
    rk.optimize_for_inference(m, backend="torch", dtype="bf16")
    refusal = None
except EngineError as e:
    refusal = str(e)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fast = rk.optimize_for_inference(m, backend="auto", dtype="bf16", input_size=(2, 3, 16, 16), budget_s=0.3)
rows = {c.label: [c.status, c.note] for c in fast.report}
print(json.dumps({"refusal": refusal, "dtype": fast.dtype, "rows": rows, "warnings": [str(w.message) for w in caught]}))
""")
    refusal = out["refusal"]
    assert refusal and "\n" not in refusal
    assert "torch bf16 does not run on this CPU" in refusal and "AVX2" in refusal
    assert "needs AVX512-BF16 or AMX-BF16" in refusal                      # the missing feature
    assert "fp32 on torch" in refusal and "int8 on onnxruntime" in refusal  # what runs here instead
    assert out["rows"]["torch bf16"] == ["not on this CPU", "not offered: needs AVX512-BF16 or AMX-BF16"]
    assert out["rows"]["onnxruntime bf16"][0] == "not offered"
    assert out["dtype"] == "fp32" and any("no engine runs bf16 natively" in w for w in out["warnings"])
    assert any(status == "chosen" and label.endswith("fp32") for label, (status, _) in out["rows"].items())


# ------------------------------------------------------------------ resnetkit doctor
def test_doctor_prints_the_cpu_engines_and_a_cell_per_engine_and_precision(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("CPU:") and cpu().model in lines[0]
    isa = next(line for line in lines if line.startswith("ISA:"))
    if "avx2" in cpu().flags:
        assert "AVX2" in isa
    assert ("AMX-BF16" in isa) == ("amx_bf16" in cpu().flags)
    engines = next(line for line in lines if line.startswith("engines:"))
    assert f"torch {torch.__version__.split('+')[0]}" in engines
    header = next(i for i, line in enumerate(lines) if line.split() == list(DTYPES))
    table = {line.split()[0]: line for line in lines[header + 1:header + 1 + len(ENGINES)]}
    assert set(table) == set(ENGINES)
    for name, engine in ENGINES.items():
        for dtype in DTYPES:
            if engine.available(dtype):
                assert engine.support(dtype).level in table[name]
    assert "not offered" in table["onnxruntime"]
    for dtype, unit in (("fp32", "GFLOP/s"), ("int8", "GOP/s")):
        assert any(line.strip().startswith(f"{dtype} ") and unit in line for line in lines), out


@needs_x86_avx2
def test_bf16_tests_skip_on_an_avx2_only_cpu_naming_the_feature():
    """The suite run as on an AVX2 EPYC: the bf16 tests are skipped, each reason naming what they need."""
    env = {**os.environ, **AVX2_ONLY}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:xdist", "-p", "no:cacheprovider",
                           str(ROOT / "test_deploy.py"), "-k", "bf16_close"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stdout[-3000:]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    from test_deploy import FAMILIES

    assert len(skips) == 1 and f"{len(FAMILIES)} skipped" in proc.stdout, proc.stdout[-2000:]   # one per family
    assert "needs a CPU with AVX512-BF16 or AMX-BF16" in skips[0] and "AVX2 CPU" in skips[0]


# ------------------------------------------------------------------ training with --amp
AMP_RUN = """
import json, warnings, resnetkit as rk
from resnetkit.train import Trainer, TrainConfig
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    t = Trainer(TrainConfig(model="resnet20", data="mnist5k", image_size=16, max_samples=64, batch_size=32,
                            epochs=1, amp=True, seed=0), progress=False)
    t.fit()
print(json.dumps({"amp": t.amp, "warnings": [str(w.message) for w in caught if "--amp" in str(w.message)]}))
"""


def test_amp_autocasts_where_the_cpu_has_bf16_instructions(capfd):
    from resnetkit.train import TrainConfig, Trainer

    t = Trainer(TrainConfig(model="resnet20", data="mnist5k", image_size=16, max_samples=64, batch_size=32,
                            epochs=1, amp=True, seed=0), progress=False)
    t.fit()
    log = capfd.readouterr().out
    native = bool({"amx_bf16", "avx512_bf16"} & cpu().flags)
    assert t.amp == native
    assert ("bf16 autocast" in log) == native and ("fp32 (--amp: no bf16 instructions" in log) == (not native)


@needs_x86_avx2
def test_amp_on_an_avx2_only_cpu_trains_in_fp32_and_says_so():
    """bf16 autocast ran a resnet20 step 10x slower than fp32 under the AVX2 cap: --amp keeps fp32 there."""
    out = _run_avx2(AMP_RUN)
    assert out["amp"] is False and len(out["warnings"]) == 1
    assert "AVX2" in out["warnings"][0] and "AVX512-BF16" in out["warnings"][0] and "fp32 instead" in out["warnings"][0]


def test_onnxruntime_int8_uses_7_bit_weights_only_without_vnni(monkeypatch, tmp_path):
    """ONNX Runtime's quantization guide: without VNNI its u8×s8 kernel (VPMADDUBSW) can saturate, and
    reduce_range (weights in [-64, 63]) is the remedy; with VNNI the full int8 range is used."""
    import onnx
    from onnx import numpy_helper

    from resnetkit.deploy.cpu import CPU
    from resnetkit.deploy.engines import onnxruntime_engine as ort_engine
    from resnetkit.deploy.onnx import export_onnx

    model = rk.create_model("resnet20").eval()
    path = export_onnx(model, str(tmp_path / "m.onnx"), (1, 3, 32, 32))
    calib = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))]
    widest = {}
    for kind, flags in (("avx2", {"avx2", "fma"}), ("vnni", {"avx2", "fma", "avx512f", "avx512_vnni"})):
        here = CPU("test CPU", 2, frozenset(flags), None, "AVX2", frozenset(flags))
        monkeypatch.setattr(ort_engine, "cpu", lambda here=here: here)
        work = tmp_path / kind
        work.mkdir()
        q = onnx.load(ort_engine.quantize_qdq(path, calib, str(work)))
        weights = [numpy_helper.to_array(t) for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        widest[kind] = max(int(abs(w.astype(int)).max()) for w in weights if w.size > 1)
    assert widest["avx2"] <= 64 < widest["vnni"], widest
