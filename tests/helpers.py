"""Shared test utilities (importable as ``helpers`` thanks to pytest's pythonpath)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def give_trained_bn_stats(*models: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm trained-like statistics, identically in each model.

    A random net in eval mode with mean 0 / var 1 BNs blows activations up to
    1e4, which makes 1e-5 comparisons meaningless. Models must have the same
    BN layers in the same order (e.g. ours and torchvision's).
    """
    for model in models:
        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.3)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.05)


def assert_same_layout(ours: nn.Module, ref: nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b), f"key mismatch: only ours {set(a) - set(b)}, only ref {set(b) - set(a)}"
    for k in b:
        assert a[k].shape == b[k].shape, f"{k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
