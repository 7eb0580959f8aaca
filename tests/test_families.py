"""The non-ImageNet-ResNet families: MobileNetV2, GhostNet, d2l ResNet-18, CIFAR ResNets."""
import pytest
import torch

import resnetkit as rk
from helpers import count_params


# ------------------------------------------------------------------ d2l ResNet-18
def test_d2l_resnet18_defaults_and_stage_shapes_as_in_the_book():
    m = rk.create_model("d2l_resnet18").eval()
    assert m.b1[0].in_channels == 1 and m.num_classes == 10
    assert m.b1[0].bias is not None  # d2l keeps conv biases
    x = torch.zeros(1, 1, 224, 224)
    shapes = []
    with torch.no_grad():
        for name in ("b1", "b2", "b3", "b4", "b5"):
            x = m.get_submodule(name)(x)
            shapes.append(tuple(x.shape[1:]))
    # d2l §8.6 prints exactly these after b1 (incl. max pool) ... b5
    assert shapes == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_d2l_resnet18_levels_and_mnist_input():
    m = rk.create_model("d2l_resnet18", features_only=True)
    assert m.feature_info.channels() == [64, 64, 128, 256, 512]
    assert m.feature_info.reduction() == [2, 4, 8, 16, 32]
    feats = m(torch.zeros(1, 1, 224, 224))
    assert tuple(feats[0].shape) == (1, 64, 112, 112)  # level 0 is before the max pool
    net = rk.create_model("d2l_resnet18")
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert rk.create_model("d2l_resnet18", in_chans=3, num_classes=5)(torch.randn(2, 3, 32, 32)).shape == (2, 5)
