"""GhostNet (Han et al. 2020), timm-exact: same keys, shapes and outputs as timm's ``ghostnet_*``.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("ghostnet_100", features_only=True)
>>> net.feature_info.channels(), net.feature_info.reduction()
([16, 24, 40, 112, 160], [2, 4, 8, 16, 32])
"""
from __future__ import annotations

from torch import nn

from ..blocks import ConvBNAct, GhostBottleneck, make_divisible
from ..features import levels_from_trunk
from ..registry import register_model
from .base import ResidualNet

# Table 1 of the paper, one inner list per timm stage: k (dw kernel), t (mid chs), c (out chs), SE ratio, s
CFGS = [
    [[3, 16, 16, 0, 1]],
    [[3, 48, 24, 0, 2]], [[3, 72, 24, 0, 1]],
    [[5, 72, 40, 0.25, 2]], [[5, 120, 40, 0.25, 1]],
    [[3, 240, 80, 0, 2]],
    [[3, 200, 80, 0, 1], [3, 184, 80, 0, 1], [3, 184, 80, 0, 1], [3, 480, 112, 0.25, 1], [3, 672, 112, 0.25, 1]],
    [[5, 672, 160, 0.25, 2]],
    [[5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1], [5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1]],
]


class GhostNet(ResidualNet):
    """Stem (3×3/2 conv, BN, ReLU), ``blocks`` of GhostBottlenecks ending in a 1×1 ConvBNAct, and
    timm's head: ``global_pool`` → 1×1 ``conv_head`` to 1280 (with bias) → ReLU → flatten → dropout →
    ``classifier``, all modules (so the head shows in summaries and iterating runs the net).

    Because the head has a conv after pooling, pooled features (``pre_logits``,
    ``num_classes=0``) have ``num_features`` = 1280 channels, while
    ``forward_features`` gives the 960-channel map (``head_in_features``).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.2,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False) -> None:
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        stem_chs = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        prev, reduction, trunk, stages = stem_chs, 2, [], []
        for cfg in CFGS:
            blocks = []
            for k, exp, c, se_ratio, s in cfg:
                out = make_divisible(c * width, 4)
                blocks.append(GhostBottleneck(prev, make_divisible(exp * width, 4), out, k, s, se_ratio=se_ratio))
                prev, reduction = out, reduction * s
            trunk.append((f"blocks.{len(stages)}", prev, reduction))
            stages.append(nn.Sequential(*blocks))
        # 1×1 expansion to 960·width before the head: belongs to no feature level (README "Backbones")
        self.head_in_features = make_divisible(CFGS[-1][-1][1] * width, 4)
        stages.append(nn.Sequential(ConvBNAct(prev, self.head_in_features, 1, names=("conv", "bn1", "act"))))
        self.blocks = nn.Sequential(*stages)

        self.num_features = 1280
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.head_in_features, self.num_features, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        self.trunk_names = ["conv_stem", "bn1", "act1"] + [f"blocks.{i}" for i in range(len(stages))]
        self.head_names = ["global_pool", "conv_head", "act2", "flatten", "dropout", "classifier"]
        self.classifier_name = "classifier"
        self.feature_info = levels_from_trunk([("act1", stem_chs, 2)] + trunk)
        self._apply_backbone_options(frozen_stages, norm_eval, with_cp)


def _ghostnet(width: float, **kwargs) -> GhostNet:
    return GhostNet(width=width, **kwargs)


@register_model(GhostNet)
def ghostnet_050(**kwargs) -> GhostNet:
    """GhostNet 0.5×: 2.6 M params."""
    return _ghostnet(0.5, **kwargs)


@register_model(GhostNet)
def ghostnet_100(**kwargs) -> GhostNet:
    """GhostNet 1.0×: 5.2 M params, 0.14 G MACs at 224×224."""
    return _ghostnet(1.0, **kwargs)


@register_model(GhostNet)
def ghostnet_130(**kwargs) -> GhostNet:
    """GhostNet 1.3×: 7.4 M params."""
    return _ghostnet(1.3, **kwargs)
