"""explain(): every output size from its formula (checked against PyTorch), every shortcut justified."""
import io
import itertools

import pytest
import torch
import torchvision
from torch import nn

import resnetkit as rk
from golden_files import assert_golden
from resnetkit.inspect.formulas import transposed_out, window_out


def _explain(model, size):
    return rk.explain(model, size, file=None)


def test_resnet_stem_reads_like_the_contract():
    lines = _explain(rk.create_model("resnet18"), (1, 3, 224, 224))
    assert any(line.startswith("conv1: (224 − 7 + 2·3) // 2 + 1 = 112") for line in lines)
    assert any(line.startswith("maxpool: (112 − 3 + 2·1) // 2 + 1 = 56") for line in lines)
    assert any(line.strip().startswith("fc: Linear 512 → 1000") for line in lines)


def test_window_formula_equals_pytorch_for_every_setting():
    """The arithmetic itself, against real PyTorch layers over a grid (dilation, ceil_mode, padding)."""
    for h, k, s, p, d in itertools.product((5, 7, 8, 13), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        if d * (k - 1) + 1 > h + 2 * p:
            continue
        x = torch.zeros(1, 1, h, h)
        conv = nn.Conv2d(1, 1, k, s, p, d)
        assert window_out(h, k, s, p, d).size == conv(x).shape[-1], (h, k, s, p, d)
        if p <= k // 2:
            for ceil in (False, True):
                pool = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
                assert window_out(h, k, s, p, d, ceil).size == pool(x).shape[-1], (h, k, s, p, d, ceil)
    for h, k, s, p, op in itertools.product((3, 6), (1, 2, 3), (1, 2), (0, 1), (0, 1)):
        if op >= s or p >= k:
            continue
        t = nn.ConvTranspose2d(1, 1, k, s, p, output_padding=op)
        assert transposed_out(h, k, s, p, 1, op).size == t(torch.zeros(1, 1, h, h)).shape[-1]


def test_dilation_ceil_mode_and_rectangles_are_written_out():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.MaxPool2d(2, 2, ceil_mode=True),
                        nn.Conv2d(4, 4, (3, 1), stride=(2, 1)), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    text = str(_explain(net, (1, 3, 28, 27)))
    assert "0: H: (28 + 2·2 − 2·(3 − 1) − 1) // 1 + 1 = 28; W: (27 + 2·2 − 2·(3 − 1) − 1) // 1 + 1 = 27" in text
    assert "1: H: ceil((28 − 2 + 2·0) / 2) + 1 = 14; W: ceil((27 − 2 + 2·0) / 2) + 1 = 14" in text
    assert "2: H: (14 − 3 + 2·0) // 2 + 1 = 6; W: (14 − 1 + 2·0) // 1 + 1 = 14" in text
    assert "Conv2d depthwise" in text
    assert "(!)" not in text   # every formula agreed with the shape PyTorch produced
    # H: r = 1 + 2·2 = 5, +1·1 = 6 (j 2), +2·2 = 10 (j 4), +2·4 = 18; W: 5, 6, 6 (1-wide kernel), 6 + 2·2 = 10
    assert "3 (3): 4×6×14, stride 4×2, receptive field 18×10" in text


def test_ceil_mode_notes_the_dropped_last_window():
    step = window_out(5, 2, 2, 1, ceil_mode=True)
    assert step.size == nn.MaxPool2d(2, 2, 1, ceil_mode=True)(torch.zeros(1, 1, 5, 5)).shape[-1] == 3
    assert "padding" in step.formula


def test_shortcut_reasons_for_resnet_blocks():
    lines = _explain(rk.create_model("resnet50"), (1, 3, 64, 64))
    by_unit = {ln.strip().split(" ")[0]: ln for ln in lines if "shortcut" in ln}
    assert "channels change 64 → 256" in by_unit["layer1.0"] and "size changes" not in by_unit["layer1.0"]
    assert "projection `downsample` (Conv 1×1×256, BN)" in by_unit["layer1.0"]
    assert "size changes 16×16 → 8×8" in by_unit["layer2.0"] and "channels change 256 → 512" in by_unit["layer2.0"]
    assert "Conv 1×1×512 Stride=2, BN" in by_unit["layer2.0"]
    assert "shortcut = identity: input and output are both 256×16×16" in by_unit["layer1.1"]


def test_shortcut_reasons_for_other_families():
    mb = str(_explain(torchvision.models.mobilenet_v2(), (1, 3, 64, 64)))
    assert "features.2 (InvertedResidual): no shortcut: the size changes 32×32 → 16×16 and the channels " \
           "change 16 → 24" in mb
    assert "features.3 (InvertedResidual): shortcut = identity" in mb
    d2l = str(_explain(rk.create_model("d2l_resnet18"), (1, 1, 96, 96)))
    assert "(Residual): shortcut = projection `conv3` (Conv 1×1×128 Stride=2 Bias)" in d2l
    cifar = str(_explain(rk.create_model("resnet20"), (1, 3, 32, 32)))
    assert "shortcut = parameter-free `downsample` (ZeroPadShortcut)" in cifar


def test_explain_writes_to_file_and_returns_lines():
    buf = io.StringIO()
    lines = rk.explain(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 1, 8, 8), file=buf)
    assert buf.getvalue().strip() == str(lines)
    assert "0: (8 − 3 + 2·0) // 1 + 1 = 6" in str(lines)
    assert repr(lines).startswith("<Explanation")


def test_bad_input_is_a_value_error_not_a_traceback_from_deep_inside():
    with pytest.raises(ValueError, match="forward pass of ResNet on an input of size 1x1x64x64 failed"):
        rk.explain(rk.create_model("resnet18"), (1, 1, 64, 64), file=None)


def test_golden_explain_printouts():
    assert_golden("explain_resnet18.txt", str(_explain(rk.create_model("resnet18"), (1, 3, 224, 224))))
    from test_table import SEED
    assert_golden("explain_seed_table.txt", str(_explain(rk.from_table(SEED), (1, 3, 112, 112))))
