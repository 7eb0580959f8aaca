"""Plugin layers inserted into ResNet blocks (mmdet's ``plugins`` option).

A plugin spec is ``{"cfg": {"type": NAME, **kwargs}, "position": "after_conv1" |
"after_conv2" | "after_conv3", "stages": (bool, bool, bool, bool)}``. The layer
is built as ``cls(in_channels, **kwargs)`` with the channel count at that
position and must keep the tensor's shape.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ResnetkitTypeError, ResnetkitValueError
from .gcnet import ContextBlock
from .generalized_attention import GeneralizedAttention
from .nonlocal_block import NonLocal2d, embedded_gaussian
from .se import SqueezeExcite

POSITIONS = ("after_conv1", "after_conv2", "after_conv3")
_PLUGINS: dict[str, type[nn.Module]] = {}


def register_plugin(name: str, cls: type[nn.Module], override: bool = False) -> type[nn.Module]:
    """Make ``cls`` available as ``{"type": name}`` in a ``plugins`` spec.

    ``cls(in_channels, **cfg)`` must build an ``nn.Module`` that keeps the tensor's
    shape and initialises its own weights (the model does not re-initialise plugins).
    A name already taken (``"SE"``, ``"NonLocal"``, ...) is refused unless
    ``override=True``, so a typo cannot silently replace a built-in for the process.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ResnetkitTypeError(f"register_plugin({name!r}, ...): expected an nn.Module subclass, got {cls!r}")
    if name in _PLUGINS and _PLUGINS[name] is not cls and not override:
        raise ResnetkitValueError(f"plugin type {name!r} is already registered ({_PLUGINS[name].__qualname__}); "
                                  f"pick another name or pass override=True to replace it")
    _PLUGINS[name] = cls
    return cls


def build_plugin(cfg: dict[str, Any], in_channels: int) -> nn.Module:
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    if name not in _PLUGINS:
        close = difflib.get_close_matches(str(name), list(_PLUGINS), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ResnetkitValueError(f"unknown plugin type {name!r}; registered: {sorted(_PLUGINS)}.{hint} "
                                  "Add your own with resnetkit.register_plugin(name, cls).")
    cls = _PLUGINS[name]
    params = inspect.signature(cls).parameters
    if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
        options = list(params)[1:]  # the first parameter takes the channel count
        unknown = sorted(set(cfg) - set(options))
        if unknown:
            raise ResnetkitValueError(f"plugin {name!r} has no option(s) {unknown}; its options are {options}")
    return cls(in_channels, **cfg)


def check_plugins(plugins: Sequence[dict] | None, num_stages: int = 4) -> list[dict]:
    """Validate plugin specs early, so a typo fails at construction with the reason."""
    out = []
    for i, p in enumerate(plugins or ()):
        if not isinstance(p, dict) or "cfg" not in p or "position" not in p:
            raise ResnetkitValueError(f"plugins[{i}] must be a dict with 'cfg' and 'position' keys, got {p!r}")
        if p["position"] not in POSITIONS:
            raise ResnetkitValueError(f"plugins[{i}]: position {p['position']!r} is not one of {POSITIONS}")
        stages = tuple(p.get("stages") or (True,) * num_stages)
        if len(stages) != num_stages:
            raise ResnetkitValueError(f"plugins[{i}]: 'stages' needs {num_stages} booleans, got {stages}")
        out.append({"cfg": dict(p["cfg"]), "position": p["position"], "stages": stages})
    return out


class SEPlugin(SqueezeExcite):
    """Squeeze-excite as a ResNet plugin: ``{"type": "SE", "ratio": 1/16}``."""

    def __init__(self, in_channels: int, ratio: float = 1 / 16) -> None:
        super().__init__(in_channels, rd_ratio=ratio)


class NonLocal(nn.Module):
    """Non-local block (Wang et al. 2018), embedded-Gaussian form.

    Every position attends to every other: ``y = x + W(softmax(θ(x)ᵀφ(x)) g(x))``.
    ``W`` ends in a BatchNorm whose γ starts at 0, so a freshly inserted block is
    the identity and does not disturb a pretrained backbone.
    """

    def __init__(self, in_channels: int, reduction: int = 2, use_scale: bool = True) -> None:
        super().__init__()
        inter = max(in_channels // reduction, 1)
        self.use_scale = use_scale
        self.g = nn.Conv2d(in_channels, inter, 1)
        self.theta = nn.Conv2d(in_channels, inter, 1)
        self.phi = nn.Conv2d(in_channels, inter, 1)
        self.conv_out = nn.Conv2d(inter, in_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(in_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As mmcv's NonLocal2d: N(0, 0.01) 1×1 convs with zero biases and a zero γ after
        ``conv_out``, so the block starts as the identity. The plugin owns its initialisation."""
        for conv in (self.g, self.theta, self.phi, self.conv_out):
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)  # n, hw, c'
        attn = embedded_gaussian(self.theta(x).flatten(2), self.phi(x).flatten(2), self.use_scale)
        y = (attn @ g).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.norm(self.conv_out(y))


register_plugin("SE", SEPlugin)
register_plugin("NonLocal", NonLocal)
# mmcv's plugin layers, with mmcv's options and parameter names
register_plugin("ContextBlock", ContextBlock)  # GCNet
register_plugin("NonLocal2d", NonLocal2d)  # all four modes; resnetkit's "NonLocal" is the flat-named embedded Gaussian
register_plugin("GeneralizedAttention", GeneralizedAttention)
