"""Non-local block (Wang et al. 2018) with mmcv's ``NonLocal2d`` layout, options and initialisation.

``y = x + conv_out(f(θ(x), φ(x)) g(x))``: every position gathers ``g`` of every
(or, with ``sub_sample``, every 2×2-pooled) position, weighted by a pairwise
function ``f``. The 1×1 convs are ConvModules as in mmcv (``g.conv.weight``,
``conv_out.bn.weight`` with ``norm_cfg=dict(type='BN')``; ``g.0.conv.weight`` with
``sub_sample``), so the plugin weights of an mmdet checkpoint load strictly.
resnetkit's own :class:`~resnetkit.blocks.plugins.NonLocal` (plugin ``"NonLocal"``)
is the embedded-Gaussian form with flat names.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .conv import ConvBNAct
from .norm import norm_abbr, norm_factory

MODES = ("embedded_gaussian", "dot_product", "gaussian", "concatenation")


def conv_module(in_channels: int, out_channels: int, norm_cfg: dict | None = None, relu: bool = False,
                bias: bool | None = None) -> ConvBNAct:
    """mmcv's 1×1 ``ConvModule``: children ``conv``, the norm under mmcv's name (``bn``, ``gn``), ``activate``;
    the conv has a bias exactly when there is no norm unless ``bias`` says otherwise (mmcv's ``bias='auto'``)."""
    norm = norm_factory(norm_cfg) if norm_cfg is not None else None
    return ConvBNAct(in_channels, out_channels, 1, norm_layer=norm, act_layer=nn.ReLU if relu else None,
                     bias=bias, names=("conv", norm_abbr(norm) if norm else "norm", "activate"))


def embedded_gaussian(theta: torch.Tensor, phi: torch.Tensor, use_scale: bool = True) -> torch.Tensor:
    """softmaxⱼ(θᵢ·φⱼ / √c') for θ (N, c', HW) and φ (N, c', HW'): (N, HW, HW'), rows summing to 1."""
    scores = theta.transpose(1, 2) @ phi
    return (scores / theta.shape[1] ** 0.5 if use_scale else scores).softmax(-1)


def _check_conv_cfg(conv_cfg: dict | None) -> None:
    if conv_cfg is not None and (not isinstance(conv_cfg, dict) or conv_cfg.get("type") not in ("Conv", "Conv2d")
                                 or len(conv_cfg) > 1):
        raise ResnetkitValueError(f"NonLocal2d conv_cfg={conv_cfg!r} is not supported; only plain convs "
                                  "(conv_cfg=None or dict(type='Conv2d'))")


class NonLocal2d(nn.Module):
    """``{"type": "NonLocal2d", "mode": "embedded_gaussian", "reduction": 2, "sub_sample": False, ...}``.

    ``mode``: the pairwise function ``f(i, j)`` (mmcv's four): ``embedded_gaussian``
    = softmax_j(θᵢ·φⱼ, divided by √c' when ``use_scale``); ``dot_product`` = θᵢ·φⱼ / N;
    ``gaussian`` = softmax_j(xᵢ·xⱼ) (no θ, φ); ``concatenation`` = ReLU(w·[θᵢ; φⱼ]) / N,
    with c' = ``in_channels // reduction`` and N the number of positions j.
    ``sub_sample`` max-pools ``g`` and ``φ`` 2×2. ``norm_cfg`` (BN, SyncBN, GN) puts a
    norm after ``conv_out``. Initialisation as mmcv's: θ, φ, g ~ N(0, ``std``), and
    ``conv_out`` (its norm, if any) starts at zero with ``zeros_init``, so the block
    starts as the identity.
    """

    _abbr_ = "nonlocal_block"  # mmcv's name for it inside an mmdet block

    def __init__(self, in_channels: int, reduction: int = 2, use_scale: bool = True, mode: str = "embedded_gaussian",
                 sub_sample: bool = False, norm_cfg: dict | None = None, conv_cfg: dict | None = None,
                 std: float = 0.01, zeros_init: bool = True) -> None:
        super().__init__()
        if mode not in MODES:
            raise ResnetkitValueError(f"NonLocal2d mode must be one of {MODES}, got {mode!r}")
        if not (isinstance(reduction, int) and reduction >= 1):
            raise ResnetkitValueError(f"NonLocal2d reduction must be a positive integer, got {reduction!r}")
        _check_conv_cfg(conv_cfg)
        self.in_channels, self.mode, self.use_scale, self.sub_sample = in_channels, mode, use_scale, sub_sample
        self.inter_channels = inter = max(in_channels // reduction, 1)
        # registration order is mmcv's, so state dicts list the keys in the same order
        self.g = conv_module(in_channels, inter)
        self.conv_out = conv_module(inter, in_channels, norm_cfg)
        if mode != "gaussian":
            self.theta = conv_module(in_channels, inter)
            self.phi = conv_module(in_channels, inter)
        if mode == "concatenation":
            self.concat_project = conv_module(2 * inter, 1, relu=True, bias=False)
        if sub_sample:
            pool = nn.MaxPool2d(2)
            self.g = nn.Sequential(self.g, pool)
            self.phi = nn.Sequential(self.phi, pool) if mode != "gaussian" else pool
        self.reset_parameters(std, zeros_init)

    def reset_parameters(self, std: float = 0.01, zeros_init: bool = True) -> None:
        """mmcv's: ConvModule's Kaiming (fan_out) for every conv, then N(0, std) for
        g/θ/φ and zero (or N(0, std)) for conv_out's last layer (its norm if it has one), biases zero."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        embeds = [getattr(self, n) for n in (("g",) if self.mode == "gaussian" else ("g", "theta", "phi"))]
        last = self.conv_out[1] if len(self.conv_out) > 1 else self.conv_out.conv
        for layer in [m.conv if isinstance(m, ConvBNAct) else m[0].conv for m in embeds] + [last]:
            if zeros_init and layer is last:
                nn.init.zeros_(layer.weight)
            else:
                nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """(N, HW, HW'): the weight of position j (of ``g``'s grid) for position i."""
        if self.mode == "gaussian":
            keys = self.phi(x) if self.sub_sample else x
            return (x.flatten(2).transpose(1, 2) @ keys.flatten(2)).softmax(-1)
        theta, phi = self.theta(x).flatten(2), self.phi(x).flatten(2)  # N, c', HW and N, c', HW'
        if self.mode == "concatenation":
            # ReLU(w·[θᵢ; φⱼ]) = ReLU(w_θ·θᵢ + w_φ·φⱼ): mmcv's sum without building the (2c', HW, HW') tensor
            w_theta, w_phi = self.concat_project.conv.weight.flatten().split(self.inter_channels)
            scores = (w_theta @ theta)[:, :, None] + (w_phi @ phi)[:, None, :]
            return self.concat_project.activate(scores) / phi.shape[-1]
        if self.mode == "dot_product":
            return theta.transpose(1, 2) @ phi / phi.shape[-1]
        return embedded_gaussian(theta, phi, self.use_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)                   # N, HW', c'
        y = (self.pairwise(x) @ g).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.conv_out(y)
