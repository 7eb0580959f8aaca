"""The blocks of the non-ResNet families on their own: shapes, shortcuts, refusals."""
import pytest
import torch

import resnetkit as rk


# ------------------------------------------------------------------ d2l Residual
def test_d2l_residual_shapes_and_bias():
    blk = rk.Residual(3, 3)
    assert blk(torch.randn(4, 3, 6, 6)).shape == (4, 3, 6, 6)
    assert blk.conv3 is None and blk.conv1.bias is not None
    blk = rk.Residual(3, 6, use_1x1conv=True, strides=2)
    assert blk(torch.randn(4, 3, 6, 6)).shape == (4, 6, 3, 3)
    assert blk.conv3.kernel_size == (1, 1) and blk.conv3.stride == (2, 2)


@pytest.mark.parametrize("args", [dict(input_channels=3, num_channels=6),
                                  dict(input_channels=64, num_channels=64, strides=2)])
def test_d2l_residual_refuses_identity_shortcut_that_cannot_match(args):
    with pytest.raises(ValueError, match="use_1x1conv=True"):
        rk.Residual(**args)
