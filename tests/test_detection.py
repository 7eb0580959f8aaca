"""``rk.with_fpn``: a resnetkit backbone inside torchvision's detectors.

References: torchvision's own ``resnet_fpn_backbone`` (the FPN backbone its
``fasterrcnn_resnet50_fpn`` uses) and ``FasterRCNN`` itself.
"""
from __future__ import annotations

import pytest
import torch
from helpers import give_trained_bn_stats
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import resnetkit as rk


def _backbone(name: str = "resnet18", **kwargs) -> nn.Module:
    return rk.create_model(name, features_only=True, out_indices=(1, 2, 3, 4), **kwargs)


def test_with_fpn_equals_torchvision_resnet_fpn_backbone():
    """Same weights in torchvision's resnet_fpn_backbone: same keys ('0'..'3', 'pool'), same maps at 1e-5."""
    torch.manual_seed(0)
    ours = rk.with_fpn(_backbone()).eval()
    ref = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d,
                              trainable_layers=5).eval()
    give_trained_bn_stats(ours.body)
    ref.body.load_state_dict(ours.body.state_dict())  # torchvision's names: conv1, bn1, layer1..4
    ref.fpn.load_state_dict(ours.fpn.state_dict())
    assert ours.out_channels == ref.out_channels == 256
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert list(got) == list(want) == ["0", "1", "2", "3", "pool"]
    for k in want:
        assert got[k].shape == want[k].shape
        assert (got[k] - want[k]).abs().max().item() < 1e-5, k


def _synthetic_batch(n: int = 2, size: int = 64) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]]),
                "labels": torch.tensor([1, 2])} for _ in range(n)]
    return images, targets


def _tiny_faster_rcnn(backbone_name: str) -> FasterRCNN:
    torch.manual_seed(0)
    body = _backbone(backbone_name, frozen_stages=1, norm_eval=True)
    give_trained_bn_stats(body)  # norm_eval is for pretrained backbones: fresh BNs (var 1) blow activations up
    fpn = rk.with_fpn(body, out_channels=64)
    return FasterRCNN(fpn, num_classes=3, min_size=64, max_size=64, rpn_pre_nms_top_n_train=200,
                      rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                      rpn_batch_size_per_image=64, box_batch_size_per_image=32, box_score_thresh=0.0,
                      box_detections_per_img=10)


def _train_two_steps_and_detect(backbone_name: str) -> None:
    model = _tiny_faster_rcnn(backbone_name)
    body = model.backbone.body
    frozen = {n: p.detach().clone() for n, p in body.named_parameters()
              if n.startswith(("conv1.", "bn1.", "layer1."))}
    trainable = {n: p.detach().clone() for n, p in body.named_parameters() if n.startswith("layer4.")}
    bns = [m for m in body.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    assert frozen and trainable and bns
    assert all(not body.get_parameter(n).requires_grad for n in frozen)

    images, targets = _synthetic_batch()
    model.train()
    assert not any(m.training for m in bns)  # norm_eval: every BN of the backbone stays in eval mode
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005)
    losses = []
    for _ in range(2):
        loss_dict = model(images, targets)
        assert set(loss_dict) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        loss = sum(loss_dict.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] != losses[1]

    for n, before in frozen.items():  # frozen_stages=1: stem and layer1 untouched
        assert torch.equal(body.get_parameter(n), before), n
    assert any(not torch.equal(body.get_parameter(n), before) for n, before in trainable.items())
    for m, (mean, var) in zip(bns, stats):  # norm_eval: running statistics untouched
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    for det in detections:
        assert set(det) == {"boxes", "labels", "scores"}
        n = len(det["boxes"])
        assert 0 < n <= 10 and det["boxes"].shape == (n, 4) and det["scores"].shape == det["labels"].shape == (n,)
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= 64
        assert set(det["labels"].tolist()) <= {1, 2}


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_faster_rcnn_trains_on_resnetkit_backbone(name):
    """Two training steps (finite losses that change, frozen stages and BN statistics untouched), then detections."""
    _train_two_steps_and_detect(name)


def test_with_fpn_extra_blocks():
    x = torch.zeros(1, 3, 64, 64)
    assert list(rk.with_fpn(_backbone(), 32, extra_blocks=None)(x)) == ["0", "1", "2", "3"]
    p6p7 = rk.with_fpn(_backbone(), 32, extra_blocks=LastLevelP6P7(32, 32))(x)  # RetinaNet's
    assert list(p6p7) == ["0", "1", "2", "3", "p6", "p7"] and p6p7["p7"].shape == (1, 32, 1, 1)
    feats = rk.with_fpn(rk.create_model("mobilenet_v2", features_only=True, out_indices=(2, 3, 4)), 32)(x)
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(32, 8, 8), (32, 4, 4), (32, 2, 2), (32, 1, 1)]


def test_with_fpn_refuses_bad_input():
    with pytest.raises(TypeError, match="features_only=True"):
        rk.with_fpn(rk.create_model("resnet18"))
    with pytest.raises(ValueError, match="out_channels must be a positive int"):
        rk.with_fpn(_backbone(), out_channels=0)
    with pytest.raises(ValueError, match="extra_blocks must be 'pool'"):
        rk.with_fpn(_backbone(), extra_blocks="p6p7")
    with pytest.raises(TypeError, match="ExtraFPNBlock"):
        rk.with_fpn(_backbone(), extra_blocks=nn.MaxPool2d(1, 2))
