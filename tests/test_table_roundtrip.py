"""Tables that round-trip: to_table's rows rebuild every registered model; the paper's Table 1 builds ResNets.

Round trips run on the meta device (shapes and parameter counts without
allocating weights), so all 24 models take a few seconds.
"""
import pytest
import torch
import torchvision
from torch import nn

import resnetkit as rk
from resnetkit.cli import main
from helpers import count_params, give_trained_bn_stats

# Residual units per model, from the papers' stage depths (ResNet 2-2-2-2 … 3-8-36-3, CIFAR 3n per stage,
# GhostNet's 16 bottlenecks; MobileNetV2's stride-1 same-width blocks: 1 + 2 + 3 + 2 + 2 of its 17).
UNITS = {"resnet18": 8, "resnet34": 16, "resnet50": 16, "resnet101": 33, "resnet152": 50, "resnet50d": 16,
         "resnext50_32x4d": 16, "resnext101_32x8d": 33, "resnext101_64x4d": 33, "wide_resnet50_2": 16,
         "wide_resnet101_2": 33, "cifar_resnet18": 8, "cifar_resnet34": 16, "cifar_resnet50": 16,
         "resnet20": 9, "resnet32": 15, "resnet44": 21, "resnet56": 27, "resnet110": 54, "d2l_resnet18": 8,
         "ghostnet_050": 16, "ghostnet_100": 16, "ghostnet_130": 16, "mobilenet_v2": 10}


def _small_input(model):
    """The model's default input, with ImageNet's 224 shrunk to 64 (d2l keeps 1×28×28, CIFAR 3×32×32)."""
    c, h, w = model.default_input_size
    return (1, c, 64, 64) if h == 224 else (1, c, h, w)


def _declared_inputs(text):
    """(C, H, W) or (F,) per row, read from the Input size column of to_table's text (the traced model's)."""
    sizes = []
    for line in text.splitlines()[1:]:
        nums = [int(n) for n in line.split("|")[1].strip().split("×")]
        sizes.append((nums[2], nums[0], nums[1]) if len(nums) == 3 else tuple(nums))
    return sizes


# Res2Net's hierarchical slices and ResNeSt's split attention have no row form yet: to_table refuses them.
UNTABLED = {n for n in rk.list_models() if n.startswith(("res2ne", "resnest"))}


def test_every_registered_model_is_in_the_table():
    assert set(UNITS) | UNTABLED == set(rk.list_models()) and len(UNTABLED) == 17


@pytest.mark.parametrize("name, what", [("res2net50_26w_4s", "Bottle2neck"), ("resnest14d", "SplitAttention")])
def test_to_table_refuses_blocks_it_cannot_write(name, what):
    with torch.device("meta"):
        model = rk.create_model(name)
    with pytest.raises(rk.TableError, match=f"to_table cannot write {what} as table rows yet"):
        rk.to_table(model, (1, 3, 64, 64))


@pytest.mark.parametrize("name", sorted(UNITS))
def test_to_table_rebuilds_every_model_with_its_shapes_and_parameters(name):
    with torch.device("meta"):
        model = rk.create_model(name)
        size = _small_input(model)
        text = rk.to_table(model, size)
        net = rk.from_table(text)
        expected_out = tuple(model.eval()(torch.zeros(size)).shape)
        outs = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(tuple(o.shape[1:]))) for m in net.children()]
        final = tuple(net.eval()(torch.zeros(size)).shape)
    for h in hooks:
        h.remove()
    assert count_params(net) == count_params(model)
    declared = _declared_inputs(text)
    assert len(outs) == len(declared)
    # each rebuilt row's output is what the model fed its next layer (a map may arrive flattened before an FC)
    for i, (out, nxt) in enumerate(zip(outs, declared[1:]), start=1):
        assert out == nxt or (len(nxt) == 1 and torch.Size(out).numel() == nxt[0]), f"row {i}: {out} vs {nxt}"
    assert final == expected_out
    assert sum(type(m).__name__ == "TableResidual" for m in net.children()) == UNITS[name]


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_torchvision_models_round_trip_with_their_functional_pool(name):
    """torchvision's mobilenet_v2 pools with F.adaptive_avg_pool2d, which no hook sees: the row is still written."""
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)()
        text = rk.to_table(tv, (1, 3, 64, 64))
        net = rk.from_table(text)
    assert count_params(net) == count_params(tv)
    assert text.splitlines()[-2].startswith("| 2×2×") and "| Global avg pool " in text.splitlines()[-2]


def test_ghostnet_rows_show_the_ghost_concat_and_the_se():
    with torch.device("meta"):
        text = rk.to_table(rk.create_model("ghostnet_100"), (1, 3, 64, 64))
    # timm's ghostnet_100 block 4 (24 → 40, k5 s2, SE): ghost 24 → 72 (36 + 36), SE reduces 72 to 20
    assert ("GhostBottleneck: Ghost concat 72 (Conv 1×1×36 + BN, ReLU; Conv 3×3×36 Groups=36 Padding=1 + BN, ReLU)"
            " → Conv 5×5×72 Stride=2 Groups=72 Padding=2 + BN → SE 20 Hardsigmoid → Ghost concat 40 (") in text
    assert "| 1×1×960    | Conv 1×1×1280 Bias " in text  # timm's conv_head has a bias


@torch.no_grad()
def test_rebuilt_ghostnet_block_computes_what_the_block_computes():
    """Same parameters in the same order: copying them over gives the same outputs (ghost concat, SE, shortcut)."""
    block = rk.blocks.GhostBottleneck(24, 72, 40, dw_kernel_size=5, stride=2, se_ratio=0.25).eval()
    text = rk.to_table(nn.Sequential(block), (1, 24, 16, 16))
    row = rk.from_table(text).row1.eval()
    assert [p.shape for p in row.parameters()] == [p.shape for p in block.parameters()]
    for dst, src in zip(row.parameters(), block.parameters()):
        dst.copy_(torch.randn_like(src) * 0.1)
        src.copy_(dst)
    give_trained_bn_stats(row)
    give_trained_bn_stats(block)
    x = torch.randn(2, 24, 16, 16)
    torch.testing.assert_close(row(x), block(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the paper's Table 1
def _paper(depth, separator=True):
    basic = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
    bottleneck = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
    rows = ["| layer name | output size | %d-layer |" % depth]
    rows += ["| --- | --- | --- |"] if separator else []
    rows += ["| conv1   | 112×112 | 7×7, 64, stride 2 |", "| pool    | 56×56   | 3×3 max pool, stride 2 |"]
    for i, (size, width) in enumerate(zip((56, 28, 14, 7), (64, 128, 256, 512))):
        if depth in basic:
            block = f"[3×3, {width}; 3×3, {width}] ×{basic[depth][i]}"
        else:
            block = f"[1×1, {width}; 3×3, {width}; 1×1, {4 * width}] ×{bottleneck[depth][i]}"
        rows.append(f"| conv{i + 2}_x | {size}×{size} | {block} |")
    rows.append("|         | 1×1     | average pool, 1000-d fc, softmax |")
    return "\n".join(rows)


# torchvision's parameter counts (its model docs: 11.7 M, 21.8 M, 25.6 M, 44.5 M, 60.2 M), checked below too
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_paper_table_1_builds_torchvisions_resnets(depth):
    with torch.device("meta"):
        net = rk.from_table(_paper(depth, separator=depth % 2 == 0))
        tv = getattr(torchvision.models, f"resnet{depth}")()
        y = net(torch.zeros(1, 3, 224, 224))
    assert count_params(net) == TORCHVISION_PARAMS[depth] == count_params(tv)
    assert [tuple(p.shape) for p in net.parameters()] == [tuple(p.shape) for p in tv.parameters()]
    assert net.input_size == (3, 224, 224) and tuple(y.shape) == (1, 1000)
    assert list(dict(net.named_children())) == ["conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "row7"]


@torch.no_grad()
@pytest.mark.parametrize("depth", [18, 50])
def test_paper_table_1_computes_what_torchvision_computes(depth):
    """Strides where torchvision puts them (the 3×3 of a bottleneck), projections where shapes change."""
    net = rk.from_table(_paper(depth)).eval()
    tv = getattr(torchvision.models, f"resnet{depth}")().eval()
    give_trained_bn_stats(tv)
    for dst, src in zip(net.state_dict().values(), tv.state_dict().values()):
        dst.copy_(src)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(net(x), tv(x), atol=1e-5, rtol=1e-5)


def test_paper_table_with_chinese_headers_and_x_notation():
    table = _paper(18).replace("| layer name | output size | 18-layer |", "| 层名 | 输出大小 | 18层 |").replace("×", "x")
    with torch.device("meta"):
        assert count_params(rk.from_table(table)) == TORCHVISION_PARAMS[18]


def test_paper_table_with_every_depth_needs_a_column():
    full = "\n".join([
        "| layer name | output size | 18-layer | 50-layer |",
        "| conv1 | 112×112 | 7×7, 64, stride 2 | 7×7, 64, stride 2 |",
        "| conv2_x | 56×56 | 3×3 max pool, stride 2, [3×3, 64; 3×3, 64] ×2 | 3×3 max pool, stride 2 <br> "
        "[1×1, 64; 3×3, 64; 1×1, 256] ×3 |",
        "| | 1×1 | average pool, 1000-d fc, softmax | average pool, 1000-d fc, softmax |",
        "| FLOPs | | 1.8×10^9 | 3.8×10^9 |"])
    with pytest.raises(rk.TableError, match=r"pick one with from_table\(text, column='50-layer'\)"):
        rk.from_table(full)
    with torch.device("meta"):
        net = rk.from_table(full, column="50-layer")
    # conv1 + bn, layer1 of resnet50 and an fc on 256 features
    assert count_params(net) == 9408 + 128 + 215_808 + 256 * 1000 + 1000
    with pytest.raises(rk.TableError, match="no architecture column '34-layer'"):
        rk.from_table(full, column="34-layer")


def _paper_all_depths() -> str:
    """The ResNet paper's Table 1 as printed: one architecture column per depth, 18 to 152."""
    depths = sorted(TORCHVISION_PARAMS)
    columns = [_paper(d).splitlines() for d in depths]
    rows = []
    for cells in zip(*columns):
        parts = [c.strip().strip("|").split("|") for c in cells]
        rows.append("| " + " | ".join([parts[0][0].strip(), parts[0][1].strip()] + [p[2].strip() for p in parts]) + " |")
    return "\n".join(rows)


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_each_column_of_the_five_column_table_1_is_torchvisions_resnet(depth, tmp_path, capsys):
    table = _paper_all_depths()
    assert table.splitlines()[0] == "| layer name | output size | 18-layer | 34-layer | 50-layer | 101-layer | 152-layer |"
    with torch.device("meta"):
        assert count_params(rk.from_table(table, column=f"{depth}-layer")) == TORCHVISION_PARAMS[depth]
    path = tmp_path / "table1.md"
    path.write_text(table)
    assert main(["summary", str(path), "--column", f"{depth}-layer", "--depth", "0"]) == 0
    assert f"{TORCHVISION_PARAMS[depth]:,}" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (("3×3, 128; 3×3, 128", "3×3, 128; 3×3 128"), r"^row 4: block .*write each conv as 'K×K, C'"),
    (("| 28×28   |", "| 30×30   |"), r"^row 4: output size 30×30 cannot follow 56×56"),
    (("| 56×56   | 3×3 max pool", "| 55×55   | 3×3 max pool"), r"^row 2: output size 55×55 but the row computes 56×56"),
    (("7×7, 64, stride 2", "7×7, 64, stride two"), r"^row 1: "),
    (("average pool", "median pool"), r"^row 7: unknown operation 'median pool'"),
    (("| 1×1     |", "| 1×1 | 7 |"), r"^row 7: has 4 cells but the header has 3 columns"),
])
def test_malformed_paper_tables_are_table_errors_naming_the_row(change, message):
    old, new = change
    table = _paper(18, separator=False).replace("| 28×28 ", "| 28×28   ")
    assert old in table
    with pytest.raises(rk.TableError, match=message):
        rk.from_table(table.replace(old, new, 1))


# ---------------------------------------------------------------- the posts' notations
SMALL_NET_ZH = """
| 输入大小    | 操作           | 步长 | 填充 | 快捷连接                  | 之后      |
| 112*112*3  | conv 5x5, 64   | 2   | 2   |                          | BN，ReLU |
| 56*56*64   | max pool 3x3   | 2   | 1   |                          |          |
| 28*28*64   | conv 3x3, 128  | 2   | 1   | conv 1x1, 128, stride 2  | BN, ReLU |
| 14*14*128  | 3×3 conv, 256  | 1   | 1   | 1×1 conv, 256            | BN, ReLU |
| 14*14*256  | Conv 3×3×128   | 1   | 1   | Conv 1×1×128 Stride=1    | BN, ReLU |
"""
# the CONTRACT §4 net, by hand: 5·5·3·64 + 3·3·64·128 + 64·128 + 3·3·128·256 + 128·256 + 3·3·256·128 + 256·128
# conv weights and 2·(64 + 128 + 256 + 128) BN weights
SMALL_NET_PARAMS = (5 * 5 * 3 * 64 + 9 * 64 * 128 + 64 * 128 + 9 * 128 * 256 + 128 * 256 + 9 * 256 * 128
                    + 256 * 128 + 2 * (64 + 128 + 256 + 128))


@pytest.mark.parametrize("variant", ["as written", "捷径/激活/输入尺寸"])
def test_chinese_headers_star_sizes_and_comma_convs_build_the_small_net(variant):
    table = SMALL_NET_ZH if variant == "as written" else \
        SMALL_NET_ZH.replace("快捷连接", "捷径").replace("之后", "激活").replace("输入大小", "输入尺寸")
    net = rk.from_table(table)
    assert tuple(net(torch.zeros(1, 3, 112, 112)).shape) == (1, 128, 14, 14)
    assert count_params(net) == SMALL_NET_PARAMS
    assert net.row3.shortcut[0].stride == (2, 2) and net.row1[0].kernel_size == (5, 5)


def test_a_wrong_size_in_the_chinese_table_names_the_row():
    with pytest.raises(rk.TableError, match=r"^row 4: declared input size 14×14×64 "):
        rk.from_table(SMALL_NET_ZH.replace("| 14*14*128 ", "| 14*14*64  "))
