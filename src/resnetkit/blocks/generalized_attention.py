"""Generalized attention (Zhu et al. 2019, "An Empirical Study of Spatial Attention Mechanisms in
Deep Networks") with mmcv's ``GeneralizedAttention`` layout, options and initialisation.

Multi-head attention over positions whose energy sums up to four terms, switched
on by the bits of ``attention_type`` (mmcv's order):

1. query content · key content (``query_conv``, ``key_conv``);
2. query content · relative position (``query_conv``, ``appr_geom_fc_x/y``);
3. a learnt bias · key content, "saliency" (``appr_bias``, ``key_conv``);
4. a learnt bias · relative position (``geom_bias``, ``appr_geom_fc_x/y``).

A relative position (dy, dx) is embedded as sines and cosines of the offsets and
projected per axis: position term = u · (Pₓ(dx) + Pᵧ(dy)) / √2. Keys and values
come from the input taken every ``kv_stride`` pixels, queries every ``q_stride``
(the output is upsampled back bilinearly). ``y = x + γ · proj_conv(attention · values)``,
γ starting at 0, so a new block is the identity. Parameter names and shapes are
mmcv's, so the plugin weights of mmdet's empirical-attention checkpoints load strictly.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ResnetkitValueError

# mmcv sizes the spatial_range mask for the one feature map it was written for: this side
# length, by channel count (a ResNet-50 conv2 at 1/16 and 1/32 of an 1333×800 image)
_MASK_SIDE = {256: 84, 512: 42}


def _check_int(name: str, value: object, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ResnetkitValueError(f"GeneralizedAttention {name} must be an integer >= {low}, got {value!r}")


def relative_embedding(n_q: int, n_kv: int, q_stride: int, kv_stride: int, magnitude: float, dim: int,
                       like: torch.Tensor, wave_length: float = 1000.0) -> torch.Tensor:
    """(n_q, n_kv, dim // 2): sin and cos of the offset between query i and key j along one axis,
    (i·q_stride − j·kv_stride)·magnitude, at dim // 4 wave lengths from 1 to ``wave_length``."""
    kw = dict(device=like.device, dtype=like.dtype)
    offset = (torch.arange(n_q, **kw)[:, None] * q_stride - torch.arange(n_kv, **kw)[None, :] * kv_stride) * magnitude
    scale = wave_length ** (4 / dim * torch.arange(dim // 4, **kw))
    angle = offset[..., None] / scale
    return torch.cat([angle.sin(), angle.cos()], -1)


def local_constraint_map(side: int, kv_stride: int, spatial_range: int) -> torch.Tensor:
    """mmcv's (side, side, side_kv, side_kv) uint8 mask: 1 where key (Y, X) lies outside query (y, x)'s range,
    i.e. outside [max((y − r) // s, 0), (y + r + 1) // s + 1) on each axis."""
    side_kv = int((side - 1.0) / kv_stride + 1)
    q = torch.arange(side)[:, None]
    k = torch.arange(side_kv)[None, :]
    near = (k >= ((q - spatial_range) // kv_stride).clamp(min=0)) & (k < (q + spatial_range + 1) // kv_stride + 1)
    return (~(near[:, None, :, None] & near[None, :, None, :])).to(torch.uint8)


class GeneralizedAttention(nn.Module):
    """``{"type": "GeneralizedAttention", "attention_type": "1111", "num_heads": 9, "kv_stride": 2, ...}``.

    Options as mmcv's: ``attention_type`` four bits (above), ``num_heads`` (each
    head gets ``in_channels // num_heads`` channels), ``position_embedding_dim``
    (-1: ``in_channels``; a multiple of 4 when a position term is on),
    ``position_magnitude`` (scales the offsets), ``q_stride``/``kv_stride``, and
    ``spatial_range`` (-1: global; r >= 0: each query sees keys within about r
    pixels, through mmcv's precomputed ``local_constraint_map``, which exists for
    256 and 512 channels only, as in mmcv).
    """

    _abbr_ = "gen_attention_block"  # mmcv's name for it inside an mmdet block

    def __init__(self, in_channels: int, spatial_range: int = -1, num_heads: int = 9, position_embedding_dim: int = -1,
                 position_magnitude: float = 1, kv_stride: int = 2, q_stride: int = 1,
                 attention_type: str = "1111") -> None:
        super().__init__()
        if not (isinstance(attention_type, str) and len(attention_type) == 4 and set(attention_type) <= {"0", "1"}):
            raise ResnetkitValueError(f"GeneralizedAttention attention_type must be four bits such as '1111' or '0010' "
                                      f"(query·key, query·position, bias·key, bias·position), got {attention_type!r}")
        for name, value, low in (("num_heads", num_heads, 1), ("kv_stride", kv_stride, 1),
                                 ("q_stride", q_stride, 1), ("spatial_range", spatial_range, -1),
                                 ("position_embedding_dim", position_embedding_dim, -1)):
            _check_int(name, value, low)
        self.head_dim = in_channels // num_heads
        if self.head_dim < 1:
            raise ResnetkitValueError(f"GeneralizedAttention num_heads={num_heads} leaves no channels per head of "
                                      f"{in_channels}; use at most {in_channels} heads")
        self.terms = content, rel_pos, key_bias, pos_bias = tuple(bit == "1" for bit in attention_type)
        self.pos_dim = position_embedding_dim if position_embedding_dim > 0 else in_channels
        if (rel_pos or pos_bias) and self.pos_dim % 4:
            raise ResnetkitValueError(f"GeneralizedAttention position_embedding_dim={self.pos_dim} must be a multiple "
                                      "of 4 (sin and cos at dim/4 wave lengths per axis); pass one, e.g. "
                                      f"{self.pos_dim - self.pos_dim % 4 or 4}")
        if spatial_range >= 0 and in_channels not in _MASK_SIDE:
            raise ResnetkitValueError(f"GeneralizedAttention spatial_range={spatial_range} needs 256 or 512 channels "
                                      f"(mmcv's mask is sized for those alone), got {in_channels}; use spatial_range=-1")
        self.in_channels, self.num_heads, self.spatial_range = in_channels, num_heads, spatial_range
        self.kv_stride, self.q_stride, self.position_magnitude = kv_stride, q_stride, position_magnitude
        inner = self.head_dim * num_heads
        # registration order is mmcv's, so state dicts list the keys in the same order
        if content or rel_pos:
            self.query_conv = nn.Conv2d(in_channels, inner, 1, bias=False)
        if content or key_bias:
            self.key_conv = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.value_conv = nn.Conv2d(in_channels, inner, 1, bias=False)
        if rel_pos or pos_bias:
            self.appr_geom_fc_x = nn.Linear(self.pos_dim // 2, inner, bias=False)
            self.appr_geom_fc_y = nn.Linear(self.pos_dim // 2, inner, bias=False)
        if key_bias:
            self.appr_bias = nn.Parameter(torch.empty(inner))
        if pos_bias:
            self.geom_bias = nn.Parameter(torch.empty(inner))
        self.proj_conv = nn.Conv2d(inner, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        if spatial_range >= 0:
            # mmcv keeps it as a frozen uint8 Parameter; a buffer has the same state-dict key and stays out of
            # parameters() (optimisers, parameter counts)
            self.register_buffer("local_constraint_map",
                                 local_constraint_map(_MASK_SIDE[in_channels], kv_stride, spatial_range))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's: Kaiming-uniform (a=1, fan_in) projections, zero proj_conv bias,
        appr/geom biases U(±1/√(2·head_dim)), γ = 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        bound = 1 / math.sqrt(2 * self.head_dim)
        for name in ("appr_bias", "geom_bias"):
            if hasattr(self, name):
                nn.init.uniform_(getattr(self, name), -bound, bound)
        nn.init.zeros_(self.gamma)

    def _position_features(self, h: int, w: int, h_kv: int, w_kv: int, like: torch.Tensor):
        """Pₓ (heads, d, w, w_kv) and Pᵧ (heads, d, h, h_kv): the projected offset embeddings, divided by √2."""
        out = []
        for fc, n_q, n_kv in ((self.appr_geom_fc_x, w, w_kv), (self.appr_geom_fc_y, h, h_kv)):
            emb = relative_embedding(n_q, n_kv, self.q_stride, self.kv_stride, self.position_magnitude,
                                     self.pos_dim, like)
            out.append(fc(emb).view(n_q, n_kv, self.num_heads, self.head_dim).permute(2, 3, 0, 1) / math.sqrt(2))
        return out

    def energy(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        """(N, heads, h·w, h_kv·w_kv): the sum of the switched-on terms for every query and key."""
        content, rel_pos, key_bias, pos_bias = self.terms
        n, _, h, w = x_q.shape
        h_kv, w_kv = x_kv.shape[-2:]
        heads, d = self.num_heads, self.head_dim
        e = x_kv.new_zeros(n, heads, h, w, h_kv, w_kv)
        if content or rel_pos:
            q = self.query_conv(x_q).view(n, heads, d, h, w)
        if content or key_bias:
            k = self.key_conv(x_kv).view(n, heads, d, h_kv, w_kv)
        if content:
            e = e + torch.einsum("nadyx,nadYX->nayxYX", q, k)
        if key_bias:
            e = e + torch.einsum("ad,nadYX->naYX", self.appr_bias.view(heads, d), k)[:, :, None, None]
        if rel_pos or pos_bias:
            px, py = self._position_features(h, w, h_kv, w_kv, x_kv)
            u = q if rel_pos else 0
            if pos_bias:
                u = u + self.geom_bias.view(1, heads, d, 1, 1).expand(n, heads, d, h, w)
            e = e + torch.einsum("nadyx,adxX->nayxX", u, px)[:, :, :, :, None, :] \
                  + torch.einsum("nadyx,adyY->nayxY", u, py)[..., None]
        e = e.view(n, heads, h * w, h_kv * w_kv)
        if self.spatial_range >= 0:
            side = self.local_constraint_map.shape
            if h > side[0] or w > side[1] or h_kv > side[2] or w_kv > side[3]:
                raise ResnetkitValueError(f"GeneralizedAttention spatial_range: mmcv's mask covers maps up to "
                                          f"{side[0]}×{side[1]} for {self.in_channels} channels, got {h}×{w}; "
                                          "use spatial_range=-1 for larger inputs")
            mask = self.local_constraint_map[:h, :w, :h_kv, :w_kv].reshape(1, 1, h * w, h_kv * w_kv)
            e = e.masked_fill(mask.bool(), float("-inf"))
        return e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q = x[:, :, ::self.q_stride, ::self.q_stride]  # mmcv: AvgPool2d(kernel_size=1, stride), the same samples
        x_kv = x[:, :, ::self.kv_stride, ::self.kv_stride]
        if self.terms == (False, False, True, False):
            # saliency alone does not depend on the query: one query row serves every position (as mmcv computes it)
            x_q = x_q[:, :, :1, :1]
        n, _, h, w = x_q.shape
        attention = self.energy(x_q, x_kv).softmax(-1)
        v = self.value_conv(x_kv).flatten(2).view(n, self.num_heads, self.head_dim, -1)
        out = torch.einsum("naqk,nadk->nadq", attention, v).reshape(n, -1, h, w)
        out = self.proj_conv(out)
        if self.q_stride > 1 and (h, w) != (1, 1):  # back to the input's size; a single row broadcasts
            out = F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)
        return self.gamma * out + x
