"""ResNet, ResNeXt and Wide ResNet (He et al. 2015; Xie et al. 2017; Zagoruyko & Komodakis 2016).

Module names are torchvision's (``conv1/bn1/relu/maxpool/layer1-4/fc``); every
mmdet backbone option is a constructor argument.

>>> import torch, resnetkit as rk
>>> net = rk.create_model("resnet50", features_only=True)
>>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 3, 224, 224))]
[(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ResnetkitValueError
from ..blocks import BasicBlock, Bottleneck, make_shortcut
from ..blocks.norm import NormLayer, norm_abbr, norm_factory
from ..blocks.plugins import check_plugins
from ..features import FeatureInfo
from ..registry import register_model
from .base import ResidualNet


def _deep_stem(in_chans: int, stem_width: int, out_chs: int, stride: int = 2,
               norm_layer: NormLayer | None = None) -> nn.Sequential:
    """Three 3×3 convs (ResNet-C): same receptive field as the 7×7, fewer MACs, more depth.

    The last conv's norm is the model's ``bn1``, so names follow timm's deep stem
    (``conv1.0 … conv1.6``) and mmdet's ``stem.N`` maps onto them one to one.
    """
    norm_layer = norm_layer or nn.BatchNorm2d
    return nn.Sequential(
        nn.Conv2d(in_chans, stem_width, 3, stride, 1, bias=False), norm_layer(stem_width), nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False), norm_layer(stem_width), nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, out_chs, 3, 1, 1, bias=False),
    )


def _ints(name: str, values: Sequence[int], n: int) -> tuple[int, ...]:
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if len(values) != n or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ResnetkitValueError(f"{name} needs {n} positive integers (one per stage), got {values}")
    return values


class Stage(NamedTuple):
    stride: int
    dilation: int
    first_dilation: int    # the first block's (a dilated stage's first block may run at the previous one)
    same_pool: bool = False  # timm's dilated ResNet-D: the shortcut's pool is a 2×2 'same' average at stride 1


def stage_geometry(num_stages: int, strides: Sequence[int] | None = None, dilations: Sequence[int] | None = None,
                   contract_dilation: bool = False, replace_stride_with_dilation: Sequence[bool] | None = None,
                   ) -> list[Stage]:
    """Stride and dilations of each stage.

    Two vocabularies: mmdet's per-stage ``strides``/``dilations`` (every block of
    a stage at its dilation; ``contract_dilation``, mmseg's option, halves it in
    the first block), or torchvision's ``replace_stride_with_dilation`` (a
    flagged stage trades its stride 2 for doubled dilation, and its first block
    runs at the previous stage's dilation, as torchvision and timm do; timm's
    ResNet-D shortcut then averages 2×2 at stride 1 where mmdet's pool is the identity).
    """
    if replace_stride_with_dilation is not None:
        if strides is not None or dilations is not None or contract_dilation:
            raise ResnetkitValueError("replace_stride_with_dilation (torchvision's) cannot be combined with strides/dilations/"
                                      "contract_dilation (mmdet's); use one vocabulary")
        flags = tuple(replace_stride_with_dilation)
        if len(flags) != num_stages - 1:
            raise ResnetkitValueError(f"replace_stride_with_dilation needs {num_stages - 1} booleans (one per stage after "
                                      f"the first), got {replace_stride_with_dilation}")
        out, dilation = [Stage(1, 1, 1)], 1
        for flag in flags:
            previous = dilation
            if flag:  # keep resolution, grow the receptive field instead (DeepLab)
                dilation *= 2
            out.append(Stage(1 if flag else 2, dilation, previous, same_pool=bool(flag)))
        return out
    strides = _ints("strides", strides if strides is not None else (1, 2, 2, 2)[:num_stages], num_stages)
    dilations = _ints("dilations", dilations if dilations is not None else (1,) * num_stages, num_stages)
    return [Stage(s, d, d // 2 if contract_dilation and d > 1 else d) for s, d in zip(strides, dilations)]


def _dilation_flags(output_stride: int, stem_reduction: int, num_stages: int) -> list[bool]:
    """timm's ``output_stride``: the stages that would pass it trade their stride for dilation."""
    if output_stride not in (8, 16, 32):
        raise ResnetkitValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    net, flags = stem_reduction, []
    for _ in range(1, num_stages):
        flags.append(net >= output_stride)
        net *= 1 if flags[-1] else 2
    return flags


class ResNet(ResidualNet):
    """Stem (7×7/2 conv + 3×3/2 max pool) and one stage of residual blocks per entry of ``layers``.

    Args mirror torchvision (``groups``, ``width_per_group``,
    ``replace_stride_with_dilation``, ``zero_init_residual``, ``norm_layer``),
    mmdet (``style``, ``deep_stem``, ``avg_down``, ``frozen_stages``,
    ``norm_eval``, ``with_cp``, ``plugins``, ``num_stages``, ``strides``,
    ``dilations``, ``base_channels``, ``stem_channels``, ``norm_cfg``, ``dcn``,
    ``stage_with_dcn``; mmseg's ``contract_dilation``) and timm
    (``drop_path_rate``, ``output_stride``, ``stem_width``, ``block_args``: keywords for every block,
    such as Res2Net's ``scale`` or ResNeSt's ``radix``). ``widths`` are the
    stages' base widths (block outputs are ``width × block.expansion``).
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
        stem_width: int | None = None,
        avg_down: bool = False,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_cp: bool = False,
        plugins: Sequence[dict] | None = None,
        norm_layer: type[nn.Module] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        *,
        num_stages: int | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        contract_dilation: bool = False,
        output_stride: int | None = None,
        base_channels: int | None = None,
        stem_channels: int | None = None,
        norm_cfg: dict | None = None,
        dcn: dict | None = None,
        stage_with_dcn: Sequence[bool] | None = None,
        block_args: dict | None = None,
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ResnetkitValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        layers, widths = _stage_plan(layers, widths, num_stages, base_channels)
        self.norm_layer = norm_factory(norm_cfg, norm_layer)
        self.groups, self.base_width = groups, width_per_group
        self.style, self.avg_down = style, avg_down
        self.block_args = dict(block_args or {})   # what one block family needs more (Res2Net's scale, ResNeSt's radix)
        self.num_classes = num_classes
        self.inplanes, self.c1_module = stem_channels or widths[0], "relu"

        stem_names, c1_reduction, reduction = self._make_stem(in_chans, self.inplanes, deep_stem,
                                                              stem_width or (stem_channels or 64) // 2)
        # C1 is the stem's output when the stem downsamples (CIFAR stems do not: their first level is layer1)
        info = [dict(num_chs=self.inplanes, reduction=c1_reduction, module=self.c1_module)] if c1_reduction > 1 else []
        if output_stride is not None and (replace_stride_with_dilation is not None or strides is not None or
                                          dilations is not None):
            raise ResnetkitValueError("output_stride (timm's) cannot be combined with replace_stride_with_dilation "
                                      "(torchvision's) or strides/dilations (mmdet's); use one vocabulary")
        flags = replace_stride_with_dilation if output_stride is None else \
            _dilation_flags(output_stride, reduction, len(layers))
        geometry = stage_geometry(len(layers), strides, dilations, contract_dilation, flags)
        stage_dcn = [dcn if on else None for on in _dcn_stages(dcn, stage_with_dcn, len(layers))]
        info += self._make_stages(block, layers, widths, geometry, reduction, drop_path_rate,
                                  check_plugins(plugins, num_stages=len(layers)), stage_dcn)
        self._make_head(num_classes)

        stages = [f"layer{i + 1}" for i in range(len(layers))]
        self.trunk_names = stem_names + stages
        self.stage_ends = [stem_names[-1]] + stages  # frozen_stages: 0 = stem, i = layer i
        self.feature_info = FeatureInfo(info)
        self._init_weights(zero_init_residual)
        self._apply_backbone_options(frozen_stages, norm_eval, with_cp)

    def _make_stages(self, block, layers, widths, geometry, reduction, drop_path_rate, plugins,
                     stage_dcn) -> list[dict]:
        """``layer1 …``: one stage per entry of ``layers``; returns their feature levels."""
        info = []
        dpr = [drop_path_rate * i / max(sum(layers) - 1, 1) for i in range(sum(layers))]
        for i, (planes, num_blocks, stage) in enumerate(zip(widths, layers, geometry)):
            stage_plugins = [p for p in plugins if p["stages"][i]]
            layer = self._make_layer(block, planes, num_blocks, stage, dpr[:num_blocks], stage_plugins, stage_dcn[i])
            dpr = dpr[num_blocks:]
            setattr(self, f"layer{i + 1}", layer)
            reduction *= stage.stride
            info.append(dict(num_chs=planes * block.expansion, reduction=reduction, module=f"layer{i + 1}"))
        return info

    def _make_head(self, num_classes: int) -> None:
        """Global average pool, flatten, fc (torchvision's names); ``num_classes=0``: pooled features."""
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.num_features = self.inplanes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_names = ["avgpool", "flatten", "fc"]
        self.classifier_name = "fc"

    def _stem_norm(self, chs: int) -> str:
        """Add the stem's norm as ``bn1`` (``gn1`` for GroupNorm: mmcv's name); returns the name."""
        name = f"{norm_abbr(self.norm_layer)}1"
        self.add_module(name, self.norm_layer(chs))
        return name

    def _make_stem(self, in_chans: int, out_chs: int, deep_stem: bool,
                   stem_width: int) -> tuple[list[str], int, int]:
        """ImageNet stem: 7×7/2 conv (or the deep stem), norm, ReLU, 3×3/2 max pool.

        Returns the stem's module names, the reduction at its ReLU (C1) and at its end.
        """
        self.conv1 = _deep_stem(in_chans, stem_width, out_chs, norm_layer=self.norm_layer) if deep_stem else \
            nn.Conv2d(in_chans, out_chs, kernel_size=7, stride=2, padding=3, bias=False)
        norm = self._stem_norm(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return ["conv1", norm, "relu", "maxpool"], 2, 4

    def _make_shortcut(self, inplanes: int, outplanes: int, stride: int,
                       same_pool: bool = False) -> nn.Module | None:
        return make_shortcut(inplanes, outplanes, stride, self.avg_down, self.norm_layer, same_pool)

    def _make_layer(self, block, planes, blocks, stage: Stage, drop_paths, plugins, dcn) -> nn.Sequential:
        downsample = self._make_shortcut(self.inplanes, planes * block.expansion, stage.stride, stage.same_pool)
        common = dict(groups=self.groups, base_width=self.base_width, norm_layer=self.norm_layer,
                      style=self.style, plugins=plugins, dilation=stage.dilation, **self.block_args)
        if dcn is not None:  # BasicBlock refuses dcn; without one it is not passed at all
            common["dcn"] = dcn
        layers = [block(self.inplanes, planes, stage.stride, downsample, first_dilation=stage.first_dilation,
                        drop_path=drop_paths[0], **common)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes, drop_path=drop_paths[i], **common))
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming convs and unit norms, as torchvision; modules that initialise themselves
        (plugins, deformable convs' zero offsets) keep their own initialisation."""
        for m in _generic_modules(self):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.weight is not None:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()


def _generic_modules(model: nn.Module):
    """Every module of ``model`` outside plugin stacks and modules marked ``inits_itself``."""
    def walk(m: nn.Module, name: str):
        if getattr(m, "inits_itself", False) or name.endswith("_plugins"):
            return
        yield m
        for child_name, child in m.named_children():
            yield from walk(child, child_name)
    return walk(model, "")


def _stage_plan(layers: Sequence[int], widths: Sequence[int], num_stages: int | None,
                base_channels: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Blocks and base width per stage after mmdet's ``num_stages`` and ``base_channels`` (stage i: base × 2^i)."""
    if len(layers) != len(widths):
        raise ResnetkitValueError(f"layers {tuple(layers)} and widths {tuple(widths)} need one entry per stage")
    n = len(layers) if num_stages is None else num_stages
    if not isinstance(n, int) or not 1 <= n <= len(layers):
        raise ResnetkitValueError(f"num_stages must be 1..{len(layers)} for this model, got {num_stages!r}")
    widths = tuple(base_channels * 2 ** i for i in range(n)) if base_channels else tuple(widths)[:n]
    return tuple(layers)[:n], widths


def _dcn_stages(dcn: dict | None, stage_with_dcn: Sequence[bool] | None, n: int) -> tuple[bool, ...]:
    """Which stages get ``dcn``: mmdet's ``stage_with_dcn``, required with ``dcn`` so that neither is ignored."""
    if dcn is None:
        if stage_with_dcn is not None and any(stage_with_dcn):
            raise ResnetkitValueError("stage_with_dcn selects stages for dcn, but no dcn was given; add "
                                      "dcn=dict(type='DCNv2', deform_groups=1)")
        return (False,) * n
    if not isinstance(stage_with_dcn, (list, tuple)) or len(stage_with_dcn) != n:
        raise ResnetkitValueError(f"dcn needs stage_with_dcn with {n} booleans saying which stages get it, "
                                  f"e.g. {(False,) + (True,) * (n - 1)}; got {stage_with_dcn}")
    return tuple(bool(s) for s in stage_with_dcn)


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
