"""Norm layers from an mmcv ``norm_cfg`` dict: ``BN``, ``SyncBN`` and ``GN``, with mmcv's names.

mmcv names a block's norms by the layer's abbreviation plus a postfix
(``bn1``/``bn2`` for BN and SyncBN, ``gn1``/``gn2`` for GN), so checkpoints of
a GN backbone say ``layer1.0.gn1.weight``. :func:`norm_factory` returns a
callable ``factory(num_features) -> nn.Module`` that carries that abbreviation
as ``factory.abbr``; blocks and stems name their norms with it.

>>> f = norm_factory(dict(type="GN", num_groups=32))
>>> f.abbr, f(64).num_groups
('gn', 32)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ResnetkitTypeError, ResnetkitValueError

NormLayer = Callable[[int], nn.Module]


class SyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` that is plain BatchNorm wherever there is nothing to synchronise.

    torch's layer refuses CPU tensors as soon as a process group exists, even a
    one-process ``torchrun``; with a single process the statistics are the
    batch's own, so this computes BatchNorm there. Several CPU processes cannot
    be synchronised by torch: that is a clear error naming the fix.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        if not self.training or group is None or dist.get_world_size(group) == 1:
            return _BatchNorm.forward(self, x)
        if x.device.type == "cpu":
            raise ResnetkitValueError("SyncBN synchronises statistics across processes on GPUs only (torch's "
                                      "SyncBatchNorm); on CPU train with norm_cfg=dict(type='BN')")
        return super().forward(x)


# mmcv's types -> (class, abbreviation). SyncBatchNorm synchronises statistics across the
# processes of a DistributedDataParallel run; on a single process it computes what BatchNorm does.
_NORMS: dict[str, tuple[type[nn.Module], str]] = {
    "BN": (nn.BatchNorm2d, "bn"), "BN2d": (nn.BatchNorm2d, "bn"),
    "SyncBN": (SyncBatchNorm, "bn"), "GN": (nn.GroupNorm, "gn"),
}


class NormFactory:
    """``factory(num_features)`` builds one norm layer; ``abbr`` is mmcv's name for it."""

    def __init__(self, cls: type[nn.Module], abbr: str, requires_grad: bool = True, **kwargs: Any) -> None:
        self.cls, self.abbr, self.requires_grad, self.kwargs = cls, abbr, requires_grad, kwargs

    def __call__(self, num_features: int) -> nn.Module:
        if self.cls is nn.GroupNorm:
            if num_features % self.kwargs["num_groups"]:
                raise ResnetkitValueError(f"GN with num_groups={self.kwargs['num_groups']} cannot normalise "
                                          f"{num_features} channels (not a multiple); pick a divisor of every width")
            layer = nn.GroupNorm(num_channels=num_features, **self.kwargs)
        else:
            layer = self.cls(num_features, **self.kwargs)
        for p in layer.parameters():  # requires_grad=False: affine parameters stay as loaded
            p.requires_grad = self.requires_grad
        return layer

    def __repr__(self) -> str:
        return f"NormFactory({self.cls.__name__}, abbr={self.abbr!r}, requires_grad={self.requires_grad})"


def norm_factory(norm_cfg: dict | None = None, norm_layer: NormLayer | None = None) -> NormLayer:
    """The norm layer builder for ``norm_cfg`` (mmcv's dict) or ``norm_layer`` (torchvision's callable).

    ``norm_cfg``: ``{"type": "BN" | "SyncBN" | "GN", "requires_grad": bool, **layer kwargs}``
    (GN needs ``num_groups``; ``eps``, ``momentum``, ... go to the layer). Neither
    given: BatchNorm2d. Both given: an error, since one would be ignored.
    """
    if norm_cfg is not None and norm_layer is not None:
        raise ResnetkitValueError("pass either norm_cfg (mmcv's dict) or norm_layer (a callable), not both")
    if norm_layer is not None:
        return norm_layer
    if norm_cfg is not None and not isinstance(norm_cfg, dict):
        raise ResnetkitTypeError(f"norm_cfg must be a dict like dict(type='BN', requires_grad=True), got {norm_cfg!r}")
    cfg = dict(norm_cfg or {"type": "BN"})
    kind = cfg.pop("type", None)
    if kind not in _NORMS:
        raise ResnetkitValueError(f"norm_cfg type {kind!r} is not supported; use one of {sorted(_NORMS)} "
                                  "(e.g. dict(type='GN', num_groups=32))")
    if kind == "GN" and not (isinstance(cfg.get("num_groups"), int) and cfg["num_groups"] >= 1):
        raise ResnetkitValueError(f"norm_cfg type 'GN' needs num_groups, a positive integer such as 32; got "
                                  f"{cfg.get('num_groups')!r}")
    cls, abbr = _NORMS[kind]
    requires_grad = cfg.pop("requires_grad", True)
    factory = NormFactory(cls, abbr, requires_grad, **cfg)
    try:  # a misspelt option fails here, naming the dict, not deep inside the first block
        factory(2 * cfg.get("num_groups", 1))
    except TypeError as e:
        raise ResnetkitValueError(f"norm_cfg {norm_cfg!r}: {e}") from None
    return factory


def norm_abbr(norm_layer: NormLayer) -> str:
    """mmcv's name stem for layers built by ``norm_layer`` (``bn`` unless it says otherwise)."""
    return getattr(norm_layer, "abbr", "bn")
