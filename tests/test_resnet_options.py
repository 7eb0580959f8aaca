"""Every backbone option does what mmdet's and torchvision's documentation says."""
import pytest
import torch
import torchvision
from torch import nn

import resnetkit as rk
from helpers import count_params, give_trained_bn_stats

X = torch.randn(2, 3, 64, 64)


def _bns(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_stages_have_no_grad_and_stay_eval():
    m = rk.create_model("resnet18", frozen_stages=1)
    m.train()
    frozen = [m.conv1, m.bn1, m.layer1]
    assert all(not p.requires_grad for mod in frozen for p in mod.parameters())
    assert all(p.requires_grad for p in m.layer2.parameters())
    assert all(not bn.training for mod in frozen for bn in _bns(mod))
    assert all(bn.training for bn in _bns(m.layer2))
    m(X).sum().backward()
    assert m.conv1.weight.grad is None and m.layer1[0].conv1.weight.grad is None
    assert m.layer2[0].conv1.weight.grad is not None
    # frozen BN running stats must not move in training
    before = m.bn1.running_mean.clone()
    m(X)
    assert torch.equal(before, m.bn1.running_mean)


def test_frozen_stage_zero_is_the_stem_only():
    m = rk.create_model("resnet50", frozen_stages=0).train()
    assert not m.conv1.weight.requires_grad and not m.bn1.weight.requires_grad
    assert m.layer1[0].conv1.weight.requires_grad


def test_frozen_stages_out_of_range_is_clear():
    with pytest.raises(ValueError, match="frozen_stages=5"):
        rk.create_model("resnet18", frozen_stages=5)


def test_norm_eval_keeps_every_bn_in_eval():
    m = rk.create_model("resnet18", norm_eval=True)
    m.train()
    assert m.training and all(not bn.training for bn in _bns(m))
    before = [bn.running_mean.clone() for bn in _bns(m)]
    m(X)
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, _bns(m)))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_with_cp_gives_equal_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = rk.create_model(name, num_classes=10)
    cp = rk.create_model(name, num_classes=10, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    assert all(b.grad_checkpointing for b in cp.modules() if isinstance(b, rk.Block))
    outs, grads, conv_calls = [], [], []
    for m in (plain, cp):
        m.train()
        calls = []
        m.layer1[0].conv1.register_forward_hook(lambda *_: calls.append(1))
        out = m(X)
        out.square().sum().backward()
        outs.append(out)
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
        conv_calls.append(len(calls))
    assert conv_calls == [1, 2]  # checkpointing really recomputes the block in backward
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4), k
    # ...and the recompute leaves BatchNorm running statistics as one forward pass left them
    for (k, a), b in zip(plain.state_dict().items(), cp.state_dict().values()):
        assert torch.equal(a, b), k


def test_set_grad_checkpointing_toggles_blocks():
    m = rk.create_model("resnet18")
    m.set_grad_checkpointing(True)
    assert all(b.grad_checkpointing for b in m.modules() if isinstance(b, rk.Block))
    m.set_grad_checkpointing(False)
    assert not any(b.grad_checkpointing for b in m.modules() if isinstance(b, rk.Block))


def test_deep_stem_is_three_3x3_convs():
    m = rk.create_model("resnet50", deep_stem=True).eval()
    convs = [c for c in m.conv1 if isinstance(c, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1)]
    assert [c.out_channels for c in convs] == [32, 32, 64]
    assert m(X).shape == (2, 1000)
    assert rk.create_model("resnet50", deep_stem=True, features_only=True)(X)[0].shape == (2, 64, 32, 32)


def test_avg_down_puts_the_stride_in_an_avg_pool():
    m = rk.create_model("resnet50", avg_down=True).eval()
    ds = m.layer2[0].downsample
    assert isinstance(ds[0], nn.AvgPool2d) and ds[0].stride == 2
    assert ds[1].stride == (1, 1) and ds[1].kernel_size == (1, 1)
    assert isinstance(m.layer1[0].downsample[0], nn.Identity)  # stride 1: nothing to average, slot kept (timm)
    assert m(X).shape == (2, 1000)


def test_caffe_style_moves_stride_to_first_1x1():
    py, caffe = rk.create_model("resnet50"), rk.create_model("resnet50", style="caffe")
    assert py.layer2[0].conv1.stride == (1, 1) and py.layer2[0].conv2.stride == (2, 2)
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert caffe.eval()(X).shape == (2, 1000)
    assert count_params(py) == count_params(caffe)


@pytest.mark.parametrize("dilation,c5_stride", [((False, False, True), 16), ((False, True, True), 8)])
def test_dilation_keeps_c5_resolution(dilation, c5_stride):
    f = rk.create_model("resnet50", features_only=True, replace_stride_with_dilation=dilation).eval()
    feats = f(torch.randn(1, 3, 64, 64))
    assert feats[-1].shape == (1, 2048, 64 // c5_stride, 64 // c5_stride)
    assert f.feature_info.reduction()[-1] == c5_stride
    assert f.layer4[1].conv2.dilation == ((2, 2) if c5_stride == 16 else (4, 4))


def test_dilation_also_works_for_basic_blocks():
    f = rk.create_model("resnet18", features_only=True, replace_stride_with_dilation=(False, True, True))
    assert f.eval()(torch.randn(1, 3, 64, 64))[-1].shape == (1, 512, 8, 8)


def test_zero_init_residual_makes_blocks_start_as_identity():
    m = rk.create_model("resnet50", zero_init_residual=True)
    assert all(b.bn3.weight.abs().sum() == 0 for b in m.modules() if isinstance(b, rk.Bottleneck))
    m = rk.create_model("resnet18", zero_init_residual=True)
    blk = m.layer1[0].eval()
    x = torch.randn(1, 64, 8, 8).relu()
    assert torch.allclose(blk(x), x)


def test_drop_path_is_stochastic_in_train_and_off_in_eval():
    m = rk.create_model("resnet18", drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in m.modules() if isinstance(b, rk.BasicBlock)]
    assert rates[0] == 0 and rates == sorted(rates)  # linear decay rule: deeper blocks drop more
    assert rates[-1] == pytest.approx(0.3)
    give_trained_bn_stats(m)
    m.eval()
    assert torch.equal(m(X), m(X))
    m.train()
    for bn in _bns(m):
        bn.eval()  # isolate drop path from batch statistics
    torch.manual_seed(1)
    a = m(X)
    torch.manual_seed(2)
    b = m(X)
    assert not torch.allclose(a, b)


class ZeroPlugin(nn.Module):
    """Test plugin: replaces its input by zeros, so the block maths says what must come out."""

    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        return torch.zeros_like(x)


rk.register_plugin("TestZero", ZeroPlugin)


def _zero_at(position, stages=None):
    spec = {"cfg": {"type": "TestZero"}, "position": position}
    return [dict(spec, stages=stages)] if stages else [spec]


def _relu_after(*layers):
    """What the block's layers after the plugin make of the zeros it hands on."""
    def run(block, x):
        width = block.bn1.num_features if layers else x.shape[1]  # inside the branch, or at its end
        z = torch.zeros(x.shape[0], width, *x.shape[2:])
        for name in layers:
            z = getattr(block, name)(z)
        return (z + x).relu()
    return run


# Zeroing the tensor at a position: the layers before it drop out, the ones after it see zeros
# (a conv without bias keeps them zero, BN turns them into its shift), then out = relu(branch + x).
@torch.no_grad()
@pytest.mark.parametrize("block_cls,position,expected", [
    (rk.Bottleneck, "after_conv1", _relu_after("conv2", "bn2", "relu", "conv3", "bn3")),
    (rk.Bottleneck, "after_conv2", _relu_after("conv3", "bn3")),
    (rk.Bottleneck, "after_conv3", _relu_after()),
    (rk.BasicBlock, "after_conv1", _relu_after("conv2", "bn2")),
    (rk.BasicBlock, "after_conv2", _relu_after()),
])
def test_each_plugin_position_runs_where_it_says(block_cls, position, expected):
    torch.manual_seed(0)
    inplanes = 16 * block_cls.expansion  # identity shortcut: x is added unchanged
    block = block_cls(inplanes, 16, plugins=_zero_at(position))
    give_trained_bn_stats(block)  # nonzero BN shifts, so each position predicts a different output
    block.eval()
    x = torch.randn(2, inplanes, 8, 8)
    torch.testing.assert_close(block(x), expected(block, x), rtol=0, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("name,position", [("resnet18", "after_conv2"), ("resnet50", "after_conv3"),
                                           ("cifar_resnet50", "after_conv3"), ("resnet20", "after_conv2")])
def test_plugins_apply_on_the_named_stages_only(name, position):
    base = rk.create_model(name).eval()
    stages = (False, True, False, True)[:len(base.stage_ends) - 1]  # resnet20 has 3 stages
    give_trained_bn_stats(base)
    m = rk.create_model(name, plugins=_zero_at(position, stages)).eval()
    m.load_state_dict(base.state_dict())  # the zero plugin has no weights
    seen = []
    for blk_name, blk in m.named_modules():
        if isinstance(blk, (rk.BasicBlock, rk.Bottleneck)):
            blk.register_forward_hook(lambda mod, inp, out, n=blk_name: seen.append((n, inp[0].clone(), out)))
    m(torch.randn(1, 3, 64, 64))
    assert len(seen) == sum(isinstance(b, (rk.BasicBlock, rk.Bottleneck)) for b in m.modules())
    for blk_name, x, out in seen:
        stage = int(blk_name[len("layer")]) - 1
        ref_block = base.get_submodule(blk_name)
        identity = x if ref_block.downsample is None else ref_block.downsample(x)
        if stages[stage]:  # the plugin zeroes the last branch tensor: the block passes relu(shortcut) on
            torch.testing.assert_close(out, identity.relu(), rtol=0, atol=1e-6)
        else:  # the same block without a plugin, on the same input
            torch.testing.assert_close(out, ref_block(x), rtol=0, atol=1e-6)
            assert not torch.allclose(out, identity.relu())


@torch.no_grad()
@pytest.mark.parametrize("cfg", [{"type": "SE", "ratio": 1 / 16}, {"type": "NonLocal"}])
def test_se_and_nonlocal_plugins_change_the_output(cfg):
    torch.manual_seed(0)
    plain = rk.Bottleneck(64, 16)
    block = rk.Bottleneck(64, 16, plugins=[{"cfg": cfg, "position": "after_conv3"}])
    block.load_state_dict(plain.state_dict(), strict=False)
    give_trained_bn_stats(plain, block)
    plugin = block.after_conv3_plugins[0]
    for p in plugin.parameters():  # NonLocal's γ starts at 0 (identity); any nonzero weights must act
        p.normal_(0, 0.5)
    plain.eval(), block.eval()
    x = torch.randn(2, 64, 8, 8)
    branch = plain.bn3(plain.conv3(plain.relu(plain.bn2(plain.conv2(plain.relu(plain.bn1(plain.conv1(x))))))))
    out = block(x)
    torch.testing.assert_close(out, (plugin(branch) + x).relu(), rtol=0, atol=1e-5)
    assert (out - plain(x)).abs().max() > 1e-2


def test_se_plugin_after_conv2_of_basic_block():
    m = rk.create_model("resnet18", plugins=[{"cfg": {"type": "SE"}, "position": "after_conv2"}])
    assert isinstance(m.layer1[0].after_conv2_plugins[0], rk.SqueezeExcite)
    assert m.eval()(X).shape == (2, 1000)


def test_nonlocal_plugin_starts_as_identity():
    base = rk.create_model("resnet18").eval()
    nl = rk.create_model("resnet18", plugins=[{"cfg": {"type": "NonLocal"}, "position": "after_conv2",
                                               "stages": (False, False, False, True)}]).eval()
    nl.load_state_dict(base.state_dict(), strict=False)
    assert torch.allclose(base(X), nl(X), atol=1e-5)


def test_nonlocal_initialises_itself_and_the_model_leaves_it_so():
    torch.manual_seed(0)
    m = rk.create_model("resnet50", plugins=[{"cfg": {"type": "NonLocal"}, "position": "after_conv3",
                                              "stages": (False, False, True, False)}])
    for nl in (rk.NonLocal(64), m.layer3[0].after_conv3_plugins[0]):
        # N(0, 0.01) as mmcv's NonLocal2d; the ResNet's Kaiming fan_out init would give std ≈ 0.04-0.06 here
        for conv in (nl.g, nl.theta, nl.phi, nl.conv_out):
            assert 0.008 < conv.weight.std() < 0.012, conv
        assert not nl.g.bias.any() and not nl.norm.weight.any() and not nl.norm.bias.any()


def test_register_plugin_adds_a_type():
    class Scale(nn.Module):
        def __init__(self, channels, value=2.0):
            super().__init__()
            self.scale = nn.Parameter(torch.full((1, channels, 1, 1), value))

        def forward(self, x):
            return x * self.scale

    rk.register_plugin("TestScale", Scale)
    m = rk.create_model("resnet18", plugins=[{"cfg": {"type": "TestScale", "value": 1.0},
                                              "position": "after_conv1"}])
    assert m.layer2[0].after_conv1_plugins[0].scale.shape == (1, 128, 1, 1)


def test_register_plugin_refuses_to_replace_a_builtin():
    from resnetkit.blocks.plugins import SEPlugin
    with pytest.raises(ValueError, match="'SE' is already registered.*override=True"):
        rk.register_plugin("SE", ZeroPlugin)
    m = rk.create_model("resnet18", plugins=[{"cfg": {"type": "SE"}, "position": "after_conv2"}])
    assert isinstance(m.layer1[0].after_conv2_plugins[0], SEPlugin)  # the built-in is still there
    with pytest.raises(TypeError, match="nn.Module subclass"):
        rk.register_plugin("TestNotAModule", lambda channels: None)
    try:
        rk.register_plugin("SE", ZeroPlugin, override=True)
        m = rk.create_model("resnet18", plugins=[{"cfg": {"type": "SE"}, "position": "after_conv2"}])
        assert isinstance(m.layer1[0].after_conv2_plugins[0], ZeroPlugin)
    finally:
        rk.register_plugin("SE", SEPlugin, override=True)


@pytest.mark.parametrize("spec,match", [
    ({"cfg": {"type": "SEE"}, "position": "after_conv1"}, "Did you mean"),
    ({"cfg": {"type": "SE"}, "position": "after_conv4"}, "position"),
    ({"cfg": {"type": "SE"}, "position": "after_conv3"}, "after_conv3"),  # BasicBlock has only 2 convs
    ({"cfg": {"type": "SE"}, "position": "after_conv1", "stages": (True,)}, "4 booleans"),
])
def test_bad_plugin_specs_are_clear(spec, match):
    with pytest.raises(ValueError, match=match):
        rk.create_model("resnet18", plugins=[spec])


# ------------------------------------------------ mmdet's options through create_model (issue 12)
def _resnet_family():
    """The ResNet-class models with torchvision's blocks (Res2Net's and ResNeSt's own blocks have no plain conv2)."""
    from resnetkit.models.res2net import Res2Net
    from resnetkit.models.resnest import ResNeSt
    from resnetkit.models.resnet import ResNet
    from resnetkit.registry import get_entry
    return [n for n in rk.list_models() if issubclass(get_entry(n).cls, ResNet)
            and not issubclass(get_entry(n).cls, (Res2Net, ResNeSt))]


@pytest.mark.parametrize("name", _resnet_family())
def test_mmdet_options_reach_every_resnet_family_model(name):
    m = rk.create_model(name, num_stages=2, base_channels=16, norm_cfg=dict(type="GN", num_groups=4),
                        strides=(1, 1), dilations=(1, 2), num_classes=3).eval()
    e = m.layer1[0].expansion
    assert not hasattr(m, "layer3") and m.fc.in_features == 32 * e
    assert m.feature_info.channels()[-2:] == [16 * e, 32 * e]
    assert m.feature_info.reduction()[-1] == m.feature_info.reduction()[-2]  # stride 1, dilation 2
    assert m.layer2[-1].conv2.dilation == (2, 2)
    norms = [k for k in m.state_dict() if k.endswith(".weight") and m.get_submodule(k[:-7]).__class__ in
             (nn.GroupNorm, nn.BatchNorm2d)]
    assert norms and all(isinstance(m.get_submodule(k[:-7]), nn.GroupNorm) for k in norms)
    assert "layer1.0.gn1.weight" in m.state_dict() and not any(".bn" in k for k in m.state_dict())
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_num_stages_drops_the_later_stages():
    m = rk.create_model("resnet50", num_stages=3)
    assert not any(k.startswith("layer4") for k in m.state_dict()) and m.fc.in_features == 1024
    assert m.feature_info.channels() == [64, 256, 512, 1024]
    for bad in (0, 5):
        with pytest.raises(ValueError, match="num_stages must be 1..4"):
            rk.create_model("resnet50", num_stages=bad)


def test_strides_and_dilations_as_mmdet_and_contracted_as_torchvision():
    # mmdet ResLayer: every block of a stage at dilations[i]; mmseg's contract_dilation halves the first block's
    m = rk.create_model("resnet50", strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
    assert [b.conv2.dilation for b in m.layer4] == [(2, 2)] * 3 and m.layer4[0].conv2.stride == (1, 1)
    assert m.feature_info.reduction() == [2, 4, 8, 16, 16]
    torch.manual_seed(0)
    ours = rk.create_model("resnet50", strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), contract_dilation=True).eval()
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    give_trained_bn_stats(ref)
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(X), ref(X), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="strides needs 4 positive integers"):
        rk.create_model("resnet50", strides=(1, 2, 2))
    with pytest.raises(ValueError, match="one vocabulary"):
        rk.create_model("resnet50", dilations=(1, 1, 2, 4), replace_stride_with_dilation=(False, True, True))


def test_base_and_stem_channels():
    m = rk.create_model("resnet50", stem_channels=32, base_channels=32)
    assert m.conv1.out_channels == 32 and m.layer1[0].conv1.in_channels == 32
    assert m.feature_info.channels() == [32, 128, 256, 512, 1024]
    d = rk.create_model("resnet50d", stem_channels=128)  # mmdet deep stem: stem_channels // 2, twice, then all
    assert [m.out_channels for m in d.conv1 if isinstance(m, nn.Conv2d)] == [64, 64, 128]


def test_norm_cfg_gn_uses_mmcv_names():
    m = rk.create_model("resnet50", norm_cfg=dict(type="GN", num_groups=32, requires_grad=True),
                        zero_init_residual=True)
    sd = m.state_dict()
    assert {"gn1.weight", "layer1.0.gn1.weight", "layer1.0.gn2.bias", "layer1.0.gn3.weight",
            "layer1.0.downsample.1.weight"} <= set(sd)
    assert not any("running_mean" in k or ".bn" in k or k.startswith("bn") for k in sd)
    assert m.gn1.num_groups == 32 and isinstance(m.layer1[0].downsample[1], nn.GroupNorm)
    assert torch.count_nonzero(m.layer1[0].gn3.weight) == 0  # zero_init_residual reaches GN too


def test_norm_cfg_requires_grad_false_freezes_norm_affine_parameters():
    m = rk.create_model("resnet18", norm_cfg=dict(type="BN", requires_grad=False), num_classes=4)
    norms = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert norms and all(not p.requires_grad for n in norms for p in n.parameters())
    m(X).sum().backward()
    assert all(n.weight.grad is None for n in norms) and m.layer1[0].conv1.weight.grad is not None


def test_norm_cfg_syncbn_is_a_real_syncbatchnorm_equal_to_bn_on_one_process():
    torch.manual_seed(0)
    sync = rk.create_model("resnet18", norm_cfg=dict(type="SyncBN"), num_classes=4).train()
    bn = rk.create_model("resnet18", num_classes=4).train()
    syncs = [n for n in sync.modules() if isinstance(n, nn.modules.batchnorm._BatchNorm)]
    assert all(isinstance(n, nn.SyncBatchNorm) for n in syncs) and len(syncs) == len(_bns(bn)) == 20
    bn.load_state_dict(sync.state_dict())
    torch.testing.assert_close(sync(X), bn(X))  # training mode: batch statistics
    torch.testing.assert_close(sync.layer4[1].bn2.running_var, bn.layer4[1].bn2.running_var)
    normed = rk.create_model("resnet18", norm_cfg=dict(type="SyncBN"), norm_eval=True).train()
    assert not any(n.training for n in normed.modules() if isinstance(n, nn.SyncBatchNorm))


def test_syncbn_in_a_one_process_group_is_batchnorm_on_cpu(tmp_path):
    # torch's SyncBatchNorm refuses CPU tensors once a process group exists (a one-process torchrun)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="GPU"):
            nn.SyncBatchNorm(3).train()(torch.randn(2, 3, 4, 4))
        torch.manual_seed(0)
        sync = rk.create_model("resnet18", norm_cfg=dict(type="SyncBN"), num_classes=4).train()
        bn = rk.create_model("resnet18", num_classes=4).train()
        bn.load_state_dict(sync.state_dict())
        torch.testing.assert_close(sync(X), bn(X))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm_cfg=dict(type="LN")), "not supported; use one of"),
    (dict(norm_cfg=dict(type="GN")), "needs num_groups"),
    (dict(norm_cfg=dict(type="BN", momentun=0.1)), "momentun"),
    (dict(norm_cfg=dict(type="BN"), norm_layer=nn.BatchNorm2d), "not both"),
    (dict(norm_cfg=dict(type="GN", num_groups=48)), "num_groups=48"),
])
def test_bad_norm_cfg_is_clear(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rk.create_model("resnet50", **kwargs)


# ----------------------------------------------------------------------------------- DCN
DCNV2 = dict(type="DCNv2", deform_groups=1, fallback_on_stride=False)


@pytest.mark.parametrize("kind,groups,per_tap", [("DCN", 1, 2), ("DCNv2", 1, 3), ("DCNv2", 2, 3)])
def test_dcn_has_mmcvs_parameter_layout(kind, groups, per_tap):
    # mmcv DeformConv2dPack / ModulatedDeformConv2dPack(bias=False): weight + conv_offset (with bias),
    # offset channels deform_groups * (2 | 3) * 3 * 3
    m = rk.create_model("resnet50", dcn=dict(type=kind, deform_groups=groups),
                        stage_with_dcn=(False, True, True, True))
    sd = m.state_dict()
    assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["layer2.0.conv2.conv_offset.weight"].shape == (groups * per_tap * 9, 128, 3, 3)
    assert sd["layer4.2.conv2.conv_offset.bias"].shape == (groups * per_tap * 9,)
    assert "layer2.0.conv2.bias" not in sd and not any(k.startswith("layer1") and "conv_offset" in k for k in sd)
    assert sum("conv_offset.weight" in k for k in sd) == 4 + 6 + 3


def _plain_and_dcn(dcn):
    torch.manual_seed(0)
    plain = rk.create_model("resnet50", num_stages=2, num_classes=5).eval()
    give_trained_bn_stats(plain)
    deform = rk.create_model("resnet50", num_stages=2, num_classes=5, dcn=dcn, stage_with_dcn=(False, True)).eval()
    r = deform.load_state_dict(plain.state_dict(), strict=False)
    assert set(r.missing_keys) == {f"layer2.{i}.conv2.conv_offset.{p}" for i in range(4) for p in ("weight", "bias")}
    return plain, deform


def test_untrained_dcn_equals_the_plain_conv():
    plain, deform = _plain_and_dcn(dict(type="DCN"))  # the model's init leaves the offsets at zero
    with torch.no_grad():
        torch.testing.assert_close(deform(X), plain(X), rtol=0, atol=1e-5)


def test_untrained_dcnv2_is_half_the_plain_conv():
    from resnetkit.blocks.dcn import DeformConv2d
    plain, deform = _plain_and_dcn(DCNV2)
    conv = deform.layer2[1].conv2
    assert isinstance(conv, DeformConv2d)
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), 0.5 * nn.functional.conv2d(x, conv.weight, padding=1), rtol=0, atol=1e-5)


def test_offsets_are_dy_dx_per_tap_and_shift_the_grid():
    # mmcv's kernel reads offset channel 2k as the row (y) and 2k+1 as the column (x) shift of tap k
    from resnetkit.blocks.dcn import DeformConv2d
    torch.manual_seed(0)
    conv = DeformConv2d(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 7, 7)
    # tap (ky, kx) of output (i, j) then reads x[i + ky + dy, j + kx + dx] (zero outside): a plain conv
    # over x zero-padded one more on the far side and one less on the near side
    with torch.no_grad():
        conv.conv_offset.bias[1::2] = 1.0  # dx = 1: every tap one column to the right
        ref = nn.functional.conv2d(nn.functional.pad(x, (0, 2, 1, 1)), conv.weight)
        torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5)
        conv.conv_offset.bias.zero_()
        conv.conv_offset.bias[0::2] = 1.0  # dy = 1: one row down
        ref = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 0, 2)), conv.weight)
        torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5)


def test_a_nonzero_offset_changes_the_output_and_offsets_get_gradients():
    plain, deform = _plain_and_dcn(DCNV2)
    deform.train()
    out = deform(X)
    out.square().sum().backward()
    grads = [b.conv2.conv_offset.weight.grad for b in deform.layer2]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    deform.eval()
    with torch.no_grad():
        before = deform.forward_features(X)
        deform.layer2[0].conv2.conv_offset.bias.fill_(0.5)
        assert (deform.forward_features(X) - before).abs().max() > 1e-3  # float noise is ~1e-7


def test_dcn_fallback_on_stride_keeps_strided_convs_plain():
    from resnetkit.blocks.dcn import DeformConv2d
    m = rk.create_model("resnet50", num_stages=2, dcn=dict(DCNV2, fallback_on_stride=True),
                        stage_with_dcn=(True, True))
    assert isinstance(m.layer2[0].conv2, nn.Conv2d) and m.layer2[0].conv2.stride == (2, 2)
    assert isinstance(m.layer2[1].conv2, DeformConv2d) and isinstance(m.layer1[0].conv2, DeformConv2d)


@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet18", dict(dcn=DCNV2, stage_with_dcn=(False, True, True, True)), "not supported on BasicBlock"),
    ("resnet50", dict(dcn=DCNV2), "stage_with_dcn"),
    ("resnet50", dict(stage_with_dcn=(False, True, True, True)), "no dcn was given"),
    ("resnet50", dict(dcn=dict(type="DCNv3"), stage_with_dcn=(True,) * 4), "'DCN' or 'DCNv2'"),
    ("resnet50", dict(dcn=dict(DCNV2, groups=2), stage_with_dcn=(True,) * 4), r"\['groups'\]"),
])
def test_bad_dcn_options_are_clear(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rk.create_model(name, **kwargs)


# ----------------------------------------------------------------- mmcv plugin names, plugin init
def test_context_block_has_mmcv_names_starts_as_identity_and_computes_gcnet():
    plugin = {"cfg": {"type": "ContextBlock", "ratio": 1 / 4}, "position": "after_conv3",
              "stages": (False, True, True, True)}
    torch.manual_seed(0)
    plain = rk.create_model("resnet50", num_stages=2, num_classes=3).eval()
    give_trained_bn_stats(plain)
    gc = rk.create_model("resnet50", num_stages=2, num_classes=3, plugins=[dict(plugin, stages=(False, True))]).eval()
    r = gc.load_state_dict(plain.state_dict(), strict=False)
    p = "layer2.0.after_conv3_plugins.0."  # mmcv ContextBlock: conv_mask, channel_add_conv = conv, LN, ReLU, conv
    assert {p + k for k in ("conv_mask.weight", "conv_mask.bias", "channel_add_conv.0.weight",
                            "channel_add_conv.1.weight", "channel_add_conv.3.bias")} <= set(r.missing_keys)
    with torch.no_grad():  # its own init (last conv zero) survived the model's: the block starts as identity
        torch.testing.assert_close(gc(X), plain(X), rtol=0, atol=1e-5)
    block = gc.layer2[0].after_conv3_plugins[0]
    x = torch.randn(2, 512, 5, 5)
    with torch.no_grad():
        for q in block.parameters():
            q.normal_(0, 0.2)
        w = torch.einsum("c,nchw->nhw", block.conv_mask.weight.flatten(), x) + block.conv_mask.bias
        w = w.flatten(1).softmax(-1).view_as(w)                     # attention over positions
        ctx = torch.einsum("nhw,nchw->nc", w, x)[..., None, None]  # GCNet eq. (3)
        t = block.channel_add_conv
        expected = x + t[3](torch.relu(t[1](t[0](ctx))))
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_mmcv_plugin_names_build_mmcvs_classes():
    # mmcv's NonLocal2d and GeneralizedAttention (tests/test_mmcv_plugins.py checks their keys and formulas)
    from resnetkit.blocks.generalized_attention import GeneralizedAttention
    from resnetkit.blocks.nonlocal_block import NonLocal2d
    m = rk.create_model("resnet50", num_stages=1, plugins=[
        {"cfg": {"type": "NonLocal2d", "reduction": 2}, "position": "after_conv2"},
        {"cfg": {"type": "GeneralizedAttention", "num_heads": 8}, "position": "after_conv2"}])
    assert [type(p) for p in m.layer1[0].after_conv2_plugins] == [NonLocal2d, GeneralizedAttention]


class _SelfInitPlugin(nn.Module):
    """Has conv_out and norm (what the old _init_weights zeroed) and sets its own values."""

    def __init__(self, channels):
        super().__init__()
        self.conv_out = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.constant_(self.conv_out.weight, 0.5)
        nn.init.constant_(self.norm.weight, 0.7)

    def forward(self, x):
        return x


def test_a_plugins_own_initialisation_survives_model_construction():
    rk.register_plugin("TestSelfInit", _SelfInitPlugin, override=True)
    m = rk.create_model("resnet50", num_stages=1, plugins=[{"cfg": {"type": "TestSelfInit"},
                                                            "position": "after_conv1"}])
    plugin = m.layer1[0].after_conv1_plugins[0]
    assert torch.all(plugin.conv_out.weight == 0.5) and torch.all(plugin.norm.weight == 0.7)


def test_dcn_without_torchvision_is_a_clear_error_and_import_does_not_need_it(monkeypatch):
    import subprocess
    import sys
    code = "import sys, resnetkit; print('torchvision' in sys.modules)"  # torchvision is a test extra only
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    monkeypatch.setitem(sys.modules, "torchvision.ops", None)  # makes `from torchvision.ops import ...` fail
    with pytest.raises(ImportError, match="pip install torchvision"):
        rk.create_model("resnet50", num_stages=2, dcn=DCNV2, stage_with_dcn=(False, True))


def test_summary_counts_a_dcn_as_its_conv_plus_the_offset_conv():
    # the deformable 3×3 costs the plain 3×3's MACs; its offset conv (width -> 18, 3×3) comes on top:
    # at 64 px, layer2/3/4 run at 8×8, 4×4, 2×2 with widths 128, 256, 512 and 4, 6, 3 blocks
    plain = rk.summary(rk.create_model("resnet50"), (1, 3, 64, 64)).total_macs
    dcn = rk.summary(rk.create_model("resnet50", dcn=dict(type="DCN"), stage_with_dcn=(False, True, True, True)),
                     (1, 3, 64, 64)).total_macs
    offsets = 18 * 9 * (4 * 8 * 8 * 128 + 6 * 4 * 4 * 256 + 3 * 2 * 2 * 512)
    assert dcn == plain + offsets


def test_a_dcn_model_traces_with_torch_fx():
    # the inference engine fuses activations of an fx-traced model; torchvision's Python wrapper branches on shapes
    torch.manual_seed(0)
    m = rk.create_model("resnet50", num_stages=2, dcn=DCNV2, stage_with_dcn=(False, True), num_classes=3).eval()
    with torch.no_grad():
        m.layer2[0].conv2.conv_offset.weight.normal_(0, 0.01)
        torch.testing.assert_close(torch.fx.symbolic_trace(m)(X), m(X), rtol=0, atol=1e-6)
