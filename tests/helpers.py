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


# CONTRACT §2: frozen_stages=N freezes stage 0 (the stem, up to C1) through stage N (up to level N),
# level N being the last block at that reduction. Written out per family from the architectures:
FROZEN_AT_STAGE_1 = {
    "resnet": ("conv1.", "bn1.", "layer1."),        # 7×7 or deep stem + BN (C1), layer1 (C2); CIFAR too
    "mobilenet_v2": ("features.0.", "features.1.",   # stem conv 32 /2, IR t=1 → 16 (C1)
                     "features.2.", "features.3."),  # IR → 24 /4, IR → 24 (C2)
    "ghostnet": ("conv_stem.", "bn1.", "blocks.0.",  # stem 16 /2 + BN, ghost bottleneck 16 (C1)
                 "blocks.1.", "blocks.2."),          # → 24 /4, → 24 (C2)
    "d2l": ("b1.0.", "b1.1.",                        # 7×7/2 conv + BN (its ReLU is C1; max pool: no weights)
            "b2."),                                  # two 64-channel Residuals at /4 (C2)
}


def frozen_at_stage_1(name: str) -> tuple[str, ...]:
    family = next((f for f in ("mobilenet_v2", "ghostnet", "d2l") if name.startswith(f)), "resnet")
    return FROZEN_AT_STAGE_1[family]


# Res2Net and ResNeSt beyond one member each (res2net50_26w_4s, resnest14d): tests that run every registered
# model mark these slow; test_timm_parity.py checks every one of them against timm in the default run.
SPLIT_FAMILIES_SLOW = {"res2net50_14w_8s", "res2net50_26w_6s", "res2net50_26w_8s", "res2net50_48w_2s", "res2net50d",
                       "res2net101_26w_4s", "res2net101d", "res2next50", "resnest26d", "resnest50d",
                       "resnest50d_1s4x24d", "resnest50d_4s2x40d", "resnest101e", "resnest200e", "resnest269e"}
