"""rk.from_mmdet_config builds mmdet's Res2Net and ResNeSt backbones with mmdet's keys and behaviour.

Expected keys and shapes are written from mmdet's source (mmdet/models/backbones/res2net.py:
Bottle2neck's conv1/bn1, convs.i/bns.i, conv3/bn3, Res2Layer's downsample = AvgPool2d + conv + norm;
resnest.py: SplitAttentionConv2d's conv/bn0/fc1/bn1/fc2 with inter_channels = max(in·radix //
reduction_factor, 32); ResNetV1d's deep stem `stem.0-8`), not read off our model. Outputs are
checked against timm's res2net50d / resnest50d, whose architecture mmdet shares except where noted.
"""
import pytest
import timm
import torch
from torch import nn

import resnetkit as rk
from helpers import give_trained_bn_stats

X = torch.randn(1, 3, 64, 64)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# mmdet's deep stem: (conv 3×3, BN, ReLU) × 3, stem_channels // 2, stem_channels // 2, stem_channels
STEM_64 = {"stem.0.weight": (32, 3, 3, 3), "stem.1.weight": (32,), "stem.3.weight": (32, 32, 3, 3),
           "stem.4.weight": (32,), "stem.6.weight": (64, 32, 3, 3), "stem.7.weight": (64,)}
# timm's deep stem conv1.0-6 + bn1 is mmdet's stem.0-7
TIMM_STEM = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4",
             "conv1.6": "stem.6", "bn1": "stem.7"}


def _shapes(sd, prefix):
    return {k[len(prefix):]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}


def _norm(name, c):
    return {f"{name}.{p}": (() if p == "num_batches_tracked" else (c,)) for p in BN}


def _timm_to_mmdet(ref):
    sd = {}
    for k, v in ref.state_dict().items():
        mod, _, p = k.rpartition(".")
        if not k.startswith("fc."):
            sd[f"{TIMM_STEM.get(mod, mod)}.{p}"] = v
    return sd


def _compare_stages(ours, ref, x=X):
    ours.load_state_dict(_timm_to_mmdet(ref), strict=True)
    h = ref.maxpool(ref.act1(ref.bn1(ref.conv1(x))))
    with torch.no_grad():
        levels = ours.eval()(x)
        for layer, got in zip((ref.layer1, ref.layer2, ref.layer3, ref.layer4), levels):
            h = layer(h)
            torch.testing.assert_close(got, h, rtol=0, atol=1e-5)


def test_res2net_stem_and_block_keys_are_mmdets():
    sd = rk.from_mmdet_config(dict(type="Res2Net", depth=50, scales=4, base_width=26)).state_dict()
    stem = {k: v for k, v in _shapes(sd, "").items() if k.startswith("stem.") and k.endswith("weight")}
    assert stem == STEM_64
    # layer1.0: width = floor(64 · 26 / 64) = 26 per slice, 4 slices; the 'stage' block has a downsample
    block = {"conv1.weight": (104, 64, 1, 1), **_norm("bn1", 104), "conv3.weight": (256, 104, 1, 1), **_norm("bn3", 256),
             "downsample.1.weight": (256, 64, 1, 1), **_norm("downsample.2", 256)}
    for i in range(3):
        block |= {f"convs.{i}.weight": (26, 26, 3, 3), **_norm(f"bns.{i}", 26)}
    assert _shapes(sd, "layer1.0.") == block
    # layer3.1 ('normal' block): width floor(256 · 26 / 64) = 104, no downsample
    assert _shapes(sd, "layer3.1.")["convs.2.weight"] == (104, 104, 3, 3)
    assert not any(k.startswith("layer3.1.downsample") for k in sd)
    assert sum(k.startswith("layer") and k.endswith(".conv1.weight") for k in sd) == 3 + 4 + 6 + 3


def test_res2net_equals_timm_res2net50d_except_layer1_pool():
    """mmdet concatenates the passed-through slice unpooled where the stage's first block has no stride
    (`if self.stage_type == 'normal' or self.conv2_stride == 1`); timm average-pools it 3×3/1 there."""
    torch.manual_seed(0)
    ref = timm.create_model("res2net50d").eval()
    give_trained_bn_stats(ref)
    ours = rk.from_mmdet_config(dict(type="Res2Net", depth=50, scales=4, base_width=26))
    with pytest.raises(AssertionError):   # as timm builds it, layer1 differs
        _compare_stages(ours, ref)
    ref.layer1[0].pool = None
    _compare_stages(ours, ref)
    assert [t.shape[1] for t in ours(X)] == [256, 512, 1024, 2048]


def test_res2net_scales_base_width_and_forced_options():
    b = rk.from_mmdet_config(dict(type="Res2Net", depth=101, scales=8, base_width=14, out_indices=(3,)))
    sd = b.state_dict()
    assert tuple(sd["layer2.0.conv1.weight"].shape) == (8 * 28, 256, 1, 1)   # floor(128 · 14 / 64) = 28, × 8
    assert sum(k.startswith("layer3.") and k.endswith(".conv3.weight") for k in sd) == 23
    assert len([k for k in sd if k.startswith("layer1.0.convs.")]) == 7
    with pytest.warns(UserWarning, match="deep_stem=False is ignored"):
        b = rk.from_mmdet_config(dict(type="Res2Net", depth=50, deep_stem=False))
    assert "stem.0.weight" in b.state_dict()
    with pytest.raises(rk.ResnetkitError, match="scales must be an integer >= 2"):
        rk.from_mmdet_config(dict(type="Res2Net", depth=50, scales=1))
    with pytest.raises(rk.ResnetkitError, match="depth must be one of \\[50, 101, 152\\]"):
        rk.from_mmdet_config(dict(type="Res2Net", depth=34))
    with pytest.raises(rk.ResnetkitError, match="radix"):
        rk.from_mmdet_config(dict(type="Res2Net", depth=50, radix=2))


def test_resnest_stem_and_block_keys_are_mmdets():
    cfg = dict(type="ResNeSt", stem_channels=64, depth=50, radix=2, reduction_factor=4, avg_down_stride=True,
               num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=False, style="pytorch")
    sd = rk.from_mmdet_config(cfg).state_dict()   # configs/resnest/ faster-rcnn's backbone dict
    stem = {k: v for k, v in _shapes(sd, "").items() if k.startswith("stem.") and k.endswith("weight")}
    assert stem == STEM_64
    # layer2.0: width = planes = 128 (groups 1); conv2.conv: 128 → 128·radix in groups·radix groups;
    # fc1/fc2 1×1 with bias, inter = max(128·2 // 4, 32) = 64; avd_layer has no parameters
    block = {"conv1.weight": (128, 256, 1, 1), **_norm("bn1", 128), "conv2.conv.weight": (256, 64, 3, 3),
             **_norm("conv2.bn0", 256), "conv2.fc1.weight": (64, 128, 1, 1), "conv2.fc1.bias": (64,),
             **_norm("conv2.bn1", 64), "conv2.fc2.weight": (256, 64, 1, 1), "conv2.fc2.bias": (256,),
             "conv3.weight": (512, 128, 1, 1), **_norm("bn3", 512),
             "downsample.1.weight": (512, 256, 1, 1), **_norm("downsample.2", 512)}
    assert _shapes(sd, "layer2.0.") == block


def test_resnest_equals_timm_resnest50d():
    torch.manual_seed(0)
    ref = timm.create_model("resnest50d").eval()
    give_trained_bn_stats(ref)
    _compare_stages(rk.from_mmdet_config(dict(type="ResNeSt", depth=50, stem_channels=64)), ref)


def test_resnest_options():
    # resnest101's config: stem_channels=128 → stem 64, 64, 128
    sd = rk.from_mmdet_config(dict(type="ResNeSt", depth=101, stem_channels=128)).state_dict()
    assert tuple(sd["stem.0.weight"].shape) == (64, 3, 3, 3) and tuple(sd["stem.6.weight"].shape) == (128, 64, 3, 3)
    assert sum(k.startswith("layer3.") and k.endswith(".conv1.weight") for k in sd) == 23
    # reduction_factor 8: inter = max(width · 2 // 8, 32) → 32, 32, 64, 128 for widths 64 … 512
    sd = rk.from_mmdet_config(dict(type="ResNeSt", depth=50, reduction_factor=8)).state_dict()
    assert [sd[f"layer{i}.0.conv2.fc1.weight"].shape[0] for i in (1, 2, 3, 4)] == [32, 32, 64, 128]
    # groups 2, base_width 40, radix 4: width floor(64 · 40 / 64) · 2 = 80; conv 80 → 320 in 8 groups
    sd = rk.from_mmdet_config(dict(type="ResNeSt", depth=50, groups=2, base_width=40, radix=4)).state_dict()
    assert tuple(sd["layer1.0.conv2.conv.weight"].shape) == (320, 10, 3, 3)
    assert tuple(sd["layer1.0.conv2.fc1.weight"].shape) == (80, 40, 1, 1)   # max(80 · 4 // 4, 32), groups 2
    # avg_down_stride=False: the stride stays in the split-attention conv (no avd pool)
    b = rk.from_mmdet_config(dict(type="ResNeSt", depth=50, avg_down_stride=False))
    assert b.layer2[0].conv2.conv.stride == (2, 2)
    assert not any(isinstance(m, nn.AvgPool2d) and m.kernel_size == 3 for m in b.layer2[0].modules())
    assert [t.shape[-1] for t in b.eval()(X)] == [16, 8, 4, 2]
    assert len(rk.from_mmdet_config(dict(type="ResNeSt", depth=200, out_indices=(3,))).layer2) == 24


@pytest.mark.parametrize("kind", ["Res2Net", "ResNeSt"])
def test_dcn_is_refused_with_the_reason(kind):
    dcn = dict(type="DCNv2", deform_groups=1, fallback_on_stride=False)
    with pytest.raises(rk.ResnetkitError, match=f"{kind} with dcn is not supported here.*type='ResNet' with dcn"):
        rk.from_mmdet_config(dict(type=kind, depth=50, dcn=dcn, stage_with_dcn=(False, True, True, True)))
