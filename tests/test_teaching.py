"""What the tutorials teach, run as a new user runs it: the d2l book's shape loop, a replaceable
global pool, kuangliu's block calls, and torchsummary/timm/torchvision habits."""
import pytest
import torch
import torchvision
from torch import nn

import resnetkit as rk
from resnetkit.cli import list_cmd, main
from helpers import give_trained_bn_stats
from test_tutorial_checkpoints import KuangliuBasicBlock

# Printed by the book's loop (d2l.ai, §8.6 "Residual Networks", PyTorch tab) for X = torch.rand(1, 1, 224, 224)
BOOK_LINES = """\
Sequential output shape:\t torch.Size([1, 64, 56, 56])
Sequential output shape:\t torch.Size([1, 64, 56, 56])
Sequential output shape:\t torch.Size([1, 128, 28, 28])
Sequential output shape:\t torch.Size([1, 256, 14, 14])
Sequential output shape:\t torch.Size([1, 512, 7, 7])
AdaptiveAvgPool2d output shape:\t torch.Size([1, 512, 1, 1])
Flatten output shape:\t torch.Size([1, 512])
Linear output shape:\t torch.Size([1, 10])
"""
# One model of each family with a global pool module
POOLED = [("resnet18", (1, 3, 64, 64)), ("resnet20", (1, 3, 32, 32)), ("d2l_resnet18", (1, 1, 64, 64)),
          ("mobilenet_v2", (1, 3, 64, 64))]


def test_the_books_shape_loop_prints_its_eight_lines(capsys):
    net = rk.create_model("d2l_resnet18")
    X = torch.rand(1, 1, 224, 224)
    for layer in net:
        X = layer(X)
        print(layer.__class__.__name__, 'output shape:\t', X.shape)
    assert capsys.readouterr().out == BOOK_LINES


def test_the_head_api_survives_the_book_layout():
    net = rk.create_model("d2l_resnet18").eval()
    x = torch.rand(2, 1, 64, 64)
    feats = net.forward_features(x)
    assert feats.shape == (2, 512, 2, 2)
    assert torch.equal(net.forward_head(feats, pre_logits=True), feats.mean((2, 3)))
    assert not any(k.startswith(("avgpool", "flatten")) for k in net.state_dict())  # no new keys
    assert [k for k in net.state_dict() if k.startswith("fc")] == ["fc.weight", "fc.bias"]
    net.reset_classifier(0)
    assert net(x).shape == (2, 512)
    backbone = rk.create_model("d2l_resnet18", features_only=True)
    assert [f.shape[1] for f in backbone(x)] == [64, 64, 128, 256, 512]
    with pytest.raises(TypeError, match="features_only backbone"):
        list(backbone)


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "d2l_resnet18", "mobilenet_v2", "ghostnet_050"])
def test_running_the_layers_in_order_is_the_forward_pass(name):
    net = rk.create_model(name).eval()
    give_trained_bn_stats(net)
    x = torch.randn(1, *net.default_input_size[:1], 64, 64)
    y = x
    for layer in net:
        y = layer(y)
    assert torch.equal(y, net(x))


def test_replacing_avgpool_acts_as_in_torchvision():
    ours, ref = rk.create_model("resnet18").eval(), torchvision.models.resnet18().eval()
    give_trained_bn_stats(ref)
    ours.load_state_dict(ref.state_dict())
    ours.avgpool = ref.avgpool = nn.AdaptiveMaxPool2d(1)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("name, size", POOLED)
def test_replacing_avgpool_changes_every_pooled_model(name, size):
    net = rk.create_model(name).eval()
    give_trained_bn_stats(net)
    x = torch.randn(size)
    f = net.forward_features(x)
    net.avgpool = nn.AdaptiveMaxPool2d(1)
    pooled = net.forward_head(f, pre_logits=True)
    assert torch.equal(pooled, f.amax((2, 3))) and not torch.allclose(pooled, f.mean((2, 3)))
    assert torch.allclose(net(x), net.get_classifier()(f.amax((2, 3))), atol=1e-6)


def test_summary_shows_the_pool_and_flatten_rows():
    rows = rk.summary(rk.create_model("d2l_resnet18"), (1, 1, 224, 224), depth=1).rows
    assert [(r.name, r.type, r.output_shape) for r in rows[-3:]] == [
        ("avgpool", "AdaptiveAvgPool2d", (1, 512, 1, 1)), ("flatten", "Flatten", (1, 512)), ("fc", "Linear", (1, 10))]


def test_kuangliu_basic_block_call_builds_his_block():
    ours = rk.BasicBlock(64, 128, 2).eval()
    ref = KuangliuBasicBlock(64, 128, 2).eval()   # kuangliu/pytorch-cifar's block, written out
    give_trained_bn_stats(ref)
    ours.load_state_dict({k.replace("shortcut.", "downsample."): v for k, v in ref.state_dict().items()})
    x = torch.randn(1, 64, 56, 56)
    assert ours(x).shape == (1, 128, 28, 28)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_a_downsample_that_cannot_fit_is_still_refused():
    with pytest.raises(ValueError, match="but the branch gives 1×128×4×4"):
        rk.BasicBlock(64, 128, 2, downsample=nn.Conv2d(64, 128, 1))


# ------------------------------------------------------------------ torchsummary / timm / torchvision habits
def test_summary_without_batch_assumes_one_and_says_so():
    net = rk.create_model("resnet18")
    plain, batched = rk.summary(net, (3, 64, 64), depth=1), rk.summary(net, (1, 3, 64, 64), depth=1)
    assert plain.input_size == (1, 3, 64, 64) and plain.rows == batched.rows
    assert "Note: input_size (3, 64, 64) has no batch dimension: assumed batch 1" in str(plain).splitlines()[1]
    assert batched.note is None and "Note:" not in str(batched)
    conv1d = nn.Sequential(nn.Conv1d(3, 8, 3))           # (N, C, L): three sizes with the batch
    assert rk.summary(conv1d, (2, 3, 16)).input_size == (2, 3, 16)


def test_explain_returns_its_text_without_printing(capsys):
    text = rk.explain(rk.create_model("resnet18"), (3, 224, 224))
    assert capsys.readouterr().out == ""
    assert "conv1: (224 − 7 + 2·3) // 2 + 1 = 112" in str(text) and "assumed batch 1" in str(text)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext101_64x4d", "wide_resnet101_2", "mobilenet_v2"])
def test_pretrained_true_names_torchvisions_file(name):
    weights = torchvision.models.get_model_weights(name)
    v1 = weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]   # e.g. resnet50-0676ba61.pth
    with pytest.raises(ValueError, match=r"never downloads") as e:
        rk.create_model(name, pretrained=True)
    assert f"pretrained='path/to/{v1}'" in str(e.value) and "\n" not in str(e.value)
    for member in weights:                              # weights="IMAGENET1K_V2" and the enum itself
        file = member.url.rsplit("/", 1)[1]
        for given in (member, member.name):
            with pytest.raises(ValueError, match=f"weights='{member.name}'.*{file}"):
                rk.create_model(name, weights=given)


def test_pretrained_true_names_timms_file_or_says_there_is_none():
    import timm

    with pytest.raises(ValueError, match=f"from timm's {timm.models.get_pretrained_cfg('ghostnet_100').hf_hub_id[5:]}"):
        rk.create_model("ghostnet_100", pretrained=True)
    with pytest.raises(ValueError, match="has no published weights: train it with `resnetkit train --model resnet20`"):
        rk.create_model("resnet20", pretrained=True)
    with pytest.raises(TypeError, match="pretrained takes a local checkpoint file"):
        rk.create_model("resnet20", pretrained=1)
    assert rk.create_model("resnet20", weights=None, pretrained=False) is not None   # torchvision's random init


@pytest.mark.parametrize("given, problem", [
    ("0x3x224x224", "N (batch) is 0; every size must be a positive integer"),
    ("1x3x224x-5", "W (width) is -5; every size must be a positive integer"),
    ("1x3xhx224", "H (height) is 'h', not a whole number"),
    ("224x224", "give 4 sizes N x C x H x W (batch, channels, height, width) (or C x H x W for batch 1)"),
])
def test_input_errors_name_the_dimension(capsys, given, problem):
    assert main(["summary", "resnet18", "--input", given]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resnetkit summary: error: --input {given}: {problem}") and err.count("\n") == 1


def test_summary_input_without_batch_means_batch_one(capsys):
    """torchinfo and the books write 3x224x224: batch 1, and the summary says so."""
    assert main(["summary", "resnet50", "--input", "3x224x224", "--depth", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "input 3x224x224 taken as batch 1: 1x3x224x224"
    assert "25,557,032" in out or "25.56 M" in out   # torchvision's published resnet50 parameter count
    assert main(["summary", "resnet50", "--input", "1x3x224x224", "--depth", "0"]) == 0
    assert "taken as batch 1" not in capsys.readouterr().out


def test_list_verbose_shows_family_size_cost_and_input(capsys):
    assert main(["list", "-v", "resnet[25]0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "params", "MACs", "default", "input"]
    # published: torchvision's resnet50 25,557,032 params, 4.09 GMACs; He et al.'s ResNet-20 0.27 M params
    assert lines[1].split() == ["resnet20", "CifarResNet", "269.72", "k", "40.55", "M", "3×32×32"]
    assert lines[2].split() == ["resnet50", "ResNet", "25.56", "M", "4.09", "G", "3×224×224"]
    assert list_cmd.describe("resnet50")[2:4] == (25_557_032, 4_089_184_256)


def test_predict_warns_about_a_bright_background_and_invert_fixes_it(tmp_path, capsys):
    from PIL import Image

    from resnetkit.train import TrainConfig, Trainer, load_dataset

    out = tmp_path / "run"
    Trainer(TrainConfig(model="resnet20", data="mnist5k", image_size=16, max_samples=64, batch_size=32, epochs=1,
                        device="cpu", out=str(out)), progress=False, verbose=False).fit()
    digit = load_dataset("mnist5k", "test").images[0, 0].numpy()           # a real MNIST digit: white on black
    mnist, paint = tmp_path / "mnist.png", tmp_path / "paint.png"
    Image.fromarray(digit, "L").save(mnist)
    Image.fromarray(255 - digit, "L").save(paint)                          # black on white, as drawn in Paint
    run = ["predict", "--checkpoint", str(out / "best.safetensors"), "--device", "cpu"]

    assert main([*run, str(mnist)]) == 0
    as_trained = capsys.readouterr()
    assert as_trained.err == ""
    assert main([*run, str(paint)]) == 0
    warned = capsys.readouterr()
    assert warned.err.startswith(f"resnetkit predict: warning: {paint}: its background is bright (border pixels "
                                 "1.00") and "trained on dark backgrounds" in warned.err and "--invert" in warned.err
    assert main([*run, "--invert", str(paint)]) == 0
    fixed = capsys.readouterr()
    assert fixed.err == "" and fixed.out.replace(str(paint), str(mnist)) == as_trained.out


def test_explain_of_a_lone_block_says_why_its_shortcut_is_what_it_is():
    projected = str(rk.explain(rk.BasicBlock(64, 128, 2), (1, 64, 56, 56))).splitlines()
    assert projected[3] == ("BasicBlock: shortcut = projection `downsample` (Conv 1×1×128 Stride=2, BN): the size "
                            "changes 56×56 → 28×28 and the channels change 64 → 128, so x must be mapped to "
                            "128×28×28 before the addition")
    same = str(rk.explain(rk.InvertedResidual(24, 24, 1, 6), (1, 24, 56, 56))).splitlines()
    assert same[3] == "InvertedResidual: shortcut = identity: input and output are both 24×56×56, so x is added unchanged"
