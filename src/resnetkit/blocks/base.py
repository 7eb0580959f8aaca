"""What every residual block shares: activation checkpointing and stochastic depth."""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..errors import ResnetkitValueError


class Block(nn.Module):
    """Base of every residual unit.

    Subclasses implement ``_forward``. When ``grad_checkpointing`` is on (set by
    ``model.set_grad_checkpointing()`` or ``with_cp=True``) the block keeps no
    activations in training and recomputes them during backward: outputs and
    gradients are unchanged, memory drops to one tensor per block.
    """

    grad_checkpointing: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), self._frozen_norm_stats()))
        return self._forward(x)

    @contextlib.contextmanager
    def _frozen_norm_stats(self):
        """The recompute in backward must not update BatchNorm running statistics a second time."""
        buffers = [b for m in self.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]
        saved = [b.clone() for b in buffers]
        try:
            yield
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inside(self) -> tuple[str, str] | None:
        """What the block does beyond a plain stack of layers, as (a label ``draw`` puts on its box,
        a sentence ``explain`` writes under it, with this block's numbers); None for plain blocks."""
        return None


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample.

    Surviving samples are scaled by 1/keep so the expected output is unchanged,
    which lets eval mode use the branch as is.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ResnetkitValueError(f"drop_path probability must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v
