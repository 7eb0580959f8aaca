"""What the tutorials teach, run as a new user runs it: the d2l book's shape loop, a replaceable
global pool, kuangliu's block calls, and torchsummary/timm/torchvision habits."""
import pytest
import torch
import torchvision
from torch import nn

import resnetkit as rk
from helpers import give_trained_bn_stats
from test_tutorial_checkpoints import KuangliuBasicBlock

# Printed by the book's loop (d2l.ai, §8.6 "Residual Networks", PyTorch tab) for X = torch.rand(1, 1, 224, 224)
BOOK_LINES = """\
Sequential output shape:\t torch.Size([1, 64, 56, 56])
Sequential output shape:\t torch.Size([1, 64, 56, 56])
Sequential output shape:\t torch.Size([1, 128, 28, 28])
Sequential output shape:\t torch.Size([1, 256, 14, 14])
Sequential output shape:\t torch.Size([1, 512, 7, 7])
AdaptiveAvgPool2d output shape:\t torch.Size([1, 512, 1, 1])
Flatten output shape:\t torch.Size([1, 512])
Linear output shape:\t torch.Size([1, 10])
"""
# One model of each family with a global pool module
POOLED = [("resnet18", (1, 3, 64, 64)), ("resnet20", (1, 3, 32, 32)), ("d2l_resnet18", (1, 1, 64, 64)),
          ("mobilenet_v2", (1, 3, 64, 64))]


def test_the_books_shape_loop_prints_its_eight_lines(capsys):
    net = rk.create_model("d2l_resnet18")
    X = torch.rand(1, 1, 224, 224)
    for layer in net:
        X = layer(X)
        print(layer.__class__.__name__, 'output shape:\t', X.shape)
    assert capsys.readouterr().out == BOOK_LINES


def test_the_head_api_survives_the_book_layout():
    net = rk.create_model("d2l_resnet18").eval()
    x = torch.rand(2, 1, 64, 64)
    feats = net.forward_features(x)
    assert feats.shape == (2, 512, 2, 2)
    assert torch.equal(net.forward_head(feats, pre_logits=True), feats.mean((2, 3)))
    assert not any(k.startswith(("avgpool", "flatten")) for k in net.state_dict())  # no new keys
    assert [k for k in net.state_dict() if k.startswith("fc")] == ["fc.weight", "fc.bias"]
    net.reset_classifier(0)
    assert net(x).shape == (2, 512)
    backbone = rk.create_model("d2l_resnet18", features_only=True)
    assert [f.shape[1] for f in backbone(x)] == [64, 64, 128, 256, 512]
    with pytest.raises(TypeError, match="features_only backbone"):
        list(backbone)


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "d2l_resnet18", "mobilenet_v2", "ghostnet_050"])
def test_running_the_layers_in_order_is_the_forward_pass(name):
    net = rk.create_model(name).eval()
    give_trained_bn_stats(net)
    x = torch.randn(1, *net.default_input_size[:1], 64, 64)
    y = x
    for layer in net:
        y = layer(y)
    assert torch.equal(y, net(x))


def test_replacing_avgpool_acts_as_in_torchvision():
    ours, ref = rk.create_model("resnet18").eval(), torchvision.models.resnet18().eval()
    give_trained_bn_stats(ref)
    ours.load_state_dict(ref.state_dict())
    ours.avgpool = ref.avgpool = nn.AdaptiveMaxPool2d(1)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("name, size", POOLED)
def test_replacing_avgpool_changes_every_pooled_model(name, size):
    net = rk.create_model(name).eval()
    give_trained_bn_stats(net)
    x = torch.randn(size)
    f = net.forward_features(x)
    net.avgpool = nn.AdaptiveMaxPool2d(1)
    pooled = net.forward_head(f, pre_logits=True)
    assert torch.equal(pooled, f.amax((2, 3))) and not torch.allclose(pooled, f.mean((2, 3)))
    assert torch.allclose(net(x), net.get_classifier()(f.amax((2, 3))), atol=1e-6)


def test_summary_shows_the_pool_and_flatten_rows():
    rows = rk.summary(rk.create_model("d2l_resnet18"), (1, 1, 224, 224), depth=1).rows
    assert [(r.name, r.type, r.output_shape) for r in rows[-3:]] == [
        ("avgpool", "AdaptiveAvgPool2d", (1, 512, 1, 1)), ("flatten", "Flatten", (1, 512)), ("fc", "Linear", (1, 10))]


def test_kuangliu_basic_block_call_builds_his_block():
    ours = rk.BasicBlock(64, 128, 2).eval()
    ref = KuangliuBasicBlock(64, 128, 2).eval()   # kuangliu/pytorch-cifar's block, written out
    give_trained_bn_stats(ref)
    ours.load_state_dict({k.replace("shortcut.", "downsample."): v for k, v in ref.state_dict().items()})
    x = torch.randn(1, 64, 56, 56)
    assert ours(x).shape == (1, 128, 28, 28)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_a_downsample_that_cannot_fit_is_still_refused():
    with pytest.raises(ValueError, match="but the branch gives 1×128×4×4"):
        rk.BasicBlock(64, 128, 2, downsample=nn.Conv2d(64, 128, 1))
