"""A resnetkit backbone for torchvision's detectors: :func:`with_fpn`.

torchvision's detection models (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``)
take any module with an ``out_channels`` attribute whose forward returns an
``OrderedDict`` of feature maps. :func:`with_fpn` puts torchvision's own
``FeaturePyramidNetwork`` on the levels a ``features_only`` backbone returns.

>>> import torch, resnetkit as rk
>>> fpn = rk.with_fpn(rk.create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4)))
>>> {k: tuple(v.shape[1:]) for k, v in fpn(torch.zeros(1, 3, 64, 64)).items()}
{'0': (256, 16, 16), '1': (256, 8, 8), '2': (256, 4, 4), '3': (256, 2, 2), 'pool': (256, 1, 1)}
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .errors import ResnetkitTypeError, ResnetkitValueError


class BackboneWithFPN(nn.Module):
    """``body`` (a ``features_only`` backbone) followed by torchvision's ``FeaturePyramidNetwork``.

    Outputs are named as torchvision's ``resnet_fpn_backbone`` names them
    (``"0"``, ``"1"``, ... per level, then ``"pool"``), the names that
    ``FasterRCNN``'s default ``MultiScaleRoIAlign`` reads. The backbone's own
    ``frozen_stages`` / ``norm_eval`` keep working: ``train()`` reaches it unchanged.
    """

    def __init__(self, body: nn.Module, out_channels: int, extra_blocks: nn.Module | None) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def with_fpn(backbone: nn.Module, out_channels: int = 256, extra_blocks: str | nn.Module | None = "pool"
             ) -> BackboneWithFPN:
    """Wrap a resnetkit ``features_only`` backbone with torchvision's FPN, ready for its detectors.

    ``extra_blocks="pool"`` (the default) adds torchvision's ``LastLevelMaxPool``,
    as ``resnet_fpn_backbone`` does: one more map at twice the last stride, so
    four levels give the five maps ``FasterRCNN``'s default anchors (32 … 512)
    expect. ``None`` leaves it out; a torchvision ``ExtraFPNBlock`` (e.g.
    ``LastLevelP6P7(256, 256)`` for RetinaNet) is used as given.
    """
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

    info = getattr(backbone, "feature_info", None)
    if not getattr(backbone, "features_only", False) or info is None:
        name = getattr(backbone, "model_name", None) or type(backbone).__name__
        raise ResnetkitTypeError(f"with_fpn needs a multi-scale backbone, but {name} is not one (it returns a single "
                                 f"tensor). Build it with features_only=True, e.g. rk.create_model('{name}', "
                                 "features_only=True, out_indices=(1, 2, 3, 4))")
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
        raise ResnetkitValueError(f"out_channels must be a positive int (256 in torchvision's detectors), got {out_channels!r}")
    if isinstance(extra_blocks, str):
        if extra_blocks != "pool":
            raise ResnetkitValueError(f"extra_blocks must be 'pool' (LastLevelMaxPool), None or a torchvision "
                                      f"ExtraFPNBlock, got {extra_blocks!r}")
        extra_blocks = LastLevelMaxPool()
    elif extra_blocks is not None and not isinstance(extra_blocks, ExtraFPNBlock):
        raise ResnetkitTypeError(f"extra_blocks must be 'pool', None or a torchvision.ops ExtraFPNBlock "
                                 f"(e.g. LastLevelP6P7(256, 256)), got {type(extra_blocks).__name__}")
    return BackboneWithFPN(backbone, out_channels, extra_blocks)
