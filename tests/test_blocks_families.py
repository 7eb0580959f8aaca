"""The blocks of the non-ResNet families on their own: shapes, shortcuts, refusals."""
import pytest
import torch
from torch import nn

import resnetkit as rk


# ------------------------------------------------------------------ d2l Residual
def test_d2l_residual_shapes_and_bias():
    blk = rk.Residual(3, 3)
    assert blk(torch.randn(4, 3, 6, 6)).shape == (4, 3, 6, 6)
    assert blk.conv3 is None and blk.conv1.bias is not None
    blk = rk.Residual(3, 6, use_1x1conv=True, strides=2)
    assert blk(torch.randn(4, 3, 6, 6)).shape == (4, 6, 3, 3)
    assert blk.conv3.kernel_size == (1, 1) and blk.conv3.stride == (2, 2)


@pytest.mark.parametrize("args", [dict(input_channels=3, num_channels=6),
                                  dict(input_channels=64, num_channels=64, strides=2)])
def test_d2l_residual_refuses_identity_shortcut_that_cannot_match(args):
    with pytest.raises(ValueError, match="use_1x1conv=True"):
        rk.Residual(**args)


# ------------------------------------------------------------------ ConvBNAct
def test_conv_bn_act_layout_and_names():
    brick = rk.ConvBNAct(8, 16, 3, stride=2)
    assert list(brick.state_dict())[:2] == ["0.weight", "1.weight"]
    assert brick[0].bias is None and brick[0].padding == (1, 1)
    assert brick(torch.randn(1, 8, 10, 10)).shape == (1, 16, 5, 5)
    timm_named = rk.ConvBNAct(8, 16, 1, names=("conv", "bn1", "act"))
    assert [n for n, _ in timm_named.named_children()] == ["conv", "bn1", "act"]
    bare = rk.ConvBNAct(8, 16, 1, norm_layer=None, act_layer=None)
    assert len(bare) == 1 and bare[0].bias is not None  # no norm: the conv keeps its bias
    relu6 = rk.ConvBNAct(8, 16, act_layer=torch.nn.ReLU6)
    assert isinstance(relu6[2], torch.nn.ReLU6)


# ------------------------------------------------------------------ InvertedResidual
def test_inverted_residual_seed_example_has_no_shortcut():
    blk = rk.InvertedResidual(3, 64, 1, 6)
    assert blk.use_res_connect is False
    assert blk(torch.randn(1, 3, 224, 224)).shape == (1, 64, 224, 224)


def test_inverted_residual_identity_shortcut_when_it_fits():
    blk = rk.InvertedResidual(16, 16, 1, 6).eval()
    assert blk.use_res_connect
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(blk(x), x + blk.conv(x))
    strided = rk.InvertedResidual(16, 16, 2, 6)
    assert not strided.use_res_connect and strided(x).shape == (1, 16, 4, 4)
    assert len(rk.InvertedResidual(16, 24, 1, 1).conv) == 3  # t = 1: no expansion conv
    with pytest.raises(ValueError, match="stride"):
        rk.InvertedResidual(16, 16, 3, 6)


def test_inverted_residual_activation_is_choosable():
    blk = rk.InvertedResidual(8, 8, 1, 2, act_layer=torch.nn.ReLU)
    acts = {type(m) for m in blk.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))}
    assert acts == {torch.nn.ReLU}


# ------------------------------------------------------------------ GhostModule / GhostBottleneck
def test_ghost_module_halves_the_primary_conv():
    gm = rk.GhostModule(16, 48)
    assert gm.primary_conv[0].out_channels == 24 and gm.cheap_operation[0].groups == 24
    assert gm(torch.randn(1, 16, 8, 8)).shape == (1, 48, 8, 8)
    assert rk.GhostModule(16, 7)(torch.randn(1, 16, 8, 8)).shape == (1, 7, 8, 8)  # odd: sliced


def test_ghost_bottleneck_seed_example():
    blk = rk.GhostBottleneck(16, 48, 24, stride=2, se_ratio=0.25)
    assert blk(torch.randn(1, 16, 56, 56)).shape == (1, 24, 28, 28)
    # depthwise + pointwise shortcut, SE reduced to a multiple of 4 with a hard-sigmoid gate
    assert [type(m) for m in blk.shortcut] == [torch.nn.Conv2d, torch.nn.BatchNorm2d] * 2
    assert blk.shortcut[0].groups == 16 and blk.shortcut[0].stride == (2, 2)
    assert blk.se.conv_reduce.out_channels == 12 and isinstance(blk.se.gate, torch.nn.Hardsigmoid)


def test_ghost_bottleneck_positional_form_of_the_issue():
    blk = rk.GhostBottleneck(16, 48, 24, 3, 2, 0.25)  # (in, mid, out, dw_kernel_size, stride, se_ratio)
    assert blk.se is not None and blk(torch.zeros(1, 16, 56, 56)).shape == (1, 24, 28, 28)


@pytest.mark.parametrize("act", [nn.GELU, nn.Sigmoid, nn.ReLU6])
def test_activations_without_inplace_are_accepted(act):
    brick, se = rk.ConvBNAct(3, 8, act_layer=act), rk.SqueezeExcite(8, act_layer=act)
    assert isinstance(brick[2], act) and isinstance(se.act1, act)
    assert brick(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)
    assert se(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)


def test_ghost_bottleneck_identity_shortcut():
    blk = rk.GhostBottleneck(24, 72, 24)
    assert isinstance(blk.shortcut, torch.nn.Identity) and blk.se is None and blk.conv_dw is None
    assert blk(torch.randn(1, 24, 8, 8)).shape == (1, 24, 8, 8)


# ------------------------------------------------------------------ shortcuts
def test_a_block_that_builds_its_projection_says_so():
    assert "downsample: 1×1 projection built by the block" in repr(rk.BasicBlock(16, 32, 2))
    assert "built by the block" not in repr(rk.BasicBlock(16, 32, 2, downsample=rk.make_shortcut(16, 32, 2)))


def test_zero_pad_shortcut_is_parameter_free_option_a():
    sc = rk.ZeroPadShortcut(16, 32, 2)
    x = torch.randn(1, 16, 8, 8)
    y = sc(x)
    assert y.shape == (1, 32, 4, 4) and not list(sc.parameters())
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()
    blk = rk.BasicBlock(16, 32, 2, downsample=sc)
    assert blk(x).shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match="make_shortcut"):
        rk.ZeroPadShortcut(32, 16, 1)
