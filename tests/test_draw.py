"""rk.draw / `resnetkit draw`: the blocks, shapes and shortcuts drawn, checked against torchvision's and timm's
own models (forward hooks), torch's flop counter and facts written out from the papers, the d2l book and the
contract; valid PNG and SVG files; folding of resnet152's repeated blocks; clear errors."""
import doctest
import importlib
import sys
import xml.etree.ElementTree as ET

import pytest
import timm
import torch
import torchvision
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import resnetkit as rk
from resnetkit.cli import main
from test_table import SEED as TABLE  # the contract's small residual net: 1×3×112×112 → 1×128×14×14

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def svg_texts(path):
    """Every <text> of an SVG, one entry per drawn line."""
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()) for el in root.iter("{http://www.w3.org/2000/svg}text")]


def reason(in_shape, out_shape, extra=()):
    """Why a unit's input cannot be added unchanged, from the reference's own tensor shapes."""
    (ci, hi, _), (co, ho, _) = in_shape[1:], out_shape[1:]
    why = ([f"stride {hi // ho}"] if hi != ho else []) + ([f"{ci}→{co} ch"] if ci != co else [])
    return ", ".join([*why, *extra])


def reference_units(ref, size, kind_of):
    """(name, type, output C×H×W, shortcut kind, reason) of each block of a torchvision/timm model, by hooks."""
    units, handles = [], []
    for name, m in ref.named_modules():
        kind = kind_of(m)
        if kind is not None:
            def hook(mod, args, out, name=name, kind=kind):
                why = reason(args[0].shape, out.shape) if kind != "identity" else ""
                units.append((name, type(mod).__name__, "×".join(map(str, out.shape[1:])), kind, why))
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        ref.eval()(torch.zeros(size))
    for h in handles:
        h.remove()
    return units


def tv_resnet_kind(m):
    if isinstance(m, (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)):
        return "identity" if m.downsample is None else "projection"
    return None


def tv_mobilenet_kind(m):
    if isinstance(m, torchvision.models.mobilenetv2.InvertedResidual):
        return "identity" if m.use_res_connect else "none"
    return None


def timm_ghost_kind(m):
    if isinstance(m, timm.models.ghostnet.GhostBottleneck):
        return "projection" if len(m.shortcut) else "identity"
    return None


REFERENCES = {  # name: (reference constructor, input size, how the reference marks its shortcut)
    "resnet18": (torchvision.models.resnet18, (1, 3, 64, 64), tv_resnet_kind),
    "resnet50": (torchvision.models.resnet50, (1, 3, 64, 64), tv_resnet_kind),
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, (1, 3, 64, 64), tv_resnet_kind),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, (1, 3, 64, 64), tv_mobilenet_kind),
    "ghostnet_100": (lambda: timm.create_model("ghostnet_100"), (1, 3, 64, 64), timm_ghost_kind),
}

# He et al. 2015 §4.2: 6n+2 layers, n = 3 blocks per stage at 16/32/64 channels on 32/16/8 maps, option A
# (subsample + zero-pad, no parameters) where the shape changes.
RESNET20 = [(f"layer{s + 1}.{b}", "BasicBlock", f"{c}×{h}×{h}",
             "projection" if s and not b else "identity",
             f"stride 2, {c // 2}→{c} ch, no params" if s and not b else "")
            for s, (c, h) in enumerate([(16, 32), (32, 16), (64, 8)]) for b in range(3)]
# The d2l book (§8.6) prints b2…b5 at 96×96: 64×24×24, 128×12×12, 256×6×6, 512×3×3; the first Residual of
# b3, b4, b5 uses its 1×1 conv (use_1x1conv=True, strides=2).
D2L = [(f"b{s + 2}.{b}", "Residual", f"{c}×{h}×{h}", "projection" if s and not b else "identity",
        f"stride 2, {c // 2}→{c} ch" if s and not b else "")
       for s, (c, h) in enumerate([(64, 24), (128, 12), (256, 6), (512, 3)]) for b in range(2)]
# The contract's table: rows 3-5 are residual units with 1×1 conv shortcuts.
TABLE_UNITS = [("row3", "TableResidual", "128×14×14", "projection", "stride 2, 64→128 ch"),
               ("row4", "TableResidual", "256×14×14", "projection", "128→256 ch"),
               ("row5", "TableResidual", "128×14×14", "projection", "256→128 ch")]
FACTS = {"resnet20": ((1, 3, 32, 32), RESNET20), "d2l_resnet18": ((1, 1, 96, 96), D2L),
         "table": ((1, 3, 112, 112), TABLE_UNITS)}


def expected(family):
    if family in REFERENCES:
        ctor, size, kind_of = REFERENCES[family]
        return size, reference_units(ctor(), size, kind_of)
    return FACTS[family]


def build(family):
    return rk.from_table(TABLE) if family == "table" else rk.create_model(family)


@pytest.mark.parametrize("family", [*REFERENCES, *FACTS])
def test_every_block_shape_and_shortcut_is_drawn(family, tmp_path):
    size, units = expected(family)
    model = build(family)
    svg, png = tmp_path / "net.svg", tmp_path / "net.png"
    fig = rk.draw(model, size, svg, fold=0)
    texts = svg_texts(svg)
    for name, kind_name, shape, _, why in units:
        assert f"{name} · {kind_name}" in texts
        assert f"→ {shape}" in texts
        if why:
            assert why in texts, f"{name}: reason {why!r} not drawn"
    for kind, label in (("identity", "identity"), ("projection", "projection"), ("none", "no shortcut")):
        assert texts.count(label) == sum(u[3] == kind for u in units), label

    rk.draw(model, size, png, fold=0)
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        width, height = im.size
    assert (width, height) == tuple(round(v * fig.dpi) for v in fig.get_size_inches())
    assert 500 <= width <= 4000 and 150 <= height <= 2000


def si(n):
    """The papers' decimal prefixes, two decimals: 147968 -> '147.97 k'."""
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {prefix}"
    return str(n)


def test_stage_headers_give_torchvision_params_and_torch_counted_macs(tmp_path):
    ref = torchvision.models.resnet18().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ref(torch.zeros(1, 3, 64, 64))
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    rk.draw(rk.create_model("resnet18"), (1, 3, 64, 64), tmp_path / "r18.svg")
    texts = svg_texts(tmp_path / "r18.svg")
    for i, stride, shape in ((1, 4, "64×16×16"), (2, 8, "128×8×8"), (3, 16, "256×4×4"), (4, 32, "512×2×2")):
        layer = getattr(ref, f"layer{i}")
        params = sum(p.numel() for p in layer.parameters())
        assert f"{si(params)} params · {si(flops[f'ResNet.layer{i}'] // 2)} MACs" in texts
        assert f"stage {i} · stride {stride}" in texts and f"→ {shape}" in texts
    assert f"ResNet · input 3×64×64 · 11.69 M params · {si(flops['ResNet'] // 2)} MACs" in texts  # 11,689,512


def test_resnet152_folds_its_repeated_blocks(tmp_path):
    """[3, 8, 36, 3] Bottlenecks; the first of each stage projects, the rest are identical identity blocks."""
    depths = [3, 8, 36, 3]
    model = rk.create_model("resnet152")
    rk.draw(model, (1, 3, 32, 32), tmp_path / "folded.svg")
    texts = svg_texts(tmp_path / "folded.svg")
    blocks = [t for t in texts if "· Bottleneck" in t]
    for stage, n in enumerate(depths, 1):
        if n - 1 >= 3:  # runs of 3 or more fold (the default)
            assert f"layer{stage}.1 … layer{stage}.{n - 1} · Bottleneck ×{n - 1}" in blocks
        else:
            assert all(f"layer{stage}.{b} · Bottleneck" in blocks for b in range(n))
    assert "layer3.1 … layer3.35 · Bottleneck ×35" in blocks and "layer3.5 · Bottleneck" not in texts
    assert len(blocks) == sum(2 if n - 1 >= 3 else n for n in depths) == 10
    assert texts.count("projection") == 4

    rk.draw(model, (1, 3, 32, 32), tmp_path / "all.svg", fold=0)
    every = [t for t in svg_texts(tmp_path / "all.svg") if "· Bottleneck" in t]
    assert every == [f"layer{s}.{b} · Bottleneck" for s, n in enumerate(depths, 1) for b in range(n)]


def test_figure_is_agg_and_svg_keeps_text(tmp_path):
    fig = rk.draw(rk.create_model("resnet20"), (1, 3, 32, 32), tmp_path / "r20.svg")
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    svg = (tmp_path / "r20.svg").read_text(encoding="utf-8")
    assert "layer1.0 … layer1.2 · BasicBlock ×3" in svg  # text, not glyph outlines
    assert 'id="DejaVuSans-' not in svg


def test_bad_paths_and_options_are_refused_clearly(tmp_path):
    model = rk.create_model("resnet20")
    with pytest.raises(ValueError, match=r"unknown file type '\.jpg'.*\.png or \.svg"):
        rk.draw(model, (1, 3, 32, 32), tmp_path / "net.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rk.draw(model, (1, 3, 32, 32), tmp_path / "missing" / "net.png")
    with pytest.raises(ValueError, match="fold must be >= 0"):
        rk.draw(model, (1, 3, 32, 32), fold=-1)
    with pytest.raises(TypeError, match="fold must be an int"):
        rk.draw(model, (1, 3, 32, 32), fold="3")
    assert list(tmp_path.iterdir()) == []


def test_cli_draws_a_model_and_a_table_file(tmp_path, capsys):
    out = tmp_path / "r18.png"
    assert main(["draw", "resnet18", "--input", "1x3x64x64", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and f"wrote {out}" in capsys.readouterr().out
    table, svg = tmp_path / "net.md", tmp_path / "net.svg"
    table.write_text(TABLE, encoding="utf-8")
    assert main(["draw", str(table), "--out", str(svg)]) == 0
    texts = svg_texts(svg)
    assert "row3 · TableResidual" in texts and "→ 128×14×14" in texts and "TableNet · input 3×112×112" in texts[0]


def test_cli_refuses_a_bad_out_suffix(tmp_path, capsys):
    assert main(["draw", "resnet18", "--out", str(tmp_path / "net.gif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnetkit draw: error: ") and "unknown file type '.gif'" in err and ".png or .svg" in err
    assert list(tmp_path.iterdir()) == []


def test_stages_follow_feature_levels_and_else_the_resolution(tmp_path):
    """With dilation, layer3/layer4 keep stride 8 but stay stages of their own (the model's feature levels);
    torchvision's model has no levels, so its units are grouped where the resolution changes."""
    dilation = (False, True, True)
    rk.draw(rk.create_model("resnet50", replace_stride_with_dilation=dilation), (1, 3, 64, 64), tmp_path / "o.svg")
    ref = torchvision.models.resnet50(replace_stride_with_dilation=list(dilation))
    texts = svg_texts(tmp_path / "o.svg")
    assert [t for t in texts if t.startswith("stage ")] == [
        "stage 1 · stride 4", "stage 2 · stride 8", "stage 3 · stride 8", "stage 4 · stride 8"]
    for i in (3, 4):
        params = sum(p.numel() for p in getattr(ref, f"layer{i}").parameters())
        assert any(t.startswith(f"{si(params)} params · ") for t in texts)
    rk.draw(ref, (1, 3, 64, 64), tmp_path / "tv.svg")
    assert [t for t in svg_texts(tmp_path / "tv.svg") if t.startswith("stage ")] == [
        "stage 1 · stride 4", "stage 2 · stride 8"]


def test_docstring_example_runs():
    result = doctest.testmod(importlib.import_module("resnetkit.inspect.draw"))
    assert result.attempted > 0 and result.failed == 0


def test_a_block_or_a_layer_drawn_on_its_own_and_a_size_without_batch(tmp_path):
    """kuangliu's BasicBlock(64, 128, 2) builds its own 1×1 projection; torchsummary's (C, H, W) means batch 1."""
    rk.draw(rk.BasicBlock(64, 128, 2), (64, 16, 16), tmp_path / "block.svg")
    texts = svg_texts(tmp_path / "block.svg")
    assert texts[0].startswith("BasicBlock · input 64×16×16")
    assert ["BasicBlock", "→ 128×8×8", "projection", "stride 2, 64→128 ch"] == texts[texts.index("BasicBlock"):][:4]
    rk.draw(torch.nn.Conv2d(3, 8, 3), (1, 3, 8, 8), tmp_path / "conv.svg")
    assert "Conv 3×3×8 Bias" in svg_texts(tmp_path / "conv.svg") and "→ 8×6×6" in svg_texts(tmp_path / "conv.svg")


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ImportError, match=r"rk.draw needs matplotlib.*pip install 'resnetkit\[train\]'"):
        rk.draw(rk.create_model("resnet20"), (1, 3, 32, 32))
