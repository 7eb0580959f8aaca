"""Shared test utilities (importable as ``helpers`` thanks to pytest's pythonpath)."""
from __future__ import annotations

import torch
from torch import nn

from resnetkit.deploy.bench import give_trained_like_bn_stats


@torch.no_grad()
def give_trained_bn_stats(*models: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm trained-like statistics, identically in each model.

    A random net in eval mode with mean 0 / var 1 BNs blows activations up to
    1e4, which makes 1e-5 comparisons meaningless. Models must have the same
    BN layers in the same order (e.g. ours and torchvision's).
    """
    for model in models:
        give_trained_like_bn_stats(model, seed)


def assert_same_layout(ours: nn.Module, ref: nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b), f"key mismatch: only ours {set(a) - set(b)}, only ref {set(b) - set(a)}"
    for k in b:
        assert a[k].shape == b[k].shape, f"{k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
