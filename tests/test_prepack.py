"""Prepacked convolutions: one oneDNN weight per input shape, and no silent fallback when fusing fails."""
import pytest
import torch
from torch import nn

from resnetkit.deploy.prepack import PrepackedConv2d, fuse_activations, prepack_convs

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="prepacking needs oneDNN")


@torch.no_grad()
def test_weight_is_packed_once_per_input_shape(monkeypatch):
    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    packed = PrepackedConv2d(conv)
    reorder = torch._C._nn.mkldnn_reorder_conv2d_weight
    packed_for = []

    def recording_reorder(w, padding, stride, dilation, groups, input_size):
        packed_for.append(tuple(input_size))
        return reorder(w, padding, stride, dilation, groups, input_size)

    monkeypatch.setattr(torch._C._nn, "mkldnn_reorder_conv2d_weight", recording_reorder)
    for batch in (1, 4, 1, 4):
        x = torch.randn(batch, 8, 10, 10)
        torch.testing.assert_close(packed(x), conv(x))
    # oneDNN chooses the blocked layout for the input shape: batch 4 must not reuse batch 1's packing
    assert packed_for == [(1, 8, 10, 10), (4, 8, 10, 10)]


class _DataDependent(nn.Module):
    """torch.fx cannot trace a branch on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) if x.sum() > 0 else self.conv(x)


@torch.no_grad()
def test_an_untraceable_model_runs_unfused_with_a_warning_naming_it():
    model = _DataDependent().eval()
    x = torch.rand(1, 3, 8, 8)
    expected = model(x)
    prepack_convs(model)
    with pytest.warns(UserWarning, match=r"_DataDependent cannot be traced by torch\.fx .*unfused"):
        runner = fuse_activations(model)
    assert runner is model and isinstance(model.conv, PrepackedConv2d) and model.conv.post_op == "none"
    torch.testing.assert_close(runner(x), expected)
