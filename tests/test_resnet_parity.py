"""ResNet family == torchvision: same keys and shapes, strict load, same outputs, same size."""
import pytest
import torch
import torchvision

import resnetkit as rk
from helpers import assert_same_layout, count_params, give_trained_bn_stats

TV_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
            "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]

# Published parameter counts (torchvision model docs), in millions.
PUBLISHED_PARAMS_M = {"resnet18": 11.69, "resnet34": 21.80, "resnet50": 25.56, "resnet101": 44.55,
                      "resnet152": 60.19, "resnext50_32x4d": 25.03, "resnext101_32x8d": 88.79,
                      "resnext101_64x4d": 83.46, "wide_resnet50_2": 68.88, "wide_resnet101_2": 126.89}


@pytest.mark.parametrize("name", TV_NAMES)
def test_matches_torchvision(name):
    torch.manual_seed(0)
    ours = rk.create_model(name)
    ref = getattr(torchvision.models, name)()
    assert_same_layout(ours, ref)
    give_trained_bn_stats(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == (2, 1000)
    assert (a - b).abs().max().item() <= 1e-5
    assert count_params(ours) == count_params(ref)
    assert count_params(ours) / 1e6 == pytest.approx(PUBLISHED_PARAMS_M[name], abs=0.01)


@pytest.mark.parametrize("num_classes,in_chans", [(10, 1), (0, 3)])
def test_num_classes_and_in_chans(num_classes, in_chans):
    m = rk.create_model("resnet18", num_classes=num_classes, in_chans=in_chans).eval()
    out = m(torch.randn(1, in_chans, 64, 64))
    assert out.shape == (1, num_classes or 512)
    assert m.conv1.in_channels == in_chans
