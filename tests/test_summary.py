"""summary(): parameter and MAC totals against torchvision/timm models, fvcore and torch's flop counter."""
import json
import re

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import resnetkit as rk
from golden_files import GOLDEN_DIR, assert_golden, check_facts
from helpers import count_params

import fvcore.nn as fvcore_nn  # test dependencies: the references must run, never be skipped
import torchinfo


def torch_counter_macs(model, size):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(size))
    return counter.get_total_flops() // 2 // size[0]


def _timm(name):
    import timm
    return timm.create_model(name)


# resnetkit model, the reference it must match, published MACs at 224×224 (the papers' convention)
REFERENCES = {
    "resnet18": (lambda: rk.create_model("resnet18"), torchvision.models.resnet18, 1.81e9),   # He et al.: 1.8 G
    "resnet50": (lambda: rk.create_model("resnet50"), torchvision.models.resnet50, 4.09e9),   # 4.1 G
    "mobilenet_v2": (lambda: rk.create_model("mobilenet_v2"), torchvision.models.mobilenet_v2, 0.30e9),  # 300 M
    "ghostnet_100": (lambda: rk.create_model("ghostnet_100"), lambda: _timm("ghostnet_100"), 0.141e9),    # 141 M
}
SLOW_FVCORE = pytest.mark.slow  # fvcore's jit trace of a 224×224 net takes 5-20 s on a shared 2-core box


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_models_against_torch_flop_counter_and_papers(name):
    """The counter itself, on torchvision's / timm's own models (meaningful even before ours exist)."""
    _, ref_fn, published = REFERENCES[name]
    ref = ref_fn()
    r = rk.summary(ref, (1, 3, 224, 224), depth=1)
    assert r.total_params == count_params(ref)
    assert r.total_macs == pytest.approx(torch_counter_macs(ref, (1, 3, 224, 224)), rel=0.01)
    assert r.total_macs == pytest.approx(published, rel=0.02)
    assert r.total_flops == 2 * r.total_macs


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "resnet18" else SLOW_FVCORE)
                                  for n in sorted(REFERENCES)])
def test_reference_models_against_fvcore(name):
    _, ref_fn, _ = REFERENCES[name]
    ref = ref_fn()
    macs = rk.summary(ref, (1, 3, 224, 224), depth=0).total_macs
    assert macs == fvcore_macs(ref, (1, 3, 224, 224))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_resnetkit_models_match_their_reference(name):
    """Ours against torchvision's / timm's at 64×64 (the 224×224 totals are checked on the reference above)."""
    ours_fn, ref_fn, _ = REFERENCES[name]
    ours, ref = ours_fn(), ref_fn()
    r = rk.summary(ours, (1, 3, 64, 64), depth=1)
    assert r.total_params == count_params(ref)
    assert r.total_macs == rk.summary(ref, (1, 3, 64, 64), depth=0).total_macs


def fvcore_macs(model, size):
    """fvcore (independent of our counter and of torch's) counts one 'flop' per multiply-accumulate of
    conv, linear, addmm and (b)matmul on the whole batch. It also counts norms and pools (left out
    here: we count neither) and skips elementwise ops (ReLU, add, sigmoid, hard-swish), as we do."""
    fca = fvcore_nn.FlopCountAnalysis(model.eval(), torch.randn(size))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    ops = fca.by_operator()
    return sum(ops.get(k, 0) for k in ("conv", "linear", "addmm", "matmul", "bmm", "einsum")) // size[0]


# one model per family and block kind, at small inputs so that fvcore's jit trace stays quick
FVCORE_FAMILIES = [
    ("resnet18", {}, 64), ("resnet50", {}, 64), ("resnext50_32x4d", {}, 32), ("resnet50d", {}, 32),
    ("mobilenet_v2", {}, 64), ("ghostnet_100", {}, 64), ("cifar_resnet18", {}, 32), ("resnet20", {}, 32),
    ("d2l_resnet18", {}, 28),
    ("resnet18", {"plugins": [{"cfg": {"type": "NonLocal"}, "position": "after_conv2",
                               "stages": (False, False, True, True)}]}, 64),   # matrix products counted too
]


@pytest.mark.parametrize("name,kwargs,side", FVCORE_FAMILIES,
                         ids=[n + ("_nonlocal" if kw else "") for n, kw, _ in FVCORE_FAMILIES])
def test_every_family_matches_fvcore(name, kwargs, side):
    model = rk.create_model(name, **kwargs)
    size = (2, model.default_input_size[0], side, side)
    macs = rk.summary(model, size, depth=0).total_macs
    assert macs > 0 and macs == fvcore_macs(model, size)


def _torchvision_published(name):
    """torchvision's published figures for its ImageNet weights (static metadata, nothing downloaded):
    parameter count and '_ops', its GMACs at 224×224 (it calls them GFLOPS, rounded to 3 decimals)."""
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    return weights.meta["num_params"], weights.meta["_ops"]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                                  "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
                                  "mobilenet_v2"])  # 6 s together
def test_our_models_have_torchvisions_published_totals_at_224(name):
    params, gmacs = _torchvision_published(name)
    r = rk.summary(rk.create_model(name), (1, 3, 224, 224), depth=0)
    assert r.total_params == params
    assert r.total_macs / 1e9 == pytest.approx(gmacs, abs=5e-4)


def test_grouped_convs_match_torch_flop_counter():
    """ResNeXt's grouped 3×3 convs cost in_channels/groups per output; a small input keeps it quick."""
    model = rk.create_model("resnext50_32x4d")
    r = rk.summary(model, (1, 3, 32, 32), depth=0)
    assert r.total_macs == torch_counter_macs(model, (1, 3, 32, 32))


def test_depthwise_and_transposed_convs():
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ConvTranspose2d(8, 4, 2, stride=2))
    r = rk.summary(net, (1, 8, 10, 10))
    assert r.rows[0].macs == 8 * 10 * 10 * 9               # depthwise: kernel area per output element
    assert r.rows[1].macs == 8 * 10 * 10 * 4 * 2 * 2       # transposed: every input element hits out_ch·k²
    assert r.total_macs == torch_counter_macs(net, (1, 8, 10, 10))


def test_batch_is_excluded_from_macs():
    model = rk.from_table(open_seed())
    one = rk.summary(model, (1, 3, 112, 112), depth=0).total_macs
    assert rk.summary(model, (3, 3, 112, 112), depth=0).total_macs == one == 159_559_680


class _Shared(nn.Module):
    """One conv used twice and a Linear on a sequence (3-D input)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 6)

    def forward(self, x):
        x = self.conv(self.conv(x))
        return self.head(x.flatten(2).transpose(1, 2))   # (N, H·W, 4) -> (N, H·W, 6)


def test_shared_module_counts_params_once_and_macs_per_call():
    model = _Shared()
    r = rk.summary(model, (2, 4, 5, 5))
    assert r.total_params == count_params(model) == 4 * 4 * 9 + 4 + 4 * 6 + 6
    conv_macs = 4 * 5 * 5 * 4 * 9
    assert [row.macs for row in r.rows] == [conv_macs, conv_macs, 25 * 4 * 6]
    assert [row.params for row in r.rows] == [4 * 4 * 9 + 4, None, 4 * 6 + 6]   # None = "(shared)"
    assert r.total_macs == 2 * conv_macs + 25 * 4 * 6 == torch_counter_macs(model, (2, 4, 5, 5))
    assert "(shared)" in str(r)


def test_features_only_model_with_list_output():
    f = rk.create_model("resnet18", features_only=True, out_indices=(1, 2))
    r = rk.summary(f, (1, 3, 64, 64), depth=1)
    assert r.output_shape == [(1, 64, 16, 16), (1, 128, 8, 8)]
    assert r.total_params == count_params(f)
    full = rk.summary(rk.create_model("resnet18"), (1, 3, 64, 64), depth=0)
    assert 0 < r.total_macs < full.total_macs
    json.dumps(r.to_dict())


def test_depth_controls_rows_not_totals():
    model = rk.create_model("resnet18")
    reports = {d: rk.summary(model, (1, 3, 32, 32), depth=d) for d in (0, 1, 2, 3)}
    assert reports[0].rows == []
    assert {row.depth for row in reports[1].rows} == {1}
    assert max(row.depth for row in reports[3].rows) == 3
    assert len({(r.total_params, r.total_macs) for r in reports.values()}) == 1
    # shown rows at one depth add up to the total (no double counting of nested layers)
    assert sum(row.macs for row in reports[1].rows) == reports[1].total_macs
    assert sum(row.params for row in reports[1].rows) == reports[1].total_params
    with pytest.raises(ValueError, match="depth"):
        rk.summary(model, (1, 3, 32, 32), depth=-1)


def test_trainable_params_and_modes_restored():
    model = rk.create_model("resnet18", frozen_stages=1)
    model.train()
    r = rk.summary(model, (1, 3, 32, 32), depth=1)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen > 0 and r.trainable_params == r.total_params - frozen
    assert model.training and model.layer2.training and not model.layer1.training


def test_to_dict_is_json_ready():
    r = rk.summary(rk.create_model("resnet18"), (1, 3, 32, 32), depth=1)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["total_params"] == r.total_params and d["total_macs"] == r.total_macs
    assert d["total_flops"] == 2 * d["total_macs"] and "MACs" in d["units"]
    assert d["rows"][0] == {"name": "conv1", "type": "Conv2d", "depth": 1, "output_shape": [1, 64, 16, 16],
                            "params": 9408, "trainable_params": 9408, "macs": 64 * 16 * 16 * 3 * 49}
    assert [s["stride"] for s in d["stages"]] == [2, 4, 8, 16, 32]


def _gradient_support(model, size):
    """Receptive field measured, not computed: extent of d(centre output)/d(input) with positive weights."""
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            p.data.fill_(0.0 if name == "bias" else 1.0 / max(1, p[0].numel()) if p.dim() > 1 else 1.0)  # averaging: no underflow
    model.double().eval()
    x = torch.ones(size, dtype=torch.float64, requires_grad=True)
    out = model(x)
    out = out[-1] if isinstance(out, list) else out
    h, w = out.shape[2] // 2, out.shape[3] // 2
    out[0, :, h, w].sum().backward()
    rows = x.grad[0].abs().sum(0).sum(1).nonzero()
    return int(rows.max() - rows.min() + 1)


def _linearised(model):
    """Same windows, but every path passes gradient: ReLUs -> Identity, max pools -> average pools."""
    for name, m in list(model.named_modules()):
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        leaf = name.rpartition(".")[2]
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            setattr(parent, leaf, nn.Identity())
        elif isinstance(m, nn.MaxPool2d):
            setattr(parent, leaf, nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    return model


@pytest.mark.parametrize("build, level, expected", [
    (lambda: rk.create_model("resnet18", features_only=True, out_indices=(3,)), "level 3", 211),
    (lambda: rk.from_table(open_seed()), "row5", 49),
])
def test_receptive_field_equals_measured_gradient_support(build, level, expected):
    model = build()
    r = rk.summary(model, (1, 3, 128, 128) if "level" in level else (1, 3, 112, 112), depth=1)
    stage = {s.name: s for s in r.stages}[level]
    assert stage.receptive_field == expected
    size = (1, 3, 256, 256)
    measured = _gradient_support(_linearised(model), size)
    assert measured == expected


def test_known_receptive_fields():
    """ResNet-18's final RF is 435 px and MobileNetV2's 491 px (Araujo et al., Distill 2019)."""
    rn = {s.name: s for s in rk.summary(torchvision.models.resnet18(), (1, 3, 64, 64), depth=0).stages}
    assert (rn["layer4"].receptive_field, rn["layer4"].stride) == (435, 32)
    mb = {s.name: s for s in rk.summary(torchvision.models.mobilenet_v2(), (1, 3, 64, 64), depth=0).stages}
    assert (mb["features"].receptive_field, mb["features"].stride) == (491, 32)


def open_seed():
    from test_table import SEED
    return SEED


def test_golden_summary_printouts():
    assert_golden("summary_resnet18_depth2.txt", str(rk.summary(rk.create_model("resnet18"), (1, 3, 224, 224), 2)))
    assert_golden("summary_seed_table.txt", str(rk.summary(rk.from_table(open_seed()), (1, 3, 112, 112), 3)))


def _golden_rows(name):
    """(layer name, params, MACs) of each row of a golden summary; None where it prints '--'."""
    rows = re.findall(r"^ *(\S+) \(\w+\) +\[[^\]]*\] +([\d,]+|--) +([\d,]+|--)$",
                      (GOLDEN_DIR / name).read_text(encoding="utf-8"), re.M)
    return [(n, *(None if v == "--" else int(v.replace(",", "")) for v in (p, m))) for n, p, m in rows]


@pytest.mark.parametrize("golden,build,size", [
    ("summary_resnet18_depth2.txt", torchvision.models.resnet18, (1, 3, 224, 224)),  # torchvision's own model
    ("summary_seed_table.txt", lambda: rk.from_table(open_seed()), (1, 3, 112, 112)),
])
def test_golden_summaries_agree_with_torchinfo(golden, build, size):
    """torchinfo (another counter) on each row: its parameters, and its mult-adds of convs and linear
    layers without the bias terms (it also counts norms and biases; we count neither)."""
    model = build()
    names = {id(m): n for n, m in model.named_modules()}
    layers = torchinfo.summary(model, size, depth=10, verbose=0).summary_list
    params = {names[id(layer.module)]: layer.num_params for layer in reversed(layers)}  # first call wins
    leaf_macs = {names[id(layer.module)]: layer.macs - (layer.module.bias.numel() * size[0]
                                                        if getattr(layer.module, "bias", None) is not None else 0)
                 for layer in layers if isinstance(layer.module, (nn.Conv2d, nn.Linear))}
    rows = _golden_rows(golden)
    assert len(rows) > 5
    for row, row_params, row_macs in rows:
        if row not in params:  # our flatten module: torchvision's resnet18 calls torch.flatten
            assert row_params is row_macs is None, row
            continue
        assert (row_params or 0) == params[row], row
        expected = sum(v for n, v in leaf_macs.items() if n == row or n.startswith(row + "."))
        assert (row_macs or 0) == expected, row


@pytest.mark.parametrize("path", sorted(GOLDEN_DIR.glob("*.txt")), ids=lambda p: p.name)
def test_every_golden_file_holds_its_hand_checked_facts(path):
    check_facts(path.name, path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ MACs of functional code
class _FunctionalConvNet(nn.Module):
    """A user module whose forward calls F.conv2d / F.linear on its own parameters (no Conv2d or Linear)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.fc_weight = nn.Parameter(torch.randn(10, 8 * 4 * 4))

    def forward(self, x):
        x = torch.relu(nn.functional.conv2d(x, self.weight, stride=2, padding=1))   # 8×4×4
        return nn.functional.linear(x.flatten(1), self.fc_weight)


def test_functional_conv_and_linear_are_counted_in_their_module():
    model = nn.Sequential(_FunctionalConvNet(), nn.Linear(10, 5))
    size = (2, 3, 8, 8)
    r = rk.summary(model, size, depth=1)
    own = 8 * 4 * 4 * 3 * 9 + 128 * 10
    assert [row.macs for row in r.rows] == [own, 10 * 5]
    assert r.total_macs == own + 50 == torch_counter_macs(model, size)
    assert r.total_macs == fvcore_macs(model, size)


class _Attention(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)

    def forward(self, x):                                   # (N, 16, L) -> tokens
        tokens = x.transpose(1, 2) if self.attn.batch_first else x.permute(2, 0, 1)
        return self.attn(tokens, tokens, tokens)[0]


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_projections_and_products_are_counted(batch_first):
    """Its projections are functional (F.linear on in_proj_weight); batch_first=True in eval is torch's fused
    fast path, which flop counters see as one opaque op: summary counts it like the regular path."""
    model = _Attention(batch_first)
    length, e = 12, 16
    r = rk.summary(model, (2, e, length), depth=1)
    expected = 3 * length * e * e + 2 * length * length * e + length * e * e   # qkv, q·kᵀ and ·v, out_proj
    assert r.rows[0].macs == r.total_macs == expected
    assert expected == torch_counter_macs(_Attention(False), (2, e, length))


class _SDPA(nn.Module):
    def forward(self, x):                                   # (N, heads, L, D): self-attention, fused
        return nn.functional.scaled_dot_product_attention(x, x, x)


class _ExplicitAttention(nn.Module):
    def forward(self, x):                                   # the same product written out
        return torch.softmax(x @ x.transpose(-2, -1) / x.shape[-1] ** 0.5, -1) @ x


def test_fused_attention_counts_like_the_written_out_products():
    size = (2, 3, 10, 8)
    fused = rk.summary(_SDPA(), size).total_macs
    assert fused == rk.summary(_ExplicitAttention(), size).total_macs == torch_counter_macs(_ExplicitAttention(), size)
    assert fused == 2 * 3 * 10 * 10 * 8


class _TwoNames(nn.Module):
    """One conv registered under two names and called once: its MACs must appear once."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.alias = self.conv

    def forward(self, x):
        return self.alias(x)


def test_module_registered_twice_is_counted_once():
    r = rk.summary(_TwoNames(), (1, 3, 6, 6))
    assert [row.macs for row in r.rows] == [4 * 4 * 4 * 3 * 9]
    assert r.total_macs == torch_counter_macs(_TwoNames(), (1, 3, 6, 6))


def test_units_line_says_what_is_counted():
    text = str(rk.summary(nn.Linear(4, 2), (1, 4), depth=1))
    assert "convolution, linear layer and matrix product" in text and "FLOPs = 2 × MACs" in text


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.head(self.conv(self.conv(x)))


def test_a_child_called_twice_is_one_stage():
    r = rk.summary(_Twice(), (1, 3, 8, 8))
    assert [s.name for s in r.stages] == ["conv", "head"]
    assert r.stages[0].receptive_field == 5                 # its last call: two 3×3 convs


@pytest.mark.parametrize("size", ["1x3x99999999999x99999999999", "1x3x1000000x1000000"])
def test_huge_input_is_one_clear_error(size):
    shape = tuple(int(s) for s in size.split("x"))
    with pytest.raises(ValueError, match=r"more than the limit of 1,073,741,824; give a smaller input size"):
        rk.summary(rk.create_model("resnet18"), shape)
