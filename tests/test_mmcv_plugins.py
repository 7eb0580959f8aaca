"""mmcv's NonLocal2d and GeneralizedAttention plugins: mmcv's keys, initialisation and formulas.

mmcv cannot be installed here, so the facts are written out from its source:
- mmcv/cnn/bricks/non_local.py: ``_NonLocalNd`` builds ``g``, ``conv_out`` (``norm_cfg`` here only),
  then ``theta``/``phi`` unless mode is gaussian, and ``concat_project`` (2c' -> 1, no bias, ReLU) for
  concatenation, each a ConvModule; c' = max(C // reduction, 1). ``NonLocal2d(sub_sample=True)`` wraps
  ``g`` and ``phi`` in ``Sequential(ConvModule, MaxPool2d(2))`` (gaussian: ``phi`` is the pool alone).
  ``init_weights(std=0.01, zeros_init=True)``: normal_init of g/θ/φ's convs, constant 0 on conv_out's conv
  (its norm when norm_cfg is given). ``_abbr_ = 'nonlocal_block'``.
- mmcv/cnn/bricks/conv_module.py: children ``conv`` (bias when no norm: bias='auto'), the norm under
  build_norm_layer's name (mmcv/cnn/bricks/norm.py: abbr + postfix '' -> ``bn`` for BN/SyncBN, ``gn`` for GN),
  ``activate``; init kaiming_init (fan_out, relu, normal), norm weight 1.
- mmcv/cnn/bricks/generalized_attention.py: ``query_conv`` if bit 0 or 1, ``key_conv`` if bit 0 or 2,
  ``value_conv``, ``appr_geom_fc_x/y`` (Linear(pos_dim // 2, out_c), no bias) if bit 1 or 3, ``appr_bias``
  if bit 2, ``geom_bias`` if bit 3, ``proj_conv`` (with bias), ``gamma`` (1,), ``local_constraint_map``
  (uint8, (L, L, L_kv, L_kv), L = 84 for 256 / 42 for 512 channels) if spatial_range >= 0;
  out_c = (C // heads) * heads; ``_abbr_ = 'gen_attention_block'``.
- mmdet/models/backbones/resnet.py (Bottleneck.make_block_plugins) names a plugin abbr + postfix.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import resnetkit as rk
from helpers import give_trained_bn_stats
from resnetkit.blocks.generalized_attention import GeneralizedAttention
from resnetkit.blocks.nonlocal_block import NonLocal2d
from resnetkit.errors import ResnetkitValueError
from test_mmdet import GCB, R50, mmdet_keys

MODES = ("embedded_gaussian", "dot_product", "gaussian", "concatenation")
BN_STATE = {"weight": 1, "bias": 1, "running_mean": 1, "running_var": 1, "num_batches_tracked": 0}
X64 = torch.randn(1, 3, 64, 64)


# ------------------------------------------------------------------ expected layouts, from mmcv's source
def nonlocal_keys(c, mode="embedded_gaussian", sub_sample=False, norm=None, reduction=2):
    """{key: shape} of mmcv's NonLocal2d(c, ...)."""
    i = max(c // reduction, 1)

    def conv_module(name, cin, cout, bias=True):
        return {f"{name}.conv.weight": (cout, cin, 1, 1), **({f"{name}.conv.bias": (cout,)} if bias else {})}

    keys = conv_module("g.0" if sub_sample else "g", c, i) | conv_module("conv_out", i, c, bias=norm is None)
    if norm == "bn":
        keys |= {f"conv_out.bn.{p}": (c,) * dims for p, dims in BN_STATE.items()}
    elif norm == "gn":
        keys |= {"conv_out.gn.weight": (c,), "conv_out.gn.bias": (c,)}
    if mode != "gaussian":
        keys |= conv_module("theta", c, i) | conv_module("phi.0" if sub_sample else "phi", c, i)
    if mode == "concatenation":
        keys["concat_project.conv.weight"] = (1, 2 * i, 1, 1)
    return keys


def ga_keys(c, bits="1111", heads=9, pos_dim=-1, spatial_range=-1, kv_stride=2):
    """{key: shape} of mmcv's GeneralizedAttention(c, ...)."""
    out_c = c // heads * heads
    pos_dim = pos_dim if pos_dim > 0 else c
    b = [x == "1" for x in bits]
    keys = {"value_conv.weight": (out_c, c, 1, 1), "proj_conv.weight": (c, out_c, 1, 1), "proj_conv.bias": (c,),
            "gamma": (1,)}
    if b[0] or b[1]:
        keys["query_conv.weight"] = (out_c, c, 1, 1)
    if b[0] or b[2]:
        keys["key_conv.weight"] = (out_c, c, 1, 1)
    if b[1] or b[3]:
        keys |= {"appr_geom_fc_x.weight": (out_c, pos_dim // 2), "appr_geom_fc_y.weight": (out_c, pos_dim // 2)}
    if b[2]:
        keys["appr_bias"] = (out_c,)
    if b[3]:
        keys["geom_bias"] = (out_c,)
    if spatial_range >= 0:
        side = {256: 84, 512: 42}[c]
        side_kv = int((side - 1.0) / kv_stride + 1)
        keys["local_constraint_map"] = (side, side, side_kv, side_kv)
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def randomize(module, std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


# ------------------------------------------------------------------ NonLocal2d
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("norm_cfg,norm", [(None, None), (dict(type="BN"), "bn"), (dict(type="GN", num_groups=4), "gn")])
def test_nonlocal2d_keys_are_mmcvs(mode, sub_sample, norm_cfg, norm):
    m = NonLocal2d(16, mode=mode, sub_sample=sub_sample, norm_cfg=norm_cfg)
    assert shapes(m) == nonlocal_keys(16, mode, sub_sample, norm)
    assert NonLocal2d._abbr_ == "nonlocal_block"
    assert shapes(NonLocal2d(16, reduction=4, mode=mode)) == nonlocal_keys(16, mode, reduction=4)


@torch.no_grad()
@pytest.mark.parametrize("mode", MODES)
def test_nonlocal2d_initialisation_is_mmcvs_and_starts_as_identity(mode):
    torch.manual_seed(0)
    m = NonLocal2d(64, mode=mode)
    embeds = [m.g] if mode == "gaussian" else [m.g, m.theta, m.phi]
    for cm in embeds:  # normal_init(std=0.01), bias 0
        assert 0.008 < cm.conv.weight.std() < 0.012 and not cm.conv.bias.any()
    assert not m.conv_out.conv.weight.any() and not m.conv_out.conv.bias.any()  # zeros_init
    if mode == "concatenation":  # ConvModule's kaiming_init: fan_out (1), relu -> std sqrt(2)
        assert 0.9 < m.concat_project.conv.weight.std() < 2.2  # fan_in would give 0.18
    x = torch.randn(2, 64, 5, 6)
    assert torch.equal(m(x), x)
    bn = NonLocal2d(64, mode=mode, norm_cfg=dict(type="BN"))  # the norm starts at zero, the conv stays Kaiming
    assert not bn.conv_out.bn.weight.any() and not bn.conv_out.bn.bias.any() and bn.conv_out.conv.weight.std() > 0.1
    live = NonLocal2d(64, mode=mode, zeros_init=False, std=0.02)
    assert 0.015 < live.conv_out.conv.weight.std() < 0.025 and 0.015 < live.g.conv.weight.std() < 0.025


def _conv1x1(cm, t):
    """A 1×1 ConvModule (conv, no norm) on a (C, H, W) map, as a matrix product."""
    out = torch.einsum("oc,chw->ohw", cm.conv.weight[:, :, 0, 0], t)
    return out + cm.conv.bias[:, None, None] if cm.conv.bias is not None else out


def _maxpool2(t):
    c, h, w = t.shape
    return t[:, :h // 2 * 2, :w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).amax((2, 4))


def reference_nonlocal(m, x, mode, sub_sample):
    """Wang et al. eq. (1) with mmcv's pairwise functions, position by position, for one image."""
    x = x[0]
    conv = (lambda name, t: _conv1x1(getattr(m, name)[0], t)) if sub_sample else \
        (lambda name, t: _conv1x1(getattr(m, name), t))
    pool = _maxpool2 if sub_sample else (lambda t: t)
    g = pool(conv("g", x)).flatten(1)
    if mode == "gaussian":
        theta, phi = x.flatten(1), pool(x).flatten(1)
    else:
        theta, phi = _conv1x1(m.theta, x).flatten(1), pool(conv("phi", x)).flatten(1)
    n_i, n_j = theta.shape[1], phi.shape[1]
    f = torch.empty(n_i, n_j)
    for i in range(n_i):
        for j in range(n_j):
            if mode == "concatenation":
                f[i, j] = torch.relu(m.concat_project.conv.weight.flatten() @ torch.cat([theta[:, i], phi[:, j]]))
            else:
                f[i, j] = theta[:, i] @ phi[:, j]
    if mode == "embedded_gaussian":
        f = torch.softmax(f / math.sqrt(theta.shape[0]), 1)
    elif mode == "gaussian":
        f = torch.softmax(f, 1)
    else:  # dot_product, concatenation: normalised by the number of positions j
        f = f / n_j
    y = (g @ f.T).view(-1, *x.shape[1:])
    return (x + _conv1x1(m.conv_out, y))[None]


@torch.no_grad()
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
def test_nonlocal2d_computes_mmcvs_formulas(mode, sub_sample):
    m = NonLocal2d(4, mode=mode, sub_sample=sub_sample)
    randomize(m)
    x = torch.randn(1, 4, 4, 5) if sub_sample else torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(m(x), reference_nonlocal(m, x, mode, sub_sample), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_nonlocal2d_use_scale_off_and_a_norm_after_conv_out():
    m = NonLocal2d(4, use_scale=False, norm_cfg=dict(type="BN")).eval()
    randomize(m)
    give_trained_bn_stats(m)
    x = torch.randn(1, 4, 3, 3)
    bn = m.conv_out.bn
    theta, phi, g = (_conv1x1(getattr(m, n), x[0]).flatten(1) for n in ("theta", "phi", "g"))
    y = (g @ torch.softmax(theta.T @ phi, 1).T).view(2, 3, 3)  # no 1/√c'
    z = torch.einsum("oc,chw->ohw", m.conv_out.conv.weight[:, :, 0, 0], y)  # no conv bias before the norm
    z = (z - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    expected = x[0] + z * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(m(x), expected[None], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ GeneralizedAttention
BITS = ("1111", "1000", "0100", "0010", "0001", "0011", "1010", "0101", "1100")


@pytest.mark.parametrize("bits", BITS)
def test_generalized_attention_keys_are_mmcvs(bits):
    assert shapes(GeneralizedAttention(64, num_heads=8, attention_type=bits)) == ga_keys(64, bits, heads=8)
    assert shapes(GeneralizedAttention(30, attention_type=bits, position_embedding_dim=8)) == \
        ga_keys(30, bits, heads=9, pos_dim=8)  # 30 // 9 = 3 channels per head, 27 in all
    assert GeneralizedAttention._abbr_ == "gen_attention_block"


def test_generalized_attention_spatial_range_map_is_mmcvs():
    for c, kv in ((512, 2), (512, 1), (256, 2)):
        m = GeneralizedAttention(c, spatial_range=2, num_heads=8, kv_stride=kv)
        assert shapes(m) == ga_keys(c, heads=8, spatial_range=2, kv_stride=kv)
        assert m.local_constraint_map.dtype == torch.uint8
    r, s = 2, 2
    mask = GeneralizedAttention(512, spatial_range=r, num_heads=8, kv_stride=s).local_constraint_map
    # mmcv: zeros (allowed) at [iy, ix, max((iy-r)//s, 0) : min((iy+r+1)//s + 1, L), same for x]
    for iy, ix in ((0, 0), (5, 9), (41, 20)):
        rows = range(max((iy - r) // s, 0), min((iy + r + 1) // s + 1, 42))
        cols = range(max((ix - r) // s, 0), min((ix + r + 1) // s + 1, 42))
        allowed = torch.zeros(21, 21, dtype=torch.bool)
        allowed[rows.start:rows.stop, cols.start:cols.stop] = True
        assert torch.equal(mask[iy, ix] == 0, allowed)


@torch.no_grad()
def test_generalized_attention_initialisation_is_mmcvs():
    torch.manual_seed(0)
    m = GeneralizedAttention(256, num_heads=8)
    assert not m.gamma.any() and not m.proj_conv.bias.any()
    # kaiming_init(mode='fan_in', nonlinearity='leaky_relu', a=1, distribution='uniform'): gain 1, bound √(3/fan_in)
    for layer, fan_in in ((m.query_conv, 256), (m.value_conv, 256), (m.appr_geom_fc_x, 128), (m.proj_conv, 256)):
        bound = math.sqrt(3 / fan_in)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound
    stdv = 1 / math.sqrt(2 * 32)  # U(-stdv, stdv), stdv = 1/√(2·head_dim)
    for bias in (m.appr_bias, m.geom_bias):
        assert bias.abs().max() <= stdv and bias.abs().max() > 0.9 * stdv
    x = torch.randn(1, 256, 6, 7)
    assert torch.equal(m(x), x)  # γ = 0


def _embedding(delta, dim):
    """The paper's sinusoidal embedding of one offset: sin and cos at wave lengths 1000^(4k/dim)."""
    k = torch.arange(dim // 4, dtype=torch.float32)
    return torch.cat([torch.sin(delta / 1000 ** (4 * k / dim)), torch.cos(delta / 1000 ** (4 * k / dim))])


def reference_attention(m, x, bits, heads, q_stride=1, kv_stride=2, magnitude=1.0, pos_dim=8, allowed=None):
    """mmcv's docstring terms, for one image, query by query and key by key (all heads at once):
    energy = [q·k] + [q·pos] + [appr_bias·k] + [geom_bias·pos], pos = (Wx e(dx) + Wy e(dy)) / √2."""
    b = [c == "1" for c in bits]
    c = x.shape[1]
    d = c // heads
    xq, xk = x[0, :, ::q_stride, ::q_stride], x[0, :, ::kv_stride, ::kv_stride]

    def proj(name, t):
        return torch.einsum("oc,chw->ohw", getattr(m, name).weight[:, :, 0, 0], t).view(heads, d, *t.shape[1:])

    q = proj("query_conv", xq) if b[0] or b[1] else None
    k = proj("key_conv", xk) if b[0] or b[2] else None
    v = proj("value_conv", xk)
    h, w = xq.shape[1:]
    hk, wk = xk.shape[1:]
    out = torch.zeros(heads, d, h, w)
    for y in range(h):
        for x_ in range(w):
            energies, values = [], []
            for yk in range(hk):
                for xk_ in range(wk):
                    if allowed is not None and not allowed(y, x_, yk, xk_):
                        continue
                    e = torch.zeros(heads)
                    if b[0]:
                        e += (q[:, :, y, x_] * k[:, :, yk, xk_]).sum(1)
                    if b[2]:
                        e += (m.appr_bias.view(heads, d) * k[:, :, yk, xk_]).sum(1)
                    if b[1] or b[3]:
                        dx = (x_ * q_stride - xk_ * kv_stride) * magnitude
                        dy = (y * q_stride - yk * kv_stride) * magnitude
                        pos = (m.appr_geom_fc_x.weight @ _embedding(torch.tensor(float(dx)), pos_dim)
                               + m.appr_geom_fc_y.weight @ _embedding(torch.tensor(float(dy)), pos_dim)) / math.sqrt(2)
                        pos = pos.view(heads, d)
                        if b[1]:
                            e += (q[:, :, y, x_] * pos).sum(1)
                        if b[3]:
                            e += (m.geom_bias.view(heads, d) * pos).sum(1)
                    energies.append(e)
                    values.append(v[:, :, yk, xk_])
            a = torch.softmax(torch.stack(energies, 1), 1)            # heads, keys
            out[:, :, y, x_] = torch.einsum("ak,akd->ad", a, torch.stack(values, 1))
    out = torch.einsum("oc,chw->ohw", m.proj_conv.weight[:, :, 0, 0], out.view(-1, h, w)) + m.proj_conv.bias[:, None, None]
    if q_stride > 1:
        out = F.interpolate(out[None], size=x.shape[2:], mode="bilinear", align_corners=False)[0]
    return x + m.gamma * out[None]


@torch.no_grad()
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("q_stride,kv_stride,magnitude", [(1, 2, 1.0), (2, 1, 2.0)])
def test_generalized_attention_computes_the_papers_terms(bits, q_stride, kv_stride, magnitude):
    m = GeneralizedAttention(8, num_heads=2, position_embedding_dim=8, attention_type=bits, q_stride=q_stride,
                             kv_stride=kv_stride, position_magnitude=magnitude)
    randomize(m, std=0.3)
    x = torch.randn(1, 8, 4, 5)  # not square: x and y offsets must not be swapped
    expected = reference_attention(m, x, bits, 2, q_stride, kv_stride, magnitude)
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_generalized_attention_spatial_range_masks_far_keys():
    r, s = 1, 2
    m = GeneralizedAttention(512, spatial_range=r, num_heads=8, kv_stride=s, position_embedding_dim=8)
    randomize(m, std=0.05)
    x = torch.randn(1, 512, 5, 5)

    def allowed(y, x_, yk, xk):  # mmcv's local_constraint_map, read as a rule
        return max((y - r) // s, 0) <= yk < (y + r + 1) // s + 1 and max((x_ - r) // s, 0) <= xk < (x_ + r + 1) // s + 1

    expected = reference_attention(m, x, "1111", 8, kv_stride=s, allowed=allowed)
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ResnetkitValueError, match="up to 42×42"):
        m(torch.randn(1, 512, 43, 43))


def test_generalized_attention_trains():
    m = GeneralizedAttention(16, num_heads=4, attention_type="1111", q_stride=2)
    with torch.no_grad():
        m.gamma.fill_(0.5)
    m(torch.randn(2, 16, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


# ------------------------------------------------------------------ through mmdet configs and create_model
def _plugin_keys(per_stage, name):
    """{key: shape} of plugin ``name`` in every block of the stages given as {stage: plugin's {key: shape}}."""
    blocks = {1: 3, 2: 4, 3: 6, 4: 3}
    return {f"layer{s}.{i}.{name}.{k}": shape for s, keys in per_stage.items() for i in range(blocks[s])
            for k, shape in keys.items()}


def _round_trip(cfg, plugin_keys, forward=True):
    """Build ``cfg``: mmdet's keys plus ``plugin_keys`` (with their shapes), loaded back strictly with random
    plugin weights (and run on X64)."""
    b = rk.from_mmdet_config(cfg).eval()
    sd = b.state_dict()
    assert set(sd) == mmdet_keys() | set(plugin_keys)
    assert {k: tuple(sd[k].shape) for k in plugin_keys} == plugin_keys
    torch.manual_seed(0)
    sd = {k: torch.randn_like(v) * 0.05 if k in plugin_keys and v.is_floating_point() and "running_" not in k else v
          for k, v in sd.items()}
    again = rk.from_mmdet_config(cfg).eval()
    again.load_state_dict(sd, strict=True)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sd.items())
    if forward:
        with torch.no_grad():
            out = again(X64)
        assert [t.shape[1] for t in out] == [256, 512, 1024, 2048] and all(torch.isfinite(t).all() for t in out)
    return b


@pytest.mark.parametrize("cfg,norm", [
    (dict(type="NonLocal2d"), None),
    (dict(type="NonLocal2d", mode="dot_product", sub_sample=True), None),
    (dict(type="NonLocal2d", mode="gaussian", sub_sample=True, norm_cfg=dict(type="BN")), "bn"),
    (dict(type="NonLocal2d", mode="concatenation", reduction=4, norm_cfg=dict(type="GN", num_groups=32)), "gn"),
])
def test_nonlocal2d_in_from_mmdet_config_has_mmdets_keys(cfg, norm):
    # as in mmdet's tests, after conv2: 256 channels in layer3, 512 in layer4
    args = (cfg.get("mode", "embedded_gaussian"), cfg.get("sub_sample", False), norm, cfg.get("reduction", 2))
    _round_trip(dict(R50, plugins=[dict(cfg=cfg, position="after_conv2", stages=(False, False, True, True))]),
                _plugin_keys({3: nonlocal_keys(256, *args), 4: nonlocal_keys(512, *args)}, "nonlocal_block"))


@pytest.mark.parametrize("bits", ["1111", "0010"])
def test_empirical_attention_configs_build_with_mmdets_keys(bits):
    # configs/empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py (and attn0010), verbatim
    plugins = [dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=8, attention_type=bits,
                             kv_stride=2), stages=(False, False, True, True), position="after_conv2")]
    keys = _plugin_keys({3: ga_keys(256, bits, heads=8), 4: ga_keys(512, bits, heads=8)}, "gen_attention_block")
    b = _round_trip(dict(R50, plugins=plugins), keys, forward=False)
    plain = rk.from_mmdet_config(R50).eval()
    give_trained_bn_stats(plain)
    b.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():  # γ = 0 survived the backbone's init: a pretrained backbone's outputs are unchanged
        # (the attention runs in full here; γ = 0 then keeps it out of the sum)
        for ours, ref in zip(b(X64), plain(X64)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_mmdets_three_plugins_in_one_block():
    # mmdet tests/test_models/test_backbones/test_resnet.py: GA '0010' + NonLocal2d after conv2, ContextBlock after conv3
    plugins = [dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=8, attention_type="0010",
                             kv_stride=2), position="after_conv2"),
               dict(cfg=dict(type="NonLocal2d"), position="after_conv2"),
               dict(cfg=dict(type="ContextBlock", ratio=1. / 16), position="after_conv3")]
    b = rk.from_mmdet_config(dict(R50, plugins=plugins))
    widths = {1: 64, 2: 128, 3: 256, 4: 512}  # conv2's
    expected = _plugin_keys({s: ga_keys(c, "0010", heads=8) for s, c in widths.items()}, "gen_attention_block") | \
        _plugin_keys({s: nonlocal_keys(c) for s, c in widths.items()}, "nonlocal_block")
    gcb = _plugin_keys({s: dict.fromkeys(GCB) for s in widths}, "context_block")
    sd = b.state_dict()
    assert set(sd) == mmdet_keys() | set(expected) | set(gcb)
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    with torch.no_grad():
        assert len(b.eval()(X64[..., :32, :32])) == 4


@pytest.mark.parametrize("cfg,cls", [
    ({"type": "NonLocal2d", "mode": "concatenation", "sub_sample": True}, NonLocal2d),
    ({"type": "GeneralizedAttention", "num_heads": 4, "attention_type": "0100", "q_stride": 2}, GeneralizedAttention),
])
def test_create_model_takes_the_mmcv_plugins(cfg, cls):
    torch.manual_seed(0)
    plain = rk.create_model("resnet50", num_stages=2, num_classes=3).eval()
    give_trained_bn_stats(plain)
    m = rk.create_model("resnet50", num_stages=2, num_classes=3,
                        plugins=[{"cfg": cfg, "position": "after_conv2", "stages": (False, True)}]).eval()
    assert isinstance(m.layer2[0].after_conv2_plugins[0], cls) and not hasattr(m.layer1[0], "after_conv2_plugins")
    missing = m.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".after_conv2_plugins.0." in k for k in missing)
    with torch.no_grad():  # both start as the identity
        torch.testing.assert_close(m(X64), plain(X64), rtol=0, atol=1e-5)
    nonlocal_ = rk.create_model("resnet50", num_stages=1, plugins=[{"cfg": {"type": "NonLocal"}, "position": "after_conv2"}])
    assert isinstance(nonlocal_.layer1[0].after_conv2_plugins[0], rk.NonLocal)  # resnetkit's own stays


@pytest.mark.parametrize("cfg,match", [
    (dict(type="NonLocal2d", mode="softmax"), "mode must be one of"),
    (dict(type="NonLocal2d", reduction=0), "reduction must be a positive integer"),
    (dict(type="NonLocal2d", conv_cfg=dict(type="DCN")), "conv_cfg"),
    (dict(type="NonLocal2d", norm_cfg=dict(type="LN")), "norm_cfg type 'LN'"),
    (dict(type="NonLocal2d", kernel_size=7), r"no option\(s\) \['kernel_size'\]"),
    (dict(type="GeneralizedAttention", attention_type="111"), "four bits"),
    (dict(type="GeneralizedAttention", attention_type=1111), "four bits"),
    (dict(type="GeneralizedAttention", num_heads=0), "num_heads must be an integer >= 1"),
    (dict(type="GeneralizedAttention", num_heads=600), "no channels per head"),
    (dict(type="GeneralizedAttention", kv_stride=0), "kv_stride"),
    (dict(type="GeneralizedAttention", position_embedding_dim=6), "multiple of 4"),
    (dict(type="GeneralizedAttention", spatial_range=3), "256 or 512 channels"),
])
def test_bad_plugin_options_are_clear_errors(cfg, match):
    # layer1's conv2 has 64 channels
    with pytest.raises(ResnetkitValueError, match=match):
        rk.create_model("resnet50", num_stages=1, plugins=[{"cfg": cfg, "position": "after_conv2"}])


def test_from_mmdet_config_names_the_plugin_types_it_takes():
    with pytest.raises(ResnetkitValueError, match=r"'SE' .*\['ContextBlock', 'GeneralizedAttention', 'NonLocal2d'\]"):
        rk.from_mmdet_config(dict(R50, plugins=[dict(cfg=dict(type="SE"), position="after_conv3")]))
    with pytest.raises(ResnetkitValueError, match="postfix"):
        rk.from_mmdet_config(dict(R50, plugins=[dict(cfg=dict(type="NonLocal2d"), position="after_conv2")] * 2))
