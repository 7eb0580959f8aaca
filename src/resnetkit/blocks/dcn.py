"""Deformable convolution (Dai et al. 2017; v2: Zhu et al. 2019) with mmcv's parameter layout.

mmdet's ``dcn=dict(type='DCN'|'DCNv2', deform_groups=N)`` replaces a Bottleneck's
3×3 ``conv2`` by mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack``:
the kernel stays ``conv2.weight`` and a plain conv ``conv2.conv_offset``
predicts, per output position, a (dy, dx) pair for each kernel tap and deform
group (DCNv2: plus a mask logit). The sampling itself is
``torchvision.ops.deform_conv2d``, whose offset and mask channel order is mmcv's.

The offset conv starts at zero (as mmcv initialises it), so an untrained DCN
samples the regular grid and equals the plain conv; DCNv2's mask is then
sigmoid(0) = 0.5, so it gives half of it.
"""
from __future__ import annotations

import importlib
import math

import torch
from torch import nn
from torch.utils.flop_counter import flop_registry, register_flop_formula

from ..errors import ResnetkitTypeError, ResnetkitValueError

_TYPES = {"DCN": False, "DCNv2": True}  # mmcv type -> modulated


def _deform_conv2d():
    """torchvision's op, imported on use: torchvision is needed by DCN models only.

    The raw op, not ``torchvision.ops.deform_conv2d``: that wrapper branches on
    tensor shapes, which torch.fx cannot trace (the inference engine fuses a
    traced model's activations).
    """
    try:
        importlib.import_module("torchvision.ops")  # registers torch.ops.torchvision
    except ImportError as e:
        raise ImportError("dcn=... runs torchvision.ops.deform_conv2d; install torchvision "
                          "(pip install torchvision) to build DCN models") from e
    op = torch.ops.torchvision.deform_conv2d
    if op not in flop_registry:  # MAC counts (rk.summary, torch's FlopCounterMode) see the op too
        register_flop_formula(op)(_deform_conv_flop)
    return op


def _deform_conv_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """A k×k conv's FLOPs (2 × MACs) per output element; the bilinear sampling is not counted (as DCN's papers)."""
    _, cin_per_group, kh, kw = weight_shape
    return 2 * math.prod(out_shape) * cin_per_group * kh * kw


class DeformConv2d(nn.Module):
    """A k×k conv whose sampling grid is shifted by offsets predicted from its own input."""

    inits_itself = True  # the offset conv must start at zero: a model's generic init leaves it alone

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, deform_groups: int = 1,
                 modulated: bool = False, bias: bool = False) -> None:
        super().__init__()
        _deform_conv2d()  # without torchvision, fail here at construction, not in the first forward
        if in_channels % groups or out_channels % groups:
            raise ResnetkitValueError(f"DeformConv2d: {in_channels}->{out_channels} channels do not split into {groups} groups")
        if in_channels % deform_groups:
            raise ResnetkitValueError(f"DeformConv2d: deform_groups={deform_groups} must divide in_channels={in_channels}")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.modulated, self.deform_groups = modulated, deform_groups
        self.taps = deform_groups * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, (3 if modulated else 2) * self.taps, kernel_size, stride,
                                     padding, dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)  # start on the regular grid
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        if self.modulated:  # mmcv: offsets are the first two thirds, the mask logits the last third
            offset, logits = out.split([2 * self.taps, self.taps], dim=1)
            mask = torch.sigmoid(logits)
        else:
            offset, mask = out, x.new_zeros(x.shape[0], 1)  # the op ignores it (use_mask=False)
        bias = self.bias if self.bias is not None else self.weight.new_zeros(self.weight.shape[0])
        return _deform_conv2d()(x, self.weight, offset, mask, bias, self.stride, self.stride, self.padding,
                                self.padding, self.dilation, self.dilation, self.groups, self.deform_groups,
                                self.modulated)

    def extra_repr(self) -> str:
        out, _, k, _ = self.weight.shape
        return (f"{self.conv_offset.in_channels}, {out}, kernel_size={k}, stride={self.stride}, padding="
                f"{self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deform_groups={self.deform_groups}, modulated={self.modulated}")


def check_dcn(dcn: dict | None) -> dict | None:
    """Validate mmdet's ``dcn`` dict; returns ``{modulated, deform_groups, fallback_on_stride}``."""
    if dcn is None:
        return None
    if not isinstance(dcn, dict):
        raise ResnetkitTypeError(f"dcn must be a dict like dict(type='DCNv2', deform_groups=1), got {dcn!r}")
    cfg = dict(dcn)
    kind = cfg.pop("type", None)
    if kind not in _TYPES:
        raise ResnetkitValueError(f"dcn type {kind!r} is not supported; use 'DCN' or 'DCNv2' (mmcv's DeformConv2dPack / "
                                  "ModulatedDeformConv2dPack)")
    out = dict(modulated=_TYPES[kind], deform_groups=int(cfg.pop("deform_groups", 1)),
               fallback_on_stride=bool(cfg.pop("fallback_on_stride", False)))
    if cfg:
        raise ResnetkitValueError(f"dcn option(s) {sorted(cfg)} are not supported; dcn takes type, deform_groups and "
                                  "fallback_on_stride")
    return out


def conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int, groups: int,
            dcn: dict | None) -> nn.Module:
    """A block's 3×3 conv: plain, or deformable per ``check_dcn(dcn)``.

    ``fallback_on_stride`` keeps the plain conv where this conv is strided (DCN
    on a strided conv samples a sparser grid that few checkpoints were trained with).
    """
    if dcn is None or (dcn["fallback_on_stride"] and stride > 1):
        return nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation,
                         groups=groups, bias=False)
    return DeformConv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, groups=groups,
                        deform_groups=dcn["deform_groups"], modulated=dcn["modulated"])
