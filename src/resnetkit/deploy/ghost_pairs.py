"""GhostNet without its concats: every tensor between ghost modules carried as its two halves.

A ghost module outputs ``cat([P, dw(P)])``; engines run that concat as a
separate pass (OpenVINO: its reference kernel, 18% of ghostnet_100's fp32
time). Here the BN-folded network is rewritten exactly so no concat is left:
a dense conv reading ``cat(a, b)`` becomes ``conv_a(a) + conv_b(b)`` (the
engines fuse the sum into the conv), channel-wise layers (depthwise convs,
SE's gate) act on each half, and the residual adds become two sums. Same
MACs, same outputs; more, smaller ops. ``backend="auto"`` times it as the
``ghost-pairs`` variant of each exported engine and keeps it only where it is
fastest (benchmarks/ghost_experiments.md, docs/ghostnet_speed.md).
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks.ghost import GhostBottleneck, GhostModule
from ..errors import ResnetkitValueError

GHOST_PAIRS = "ghost-pairs"  # the variant's name in auto's report


def applies(model: nn.Module) -> bool:
    """True for a GhostNet classifier whose every ghost module splits into two equal halves."""
    from ..models.ghostnet import GhostNet

    if not isinstance(model, GhostNet) or getattr(model, "features_only", False):
        return False
    ghosts = [m for m in model.modules() if isinstance(m, GhostModule)]
    blocks = [b for stage in model.blocks[:-1] for b in stage]
    return bool(ghosts) and all(isinstance(b, GhostBottleneck) for b in blocks) and all(
        g.out_chs == 2 * g.primary_conv.out_channels and g.cheap_operation[0].kernel_size == (3, 3)
        for g in ghosts)


def _part(conv: nn.Conv2d, out: slice = slice(None), inp: slice = slice(None), bias: bool = True) -> nn.Conv2d:
    """A copy of ``conv`` restricted to some output and (for a dense conv) input channels."""
    w = conv.weight[out] if conv.groups > 1 else conv.weight[out, inp]
    groups = w.shape[0] if conv.groups > 1 else 1
    part = nn.Conv2d(w.shape[1] * groups, w.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     groups, bias=bias and conv.bias is not None)
    part.weight.data.copy_(w)
    if part.bias is not None:
        part.bias.data.copy_(conv.bias[out])
    return part


class PairIn(nn.Module):
    """A dense conv reading ``cat(a, b)``, as ``conv_a(a) + conv_b(b)``."""

    def __init__(self, conv: nn.Conv2d, split: int, out: slice = slice(None)) -> None:
        super().__init__()
        self.a = _part(conv, out, slice(None, split))
        self.b = _part(conv, out, slice(split, None), bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.a(a) + self.b(b)


class PairEach(nn.Module):
    """A channel-wise conv (depthwise, or SE's expand) on ``cat(a, b)``, as its two halves."""

    def __init__(self, conv: nn.Conv2d, split: int) -> None:
        super().__init__()
        self.a, self.b = _part(conv, slice(None, split)), _part(conv, slice(split, None))


class PairGhostBottleneck(nn.Module):
    """A BN-folded :class:`GhostBottleneck` on the halves of its input and output."""

    def __init__(self, g: GhostBottleneck) -> None:
        super().__init__()
        p1, c1 = g.ghost1.primary_conv, g.ghost1.cheap_operation
        p2, c2 = g.ghost2.primary_conv, g.ghost2.cheap_operation
        split_in, mid = p1[0].in_channels // 2, p1[0].out_channels
        self.primary1, self.cheap1, self.act = PairIn(p1[0], split_in), c1[0], nn.ReLU()
        self.dw = PairEach(g.conv_dw, mid) if g.conv_dw is not None else None
        self.se = g.se is not None
        if self.se:
            self.se_reduce, self.se_act = PairIn(g.se.conv_reduce, mid), g.se.act1
            self.se_expand, self.gate = PairEach(g.se.conv_expand, mid), g.se.gate
        self.primary2, self.cheap2 = PairIn(p2[0], mid), c2[0]
        self.projection = not isinstance(g.shortcut, nn.Identity)
        if self.projection:
            out = p2[0].out_channels
            self.sc_dw = PairEach(g.shortcut[0], split_in)
            self.sc_a = PairIn(g.shortcut[2], split_in, slice(None, out))
            self.sc_b = PairIn(g.shortcut[2], split_in, slice(out, None))

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.act(self.primary1(xa, xb))
        b = self.act(self.cheap1(a))
        if self.dw is not None:
            a, b = self.dw.a(a), self.dw.b(b)
        if self.se:
            s = self.se_act(self.se_reduce(a.mean((2, 3), keepdim=True), b.mean((2, 3), keepdim=True)))
            a, b = a * self.gate(self.se_expand.a(s)), b * self.gate(self.se_expand.b(s))
        p = self.primary2(a, b)
        c = self.cheap2(p)
        if not self.projection:
            return p + xa, c + xb
        sa, sb = self.sc_dw.a(xa), self.sc_dw.b(xb)
        return p + self.sc_a(sa, sb), c + self.sc_b(sa, sb)


class GhostPairs(nn.Module):
    """A GhostNet classifier (BN folded) whose blocks run on halves: the same outputs, no concat."""

    def __init__(self, folded: nn.Module) -> None:
        super().__init__()
        # one stem conv split in two: two half-stems re-read the 3-channel input, 3% slower in fp32 (batch 16)
        self.stem, self.split = folded.conv_stem, folded.blocks[0][0].ghost1.primary_conv[0].in_channels // 2
        self.blocks = nn.ModuleList(PairGhostBottleneck(b) for stage in folded.blocks[:-1] for b in stage)
        last = folded.blocks[-1][0]
        self.last, self.last_act = PairIn(last[0], last[0].in_channels // 2), last[2]
        self.head = nn.Sequential(folded.global_pool, folded.conv_head, folded.act2, folded.flatten,
                                  folded.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.stem(x)).split(self.split, 1)
        for block in self.blocks:
            a, b = block(a, b)
        return self.head(self.last_act(self.last(a, b)))


@torch.no_grad()
def ghost_pairs(model: nn.Module) -> GhostPairs:
    """The concat-free form of a GhostNet classifier (see the module docstring); ``model`` is not changed."""
    from .fold import fold_batchnorm

    if not applies(model):
        raise ResnetkitValueError("ghost_pairs rewrites a GhostNet classifier whose ghost modules split in "
                                  "equal halves")
    x = torch.randn(2, model.conv_stem.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
    return GhostPairs(fold_batchnorm(model, example_input=x)).eval()
