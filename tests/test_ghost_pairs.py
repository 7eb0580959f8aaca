"""GhostNet's concat-free form (deploy/ghost_pairs.py): exactly the model's outputs, no Concat in the
exported graph, and a candidate of backend="auto" for GhostNet classifiers only."""
import onnx
import pytest
import torch

import resnetkit as rk
from helpers import give_trained_bn_stats
from resnetkit.deploy.ghost_pairs import applies, ghost_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def _ghostnet(name, **kw):
    m = rk.create_model(name, **kw).eval()
    give_trained_bn_stats(m)
    return m


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnet_100", "ghostnet_130"])
def test_equals_the_model(name, batch):
    m = _ghostnet(name)
    x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref, out = m(x), ghost_pairs(m)(x)
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-5
    assert (out.argmax(1) == ref.argmax(1)).all()


def _op_types(model, tmp_path):
    path = rk.export_onnx(model, tmp_path / "m.onnx", input_size=(1, 3, 64, 64))
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_no_concat_left_in_the_exported_graph(tmp_path):
    m = _ghostnet("ghostnet_050")
    assert "Concat" in _op_types(m, tmp_path)
    assert "Concat" not in _op_types(ghost_pairs(m), tmp_path)


def test_applies_to_ghostnet_classifiers_only():
    assert applies(rk.create_model("ghostnet_100", num_classes=10, in_chans=1))
    assert not applies(rk.create_model("ghostnet_100", features_only=True))
    assert not applies(rk.create_model("mobilenet_v2"))
    with pytest.raises(ValueError, match="GhostNet classifier"):
        ghost_pairs(rk.create_model("resnet18"))


def test_auto_times_it_beside_the_plain_engines():
    m = _ghostnet("ghostnet_050", num_classes=10)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fast = rk.optimize_for_inference(m, backend=["onnxruntime", "openvino"], input_size=(4, 3, 64, 64), budget_s=0.5)
    labels = [c.label for c in fast.report]
    assert labels == ["onnxruntime fp32", "onnxruntime fp32 ghost-pairs", "openvino fp32", "openvino fp32 ghost-pairs"]
    assert all(c.deviation < 1e-4 for c in fast.report)
    with torch.no_grad():
        assert ((fast(x) - m(x)).norm() / m(x).norm()).item() <= 1e-4
    assert fast.describe().get("graph") == ("ghost-pairs" if fast.report.chosen.variant else None)
    plain = rk.optimize_for_inference(rk.create_model("resnet18", num_classes=10).eval(),
                                      backend=["onnxruntime", "openvino"], input_size=(1, 3, 32, 32), budget_s=0.2)
    assert not any("ghost-pairs" in c.label for c in plain.report)


def test_export_keeps_the_rewritten_graph_and_says_so(tmp_path, monkeypatch):
    """When auto keeps ghost-pairs, the exported engine file is that graph, and the loaded model says so."""
    import resnetkit.deploy.optimize as optimize

    real_choose = optimize.choose

    def choose_pairs(candidates, *args, **kwargs):   # the timing would decide; here ghost-pairs must win
        report = real_choose(candidates, *args, **kwargs)
        for c in report:
            c.status = "chosen" if c.label == "openvino fp32 ghost-pairs" else ("ok" if c.status == "chosen" else c.status)
        return report

    monkeypatch.setattr(optimize, "choose", choose_pairs)
    m = _ghostnet("ghostnet_050", num_classes=10)
    path = rk.export(m, tmp_path / "m", format="auto", input_size=(2, 3, 64, 64), budget_s=0.2)
    loaded = rk.load_inference(path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert ((loaded(x) - m(x)).norm() / m(x).norm()).item() <= 1e-4
    assert loaded.describe()["graph"] == "ghost-pairs" and loaded.report.chosen.variant == "ghost-pairs"
    assert 'type="Concat"' not in (tmp_path / "m" / "model.xml").read_text()


def test_no_slice_where_the_ghost_widths_are_even(tmp_path):
    # every ghost of ghostnet_100 is even-wide (16, 48, 72, ... 960), so no channel is cut; timm slices anyway,
    # and NNCF quantizes that slice's output again (OpenVINO int8 ran 6% slower with it)
    assert "Slice" not in _op_types(_ghostnet("ghostnet_100"), tmp_path)


def test_odd_ghost_width_is_still_cut_like_timm():
    from timm.models.ghostnet import GhostModule as TimmGhost

    ours, theirs = rk.GhostModule(16, 7).eval(), TimmGhost(16, 7).eval()
    give_trained_bn_stats(ours)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert ours(x).shape == (2, 7, 8, 8)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
