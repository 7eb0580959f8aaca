"""The one conv → norm → activation brick every family builds with."""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Callable, Sequence

from torch import nn

from ..errors import ResnetkitValueError

LayerFn = Callable[..., nn.Module]


def make_act(act_layer: LayerFn) -> nn.Module:
    """An activation module, in place where the class allows it (ReLU, ReLU6, SiLU; not GELU or Sigmoid)."""
    try:
        takes_inplace = "inplace" in inspect.signature(act_layer).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        takes_inplace = False
    return act_layer(inplace=True) if takes_inplace else act_layer()


class ConvBNAct(nn.Sequential):
    """Conv2d, then a norm layer, then an activation, as one ``nn.Sequential``.

    The layout is torchvision's ``Conv2dNormActivation``: children ``0`` (conv),
    ``1`` (norm), ``2`` (activation), so MobileNetV2 keys such as
    ``features.0.0.weight`` match. ``names`` renames the three children where a
    reference names them otherwise (timm's GhostNet head: ``("conv", "bn1", "act")``).
    ``norm_layer=None`` or ``act_layer=None`` leaves that child out; the conv
    has a bias only when there is no norm (a bias before BN is cancelled by it),
    unless ``bias`` says otherwise. Padding defaults to "same" for odd kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: LayerFn | None = nn.BatchNorm2d,
        act_layer: LayerFn | None = nn.ReLU,
        bias: bool | None = None,
        names: Sequence[str] = ("0", "1", "2"),
    ) -> None:
        if len(names) != 3:
            raise ResnetkitValueError(f"names needs 3 entries (conv, norm, act), got {tuple(names)}")
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [(names[0], nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                       dilation=dilation, groups=groups, bias=bias))]
        if norm_layer is not None:
            layers.append((names[1], norm_layer(out_channels)))
        if act_layer is not None:
            layers.append((names[2], make_act(act_layer)))
        super().__init__(OrderedDict(layers))
        self.out_channels = out_channels
