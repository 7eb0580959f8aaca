"""rk.from_mmdet_config builds mmdet's ResNet / ResNetV1d / ResNeXt backbones with mmdet's keys and behaviour.

Expected key names are written from mmdet's source (mmdet/models/backbones/resnet.py,
resnext.py, mmdet/models/layers/res_layer.py; mmcv's build_norm_layer names and
DeformConv2dPack / ModulatedDeformConv2dPack parameters), not read off our model.
Weights come from torchvision's / timm's models, whose layouts mmdet shares
(mmdet's ResNet-50 checkpoint is torchvision's ``resnet50`` under ``backbone.``).
"""
import logging

import pytest
import timm
import torch
import torchvision
from torch import nn

import resnetkit as rk
from helpers import give_trained_bn_stats
from resnetkit.blocks.dcn import DeformConv2d

X = torch.randn(1, 3, 64, 64)
R50 = dict(type="ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
           norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")  # _BatchNorm's state
GN = ("weight", "bias")


def mmdet_keys(blocks=(3, 4, 6, 3), bottleneck=True, norm="bn", deep_stem=False, avg_down=False,
               dcn_stages=(), offset=True):
    """mmdet's state-dict keys: stem (conv1 + norm1, or `stem` = (conv, norm, ReLU) × 3), then ResLayers
    whose block 0 has downsample = [AvgPool2d if avg_down] + conv 1×1 + norm, norms named abbr + index."""
    params = BN if norm == "bn" else GN
    keys = set()
    if deep_stem:
        keys |= {f"stem.{i}.weight" for i in (0, 3, 6)} | {f"stem.{i}.{p}" for i in (1, 4, 7) for p in params}
    else:
        keys |= {"conv1.weight"} | {f"{norm}1.{p}" for p in params}
    convs = 3 if bottleneck else 2
    for s, n in enumerate(blocks):
        for b in range(n):
            pre = f"layer{s + 1}.{b}."
            keys |= {f"{pre}conv{c}.weight" for c in range(1, convs + 1)}
            keys |= {f"{pre}{norm}{c}.{p}" for c in range(1, convs + 1) for p in params}
            if s in dcn_stages and offset:
                keys |= {f"{pre}conv2.conv_offset.weight", f"{pre}conv2.conv_offset.bias"}
        if bottleneck or s > 0:  # a downsample where stride or channels change: block 0
            first = 1 if avg_down else 0
            keys |= {f"layer{s + 1}.0.downsample.{first}.weight"}
            keys |= {f"layer{s + 1}.0.downsample.{first + 1}.{p}" for p in params}
    return keys


def _levels(backbone, x=X):
    with torch.no_grad():
        out = backbone.eval()(x)
    assert isinstance(out, tuple)
    return out


def test_resnet50_keys_levels_and_forward():
    b = rk.from_mmdet_config(R50)
    assert set(b.state_dict()) == mmdet_keys()
    out = _levels(b)
    assert [t.shape[1] for t in out] == [256, 512, 1024, 2048] == b.feature_info.channels()
    assert [64 // t.shape[-1] for t in out] == [4, 8, 16, 32] == b.feature_info.reduction()
    c3_c5 = rk.from_mmdet_config(dict(R50, out_indices=(1, 2, 3)))
    assert set(c3_c5.state_dict()) == mmdet_keys()  # mmdet keeps every stage whatever it outputs
    assert [t.shape[1] for t in _levels(c3_c5)] == [512, 1024, 2048]


def test_resnet18_and_num_stages():
    b = rk.from_mmdet_config(dict(type="ResNet", depth=18, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                                  out_indices=(0, 2)))
    assert set(b.state_dict()) == mmdet_keys(blocks=(2, 2, 2), bottleneck=False)
    assert [t.shape[1] for t in _levels(b)] == [64, 256]


def test_resnetv1d50_keys_and_outputs_equal_timm_resnet50d():
    b = rk.from_mmdet_config(dict(R50, type="ResNetV1d"))
    assert set(b.state_dict()) == mmdet_keys(deep_stem=True, avg_down=True)
    assert isinstance(b.layer1[0].downsample[0], nn.Identity)  # mmdet: AvgPool2d(1, 1), the same map
    assert isinstance(b.layer2[0].downsample[0], nn.AvgPool2d)
    torch.manual_seed(0)
    ref = timm.create_model("resnet50d").eval()
    give_trained_bn_stats(ref)
    # timm's deep stem conv1.0-6 + bn1 is mmdet's stem.0-7 (ReLUs at 2, 5, 8): the same file fits both
    stem = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4",
            "conv1.6": "stem.6", "bn1": "stem.7"}
    sd = {}
    for k, v in ref.state_dict().items():
        mod, _, p = k.rpartition(".")
        if not k.startswith("fc."):
            sd[f"{stem.get(mod, mod)}.{p}"] = v
    b.load_state_dict(sd, strict=True)
    x = ref.maxpool(ref.act1(ref.bn1(ref.conv1(X))))
    with torch.no_grad():
        for layer, ours in zip((ref.layer1, ref.layer2, ref.layer3, ref.layer4), _levels(b)):
            x = layer(x)
            torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_resnext101_32x4d_keys_and_grouped_widths():
    b = rk.from_mmdet_config(dict(type="ResNeXt", depth=101, groups=32, base_width=4, out_indices=(0, 1, 2, 3)))
    sd = b.state_dict()
    assert set(sd) == mmdet_keys(blocks=(3, 4, 23, 3))
    # mmdet resnext.Bottleneck: width = floor(planes * base_width / base_channels) * groups
    assert sd["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)
    assert sd["layer4.2.conv2.weight"].shape == (1024, 32, 3, 3)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 1024, 1, 1)
    assert b.feature_info.channels() == [256, 512, 1024, 2048]


def test_gn_keys():
    b = rk.from_mmdet_config(dict(R50, norm_cfg=dict(type="GN", num_groups=32, requires_grad=True)))
    assert set(b.state_dict()) == mmdet_keys(norm="gn")
    assert all(isinstance(b.get_submodule(k[:-7]), nn.GroupNorm) for k in b.state_dict() if "gn" in k and
               k.endswith(".weight"))


def test_dcnv2_on_stages_2_to_4_keys_and_offsets():
    cfg = dict(R50, dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
               stage_with_dcn=(False, True, True, True))
    b = rk.from_mmdet_config(cfg)
    sd = b.state_dict()
    assert set(sd) == mmdet_keys(dcn_stages=(1, 2, 3))
    assert sd["layer3.5.conv2.conv_offset.weight"].shape == (27, 256, 3, 3)  # 3 * 3×3 taps per deform group
    assert isinstance(b.layer4[0].conv2, DeformConv2d) and isinstance(b.layer1[0].conv2, nn.Conv2d)
    assert all(torch.count_nonzero(v) == 0 for k, v in sd.items() if "conv_offset" in k)  # mmcv: zero init


def test_strides_and_dilations_keep_c5_at_16():
    b = rk.from_mmdet_config(dict(R50, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)))
    assert set(b.state_dict()) == mmdet_keys()
    assert [64 // t.shape[-1] for t in _levels(b)] == [4, 8, 16, 16] == b.feature_info.reduction()
    assert [blk.conv2.dilation for blk in b.layer4] == [(2, 2)] * 3  # mmdet: every block of the stage


def test_frozen_stages_and_norm_eval():
    b = rk.from_mmdet_config(R50).train()
    frozen = [b.conv1, b.bn1, b.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in b.layer2.parameters())
    assert not b.bn1.training and not b.layer1.training and b.layer2.training
    bns = [m for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not m.training for m in bns)  # norm_eval=True
    before = b.layer3[0].bn1.running_mean.clone()
    b(X)
    assert torch.equal(before, b.layer3[0].bn1.running_mean)
    live = rk.from_mmdet_config(dict(R50, norm_eval=False, frozen_stages=0)).train()
    assert live.layer1[0].bn1.training and not live.bn1.training and live.conv1.weight.requires_grad is False
    default = rk.from_mmdet_config(dict(type="ResNet", depth=18)).train()  # mmdet's default: norm_eval=True
    assert not any(m.training for m in default.modules() if isinstance(m, nn.BatchNorm2d))
    v1d = rk.from_mmdet_config(dict(R50, type="ResNetV1d", frozen_stages=0)).train()
    assert all(not p.requires_grad for p in v1d.stem.parameters()) and not v1d.stem.training


def _detector_checkpoint(backbone_sd):
    """An mmdet detector file: backbone.*, plus neck / heads that the backbone must leave alone."""
    sd = {f"backbone.{k}": v for k, v in backbone_sd.items()}
    sd.update({"neck.lateral_convs.0.conv.weight": torch.zeros(256, 256, 1, 1),
               "rpn_head.rpn_conv.weight": torch.zeros(256, 256, 3, 3)})
    return {"meta": {"mmdet_version": "2.25.0"}, "state_dict": sd}


def test_mmdet_checkpoint_round_trips_strictly_and_init_cfg_loads_it(tmp_path, caplog):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    give_trained_bn_stats(tv)
    ckpt = _detector_checkpoint({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    torch.save(ckpt, tmp_path / "faster_rcnn_r50_fpn.pth")
    plain = rk.from_mmdet_config(R50)
    plain.load_state_dict({k[9:]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")},
                          strict=True)
    with caplog.at_level(logging.INFO, logger="resnetkit.weights"):
        b = rk.from_mmdet_config(dict(R50, init_cfg=dict(type="Pretrained", prefix="backbone.",
                                                         checkpoint=str(tmp_path / "faster_rcnn_r50_fpn.pth"))))
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(X))))
    with torch.no_grad():
        for layer, ours, again in zip((tv.layer1, tv.layer2, tv.layer3, tv.layer4), _levels(b), _levels(plain)):
            x = layer(x)
            torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)
            torch.testing.assert_close(again, x, rtol=0, atol=1e-5)
    # and back: what the backbone saves is the same layout
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in b.state_dict().items()}}, tmp_path / "again.pth")
    c = rk.from_mmdet_config(dict(R50, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "again.pth"),
                                                     prefix="backbone")))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in c.state_dict().items())


def test_dcn_checkpoint_loads_strictly():
    cfg = dict(R50, dcn=dict(type="DCN", deform_groups=1), stage_with_dcn=(False, True, True, True))
    sd = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    widths = {2: 128, 3: 256, 4: 512}
    for s, n in ((2, 4), (3, 6), (4, 3)):
        for i in range(n):  # mmcv DeformConv2dPack: conv_offset = Conv2d(width, 2 * 9, 3)
            sd[f"layer{s}.{i}.conv2.conv_offset.weight"] = torch.zeros(18, widths[s], 3, 3)
            sd[f"layer{s}.{i}.conv2.conv_offset.bias"] = torch.zeros(18)
    rk.from_mmdet_config(cfg).load_state_dict(sd, strict=True)


GCB = ("conv_mask.weight", "conv_mask.bias", "channel_add_conv.0.weight", "channel_add_conv.0.bias",
       "channel_add_conv.1.weight", "channel_add_conv.1.bias", "channel_add_conv.3.weight", "channel_add_conv.3.bias")


def test_gcnet_plugins_have_mmdets_module_names_both_ways():
    # mmdet's Bottleneck.make_block_plugins: add_module(abbr + postfix); mmcv ContextBlock._abbr_ = 'context_block'
    cfg = dict(R50, plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True), position="after_conv3"),
        dict(cfg=dict(type="ContextBlock", ratio=1 / 16, postfix=2), stages=(False, False, False, True),
             position="after_conv3")])  # two at one position: run in order (mmdet's forward_plugin chains them)
    b = rk.from_mmdet_config(cfg)
    gcb = {f"layer{s}.{i}.context_block.{k}" for s, n in ((2, 4), (3, 6), (4, 3)) for i in range(n) for k in GCB}
    gcb |= {f"layer4.{i}.context_block2.{k}" for i in range(3) for k in GCB}
    sd = b.state_dict()
    assert set(sd) == mmdet_keys() | gcb
    assert sd["layer4.0.context_block2.channel_add_conv.0.weight"].shape == (128, 2048, 1, 1)  # int(2048 / 16)
    sd = {k: torch.randn_like(v) if "context_block" in k else v for k, v in sd.items()}
    again = rk.from_mmdet_config(cfg)
    again.load_state_dict(sd, strict=True)
    assert torch.equal(again.layer3[5].after_conv3_plugins[0].conv_mask.weight,
                       sd["layer3.5.context_block.conv_mask.weight"])
    assert torch.equal(again.layer4[2].after_conv3_plugins[1].channel_add_conv[3].bias,
                       sd["layer4.2.context_block2.channel_add_conv.3.bias"])


@pytest.mark.parametrize("checkpoint", ["torchvision://resnet50", "open-mmlab://resnet50_v1c"])
def test_remote_checkpoints_are_refused_in_one_line(checkpoint):
    for cfg in (dict(R50, init_cfg=dict(type="Pretrained", checkpoint=checkpoint)), dict(R50, pretrained=checkpoint)):
        with pytest.raises(ValueError, match="local file") as err:
            rk.from_mmdet_config(cfg)
        assert "\n" not in str(err.value) and checkpoint in str(err.value)


def test_a_prefix_that_fits_nothing_is_an_error(tmp_path):
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "c.pth")
    with pytest.raises(rk.WeightsError, match="prefix 'head.'"):
        rk.from_mmdet_config(dict(R50, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "c.pth"),
                                                     prefix="head.")))
    with pytest.raises(rk.WeightsError, match="prefix='backbone.'"):
        rk.from_mmdet_config(dict(R50, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "c.pth"))))


@pytest.mark.parametrize("cfg,match", [
    (dict(R50, conv_cfg=dict(type="ConvWS")), "conv_cfg"),
    (dict(R50, plugins=[dict(cfg=dict(type="SE"), position="after_conv2")]), "create_model"),
    (dict(R50, plugins=[dict(cfg=dict(type="ContextBlock", ratio=1 / 4), position="after_conv3")] * 2), "postfix"),
    (dict(type="ResNet", depth=18, plugins=[dict(cfg=dict(type="ContextBlock", ratio=1 / 4),
                                                 position="after_conv2")]), "Bottleneck depth"),
    (dict(R50, deep_sten=True), r"\['deep_sten'\]"),
    (dict(R50, groups=32), r"\['groups'\]"),  # ResNet, not ResNeXt
    (dict(R50, depth=42), "depth must be one of"),
    (dict(R50, type="HRNet"), "'HRNet' is not supported"),
    (dict(R50, out_indices=(0, 4)), "0..3"),
    (dict(R50, num_stages=3), "0..2"),  # out_indices (0, 1, 2, 3) with three stages
    (dict(type="ResNet", depth=18, dilations=(1, 1, 2, 2)), "conv1 only"),
    (dict(R50, init_cfg=dict(type="Kaiming", layer="Conv2d")), "Pretrained"),
    (dict(type="ResNet", depth=18, dcn=dict(type="DCN"), stage_with_dcn=(False, True, True, True)), "BasicBlock"),
])
def test_unsupported_or_wrong_options_are_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        rk.from_mmdet_config(cfg)


@pytest.mark.parametrize("cfg,error,match", [
    (dict(R50, out_indices=3), ValueError, "out_indices 3 must be a tuple"),
    (dict(R50, strides=2), ValueError, "strides needs 4 positive integers"),
    (dict(R50, num_stages="3"), ValueError, "num_stages must be 1..4 .* '3'"),
    (dict(type="ResNeXt", depth=50, groups=32, base_width="4"), ValueError, "positive integers"),
    (dict(R50, norm_cfg="BN"), TypeError, "norm_cfg must be a dict"),
    (dict(R50, norm_cfg=dict(type="GN", num_groups=0)), ValueError, "num_groups, a positive integer"),
    (dict(R50, dcn=dict(type="DCN"), stage_with_dcn=3), ValueError, "stage_with_dcn with 4 booleans"),
])
def test_wrongly_typed_values_are_clear_errors(cfg, error, match):
    with pytest.raises(error, match=match):
        rk.from_mmdet_config(cfg)
