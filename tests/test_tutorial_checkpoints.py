"""Checkpoints written by the tutorials' own code load into resnetkit's models and give the same outputs.

The source models are the tutorials' code, written out here by hand (facts, not resnetkit code):
kuangliu/pytorch-cifar ``models/resnet.py`` (BasicBlock, Bottleneck, ResNet with ``shortcut``
and ``linear``) and the d2l book's ``chapter_convolutional-modern/resnet.md`` (``Residual``,
``resnet_block`` and the ``nn.Sequential(b1, ..., b5, pool, flatten, linear)`` net; d2l 1.0's
``ResNet18`` class, whose ``self.net`` adds ``b2``..``b5`` and ``last`` by name).
"""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from helpers import give_trained_bn_stats
from torch import nn

import resnetkit as rk


# --------------------------------------------------------------- kuangliu/pytorch-cifar
def kuangliu_shortcut(in_planes, out_planes, stride):
    """Both blocks' ``self.shortcut``: empty Sequential (identity), or 1×1 conv + BN where shapes change."""
    if stride != 1 or in_planes != out_planes:
        return nn.Sequential(nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                             nn.BatchNorm2d(out_planes))
    return nn.Sequential()


class KuangliuBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = kuangliu_shortcut(in_planes, self.expansion * planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class KuangliuBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = kuangliu_shortcut(in_planes, self.expansion * planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return F.relu(out)


class KuangliuResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


KUANGLIU = {"cifar_resnet18": (KuangliuBasicBlock, [2, 2, 2, 2]),
            "cifar_resnet34": (KuangliuBasicBlock, [3, 4, 6, 3]),
            "cifar_resnet50": (KuangliuBottleneck, [3, 4, 6, 3])}


# ----------------------------------------------------------------------------- d2l
class D2LResidual(nn.Module):
    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def d2l_b1():
    return nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


def d2l_resnet_block(input_channels, num_channels, num_residuals, first_block=False):
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(D2LResidual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blk.append(D2LResidual(num_channels, num_channels))
    return blk


def d2l_sequential_net():
    """The book's net: b1, b2..b5, AdaptiveAvgPool2d, Flatten, Linear (keys 0.0.weight ... 7.weight)."""
    b2 = nn.Sequential(*d2l_resnet_block(64, 64, 2, first_block=True))
    b3 = nn.Sequential(*d2l_resnet_block(64, 128, 2))
    b4 = nn.Sequential(*d2l_resnet_block(128, 256, 2))
    b5 = nn.Sequential(*d2l_resnet_block(256, 512, 2))
    return nn.Sequential(d2l_b1(), b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(512, 10))


class D2LResNet18Class(nn.Module):
    """d2l 1.0's ``ResNet18(d2l.Classifier)``: the same modules under ``net.0``, ``net.b2``.., ``net.last``
    (the book's Lazy layers, once materialised, have these plain layers' keys)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(d2l_b1())
        channels = 64
        for i, (n, ch) in enumerate(((2, 64), (2, 128), (2, 256), (2, 512))):
            self.net.add_module(f"b{i + 2}", nn.Sequential(*d2l_resnet_block(channels, ch, n, first_block=i == 0)))
            channels = ch
        self.net.add_module("last", nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                                                  nn.Linear(512, num_classes)))

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------------------- tests
def _load_and_compare(source: nn.Module, name: str, x: torch.Tensor, tmp_path, caplog,
                      checkpoint=lambda net: net.state_dict()) -> rk.LoadResult:
    give_trained_bn_stats(source)
    source.eval()
    path = tmp_path / "tutorial.pth"
    torch.save(checkpoint(source), path)
    ours = rk.create_model(name).eval()
    with caplog.at_level(logging.INFO, logger="resnetkit.weights"):
        result = rk.load_weights(ours, path)  # strict: every key mapped, none left over
    with torch.no_grad():
        expected, got = source(x), ours(x)
    assert (expected - got).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert result.layout in caplog.text
    return result


def kuangliu_ckpt(net: nn.Module) -> dict:
    """What kuangliu's main.py saves as checkpoint/ckpt.pth: the DataParallel-wrapped net under 'net'."""
    return {"net": nn.DataParallel(net).state_dict(), "acc": 95.2, "epoch": 199}


@pytest.mark.parametrize("name", sorted(KUANGLIU))
def test_kuangliu_cifar_checkpoint_loads_with_same_outputs(name, tmp_path, caplog):
    block, blocks = KUANGLIU[name]
    torch.manual_seed(1)
    r = _load_and_compare(KuangliuResNet(block, blocks), name, torch.randn(2, 3, 32, 32), tmp_path, caplog,
                          checkpoint=kuangliu_ckpt)
    assert r.layout == "kuangliu pytorch-cifar ResNet"
    assert r.missing_keys == r.unexpected_keys == r.mismatched_keys == []


def test_d2l_sequential_checkpoint_loads_with_same_outputs(tmp_path, caplog):
    torch.manual_seed(2)
    net = d2l_sequential_net()
    assert "0.0.weight" in net.state_dict() and "7.weight" in net.state_dict()
    r = _load_and_compare(net, "d2l_resnet18", torch.randn(2, 1, 64, 64), tmp_path, caplog)
    assert r.layout == "d2l nn.Sequential ResNet-18"
    assert r.missing_keys == r.unexpected_keys == r.mismatched_keys == []


def test_d2l_class_checkpoint_loads_with_same_outputs(tmp_path, caplog):
    torch.manual_seed(3)
    r = _load_and_compare(D2LResNet18Class(), "d2l_resnet18", torch.randn(2, 1, 64, 64), tmp_path, caplog)
    assert r.layout == "d2l ResNet18 class"


def test_kuangliu_checkpoint_into_wrong_depth_names_the_layout(tmp_path):
    """A kuangliu ResNet-18 file into cifar_resnet34: a strict error that says which layout was read."""
    path = tmp_path / "k18.pth"
    torch.save(KuangliuResNet(KuangliuBasicBlock, [2, 2, 2, 2]).state_dict(), path)
    with pytest.raises(rk.WeightsError, match="kuangliu pytorch-cifar ResNet.*\n.*missing keys: layer1.2"):
        rk.load_weights(rk.create_model("cifar_resnet34"), path)
