"""mmdet backbone configs built as the same module: ``rk.from_mmdet_config(dict(type='ResNet', depth=50, ...))``.

The result behaves as mmdet's ``ResNet`` / ``ResNetV1d`` / ``ResNeXt`` / ``Res2Net`` / ``ResNeSt``: ``out_indices``
count stages (0 = C2), ``forward`` returns a tuple of maps, and the state dict
has mmdet's keys (``conv1``/``bn1`` or ``stem.N`` for the deep stem, ``gn1``… with
GN, ``layerN.M.downsample.K``, ``conv2.conv_offset`` with DCN), so the
``backbone.`` part of an mmdet detector checkpoint loads with ``strict=True``.

>>> import torch, resnetkit as rk
>>> b = rk.from_mmdet_config(dict(type="ResNet", depth=18, out_indices=(0, 1, 2, 3)))
>>> [tuple(t.shape[1:]) for t in b.eval()(torch.zeros(1, 3, 32, 32))]
[(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
"""
from __future__ import annotations

import logging
import warnings
from functools import partial
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ResnetkitTypeError, ResnetkitValueError
from ..blocks import BasicBlock, Bottleneck
from ..blocks.res2net import Bottle2neck
from ..blocks.split_attention import ResNestBottleneck
from ..features import FeatureInfo
from ..weights import WeightsError
from ..weights.io import read_state_dict
from ..weights.layouts import strip_wrappers
from .resnet import ResNet, _deep_stem

log = logging.getLogger("resnetkit.weights")

DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}
_V1D = dict(deep_stem=True, avg_down=True)
# each type: our defaults, its own options (beyond ResNet's), its block (None: by depth), its depths
_TYPES = {"ResNet": ({}, set(), None, DEPTHS), "ResNetV1d": (_V1D, set(), None, DEPTHS),
          "ResNeXt": ({}, {"groups", "base_width"}, None, DEPTHS),
          "Res2Net": (_V1D, {"scales", "base_width"}, Bottle2neck, {d: DEPTHS[d][1] for d in (50, 101, 152)}),
          "ResNeSt": (_V1D, {"groups", "base_width", "radix", "reduction_factor", "avg_down_stride"},
                      ResNestBottleneck, {**{d: DEPTHS[d][1] for d in (50, 101, 152)}, 200: (3, 24, 36, 3)})}
# mmdet's argument -> ours (same meaning); everything else in a config is handled below or refused
_SAME = {"in_channels": "in_chans", "stem_channels": "stem_channels", "base_channels": "base_channels",
         "num_stages": "num_stages", "strides": "strides", "dilations": "dilations", "style": "style",
         "deep_stem": "deep_stem", "avg_down": "avg_down", "frozen_stages": "frozen_stages", "norm_cfg": "norm_cfg",
         "norm_eval": "norm_eval", "dcn": "dcn", "stage_with_dcn": "stage_with_dcn", "with_cp": "with_cp",
         "zero_init_residual": "zero_init_residual", "contract_dilation": "contract_dilation"}
_HANDLED = {"type", "depth", "out_indices", "conv_cfg", "init_cfg", "pretrained", "plugins"}


class MMDetResNet(ResNet):
    """A :class:`ResNet` with mmdet's stem names, no head, and mmdet's ``forward`` (a tuple of stage outputs).

    Build it with :func:`from_mmdet_config`; ``out_indices`` are stage numbers (0 = C2).
    """

    def __init__(self, block, layers, out_indices: Sequence[int] = (0, 1, 2, 3),
                 plugin_names: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(block, layers, num_classes=0, **kwargs)
        self._name_plugins_as_mmdet(kwargs.get("plugins") or [], plugin_names)
        num_stages = len(self.stage_ends) - 1
        out = sorted(set(out_indices)) if isinstance(out_indices, (list, tuple)) else []
        if not out or not all(isinstance(i, int) for i in out) or out[0] < 0 or out[-1] >= num_stages:
            raise ResnetkitValueError(f"out_indices {out_indices!r} must be a tuple of stage numbers 0..{num_stages - 1} "
                                      "(mmdet's numbering: 0 = C2, the first stage)")
        for name in self.head_names:
            delattr(self, name)
        self.head_names, self.classifier_name = [], ""
        self.out_indices = tuple(out)
        levels = self.feature_info
        self.all_levels = levels
        self.feature_info = FeatureInfo(levels[i + 1] for i in out)
        self.features_only = True

    def _name_plugins_as_mmdet(self, plugins: Sequence[dict], names: Sequence[str]) -> None:
        """mmdet adds a block's plugins as attributes named by type (``context_block``); resnetkit's
        blocks hold them in ``after_convN_plugins``. The state dict speaks mmdet's names, both ways."""
        num_stages = len(self.stage_ends) - 1
        for i in range(num_stages):
            renames, count = {}, {}
            for p, name in zip(plugins, names):
                if p.get("stages") is None or p["stages"][i]:
                    j = count[p["position"]] = count.get(p["position"], -1) + 1
                    renames[f"{p['position']}_plugins.{j}."] = f"{name}."
            for blk in getattr(self, f"layer{i + 1}") if renames else ():
                # public names from torch 2.5; 2.4 has them as private methods with the same hook signature
                on_save = getattr(blk, "register_state_dict_post_hook", blk._register_state_dict_hook)
                on_load = getattr(blk, "register_load_state_dict_pre_hook", None) or \
                    partial(blk._register_load_state_dict_pre_hook, with_module=True)
                on_save(partial(_rename_keys, renames=renames))
                on_load(partial(_rename_keys, renames={v: k for k, v in renames.items()}))

    def _make_stem(self, in_chans: int, out_chs: int, deep_stem: bool,
                   stem_width: int) -> tuple[list[str], int, int]:
        if not deep_stem:
            return super()._make_stem(in_chans, out_chs, deep_stem, stem_width)
        # mmdet: one `stem` Sequential, (conv 3×3, norm, ReLU) × 3; its last norm is stem.7
        self.stem = _deep_stem(in_chans, stem_width, out_chs, norm_layer=self.norm_layer)
        self.stem.extend([self.norm_layer(out_chs), nn.ReLU(inplace=True)])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.c1_module = "stem"
        return ["stem", "maxpool"], 2, 4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.forward_levels(x))

    def load_pretrained(self, checkpoint: str, prefix: str | None = None) -> None:
        """mmengine's ``Pretrained`` init: the file's state dict (``prefix`` keys only, prefix removed),
        loaded non-strictly as mmdet does; missing keys are warned about, a file that fits nothing is an error."""
        if "://" in str(checkpoint):
            raise ResnetkitValueError(f"init_cfg checkpoint {checkpoint!r} would be downloaded, and resnetkit never "
                                      "downloads: download it yourself and pass the local file path")
        sd = {strip_wrappers(k): v for k, v in read_state_dict(checkpoint).items()}
        if prefix:
            prefix = prefix if prefix.endswith(".") else prefix + "."
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise WeightsError(f"{checkpoint} has no keys starting with prefix {prefix!r}")
        if not set(sd) & set(self.state_dict()):
            raise WeightsError(f"{checkpoint}: none of its keys fit this backbone (e.g. {sorted(sd)[:3]}); "
                               "for a detector checkpoint pass prefix='backbone.'")
        result = self.load_state_dict(sd, strict=False)
        if result.missing_keys:
            warnings.warn(f"{checkpoint}: {len(result.missing_keys)} backbone keys missing from the checkpoint, "
                          f"left as initialised: {result.missing_keys[:8]}", stacklevel=3)
        if result.unexpected_keys:
            log.info("%s: keys not in the backbone, ignored: %s", checkpoint, result.unexpected_keys)


# mmcv's plugin names (each class's `_abbr_`); the plugin types whose parameters are mmcv's too
_PLUGIN_ABBR = {"ContextBlock": "context_block", "NonLocal2d": "nonlocal_block",
                "GeneralizedAttention": "gen_attention_block"}


def _mmdet_plugins(plugins: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """mmdet's plugin specs for resnetkit's blocks, and the module name mmdet gives each (abbr + postfix)."""
    specs, names = [], []
    for p in plugins:
        cfg = dict(p["cfg"])
        kind = cfg.get("type")
        if kind not in _PLUGIN_ABBR:
            raise ResnetkitValueError(f"plugin {kind!r} in from_mmdet_config is not supported: mmcv's plugin layers are "
                                      f"{sorted(_PLUGIN_ABBR)}; resnetkit's own types ('SE', 'NonLocal', registered "
                                      "ones) go through create_model(..., plugins=...)")
        name = _PLUGIN_ABBR[kind] + str(cfg.pop("postfix", ""))
        if name in names:
            raise ResnetkitValueError(f"two plugins would both be named {name!r} (as in mmdet); give each a 'postfix'")
        specs.append(dict(p, cfg=cfg))
        names.append(name)
    return specs, names


def _rename_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any, renames: dict[str, str]) -> None:
    """Rename ``prefix + old…`` keys to ``prefix + new…`` in place (a state-dict save or load hook)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix):]
        old = next((o for o in renames if local.startswith(o)), None)
        if old is not None:
            state_dict[prefix + renames[old] + local[len(old):]] = state_dict.pop(key)


def _config_kwargs(cfg: dict) -> tuple[tuple[type, tuple[int, ...]], dict]:
    """Check an mmdet config dict and translate it into MMDetResNet's arguments."""
    kind = str(cfg.get("type", "ResNet")).removeprefix("mmdet.")
    if kind not in _TYPES:
        raise ResnetkitValueError(f"backbone type {kind!r} is not supported; from_mmdet_config builds {sorted(_TYPES)}")
    defaults, own, block, depths = _TYPES[kind]
    allowed = set(_SAME) | _HANDLED | own
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ResnetkitValueError(f"{kind}: option(s) {unknown} are not supported (or not {kind}'s); "
                                  f"supported: {sorted(allowed)}")
    if cfg.get("conv_cfg") is not None:
        raise ResnetkitValueError(f"conv_cfg={cfg['conv_cfg']!r} is not supported; only plain convs (conv_cfg=None)")
    depth = cfg.get("depth")
    if depth not in depths:
        raise ResnetkitValueError(f"{kind} depth must be one of {sorted(depths)}, got {depth!r}")
    block, layers = (block, depths[depth]) if block else depths[depth]
    kwargs = dict(defaults, norm_eval=True, zero_init_residual=True)  # mmdet's defaults
    kwargs.update({ours: cfg[theirs] for theirs, ours in _SAME.items() if theirs in cfg})
    if cfg.get("plugins"):
        if block is BasicBlock:
            raise ResnetkitValueError("plugins need a Bottleneck depth (50, 101, 152): mmdet's BasicBlock has none")
        kwargs["plugins"], kwargs["plugin_names"] = _mmdet_plugins(cfg["plugins"])
    kwargs["out_indices"] = cfg.get("out_indices", (0, 1, 2, 3))
    if block is BasicBlock and any(d != 1 for d in cfg.get("dilations", ())):
        raise ResnetkitValueError("dilations on ResNet-18/34 are not supported here: mmdet's BasicBlock dilates conv1 only, "
                                  "resnetkit's follows timm (conv2 too); use create_model('resnet18', dilations=...)")
    if block in (Bottle2neck, ResNestBottleneck) and kwargs.get("dcn") is not None:
        what = "hierarchical slices" if block is Bottle2neck else "a split attention"
        raise ResnetkitValueError(f"{kind} with dcn is not supported here (its 3×3 is {what}, not one conv to "
                                  f"deform); use type='ResNet' with dcn, or {kind} without")
    if kind in ("ResNeXt", "ResNeSt"):
        groups = cfg.get("groups", 1)
        if not isinstance(groups, int) or groups < 1:
            raise ResnetkitValueError(f"{kind} groups must be a positive integer, got {groups!r}")
        # mmdet: width = planes when groups == 1, else floor(planes * base_width / base_channels) * groups
        kwargs.update(groups=groups, width_per_group=64 if groups == 1 else _scaled_width(kind, cfg, 4))
    if kind == "Res2Net":
        _res2net_options(cfg, kwargs)
    if kind == "ResNeSt":
        _resnest_options(cfg, kwargs)
    return (block, layers), kwargs


def _scaled_width(kind: str, cfg: dict, default: int) -> int:
    """mmdet's ``planes · base_width / base_channels`` as resnetkit's ``width_per_group`` (``planes · w / 64``)."""
    base_width, base = cfg.get("base_width", default), cfg.get("base_channels", 64)
    if not all(isinstance(v, int) and v >= 1 for v in (base_width, base)):
        raise ResnetkitValueError(f"{kind} base_width and base_channels must be positive integers, got "
                                  f"{base_width!r}, {base!r}")
    if (base_width * 64) % base:
        raise ResnetkitValueError(f"{kind} base_width={base_width} with base_channels={base} is not supported "
                                  "(the width would not be a whole multiple of planes/64)")
    return base_width * 64 // base


def _res2net_options(cfg: dict, kwargs: dict) -> None:
    """mmdet's Res2Net: always the deep stem, avg_down and style 'pytorch' (it overrides what is passed),
    ``scales`` slices of ``floor(planes · base_width / base_channels)`` channels, and a stage's first block
    pools its passed-through slice only where it has a stride (timm pools it in layer1 too)."""
    for name, forced in (("deep_stem", True), ("avg_down", True), ("style", "pytorch")):
        if name in cfg and cfg[name] != forced:
            warnings.warn(f"Res2Net: {name}={cfg[name]!r} is ignored, as mmdet's Res2Net ignores it "
                          f"(it always builds {name}={forced!r})", stacklevel=4)
        kwargs[name] = forced
    scales = cfg.get("scales", 4)
    if not isinstance(scales, int) or scales < 2:
        raise ResnetkitValueError(f"Res2Net scales must be an integer >= 2 (1 is a plain ResNet), got {scales!r}")
    for p in kwargs.get("plugins", ()):
        if p["position"] != "after_conv3":
            raise ResnetkitValueError(f"Res2Net plugin at {p['position']!r} is not supported: mmdet builds it for "
                                      "`planes` channels but the block has width×scales there, so it cannot run; "
                                      "use position='after_conv3'")
    kwargs["width_per_group"] = _scaled_width("Res2Net", cfg, 26)
    kwargs["block_args"] = dict(scale=scales, pool_unstrided=False)


def _resnest_options(cfg: dict, kwargs: dict) -> None:
    """mmdet's ResNeSt: ResNetV1d with split-attention 3×3s (``radix``), the attention's hidden width
    ``max(width · radix // reduction_factor, 32)``, and the stride on a 3×3 average pool after the
    split attention (``avg_down_stride``, as timm's avd)."""
    radix, factor = cfg.get("radix", 2), cfg.get("reduction_factor", 4)
    if not all(isinstance(v, int) and v >= 1 for v in (radix, factor)):
        raise ResnetkitValueError(f"ResNeSt radix and reduction_factor must be positive integers, got {radix!r}, {factor!r}")
    kwargs["block_args"] = dict(radix=radix, reduction_factor=factor, avd=bool(cfg.get("avg_down_stride", True)))


def from_mmdet_config(cfg: dict) -> MMDetResNet:
    """Build mmdet's ``ResNet``/``ResNetV1d``/``ResNeXt``/``Res2Net``/``ResNeSt`` backbone from its config dict.

    Every mmdet option is honoured or refused with the reason (``conv_cfg``, plugins other
    than mmcv's ``ContextBlock``/``NonLocal2d``/``GeneralizedAttention``, dilated ResNet-18/34).
    ``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=...)`` (or the older ``pretrained=PATH``) loads a local
    file; a ``torchvision://``/``open-mmlab://`` address is refused, since nothing is downloaded.
    """
    if not isinstance(cfg, dict):
        raise ResnetkitTypeError(f"from_mmdet_config takes mmdet's backbone dict, got {type(cfg).__name__}")
    (block, layers), kwargs = _config_kwargs(cfg)
    init_cfg, pretrained = cfg.get("init_cfg"), cfg.get("pretrained")
    if init_cfg is not None and (not isinstance(init_cfg, dict) or init_cfg.get("type") != "Pretrained"):
        raise ResnetkitValueError(f"init_cfg {init_cfg!r} is not supported; only dict(type='Pretrained', checkpoint=PATH, "
                                  "prefix=...) (other inits are what the backbone does by default)")
    if init_cfg is not None and pretrained is not None:
        raise ResnetkitValueError("pass init_cfg or pretrained, not both (mmdet refuses that too)")
    model = MMDetResNet(block, layers, **kwargs)
    if pretrained is not None:
        model.load_pretrained(pretrained)
    elif init_cfg is not None:
        extra = sorted(set(init_cfg) - {"type", "checkpoint", "prefix", "map_location"})
        if extra or "checkpoint" not in init_cfg:
            raise ResnetkitValueError(f"init_cfg Pretrained needs checkpoint=PATH (and optionally prefix); got {init_cfg!r}")
        model.load_pretrained(init_cfg["checkpoint"], init_cfg.get("prefix"))
    return model
