"""One parametrised test runs every registered model through the common contract.

Adding a model to the registry adds it here for free.
"""
import pytest
import torch

import resnetkit as rk
from helpers import SPLIT_FAMILIES_SLOW

# The biggest nets are covered by the parity tests; keep `make test` fast.
HEAVY = {"resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"}
# ... and the big siblings of families whose small members run here (cifar_resnet18, resnet20/32, ghostnet_050/100)
HEAVY |= {"cifar_resnet34", "cifar_resnet50", "resnet44", "resnet56", "resnet110", "ghostnet_130"}
HEAVY |= SPLIT_FAMILIES_SLOW
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in rk.list_models()]


def _input(model, batch=2):
    c, h, w = model.default_input_size
    side = 32 if h <= 32 else 64
    return torch.randn(batch, c, side, side)


@pytest.mark.parametrize("name", NAMES)
def test_model_contract(name):
    torch.manual_seed(0)
    m = rk.create_model(name, num_classes=7)
    assert isinstance(m, torch.nn.Module)
    x = _input(m)
    # forward + backward in train mode
    out = m(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    # forward_features -> forward_head is forward
    m.eval()
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.ndim == 4
        assert torch.allclose(m.forward_head(feats), m(x), atol=1e-5)
        pooled = m.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, m.num_features)
        # feature_info: one dict per level, each naming a real submodule
        assert all(set(lvl) >= {"num_chs", "reduction", "module"} for lvl in m.feature_info)
        for lvl in m.feature_info:
            m.get_submodule(lvl["module"])
        # reset_classifier
        m.reset_classifier(3)
        assert m(x).shape == (2, 3)
        m.reset_classifier(0)
        assert m(x).shape == (2, m.num_features)


@pytest.mark.parametrize("name", [n for n in rk.list_models() if n not in HEAVY])
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    torch.manual_seed(0)
    m = rk.create_model(name, num_classes=5)
    x = _input(m)
    results = []
    for enable in (False, True):
        m.set_grad_checkpointing(enable)
        m.zero_grad()
        torch.manual_seed(1)  # same drop-path / dropout draws
        out = m(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    (o1, g1), (o2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)
