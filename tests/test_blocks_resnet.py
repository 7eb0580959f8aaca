"""BasicBlock / Bottleneck on their own."""
import pytest
import torch

import resnetkit as rk


def test_expansions():
    assert rk.BasicBlock.expansion == 1 and rk.Bottleneck.expansion == 4


def test_identity_block_keeps_shape():
    assert rk.BasicBlock(64, 64)(torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)
    assert rk.Bottleneck(256, 64)(torch.randn(1, 256, 8, 8)).shape == (1, 256, 8, 8)


def test_projection_block():
    blk = rk.Bottleneck(64, 128, stride=2, downsample=rk.make_shortcut(64, 512, stride=2))
    assert blk(torch.randn(1, 64, 16, 16)).shape == (1, 512, 8, 8)


@pytest.mark.parametrize("block,args,out", [
    (rk.BasicBlock, (64, 128, 1), (128, 8)), (rk.BasicBlock, (64, 64, 2), (64, 4)),
    (rk.Bottleneck, (64, 64, 1), (256, 8)), (rk.Bottleneck, (256, 64, 2), (256, 4))])
def test_without_downsample_a_block_projects_where_shapes_change(block, args, out):
    blk = block(*args)   # kuangliu's CIFAR code builds its 1×1 conv + BN shortcut the same way
    conv, bn = blk.downsample
    geometry = (conv.kernel_size, conv.stride, conv.out_channels, bn.num_features)
    assert geometry == ((1, 1), (args[2],) * 2, out[0], out[0])
    assert blk(torch.randn(1, args[0], 8, 8)).shape == (1, out[0], out[1], out[1])


@pytest.mark.parametrize("downsample,problem", [
    (torch.nn.Conv2d(64, 64, 1, stride=2), "maps 1×64×8×8 to 1×64×4×4, but the branch gives 1×128×4×4"),
    (torch.nn.Conv2d(64, 128, 1, stride=1), "maps 1×64×8×8 to 1×128×8×8, but the branch gives 1×128×4×4"),
    (torch.nn.Conv2d(32, 128, 1, stride=2), "cannot take the block's 64-channel input"),
])
def test_a_given_downsample_that_cannot_match_is_refused_at_construction(downsample, problem):
    with pytest.raises(ValueError, match=problem):
        rk.BasicBlock(64, 128, stride=2, downsample=downsample)


def test_the_downsample_probe_leaves_batchnorm_alone():
    ds = rk.make_shortcut(64, 256, stride=2)
    before = {k: v.clone() for k, v in ds.state_dict().items()}
    rk.Bottleneck(64, 64, stride=2, downsample=ds)
    assert ds.training and all(torch.equal(before[k], v) for k, v in ds.state_dict().items())


def test_make_shortcut_is_none_when_identity_fits():
    assert rk.make_shortcut(64, 64, 1) is None
    assert rk.make_shortcut(64, 256, 1) is not None


def test_basic_block_refuses_groups():
    with pytest.raises(ValueError, match="Bottleneck"):
        rk.BasicBlock(64, 64, groups=32)
