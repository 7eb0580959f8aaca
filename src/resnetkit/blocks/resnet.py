"""ResNet's two residual units, shared by every ResNet / ResNeXt / Wide / CIFAR variant.

Layer names (conv1, bn1, ..., downsample) are torchvision's, so torchvision
checkpoints load unchanged into any model built from these blocks.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .base import Block, DropPath
from .dcn import check_dcn, conv3x3
from .norm import NormLayer, norm_abbr
from .plugins import build_plugin


def make_shortcut(inplanes: int, outplanes: int, stride: int = 1, avg_down: bool = False,
                  norm_layer: NormLayer | None = None, same_pool: bool = False) -> nn.Sequential | None:
    """The projection shortcut a block needs, or ``None`` when identity fits.

    A shortcut must have the branch's output shape: when the stride or the
    channel count changes, a 1×1 conv (stride s) + BN projects it (He et al.'s
    option B). With ``avg_down`` (ResNet-D) the stride moves into a 2×2 average
    pool so the 1×1 conv no longer discards ¾ of the positions. The pool keeps
    its slot (``downsample.0``; conv ``.1``, norm ``.2``) at stride 1 too, as an
    ``nn.Identity`` (timm's module; mmdet's stride-1 ``AvgPool2d(1)`` is the same
    map), so timm's resnet50d and mmdet's ResNetV1d keys fit every stage.
    ``same_pool``: timm's stride-1 pool in a dilated stage, a 2×2 average over the
    input padded with one zero row and column at the far side (timm's AvgPool2dSame).
    """
    if stride == 1 and inplanes == outplanes:
        return None
    norm_layer = norm_layer or nn.BatchNorm2d
    if avg_down:
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else \
            nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, 1)) if same_pool else nn.Identity()
        return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), norm_layer(outplanes))
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), norm_layer(outplanes))


@torch.no_grad()
def _check_downsample(block: str, downsample: nn.Module, inplanes: int, outplanes: int, stride: int) -> None:
    """Run a given ``downsample`` once on a tiny input, so a wrong one fails here and not deep in forward.

    A 4s×4s input comes out of the branch as 4×4 (every conv pads to keep size/stride).
    The probe runs in eval mode, so BatchNorm statistics are not touched.
    """
    was_training = downsample.training
    side = 4 * stride
    try:
        out = downsample.eval()(torch.zeros(1, inplanes, side, side))
    except (RuntimeError, ValueError) as e:
        raise ResnetkitValueError(f"{block}: the downsample given cannot take the block's {inplanes}-channel input "
                                  f"({str(e).splitlines()[0]}); use resnetkit.blocks.make_shortcut({inplanes}, {outplanes}, "
                                  f"stride={stride})") from e
    finally:
        downsample.train(was_training)
    if tuple(out.shape[1:]) != (outplanes, 4, 4):
        raise ResnetkitValueError(f"{block}: the downsample given maps 1×{inplanes}×{side}×{side} to "
                                  f"{'×'.join(map(str, out.shape))}, but the branch gives 1×{outplanes}×4×4 (stride "
                                  f"{stride}); use resnetkit.blocks.make_shortcut({inplanes}, {outplanes}, stride={stride})")


class _ResBlock(Block):
    """Common plumbing: norms named as mmcv does, shortcut check, plugins, drop path, zero-init, final add.

    Norms are ``bn1, bn2, ...`` (``gn1, ...`` for GroupNorm: mmcv's names, so GN
    checkpoints from mmdet load); ``norm1, norm2, ...`` reach them whatever their name.
    """

    expansion = 1

    def _add_norm(self, norm_layer: NormLayer | None, width: int) -> None:
        """The next norm (``bn1``, ``bn2``, ...), registered right after its conv as torchvision orders keys."""
        norm_layer = norm_layer or nn.BatchNorm2d
        names = self.__dict__.setdefault("norm_names", [])
        names.append(f"{norm_abbr(norm_layer)}{len(names) + 1}")
        self.add_module(names[-1], norm_layer(width))

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm_names[0])

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm_names[1])

    def _setup(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
               drop_path: float, plugins: Sequence[dict] | None, widths: dict[str, int]) -> None:
        outplanes = planes * self.expansion
        # Where the shapes change and no downsample is given, build the 1×1 projection (conv + a fresh copy
        # of the block's last norm) as kuangliu's CIFAR code does: BasicBlock(64, 128, 2) works. torchvision
        # always passes one there, so none of its valid calls changes.
        self.auto_shortcut = downsample is None and (stride != 1 or inplanes != outplanes)
        if self.auto_shortcut:
            last_norm = getattr(self, self.norm_names[-1])
            downsample = make_shortcut(inplanes, outplanes, stride, norm_layer=lambda _: copy.deepcopy(last_norm))
        elif downsample is not None:
            _check_downsample(type(self).__name__, downsample, inplanes, outplanes, stride)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        for p in plugins or ():
            pos = p["position"]
            if pos not in widths:
                raise ResnetkitValueError(f"{type(self).__name__} has no plugin position {pos!r}; it offers {sorted(widths)}")
            seq = getattr(self, f"{pos}_plugins", None)
            if seq is None:
                seq = nn.Sequential()
                setattr(self, f"{pos}_plugins", seq)
            seq.append(build_plugin(p["cfg"], widths[pos]))

    def extra_repr(self) -> str:
        return "downsample: 1×1 projection built by the block (the shapes change)" if self.auto_shortcut else ""

    def _plugin(self, x: torch.Tensor, position: str) -> torch.Tensor:
        seq = getattr(self, f"{position}_plugins", None)
        return x if seq is None else seq(x)

    def _add(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.drop_path(out) + identity)

    def zero_init_last(self) -> None:
        """Start the block as identity: the last norm's γ = 0 (Goyal et al. 2017)."""
        bn = getattr(self, self.norm_names[-1])
        if getattr(bn, "weight", None) is not None:
            nn.init.zeros_(bn.weight)


class BasicBlock(_ResBlock):
    """Two 3×3 convs (ResNet-18/34). ``expansion = 1``.

    Unlike torchvision's, it accepts dilation, as timm does: ``conv1`` runs at
    ``first_dilation`` (the previous stage's, in a stage's first block) and
    ``conv2`` at ``dilation``. ``groups``/``base_width`` must stay at 1/64 because
    the block has no bottleneck to group; ``dcn`` is refused (mmdet's BasicBlock
    has none either).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer | None = None,
                 *, style: str = "pytorch", drop_path: float = 0.0, plugins: Sequence[dict] | None = None,
                 first_dilation: int | None = None, dcn: dict | None = None) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ResnetkitValueError("BasicBlock supports only groups=1 and base_width=64; use Bottleneck for ResNeXt/Wide")
        if dcn is not None:
            raise ResnetkitValueError("dcn is not supported on BasicBlock (mmdet's BasicBlock has none either); "
                                      "use a Bottleneck net (depth >= 50)")
        d1 = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=d1, dilation=d1, bias=False)
        self._add_norm(norm_layer, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self._add_norm(norm_layer, planes)
        self.stride = stride
        self._setup(inplanes, planes, stride, downsample, drop_path, plugins,
                    {"after_conv1": planes, "after_conv2": planes})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._plugin(self.relu(self.norm1(self.conv1(x))), "after_conv1")
        out = self._plugin(self.norm2(self.conv2(out)), "after_conv2")
        return self._add(out, x)


class Bottleneck(_ResBlock):
    """1×1 reduce → 3×3 (grouped) → 1×1 expand (ResNet-50+). ``expansion = 4``.

    ``style="pytorch"`` puts the stride on the 3×3 conv (ResNet v1.5, torchvision):
    a strided 1×1 would skip ¾ of the input; ``style="caffe"`` keeps the original
    paper's stride on the first 1×1. Width is ``planes · base_width/64 · groups``
    (ResNeXt 32×4d: groups=32, base_width=4; Wide ResNet: base_width=128).
    ``conv2`` runs at ``first_dilation`` when given (a dilated stage's first
    block: the previous stage's dilation, as torchvision and timm do), else at
    ``dilation``; ``dcn`` (mmdet's dict) makes it a deformable conv.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer | None = None,
                 *, style: str = "pytorch", drop_path: float = 0.0, plugins: Sequence[dict] | None = None,
                 first_dilation: int | None = None, dcn: dict | None = None) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ResnetkitValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        width = int(planes * (base_width / 64.0)) * groups
        s1, s2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=s1, bias=False)
        self._add_norm(norm_layer, width)
        self.conv2 = conv3x3(width, width, s2, first_dilation or dilation, groups, check_dcn(dcn))
        self._add_norm(norm_layer, width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self._add_norm(norm_layer, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self._setup(inplanes, planes, stride, downsample, drop_path, plugins,
                    {"after_conv1": width, "after_conv2": width, "after_conv3": planes * self.expansion})

    @property
    def norm3(self) -> nn.Module:
        return getattr(self, self.norm_names[2])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._plugin(self.relu(self.norm1(self.conv1(x))), "after_conv1")
        out = self._plugin(self.relu(self.norm2(self.conv2(out))), "after_conv2")
        out = self._plugin(self.norm3(self.conv3(out)), "after_conv3")
        return self._add(out, x)
