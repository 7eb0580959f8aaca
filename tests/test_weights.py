"""Weight files (CONTRACT §6): torchvision, timm, mmdet and resnetkit checkpoints, refused pickles,
bad files. References are the real libraries' models and key names, never our own mapping."""
import argparse
import logging
import os
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

import resnetkit as rk
from helpers import give_trained_bn_stats
from resnetkit.weights import WeightsError

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tv50():
    torch.manual_seed(0)
    ref = torchvision.models.resnet50().eval()
    give_trained_bn_stats(ref)
    return ref


@pytest.fixture(scope="module")
def tv50_out(tv50):
    with torch.no_grad():
        return tv50(X)


def _c5(tv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's layer4 output, computed from its own modules."""
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


# ------------------------------------------------------------------ round trip / own formats
def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    src = rk.create_model("resnet18", num_classes=5)
    give_trained_bn_stats(src)
    path = rk.save_weights(src, tmp_path / "r18.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["model_name"] == "resnet18"
    dst = rk.create_model("resnet18", num_classes=5)
    r = rk.load_weights(dst, path)
    assert (r.missing_keys, r.unexpected_keys, r.layout) == ([], [], None)
    a, b = src.state_dict(), dst.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resnetkit_last_pt_and_timm_train_checkpoint(tmp_path):
    src = rk.create_model("resnet18", num_classes=3)
    sd = src.state_dict()
    last = {"format": "resnetkit-train-1", "epoch": 2, "model": sd, "meta": {"model": "resnet18", "num_classes": 3},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}
    torch.save(last, tmp_path / "last.pt")
    # timm's train.py stores argparse args next to the weights
    timm_ckpt = {"epoch": 3, "arch": "resnet18", "state_dict": sd, "args": argparse.Namespace(lr=0.1, epochs=3),
                 "version": 2}
    torch.save(timm_ckpt, tmp_path / "timm.pth.tar")
    for name in ("last.pt", "timm.pth.tar"):
        dst = rk.create_model("resnet18", num_classes=3)
        rk.load_weights(dst, tmp_path / name)
        assert torch.equal(dst.fc.weight, src.fc.weight)


# ------------------------------------------------------------------ torchvision / timm
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_resnet50_file_gives_torchvision_outputs(tmp_path, fmt, tv50, tv50_out):
    path = tmp_path / f"tv.{fmt}"
    if fmt == "pth":
        torch.save(tv50.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tv50.state_dict().items()}, str(path))
    m = rk.create_model("resnet50", pretrained=str(path)).eval()
    with torch.no_grad():
        _close(m(X), tv50_out)


def test_features_only_backbone_takes_a_full_checkpoint(tmp_path, tv50):
    torch.save(tv50.state_dict(), tmp_path / "tv.pth")
    f = rk.create_model("resnet50", features_only=True, out_indices=(4,), pretrained=str(tmp_path / "tv.pth"))
    with torch.no_grad():
        _close(f.eval()(X)[0], _c5(tv50, X))


@pytest.mark.parametrize("name", ["resnet50", "resnet50d"])
def test_timm_resnet_state_dict(name):
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()
    give_trained_bn_stats(ref)
    m = rk.create_model(name).eval()
    r = rk.load_weights(m, ref.state_dict())  # resnet50d: layer1's shortcut has timm's Identity pool slot too
    assert r.missing_keys == r.unexpected_keys == []
    with torch.no_grad():
        _close(m(X), ref(X))


def test_timm_mobilenetv2_names_map_onto_torchvision_layout():
    torch.manual_seed(0)
    ref = timm.create_model("mobilenetv2_100").eval()
    give_trained_bn_stats(ref)
    for m in (torchvision.models.mobilenet_v2(), rk.create_model("mobilenet_v2")):
        r = rk.load_weights(m.eval(), ref.state_dict())
        assert r.layout == "timm MobileNetV2" and r.missing_keys == r.unexpected_keys == []
        with torch.no_grad():
            _close(m(X), ref(X))


def test_timm_ghostnet_state_dict():
    torch.manual_seed(0)
    ref = timm.create_model("ghostnet_050").eval()
    give_trained_bn_stats(ref)
    m = rk.create_model("ghostnet_050").eval()
    rk.load_weights(m, ref.state_dict())
    with torch.no_grad():
        _close(m(X), ref(X))


# ------------------------------------------------------------------ mmdet / mmpretrain
def _mmdet_checkpoint(backbone_sd: dict) -> dict:
    """An mmdet detector checkpoint: the backbone under ``backbone.`` next to neck and heads
    (names from mmdet's FPN / RPNHead / Shared2FCBBoxHead), wrapped with meta and optimizer."""
    sd = {f"backbone.{k}": v for k, v in backbone_sd.items()}
    sd.update({"neck.lateral_convs.0.conv.weight": torch.zeros(256, 256, 1, 1),
               "neck.fpn_convs.0.conv.bias": torch.zeros(256),
               "rpn_head.rpn_conv.weight": torch.zeros(256, 256, 3, 3),
               "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024)})
    return {"meta": {"mmdet_version": "2.25.0", "epoch": 12, "CLASSES": ("person", "bicycle")},
            "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}


def test_mmdet_resnet50_checkpoint_reproduces_torchvision(tmp_path, tv50, tv50_out, caplog):
    # mmdet's ResNet names BNs with mmcv's abbreviation ("bn1"), its shortcut "downsample.0/1":
    # the backbone's own names are torchvision's, minus the fc.
    backbone = {k: v for k, v in tv50.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "faster_rcnn_r50_fpn.pth"
    torch.save(_mmdet_checkpoint(backbone), path)

    f = rk.create_model("resnet50", features_only=True, pretrained=str(path)).eval()
    with torch.no_grad():
        _close(f(X)[-1], _c5(tv50, X))

    m = rk.create_model("resnet50")
    with pytest.raises(WeightsError, match="fc.weight") as err:
        rk.load_weights(m, path)
    assert "backbone checkpoint" in str(err.value) and str(path) in str(err.value)
    with caplog.at_level(logging.INFO, logger="resnetkit.weights"):
        r = rk.load_weights(m, path, strict=False)
    assert r.missing_keys == ["fc.weight", "fc.bias"] and r.unexpected_keys == []
    assert sorted(r.ignored_keys) == sorted(k for k in _mmdet_checkpoint({})["state_dict"])
    assert "fc.weight" in caplog.text and "neck.lateral_convs" in caplog.text
    with torch.no_grad():
        _close(m.eval().forward_features(X), _c5(tv50, X))


def test_mmpretrain_classifier_head_fc_maps_to_fc(tmp_path, tv50, tv50_out):
    sd = {("head." if k.startswith("fc.") else "backbone.") + k: v for k, v in tv50.state_dict().items()}
    torch.save({"meta": {}, "state_dict": sd}, tmp_path / "mmpretrain.pth")
    m = rk.create_model("resnet50", pretrained=str(tmp_path / "mmpretrain.pth")).eval()
    with torch.no_grad():
        _close(m(X), tv50_out)


def _mmdet_deep_stem() -> nn.Sequential:
    """mmdet ResNet._make_stem_layer(deep_stem=True): (conv 3×3, BN, ReLU) × 3, widths 32, 32, 64."""
    layers = []
    for cin, cout, stride in ((3, 32, 2), (32, 32, 1), (32, 64, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def test_mmdet_deep_stem_checkpoint_into_resnet50d(tmp_path):
    torch.manual_seed(0)
    stem = _mmdet_deep_stem().eval()
    give_trained_bn_stats(stem)
    donor = rk.create_model("resnet50d").eval()  # mmdet ResNetV1d's ResLayers have our layer names
    give_trained_bn_stats(donor)
    body = {k: v for k, v in donor.state_dict().items() if k.startswith("layer")}
    body.update({f"stem.{k}": v for k, v in stem.state_dict().items()})
    torch.save(_mmdet_checkpoint(body), tmp_path / "r50v1d.pth")
    m = rk.create_model("resnet50d", features_only=True, pretrained=str(tmp_path / "r50v1d.pth")).eval()
    with torch.no_grad():
        _close(m.relu(m.bn1(m.conv1(X))), stem(X))
        ref = donor.maxpool(stem(X))
        for layer in (donor.layer1, donor.layer2, donor.layer3, donor.layer4):
            ref = layer(ref)
        _close(m(X)[-1], ref)


# ------------------------------------------------------------------ prefixes, classifier, stems
def test_ddp_and_compile_prefixes(tmp_path):
    torch.manual_seed(0)
    src = rk.create_model("resnet18", num_classes=4)
    wrapped = {"DataParallel": nn.DataParallel(src), "compile": torch.compile(src),
               "DataParallel+compile": nn.DataParallel(torch.compile(src))}
    assert all(k.startswith("module.") for k in wrapped["DataParallel"].state_dict())
    assert all(k.startswith("_orig_mod.") for k in wrapped["compile"].state_dict())
    for name, w in wrapped.items():
        torch.save({"model": w.state_dict()}, tmp_path / "w.pt")
        dst = rk.create_model("resnet18", num_classes=4)
        rk.load_weights(dst, tmp_path / "w.pt")
        assert torch.equal(dst.layer4[1].conv2.weight, src.layer4[1].conv2.weight), name
    # and into a wrapped model; save_weights unwraps too
    dst = nn.DataParallel(rk.create_model("resnet18", num_classes=4))
    rk.load_weights(dst, rk.save_weights(torch.compile(src), tmp_path / "plain.safetensors"))
    assert torch.equal(dst.module.fc.weight, src.fc.weight)


def test_classifier_of_another_size_is_dropped_with_a_warning(tmp_path, tv50):
    torch.save(tv50.state_dict(), tmp_path / "tv.pth")
    m = rk.create_model("resnet50", num_classes=10)
    own_fc = m.fc.weight.clone()
    with pytest.warns(UserWarning, match="classifier 'fc' has 1000 outputs but resnet50's has 10"):
        r = rk.load_weights(m, tmp_path / "tv.pth")  # strict: the dropped head is not "missing"
    assert sorted(r.ignored_keys) == ["fc.bias", "fc.weight"] and r.missing_keys == []
    assert torch.equal(m.fc.weight, own_fc)
    assert torch.equal(m.layer1[0].conv1.weight, tv50.layer1[0].conv1.weight)
    # a model without a classifier (num_classes=0) takes the same file quietly
    r0 = rk.load_weights(rk.create_model("resnet50", num_classes=0), tmp_path / "tv.pth")
    assert sorted(r0.ignored_keys) == ["fc.bias", "fc.weight"]


def test_7x7_and_deep_stem_mismatch_is_one_clear_message(tmp_path, tv50):
    torch.save(tv50.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(WeightsError) as err:
        rk.create_model("resnet50d", pretrained=str(tmp_path / "tv.pth"))
    msg = str(err.value)
    assert "7×7 stem" in msg and "deep stem" in msg and "deep_stem=False" in msg
    assert "\n" not in msg and "layer" not in msg  # one message, not a wall of size mismatches
    rk.save_weights(rk.create_model("resnet50d"), tmp_path / "d.safetensors")
    with pytest.raises(WeightsError, match=r"deep stem .* but resnet50 has a 7×7 stem; .*deep_stem=True"):
        rk.load_weights(rk.create_model("resnet50"), tmp_path / "d.safetensors")
    with pytest.warns(UserWarning, match="7×7 stem"):
        r = rk.load_weights(rk.create_model("resnet50d"), tmp_path / "tv.pth", strict=False)
    assert "conv1.weight" in r.unexpected_keys and "conv1.0.weight" in r.missing_keys


def test_strict_false_returns_and_logs_the_differences(caplog):
    src = rk.create_model("resnet18").state_dict()
    src = {k: v for k, v in src.items() if not k.startswith("layer4.1.")}
    src["extra.weight"] = torch.zeros(3)
    src["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    m = rk.create_model("resnet18")
    with pytest.raises(WeightsError, match="missing.*layer4.1.conv1.weight") as err:
        rk.load_weights(m, src)
    assert "extra.weight" in str(err.value) and "(64, 64, 1, 1) vs model (64, 64, 3, 3)" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="resnetkit.weights"):
        r = rk.load_weights(m, src, strict=False)
    assert "layer4.1.conv1.weight" in r.missing_keys and r.unexpected_keys == ["extra.weight"]
    assert r.mismatched_keys == ["layer1.0.conv1.weight"]
    assert "missing" in caplog.text and "extra.weight" in caplog.text


# ------------------------------------------------------------------ files that are not checkpoints
class _WritesMarker:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "pickle.dump protocol 4", "named .safetensors"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / ("evil.safetensors" if how == "named .safetensors" else "evil.pth")
    if how.startswith("pickle.dump"):  # no tensor inside: the marker object is the only thing refused
        protocol = 4 if how.endswith("4") else 2   # 4: Python's default, which torch's safe loader cannot read
        path.write_bytes(pickle.dumps({"state_dict": {}, "meta": _WritesMarker(str(marker))}, protocol=protocol))
    else:
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "meta": _WritesMarker(str(marker))}, path)
    with pytest.raises(WeightsError) as err:
        rk.load_weights(rk.create_model("resnet18"), path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
    # the same object unpickled normally would have written the marker: the test can fail
    pickle.loads(pickle.dumps(_WritesMarker(str(marker))))
    assert marker.exists()


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pth"
    torch.save(rk.create_model("resnet18").state_dict(), good)
    st = rk.save_weights(rk.create_model("resnet18"), tmp_path / "good.safetensors")
    files = {"random bytes": os.urandom(4096), "text": b"model: resnet50\nepochs: 10\n",
             "empty": b"", "truncated zip": good.read_bytes()[: good.stat().st_size // 2],
             "truncated safetensors": st.read_bytes()[: st.stat().st_size // 2]}
    paths = {}
    for what, data in files.items():
        p = tmp_path / f"{what.replace(' ', '_')}.pth"
        p.write_bytes(data)
        paths[what] = p
    paths["list pickle"] = tmp_path / "list.pt"
    torch.save(["not", "weights", 1], paths["list pickle"])
    paths["dict of strings"] = tmp_path / "strings.pt"
    torch.save({"model": {"conv1.weight": "oops"}}, paths["dict of strings"])
    return paths


@pytest.mark.parametrize("seed", range(8))
def test_corrupt_pickle_is_called_corrupt_not_refused(tmp_path, seed):
    """Damage makes torch's safe unpickler trip on an unknown opcode or memo key: that is no code to refuse."""
    import random
    path = tmp_path / "damaged.pth"
    path.write_bytes(b"\x80\x02" + random.Random(seed).randbytes(256))
    with pytest.raises(WeightsError) as err:
        rk.load_weights(rk.create_model("resnet18"), path)
    assert str(path) in str(err.value) and "truncated or corrupt" in str(err.value)
    assert "refused" not in str(err.value) and "run code" not in str(err.value)


def test_blocked_module_global_is_refused(tmp_path):
    class _CallsSystem:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "system.pth"
    path.write_bytes(pickle.dumps({"state_dict": _CallsSystem()}, protocol=2))
    with pytest.raises(WeightsError, match=r"was refused: .*GLOBAL (posix|nt)\.system whose module .* is blocked\)"):
        rk.load_weights(rk.create_model("resnet18"), path)


def test_files_that_are_not_checkpoints_give_clear_errors(tmp_path):
    expect = {"random bytes": "not a checkpoint", "text": "text file", "empty": "empty",
              "truncated zip": "truncated or corrupt", "truncated safetensors": "truncated or corrupt",
              "list pickle": "no state dict", "dict of strings": "no state dict"}
    for what, path in _bad_files(tmp_path).items():
        with pytest.raises(WeightsError) as err:
            rk.load_weights(rk.create_model("resnet18"), path)
        assert str(path) in str(err.value), what
        assert expect[what] in str(err.value), (what, str(err.value))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        rk.load_weights(rk.create_model("resnet18"), tmp_path / "nowhere.pth")
    assert issubclass(WeightsError, ValueError)
