"""Multi-scale features (CONTRACT §2): every registered model, checked against its own
feature_info, forward hooks on the full model, and timm's features_only."""
import copy

import pytest
import timm
import torch

import resnetkit as rk
from helpers import frozen_at_stage_1, SPLIT_FAMILIES_SLOW

HEAVY = {"resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"}
HEAVY |= SPLIT_FAMILIES_SLOW
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in rk.list_models()]


def _side(model) -> int:
    return 32 if model.default_input_size[1] <= 32 else 64


def _hooked_levels(model, x):
    """Outputs of each feature_info module during the full model's forward_features (a
    different code path from forward_levels: hooks, not the trunk loop)."""
    seen = {}
    hooks = [model.get_submodule(lvl["module"]).register_forward_hook(
        lambda mod, inp, out, name=lvl["module"]: seen.__setitem__(name, out.clone()))
        for lvl in model.feature_info]
    last = model.forward_features(x)
    for h in hooks:
        h.remove()
    return [seen[lvl["module"]] for lvl in model.feature_info], last


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_features_match_feature_info_and_full_model(name):
    torch.manual_seed(0)
    full = rk.create_model(name).eval()
    info = full.feature_info
    for lvl in info:  # each level names a real submodule
        full.get_submodule(lvl["module"])
    assert info.reduction() == sorted(info.reduction()), "levels must go from fine to coarse"

    backbone = copy.deepcopy(full).as_backbone()
    side = _side(full)
    x = torch.randn(2, full.default_input_size[0], side, side)
    feats = backbone(x)
    assert isinstance(feats, list) and len(feats) == len(info)
    assert backbone.feature_info.channels() == info.channels()
    for f, c, r in zip(feats, info.channels(), info.reduction()):
        assert f.shape == (2, c, side // r, side // r), (name, c, r)

    expected, last = _hooked_levels(full, x)
    for f, e in zip(feats, expected):
        torch.testing.assert_close(f, e)
    if full.trunk_names[-1] == info[-1]["module"]:  # trunk ends at the last level
        torch.testing.assert_close(feats[-1], last)


ONE_PER_FAMILY = ["resnet18", "mobilenet_v2", "ghostnet_050", "cifar_resnet18", "resnet20", "d2l_resnet18"]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_out_indices_select_levels_and_prune_the_rest(name):
    full = rk.create_model(name)
    n = len(full.feature_info)
    f = rk.create_model(name, features_only=True, out_indices=(-1, 1))  # negative counts from the end
    assert f.out_indices == (1, n - 1)
    assert f.feature_info.reduction() == [full.feature_info[1]["reduction"], full.feature_info[-1]["reduction"]]
    shallow = rk.create_model(name, features_only=True, out_indices=(0,))
    kept = set(shallow.state_dict())
    assert kept < set(full.state_dict())  # head and deeper stages removed, names unchanged
    classifier_keys = {k for k in full.state_dict() if k.startswith(full.classifier_name + ".")}
    assert classifier_keys and not classifier_keys & kept
    side = _side(full)
    out = shallow.eval()(torch.randn(1, full.default_input_size[0], side, side))
    assert [o.shape[1] for o in out] == [full.feature_info[0]["num_chs"]]


@pytest.mark.parametrize("bad", [(5,), (0, 7), (-6,), (1, 1), (), (True,), ("1",)])
def test_bad_out_indices_are_value_errors(bad):
    with pytest.raises(ValueError, match="out_indices"):
        rk.create_model("resnet18", features_only=True, out_indices=bad)


@pytest.mark.parametrize("bad, kind", [((1.0,), "float"), (("1",), "str"), ((True,), "bool"), (2.0, "float")])
def test_out_indices_of_a_wrong_type_say_so(bad, kind):
    with pytest.raises(ValueError, match=rf"out_indices entry .* is a {kind}, not a whole number") as err:
        rk.create_model("resnet18", features_only=True, out_indices=bad)
    assert "out of range" not in str(err.value)


def test_out_indices_take_any_integral_type():
    import numpy as np
    for given in [(np.int64(1), torch.tensor(3)), np.array([1, 3]), [np.int32(-4), 3]]:
        f = rk.create_model("resnet18", features_only=True, out_indices=given)
        assert f.out_indices == (1, 3) and f.feature_info.channels() == [64, 256]
    assert rk.create_model("resnet18", features_only=True, out_indices=np.int64(2)).out_indices == (2,)


def test_out_indices_without_features_only_and_double_as_backbone_are_refused():
    with pytest.raises(ValueError, match="features_only"):
        rk.create_model("resnet18", out_indices=(1, 2))
    f = rk.create_model("resnet18", features_only=True)
    with pytest.raises(RuntimeError, match="already"):
        f.as_backbone((1,))


@torch.no_grad()
def test_resnet50_c2_to_c5_at_224():
    f = rk.create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    feats = f(torch.randn(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in feats] == [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert f.feature_info.channels() == [256, 512, 1024, 2048]
    assert f.feature_info.reduction() == [4, 8, 16, 32]


# timm builds these from its own code: its features_only feature_info is an independent reference.
TIMM_SAME = {n: n for n in ["resnet18", "resnet34", "resnet50", "resnet50d", "resnext50_32x4d", "wide_resnet50_2",
                            "resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"]}
TIMM_SAME["mobilenet_v2"] = "mobilenetv2_100"


@pytest.mark.parametrize("ours,theirs", [pytest.param(o, t, marks=pytest.mark.slow) if o in HEAVY else (o, t)
                                         for o, t in TIMM_SAME.items()])
def test_feature_info_equals_timm(ours, theirs):
    ref = timm.create_model(theirs, features_only=True, pretrained=False).feature_info
    mine = rk.create_model(ours, features_only=True).feature_info
    assert mine.channels() == ref.channels()
    assert mine.reduction() == ref.reduction()


def test_ghostnet_taps_the_last_block_at_each_reduction():
    mine = rk.create_model("ghostnet_100", features_only=True).feature_info
    assert mine.channels() == [16, 24, 40, 112, 160]
    assert mine.reduction() == [2, 4, 8, 16, 32]
    # timm taps the first /16 block (80 channels); reductions agree, only that channel count differs.
    ref = timm.create_model("ghostnet_100", features_only=True).feature_info
    assert ref.reduction() == mine.reduction()
    assert [a == b for a, b in zip(ref.channels(), mine.channels())] == [True, True, True, False, True]


def _bns(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", [n for n in rk.list_models() if n not in HEAVY])  # every family takes it
def test_frozen_stages_hold_in_features_mode(name):
    f = rk.create_model(name, features_only=True, out_indices=(1, 2), frozen_stages=1).train()
    prefixes = frozen_at_stage_1(name)  # the stem and stage 1 by name, written out per family
    frozen = {n for n, p in f.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {n for n, _ in f.named_parameters() if n.startswith(prefixes)}
    frozen_mods = [m for n, m in f.named_modules() if n and (n + ".").startswith(prefixes)]
    assert all(not m.training for m in frozen_mods)
    live_bns = [m for m in _bns(f) if not any(m is fm for fm in frozen_mods)]
    assert live_bns and all(bn.training for bn in live_bns)
    # a frozen BN's running stats do not move in a training step
    before = [bn.running_mean.clone() for m in frozen_mods for bn in _bns(m)]
    side = _side(f)
    sum(o.sum() for o in f(torch.randn(2, f.default_input_size[0], side, side))).backward()
    after = [bn.running_mean for m in frozen_mods for bn in _bns(m)]
    assert before and all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_norm_eval_in_features_mode(name):
    f = rk.create_model(name, features_only=True, norm_eval=True).train()
    bns = _bns(f)
    assert bns and all(not bn.training for bn in bns)
    assert any(m.training for m in f.modules() if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "ghostnet_050", "cifar_resnet18"])
def test_with_cp_in_features_mode_keeps_outputs_and_grads(name):
    torch.manual_seed(0)
    plain = rk.create_model(name, features_only=True)
    cp = rk.create_model(name, features_only=True, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    assert any(getattr(m, "grad_checkpointing", False) for m in cp.modules())
    side = _side(plain)
    x = torch.randn(2, plain.default_input_size[0], side, side)
    results = []
    for m in (plain, cp):
        m.train()
        torch.manual_seed(1)
        outs = m(x)
        sum((o ** 2).mean() for o in outs).backward()
        results.append(([o.detach() for o in outs], [p.grad for p in m.parameters()]))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_dilated_backbone_keeps_c4_c5_at_stride_8():
    f = rk.create_model("resnet50", features_only=True, out_indices=(3, 4),
                        replace_stride_with_dilation=(False, True, True)).eval()
    with torch.no_grad():
        c4, c5 = f(torch.randn(1, 3, 64, 64))
    assert f.feature_info.reduction() == [8, 8]
    assert c4.shape[-2:] == c5.shape[-2:] == (8, 8)
