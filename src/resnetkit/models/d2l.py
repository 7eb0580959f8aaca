"""The ResNet-18 of *Dive into Deep Learning* (§8.6): the teaching model, for MNIST-sized inputs.

Module names follow the book's blocks ``b1`` (stem) … ``b5``; the stem convs keep
their bias as in the book. Defaults are the book's: 1 input channel, 10 classes.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("d2l_resnet18", features_only=True)
>>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 1, 224, 224))]
[(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
"""
from __future__ import annotations

from torch import nn

from ..errors import ResnetkitValueError
from ..blocks.d2l import Residual
from ..features import FeatureInfo
from ..registry import register_model
from .base import ResidualNet


def _resnet_block(input_channels: int, num_channels: int, num_residuals: int, first_block: bool) -> nn.Sequential:
    """The book's ``resnet_block``: the first unit of every stage but b2 halves the size and projects."""
    blocks = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blocks.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blocks.append(Residual(num_channels, num_channels))
    return nn.Sequential(*blocks)


class D2LResNet(ResidualNet):
    """b1 (7×7/2 conv with bias, BN, ReLU, 3×3/2 max pool), b2–b5 of two ``Residual`` each, pool, flatten, fc.

    Iterating gives the book's ``nn.Sequential`` order (b1 … b5, AdaptiveAvgPool2d,
    Flatten, Linear), so the book's ``for layer in net`` shape loop runs unchanged.

    Level 0 is the stem ReLU (before the max pool, /2), levels 1–4 are b2–b5.
    Works on 28×28 MNIST digits (final map 1×1) as well as on 224×224.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, layers: tuple[int, ...] = (2, 2, 2, 2),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ResnetkitValueError(f"layers needs 4 block counts (for b2..b5), got {layers}")
        self.num_classes = num_classes
        self.b1 = nn.Sequential(nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64),
                                nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        info = [dict(num_chs=64, reduction=2, module="b1.2")]
        in_ch, reduction = 64, 4
        for i, (ch, n) in enumerate(zip((64, 128, 256, 512), layers)):
            setattr(self, f"b{i + 2}", _resnet_block(in_ch, ch, n, first_block=i == 0))
            reduction *= 1 if i == 0 else 2
            info.append(dict(num_chs=ch, reduction=reduction, module=f"b{i + 2}"))
            in_ch = ch
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.num_features = 512
        self.fc = nn.Linear(512, num_classes) if num_classes > 0 else nn.Identity()

        self.trunk_names = ["b1.0", "b1.1", "b1.2", "b1.3", "b2", "b3", "b4", "b5"]
        self.head_names = ["avgpool", "flatten", "fc"]
        self.classifier_name = "fc"
        self.feature_info = FeatureInfo(info)
        self._apply_backbone_options(frozen_stages, norm_eval, with_cp)


@register_model(D2LResNet, input_size=(1, 28, 28))
def d2l_resnet18(**kwargs) -> D2LResNet:
    """d2l ResNet-18: Residual × [2, 2, 2, 2], 1 input channel, 10 classes (11.2 M params)."""
    return D2LResNet(**kwargs)
