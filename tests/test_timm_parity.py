"""timm and torchvision exactly: resnet50d's layout, dilated nets (output_stride / replace_stride_with_dilation).

References are the installed timm/torchvision models; facts about their module
layout are written out from their source (timm/models/resnet.py: downsample_avg,
make_blocks; torchvision/models/resnet.py: _make_layer).
"""
import pytest
import timm
import torch
import torchvision
from torch import nn

import resnetkit as rk
from helpers import give_trained_bn_stats

X = torch.randn(1, 3, 48, 48)
# timm make_blocks: a stage whose net stride would reach output_stride keeps stride 1 and doubles dilation
OUTPUT_STRIDE_FLAGS = {8: (False, True, True), 16: (False, False, True)}


def _same(ours, ref):
    """Strict load of the reference's state dict (same keys, same order), then equal outputs."""
    give_trained_bn_stats(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        a, b = ours.eval()(X), ref.eval()(X)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_resnet50d_is_timm_resnet50d():
    torch.manual_seed(0)
    ours, ref = rk.create_model("resnet50d"), timm.create_model("resnet50d")
    _same(ours, ref)
    # timm downsample_avg: pool slot 0 in every stage (Identity at stride 1, 2×2/2 average otherwise),
    # conv 1, norm 2; mmdet's ResLayer(avg_down=True) has the same slots
    assert isinstance(ours.layer1[0].downsample[0], nn.Identity)
    for layer in (ours.layer2, ours.layer3, ours.layer4):
        pool = layer[0].downsample[0]
        assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.stride == 2
        assert pool.ceil_mode and not pool.count_include_pad
    assert {k for k in ours.state_dict() if ".downsample." in k and k.endswith("weight")} == {
        f"layer{i}.0.downsample.{j}.weight" for i in range(1, 5) for j in (1, 2)}


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet50d"])
def test_dilated_resnets_equal_timm_output_stride(name, output_stride):
    torch.manual_seed(0)
    ref = timm.create_model(name, output_stride=output_stride)
    _same(rk.create_model(name, replace_stride_with_dilation=OUTPUT_STRIDE_FLAGS[output_stride]), ref)
    _same(rk.create_model(name, output_stride=output_stride), ref)


def test_basic_block_dilation_is_timms():
    """timm BasicBlock: conv1 at first_dilation (the previous stage's in a stage's first block), conv2 at dilation."""
    m = rk.create_model("resnet18", output_stride=8)
    assert (m.layer3[0].conv1.dilation, m.layer3[0].conv2.dilation) == ((1, 1), (2, 2))
    assert (m.layer3[1].conv1.dilation, m.layer3[1].conv2.dilation) == ((2, 2), (2, 2))
    assert (m.layer4[0].conv1.dilation, m.layer4[0].conv2.dilation) == ((2, 2), (4, 4))
    assert m.feature_info.reduction() == [2, 4, 8, 8, 8]


@pytest.mark.parametrize("flags", [(False, True, True), (False, False, True)])
@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_dilated_bottleneck_nets_equal_torchvision(name, flags):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(replace_stride_with_dilation=list(flags))
    _same(rk.create_model(name, replace_stride_with_dilation=flags), ref)


def test_output_stride_errors_are_clear():
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        rk.create_model("resnet18", output_stride=4)
    with pytest.raises(ValueError, match="one vocabulary"):
        rk.create_model("resnet18", output_stride=8, replace_stride_with_dilation=(False, True, True))
    with pytest.raises(ValueError, match="output_stride .* cannot be combined .* strides/dilations"):
        rk.create_model("resnet18", output_stride=8, dilations=(1, 1, 2, 4))



# Res2Net and ResNeSt: parameter counts of timm's models (sum of timm.create_model(name).parameters(), timm 1.x),
# written out as facts; the two biggest run in `make test-all` only.
TIMM_PARAMS = {"res2net50_26w_4s": 25_699_120, "res2net50_14w_8s": 25_059_816, "res2net50_26w_6s": 37_051_448,
               "res2net50_26w_8s": 48_403_776, "res2net50_48w_2s": 25_287_304, "res2net50d": 25_718_352,
               "res2net101_26w_4s": 45_206_688, "res2net101d": 45_225_920, "res2next50": 24_671_464,
               "resnest14d": 10_611_688, "resnest26d": 17_069_448, "resnest50d": 27_483_240,
               "resnest50d_1s4x24d": 25_677_000, "resnest50d_4s2x40d": 30_417_592, "resnest101e": 48_275_016,
               "resnest200e": 70_201_544, "resnest269e": 110_929_480}


def test_every_res2net_and_resnest_name_is_timms():
    assert set(rk.list_models("res2ne*")) | set(rk.list_models("resnest*")) == set(TIMM_PARAMS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("resnest200e", "resnest269e")
                                  else n for n in sorted(TIMM_PARAMS)])
def test_res2net_and_resnest_equal_timm(name):
    torch.manual_seed(0)
    ours, ref = rk.create_model(name), timm.create_model(name)
    assert sum(p.numel() for p in ours.parameters()) == TIMM_PARAMS[name]
    _same(ours, ref)


def test_res2net_stage_first_block_pools_its_last_slice_and_resnest_pools_its_stride():
    """timm's Bottle2neck: a stage's first block (stride or projection) feeds each slice its own input and
    average-pools the last slice (3×3, stride); ResNeSt with avd moves the stride to a 3×3 average pool."""
    r2 = rk.create_model("res2net50_26w_4s")
    first, later = r2.layer2[0], r2.layer2[1]
    assert first.is_first and isinstance(first.pool, nn.AvgPool2d) and first.pool.stride == 2
    assert not later.is_first and later.pool is None and len(later.convs) == 3 and later.width == 52
    rs = rk.create_model("resnest50d")
    block = rs.layer3[0]
    assert block.conv2.conv.stride == (1, 1) and block.avd_last.stride == 2 and block.avd_first is None
    assert block.conv2.conv.groups == 2 and block.conv2.fc1.out_channels == 128   # radix 2; max(32, 256·2/4)
