"""MobileNetV2 (Sandler et al. 2018), torchvision-exact: same keys, shapes and outputs.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("mobilenet_v2", features_only=True)
>>> net.feature_info.channels(), net.feature_info.reduction()
([16, 24, 32, 96, 320], [2, 4, 8, 16, 32])
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ResnetkitValueError
from ..blocks import ConvBNAct, InvertedResidual, make_divisible
from ..blocks.conv import LayerFn
from ..features import levels_from_trunk
from ..registry import register_model
from .base import ResidualNet

# t (expansion), c (channels), n (repeats), s (stride of the first) - Table 2 of the paper
DEFAULT_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                   [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class MobileNetV2(ResidualNet):
    """``features`` (3×3/2 stem, 17 inverted residuals, 1×1 conv to 1280), ``avgpool``, ``flatten`` and
    ``classifier`` (dropout, fc).

    ``width_mult`` scales every width (rounded to ``round_nearest``); the last
    conv never shrinks below 1280. ``act_layer`` is ReLU6 as in the paper.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 inverted_residual_setting: Sequence[Sequence[int]] | None = None, round_nearest: int = 8,
                 dropout: float = 0.2, drop_path_rate: float = 0.0, norm_layer: LayerFn | None = None,
                 act_layer: LayerFn = nn.ReLU6, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        setting = inverted_residual_setting or DEFAULT_SETTING
        if any(len(row) != 4 for row in setting):
            raise ResnetkitValueError(f"inverted_residual_setting rows are [t, c, n, s], got {setting}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.num_classes = num_classes
        in_ch = make_divisible(32 * width_mult, round_nearest)
        self.num_features = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [ConvBNAct(in_chans, in_ch, 3, 2, norm_layer=norm_layer, act_layer=act_layer)]
        trunk = [("features.0", in_ch, 2)]
        total = sum(row[2] for row in setting)
        reduction = 2
        for t, c, n, s in setting:
            out_ch = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                dp = drop_path_rate * (len(layers) - 1) / max(total - 1, 1)
                layers.append(InvertedResidual(in_ch, out_ch, stride, t, norm_layer, act_layer, drop_path=dp))
                reduction *= stride
                trunk.append((f"features.{len(layers) - 1}", out_ch, reduction))
                in_ch = out_ch
        # the 1×1 expansion before the head belongs to no feature level (each level is the last block at its
        # reduction, the FPN convention; README "Backbones")
        layers.append(ConvBNAct(in_ch, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer))
        self.features = nn.Sequential(*layers)
        # torchvision pools functionally; modules make the pool replaceable and visible in summaries
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity())

        self.trunk_names = [f"features.{i}" for i in range(len(layers))]
        self.head_names = ["avgpool", "flatten", "classifier"]
        self.classifier_name = "classifier.1"
        self.feature_info = levels_from_trunk(trunk)
        self._init_weights()
        self._apply_backbone_options(frozen_stages, norm_eval, with_cp)

    def _init_weights(self) -> None:
        # torchvision's scheme, so freshly built models match its statistics
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


@register_model(MobileNetV2)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNetV2 1.0: 3.5 M params, 0.30 G MACs at 224×224; ``width_mult`` for other widths."""
    return MobileNetV2(**kwargs)
