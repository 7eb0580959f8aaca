"""Grad-CAM (``rk.cam``, ``resnetkit predict --cam``): where a trained digit model looks, measured.

A resnet20 trained on real MNIST digits must look at the strokes: on held-out
digits the heat map is brighter on stroke pixels than on background pixels.
"""
from __future__ import annotations

import pytest
import torch

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.inspect.cam import cam_layer
from resnetkit.train import load_dataset, load_trained
from resnetkit.train.transforms import InputSpec, prepare_batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_run(digits_resnet20):
    return digits_resnet20   # conftest.py: resnet20 trained on mnist5k


def test_the_heat_map_is_on_the_stroke_not_the_background(digits_run):
    model, meta = load_trained(digits_run / "best.safetensors", "cpu")
    spec = InputSpec.from_dict(meta["input"])
    test = load_dataset("mnist5k", "test")
    brighter = 0
    for i in range(20):
        digit = test.images[i]                                     # uint8 1×28×28, white stroke on black
        heat = rk.cam(model, prepare_batch(digit[None], spec)[0])
        assert heat.shape == (28, 28) and 0 <= heat.min() and heat.max() <= 1
        stroke, background = digit[0] > 128, digit[0] < 20
        brighter += heat[stroke].mean() > heat[background].mean()
    assert heat.layer == cam_layer(model) == "layer3"               # resnet20's last stage
    assert brighter >= 17, f"the heat map was brighter on the stroke for only {brighter} of 20 digits"


def test_an_untrained_class_choice_and_bad_inputs(digits_run):
    model, meta = load_trained(digits_run / "best.safetensors", "cpu")
    x = prepare_batch(load_dataset("mnist5k", "test").images[:1], InputSpec.from_dict(meta["input"]))[0]
    assert rk.cam(model, x, class_idx=3).class_idx == 3
    with pytest.raises(ValueError, match="one image at a time"):
        rk.cam(model, torch.randn(2, *x.shape))
    with pytest.raises(ValueError, match="features_only backbone"):
        rk.cam(rk.create_model("resnet20", features_only=True), x.expand(3, -1, -1), layer="layer3")


def test_predict_cam_writes_one_png_per_image_at_its_size(digits_run, tmp_path, capsys):
    from PIL import Image

    test = load_dataset("mnist5k", "test")
    paths = []
    for i, size in ((0, 28), (1, 56)):                              # any size: resized for the model only
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(test.images[i, 0].numpy(), "L").resize((size, size)).save(p)
        paths.append(p)
    out = tmp_path / "cams"
    assert main(["predict", "--checkpoint", str(digits_run / "best.safetensors"), "--device", "cpu",
                 "--cam", str(out), *map(str, paths)]) == 0
    printed = capsys.readouterr().out
    for p, size in zip(paths, (28, 56)):
        png = out / f"{p.stem}.cam.png"
        assert f"{png}: Grad-CAM of layer3 (the last stage) for " in printed
        with Image.open(png) as img:
            assert img.size == (size, size) and img.mode == "RGB"


@pytest.mark.parametrize("name, layer", [("resnet18", "layer4"), ("mobilenet_v2", "features.17"),
                                         ("ghostnet_050", "blocks.8"), ("d2l_resnet18", "b5"),
                                         ("cifar_resnet18", "layer4"), ("resnet50d", "layer4")])
def test_cam_runs_on_every_family_at_its_last_stage(name, layer):
    """The last level of the contract: the last block at the deepest reduction (GhostNet's blocks.9 and
    MobileNetV2's features.18, the 1×1 expansions before the head, belong to no level)."""
    model = rk.create_model(name).eval()
    c = model.default_input_size[0]
    heat = rk.cam(model, torch.randn(c, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert heat.shape == (64, 64) and torch.isfinite(heat).all() and 0 <= heat.min() and heat.max() <= 1
    assert heat.layer == layer == model.feature_info[-1]["module"]
