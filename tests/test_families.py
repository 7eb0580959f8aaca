"""The non-ImageNet-ResNet families: MobileNetV2, GhostNet, d2l ResNet-18, CIFAR ResNets."""
import pytest
import torch

import resnetkit as rk
from helpers import assert_same_layout, count_params, frozen_at_stage_1, give_trained_bn_stats


# ------------------------------------------------------------------ d2l ResNet-18
def test_d2l_resnet18_defaults_and_stage_shapes_as_in_the_book():
    m = rk.create_model("d2l_resnet18").eval()
    assert m.b1[0].in_channels == 1 and m.num_classes == 10
    assert m.b1[0].bias is not None  # d2l keeps conv biases
    x = torch.zeros(1, 1, 224, 224)
    shapes = []
    with torch.no_grad():
        for name in ("b1", "b2", "b3", "b4", "b5"):
            x = m.get_submodule(name)(x)
            shapes.append(tuple(x.shape[1:]))
    # d2l §8.6 prints exactly these after b1 (incl. max pool) ... b5
    assert shapes == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_d2l_resnet18_levels_and_mnist_input():
    m = rk.create_model("d2l_resnet18", features_only=True)
    assert m.feature_info.channels() == [64, 64, 128, 256, 512]
    assert m.feature_info.reduction() == [2, 4, 8, 16, 32]
    feats = m(torch.zeros(1, 1, 224, 224))
    assert tuple(feats[0].shape) == (1, 64, 112, 112)  # level 0 is before the max pool
    net = rk.create_model("d2l_resnet18")
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert rk.create_model("d2l_resnet18", in_chans=3, num_classes=5)(torch.randn(2, 3, 32, 32)).shape == (2, 5)


# ------------------------------------------------------- parity with torchvision / timm
def _parity(ours, ref, size=32):
    """Same keys/shapes in the same order, strict load, same param count, same outputs."""
    assert_same_layout(ours, ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert count_params(ours) == count_params(ref)
    give_trained_bn_stats(ours, ref)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-5
    return x


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_mobilenet_v2_matches_torchvision(width_mult):
    import torchvision
    torch.manual_seed(0)
    _parity(rk.create_model("mobilenet_v2", width_mult=width_mult),
            torchvision.models.mobilenet_v2(width_mult=width_mult))


@pytest.mark.parametrize("name,params", [("ghostnet_050", 2_587_292), ("ghostnet_100", 5_182_508),
                                         ("ghostnet_130", 7_358_820)])
def test_ghostnet_matches_timm(name, params):
    import timm
    torch.manual_seed(0)
    ours, ref = rk.create_model(name), timm.create_model(name, pretrained=False)
    x = _parity(ours, ref)
    assert count_params(ours) == params
    with torch.no_grad():  # the head API agrees with timm's too
        feats = ours.forward_features(x)
        assert torch.allclose(feats, ref.forward_features(x), atol=1e-5)
        assert torch.allclose(ours.forward_head(feats, pre_logits=True),
                              ref.forward_head(feats, pre_logits=True), atol=1e-5)


@pytest.mark.parametrize("name,channels", [
    ("mobilenet_v2", [16, 24, 32, 96, 320]),
    ("ghostnet_100", [16, 24, 40, 112, 160]),
])
def test_imagenet_family_levels_follow_the_contract(name, channels):
    """Level i = last block at reduction 2^(i+1); the final 1×1 expansion is no level."""
    m = rk.create_model(name, features_only=True)
    assert m.feature_info.channels() == channels
    assert m.feature_info.reduction() == [2, 4, 8, 16, 32]
    feats = m(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == channels
    assert [64 // f.shape[-1] for f in feats] == [2, 4, 8, 16, 32]


# ------------------------------------------------------------------ CIFAR ResNets
# He et al. 2015, Table 6 (CIFAR-10): ResNet-20 … 110 parameter counts
@pytest.mark.parametrize("name,paper", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6),
                                        ("resnet56", 0.85e6), ("resnet110", 1.7e6)])
def test_he_cifar_resnets_have_the_papers_parameter_counts(name, paper):
    m = rk.create_model(name)
    assert abs(count_params(m) - paper) <= 0.02 * paper
    assert m.num_classes == 10
    # option A: no shortcut parameters, every weight is in a 3×3 conv, a BN or the fc
    assert not any(n for n, _ in m.named_parameters() if "downsample" in n)


@pytest.mark.parametrize("name,params", [("cifar_resnet18", 11_173_962), ("cifar_resnet34", 21_282_122),
                                         ("cifar_resnet50", 23_520_842)])
def test_cifar_resnets_stem_and_counts(name, params):
    # the counts of the widely used CIFAR ResNets (kuangliu/pytorch-cifar, 10 classes)
    m = rk.create_model(name)
    assert count_params(m) == params
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())


@pytest.mark.parametrize("name,channels,reductions", [
    ("resnet20", [16, 32, 64], [1, 2, 4]),
    ("cifar_resnet18", [64, 128, 256, 512], [1, 2, 4, 8]),
])
def test_cifar_levels_start_at_full_resolution(name, channels, reductions):
    m = rk.create_model(name, features_only=True)
    assert m.feature_info.channels() == channels and m.feature_info.reduction() == reductions
    feats = m(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 32 // r, 32 // r) for c, r in zip(channels, reductions)]


def test_cifar_shortcut_choice_is_checked():
    assert count_params(rk.create_model("resnet20", shortcut="B")) > count_params(rk.create_model("resnet20"))
    with pytest.raises(ValueError, match="shortcut must be"):
        rk.create_model("resnet20", shortcut="C")


# ------------------------------------------------------------------ head API, every new family
NEW = ["mobilenet_v2", "ghostnet_050", "d2l_resnet18", "cifar_resnet18", "resnet20"]


def _x(m):
    c, h, _ = m.default_input_size
    return torch.randn(2, c, 32 if h <= 32 else 64, 32 if h <= 32 else 64)


@pytest.mark.parametrize("name", NEW)
def test_head_api(name):
    torch.manual_seed(0)
    m = rk.create_model(name).eval()
    x = _x(m)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.ndim == 4
        pooled = m.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, m.num_features)
        assert torch.allclose(m.forward_head(feats), m(x), atol=1e-5)
        m.reset_classifier(0)
        assert torch.allclose(m(x), pooled, atol=1e-6)
        m.reset_classifier(4)
        assert m(x).shape == (2, 4) and m.get_classifier().out_features == 4


@pytest.mark.parametrize("name", NEW)
def test_grad_checkpointing_reaches_every_block(name):
    m = rk.create_model(name)
    blocks = [mod for mod in m.modules() if isinstance(mod, rk.Block)]
    assert blocks
    m.set_grad_checkpointing()
    assert all(b.grad_checkpointing for b in blocks)
    assert all(b.grad_checkpointing for b in rk.create_model(name, with_cp=True).modules() if isinstance(b, rk.Block))


# test_contract.py checks outputs/gradients under checkpointing for every registered model (mobilenet_v2
# and ghostnet included); the two cheapest new families repeat it here so this file catches it on its own
@pytest.mark.parametrize("name", ["d2l_resnet18", "resnet20"])
def test_grad_checkpointing_keeps_outputs_and_grads(name):
    torch.manual_seed(0)
    m = rk.create_model(name)
    n_blocks = sum(isinstance(mod, rk.Block) for mod in m.modules())
    assert n_blocks > 0
    x, results = _x(m), []
    for enable in (False, True):
        m.set_grad_checkpointing(enable)
        m.zero_grad()
        torch.manual_seed(1)  # same dropout draws
        out = m(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    assert sum(getattr(mod, "grad_checkpointing", False) for mod in m.modules()) == n_blocks
    (o1, g1), (o2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-3) for a, b in zip(g1, g2))


@pytest.mark.parametrize("name", ["mobilenet_v2", "ghostnet_050", "d2l_resnet18", "resnet20", "cifar_resnet18",
                                  "resnet18"])
def test_frozen_stages_freeze_the_stem_and_first_stage_by_name(name):
    # stage 0 = the stem, stage 1 = up to C2, whether or not the stem downsamples (mmdet's meaning)
    m = rk.create_model(name, frozen_stages=1).train()
    prefixes = frozen_at_stage_1(name)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in m.named_parameters() if n.startswith(prefixes)}
    assert all(any(n.startswith(p) for n in frozen) for p in prefixes)  # every prefix names real weights
    for mod_name, mod in m.named_modules():  # frozen stages stay in eval mode, without norm_eval
        if mod_name and (mod_name + ".").startswith(prefixes):
            assert not mod.training, mod_name
        elif isinstance(mod, torch.nn.BatchNorm2d):
            assert mod.training, mod_name


@pytest.mark.parametrize("name", ["mobilenet_v2", "ghostnet_050", "resnet20"])
def test_norm_eval_keeps_every_bn_in_eval(name):
    m = rk.create_model(name, frozen_stages=1, norm_eval=True).train()
    assert all(not bn.training for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    assert any(p.requires_grad for p in m.parameters())


def test_cifar_resnets_take_every_resnet_option():
    plugin = dict(cfg=dict(type="SE"), position="after_conv2", stages=(True, False, False, False))
    m = rk.create_model("cifar_resnet50", style="caffe", groups=2, deep_stem=True, avg_down=True, plugins=[plugin],
                        replace_stride_with_dilation=(False, False, True), drop_path_rate=0.1)
    assert m.feature_info.reduction() == [1, 2, 4, 4]  # dilation keeps the last stage at /4
    assert m.layer1[0].conv1.stride == (1, 1) and m.layer2[0].conv1.stride == (2, 2)  # caffe: stride on the 1×1
    assert isinstance(m.layer2[0].downsample[0], torch.nn.AvgPool2d) and len(m.conv1) == 7
    assert m.layer1[0].conv2.groups == 2 and hasattr(m.layer1[0], "after_conv2_plugins")
    assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="needs shortcut='B'"):
        rk.create_model("resnet20", avg_down=True)
