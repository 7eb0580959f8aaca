"""Fine-tuning on your own images: a pretrained body, a new head, frozen stages, MixUp/CutMix, EMA.

The transfer is real and offline: a resnet20 pretrained on the embedded MNIST
digits is fine-tuned on scikit-learn's 1,797 scanned 8×8 digits (UCI's
optical-recognition set, shipped inside scikit-learn), classes 0–4 only, so the
head is new. With the same data, epochs and seed, starting from the checkpoint
must beat starting from scratch.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.train import TrainConfig, Trainer, load_trained
from resnetkit.train.transforms import InputSpec, prepare_batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sklearn_digits(tmp_path_factory):
    """scikit-learn's digits 0-4 as an ImageFolder (root/train/CLASS, root/test/CLASS), 28×28 PNGs, white on black."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("sk_digits")
    keep = np.flatnonzero(digits.target < 5)
    rng = np.random.default_rng(0)
    rng.shuffle(keep)
    for split, idx in (("train", keep[:300]), ("test", keep[300:])):
        for i in idx:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels, "L").resize((28, 28), Image.BILINEAR).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def mnist_checkpoint(digits_resnet20):
    return digits_resnet20 / "best.safetensors"   # conftest.py: resnet20 trained on mnist5k


def _accuracy(out) -> float:
    return load_trained(out / "best.safetensors")[1]["test_acc"]


def test_fine_tuning_from_mnist_beats_scratch_on_other_real_digits(sklearn_digits, mnist_checkpoint, tmp_path,
                                                                  capsys):
    common = ["train", "--model", "resnet20", "--data", str(sklearn_digits), "--image-size", "28", "--epochs", "2",
              "--batch-size", "32", "--lr", "0.05", "--warmup", "0", "--seed", "0", "--device", "cpu", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "scratch")]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "tuned"), "--pretrained", str(mnist_checkpoint),
                 "--freeze-stages", "0"]) == 0
    log = capsys.readouterr().out
    total = len(rk.create_model("resnet20", num_classes=5).state_dict())
    # the 5-class head (fc.weight, fc.bias) is new, every other tensor comes from the MNIST run
    assert f"pretrained {mnist_checkpoint}: {total - 2} of {total} tensors loaded; new for the 5 classes here: " \
           "fc.bias, fc.weight" in log
    scratch, tuned = _accuracy(tmp_path / "scratch"), _accuracy(tmp_path / "tuned")
    print(f"scikit-learn digits 0-4, 300 training images, 2 epochs: scratch {100 * scratch:.1f}%, "
          f"fine-tuned from mnist5k {100 * tuned:.1f}%")
    # scratch after 2 epochs moves with the CPU's kernels (AMX 61.9%, AVX2-capped 75.7%); fine-tuned stays > 90%
    assert tuned > 0.9 and tuned > scratch + 0.1, (scratch, tuned)


def test_frozen_stages_keep_their_pretrained_weights(sklearn_digits, mnist_checkpoint):
    pretrained = load_trained(mnist_checkpoint)[0].state_dict()
    t = Trainer(TrainConfig(model="resnet20", data=str(sklearn_digits), image_size=28, batch_size=32, epochs=1,
                            device="cpu", seed=0, out=None, pretrained=str(mnist_checkpoint), freeze_stages=1,
                            head_lr_mult=10), progress=False, verbose=False)
    head_lrs = [g["initial_lr"] for g in t.optimizer.param_groups if any(p is t.net.fc.weight for p in g["params"])]
    assert head_lrs == [10 * t.config.lr]
    t.fit()
    after = t.net.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"):   # stem and stage 1: frozen
        torch.testing.assert_close(after[key], pretrained[key], rtol=0, atol=0)
    assert not torch.equal(after["layer3.0.conv1.weight"], pretrained["layer3.0.conv1.weight"])   # trained


def test_mixup_and_cutmix_train_on_mixed_labels(sklearn_digits):
    for option in ({"mixup": 0.4}, {"cutmix": 1.0}):
        t = Trainer(TrainConfig(model="resnet20", data=str(sklearn_digits), image_size=28, batch_size=32, epochs=1,
                                device="cpu", seed=0, out=None, max_samples=64, **option), progress=False,
                    verbose=False)
        seen = []
        criterion = t.criterion
        t.criterion = lambda logits, target: seen.append(target) or criterion(logits, target)
        t.fit()
        target = seen[0]
        assert target.shape == (32, 5) and torch.allclose(target.sum(1), torch.ones(32))
        assert (target.max(1).values < 1).any(), f"{option}: no label was mixed"


def test_ema_weights_are_the_ones_evaluated_and_saved(sklearn_digits, tmp_path, capsys):
    t = Trainer(TrainConfig(model="resnet20", data=str(sklearn_digits), image_size=28, batch_size=32, epochs=1,
                            device="cpu", seed=0, out=str(tmp_path / "ema"), ema=0.9), progress=False, verbose=False)
    t.fit()
    saved = load_trained(tmp_path / "ema" / "best.safetensors")[0].state_dict()
    ema, raw = t.ema.module.state_dict(), t.net.state_dict()
    assert torch.equal(saved["layer3.0.conv1.weight"], ema["layer3.0.conv1.weight"])
    assert not torch.equal(ema["layer3.0.conv1.weight"], raw["layer3.0.conv1.weight"])
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "ema" / "best.safetensors"), "--device", "cpu",
                 "--confusion-png", str(tmp_path / "cm.png")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "weights: EMA of the trained weights (decay 0.9)"


def test_crop_recipe_is_torchvisions_random_resized_crop_per_sample_and_centre_crop_at_eval(sklearn_digits,
                                                                                           tmp_path, capsys):
    from resnetkit.train.transforms import epoch_crops

    boxes = epoch_crops(list(range(200)), (32, 32), seed=0, epoch=0)
    assert boxes == epoch_crops(list(range(200)), (32, 32), seed=0, epoch=0)          # a function of its inputs
    assert boxes != epoch_crops(list(range(200)), (32, 32), seed=0, epoch=1)          # new crops each epoch
    assert epoch_crops([7], (32, 32), 0, 0) == [boxes[7]]                              # per sample, not per batch
    for top, left, h, w, flip in boxes:
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w and flip in (0, 1)
        assert 0.08 * 32 * 32 - 32 <= h * w <= 32 * 32                               # torchvision's scale range
    assert 60 < sum(b[4] for b in boxes) < 140                                         # flips about half

    out = tmp_path / "crop"
    assert main(["train", "--model", "resnet20", "--data", str(sklearn_digits), "--image-size", "24", "--epochs", "3",
                 "--batch-size", "32", "--lr", "0.05", "--recipe", "crop", "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0
    model, meta = load_trained(out / "best.safetensors")
    assert meta["input"]["crop"] and meta["input"]["image_size"] == [24, 24]
    assert meta["input"]["data_size"] == [28, 28]                                     # 24 / 0.875, rounded up
    spec = InputSpec.from_dict(meta["input"])
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    centre = (x[..., 2:26, 2:26].float() / 255 - spec.mean[0]) / spec.std[0]         # eval: the centre, not resized
    torch.testing.assert_close(prepare_batch(x, spec)[:, :1], centre)   # (grey repeated into the 3-channel model)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--device", "cpu",
                 "--confusion-png", str(tmp_path / "cm.png")]) == 0
    evaluated = float(re.search(r"accuracy (\d+\.\d+)%", capsys.readouterr().out).group(1))
    assert evaluated == pytest.approx(100 * meta["test_acc"], abs=0.01)   # eval sees what training evaluated
    digit = next((sklearn_digits / "test" / "3").iterdir())
    assert main(["predict", "--checkpoint", str(out / "best.safetensors"), "--device", "cpu", str(digit)]) == 0
    assert capsys.readouterr().out.startswith(f"{digit}: ")
    with pytest.raises(ValueError, match="recipe 'crop' is for image folders"):
        Trainer(TrainConfig(model="resnet20", data="mnist5k", recipe="crop", out=None), progress=False)


def test_resnet18_fine_tunes_from_a_torchvision_checkpoint_file(sklearn_digits, tmp_path, capsys):
    """The issue's command: a torchvision resnet18 .pth (1000 classes), a 5-class folder, stages 0-1 frozen."""
    import torchvision

    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18-tv.pth"
    torch.save(tv.state_dict(), path)
    total = len(tv.state_dict())                                   # torchvision's own key count (incl. BN buffers)
    assert main(["train", "--data", str(sklearn_digits), "--model", "resnet18", "--pretrained", str(path),
                 "--freeze-stages", "1", "--epochs", "2", "--image-size", "32", "--max-samples", "64",
                 "--batch-size", "32", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "r18")]) == 0
    log = capsys.readouterr().out
    assert f"pretrained {path}: {total - 2} of {total} tensors loaded; new for the 5 classes here: fc.bias, " \
           "fc.weight" in log
    model, meta = load_trained(tmp_path / "r18" / "best.safetensors")
    assert meta["num_classes"] == 5
    torch.testing.assert_close(model.layer1[0].conv1.weight, tv.layer1[0].conv1.weight, rtol=0, atol=0)  # frozen
