"""ResNet, ResNeXt and Wide ResNet (He et al. 2015; Xie et al. 2017; Zagoruyko & Komodakis 2016).

Module names are torchvision's (``conv1/bn1/relu/maxpool/layer1-4/fc``); every
mmdet backbone option is a constructor argument.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("resnet50", features_only=True)
>>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 3, 224, 224))]
[(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..blocks import BasicBlock, Bottleneck, make_shortcut
from ..blocks.plugins import check_plugins
from ..features import FeatureInfo
from ..registry import register_model
from .base import ResidualNet


def _deep_stem(in_chans: int, stem_width: int, out_chs: int, stride: int = 2) -> nn.Sequential:
    """Three 3×3 convs (ResNet-C): same receptive field as the 7×7, fewer MACs, more depth.

    The last conv's BN is the model's ``bn1``, so names follow timm's deep stem
    (``conv1.0 … conv1.6``) and mmdet's ``stem.N`` maps onto them one to one.
    """
    return nn.Sequential(
        nn.Conv2d(in_chans, stem_width, 3, stride, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, out_chs, 3, 1, 1, bias=False),
    )


class ResNet(ResidualNet):
    """Stem (7×7/2 conv + 3×3/2 max pool) and one stage of residual blocks per entry of ``layers``.

    Args mirror torchvision (``groups``, ``width_per_group``,
    ``replace_stride_with_dilation``, ``zero_init_residual``) and mmdet
    (``style``, ``deep_stem``, ``avg_down``, ``frozen_stages``, ``norm_eval``,
    ``with_cp``, ``plugins``), plus timm's ``drop_path_rate``. ``widths`` are
    the stages' base widths (block outputs are ``width × block.expansion``).
    Subclasses change the stem (``_make_stem``) or the shortcut (``_make_shortcut``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        style: str = "pytorch",
        deep_stem: bool = False,
        stem_width: int = 32,
        avg_down: bool = False,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_cp: bool = False,
        plugins: Sequence[dict] | None = None,
        norm_layer: type[nn.Module] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} need one entry per stage")
        dilations = tuple(replace_stride_with_dilation or (False,) * (len(layers) - 1))
        if len(dilations) != len(layers) - 1:
            raise ValueError(f"replace_stride_with_dilation needs {len(layers) - 1} booleans (one per stage after "
                             f"the first), got {replace_stride_with_dilation}")
        plugins = check_plugins(plugins, num_stages=len(layers))
        self.norm_layer = norm_layer or nn.BatchNorm2d
        self.groups, self.base_width = groups, width_per_group
        self.style, self.avg_down = style, avg_down
        self.num_classes = num_classes
        self.inplanes, self.dilation = widths[0], 1

        stem_names, c1_reduction, reduction = self._make_stem(in_chans, widths[0], deep_stem, stem_width)
        # C1 is the stem's output when the stem downsamples (CIFAR stems do not: their first level is layer1)
        info = [dict(num_chs=widths[0], reduction=c1_reduction, module="relu")] if c1_reduction > 1 else []
        dpr = [drop_path_rate * i / max(sum(layers) - 1, 1) for i in range(sum(layers))]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            stride, dilate = (1, False) if i == 0 else (2, dilations[i - 1])
            stage_plugins = [p for p in plugins if p["stages"][i]]
            layer = self._make_layer(block, planes, n, stride, dilate, dpr[:n], stage_plugins)
            dpr = dpr[n:]
            setattr(self, f"layer{i + 1}", layer)
            reduction *= 1 if dilate else stride
            info.append(dict(num_chs=planes * block.expansion, reduction=reduction, module=f"layer{i + 1}"))

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = self.inplanes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        stages = [f"layer{i + 1}" for i in range(len(layers))]
        self.trunk_names = stem_names + stages
        self.stage_ends = [stem_names[-1]] + stages  # frozen_stages: 0 = stem, i = layer i
        self.head_names = ["avgpool", "fc"]
        self.classifier_name = "fc"
        self.feature_info = FeatureInfo(info)
        self._init_weights(zero_init_residual)
        self._apply_backbone_options(frozen_stages, norm_eval, with_cp)

    def _make_stem(self, in_chans: int, out_chs: int, deep_stem: bool,
                   stem_width: int) -> tuple[list[str], int, int]:
        """ImageNet stem: 7×7/2 conv (or the deep stem), BN, ReLU, 3×3/2 max pool.

        Returns the stem's module names, the reduction at its ReLU (C1) and at its end.
        """
        self.conv1 = _deep_stem(in_chans, stem_width, out_chs) if deep_stem else \
            nn.Conv2d(in_chans, out_chs, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self.norm_layer(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return ["conv1", "bn1", "relu", "maxpool"], 2, 4

    def _make_shortcut(self, inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
        return make_shortcut(inplanes, outplanes, stride, self.avg_down, self.norm_layer)

    def _make_layer(self, block, planes, blocks, stride, dilate, drop_paths, plugins) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:  # keep resolution, grow the receptive field instead (DeepLab)
            self.dilation *= stride
            stride = 1
        downsample = self._make_shortcut(self.inplanes, planes * block.expansion, stride)
        common = dict(groups=self.groups, base_width=self.base_width, norm_layer=self.norm_layer,
                      style=self.style, plugins=plugins)
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation,
                        drop_path=drop_paths[0], **common)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=self.dilation, drop_path=drop_paths[i], **common))
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # NonLocal plugins start as identity; re-zero after the generic BN init above.
        for m in self.modules():
            if hasattr(m, "conv_out") and hasattr(m, "norm"):
                nn.init.zeros_(m.norm.weight)
            if zero_init_residual and hasattr(m, "zero_init_last"):
                m.zero_init_last()


def _resnet(block, layers, **kwargs) -> ResNet:
    return ResNet(block, layers, **kwargs)


@register_model(ResNet)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: BasicBlock × [2, 2, 2, 2], 11.7 M params, 1.8 G MACs."""
    return _resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(ResNet)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: BasicBlock × [3, 4, 6, 3], 21.8 M params, 3.7 G MACs."""
    return _resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(ResNet)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50: Bottleneck × [3, 4, 6, 3], 25.6 M params, 4.1 G MACs."""
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(ResNet)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101: Bottleneck × [3, 4, 23, 3], 44.5 M params, 7.8 G MACs."""
    return _resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(ResNet)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152: Bottleneck × [3, 8, 36, 3], 60.2 M params, 11.5 G MACs."""
    return _resnet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model(ResNet)
def resnet50d(**kwargs) -> ResNet:
    """ResNet-50-D (He et al. 2019 "Bag of Tricks"): deep stem + average-pool shortcuts."""
    kwargs.setdefault("deep_stem", True)
    kwargs.setdefault("avg_down", True)
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(ResNet)
def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 32×4d: 32 groups of width 4 in each 3×3."""
    return _resnet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)


@register_model(ResNet)
def resnext101_32x8d(**kwargs) -> ResNet:
    """ResNeXt-101 32×8d."""
    return _resnet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=8, **kwargs)


@register_model(ResNet)
def resnext101_64x4d(**kwargs) -> ResNet:
    """ResNeXt-101 64×4d."""
    return _resnet(Bottleneck, [3, 4, 23, 3], groups=64, width_per_group=4, **kwargs)


@register_model(ResNet)
def wide_resnet50_2(**kwargs) -> ResNet:
    """Wide ResNet-50-2: the bottleneck 3×3 is twice as wide."""
    return _resnet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kwargs)


@register_model(ResNet)
def wide_resnet101_2(**kwargs) -> ResNet:
    """Wide ResNet-101-2."""
    return _resnet(Bottleneck, [3, 4, 23, 3], width_per_group=128, **kwargs)
