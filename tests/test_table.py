"""Layer tables: from_table builds and checks, to_table describes, TableError is the only failure."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import resnetkit as rk
from golden_files import assert_golden
from helpers import count_params

SEED = """
| Input size | Operation   | Stride | Padding | Shortcut              | After    |
| 112×112×3  | Conv 5×5×64 | 2      | 2       |                       | BN, ReLU |
| 56×56×64   | Max pool 3×3| 2      | 1       |                       |          |
| 28×28×64   | Conv 3×3×128| 2      | 1       | Conv 1×1×128 Stride=2 | BN, ReLU |
| 14×14×128  | Conv 3×3×256| 1      | 1       | Conv 1×1×256 Stride=1 | BN, ReLU |
| 14×14×256  | Conv 3×3×128| 1      | 1       | Conv 1×1×128 Stride=1 | BN, ReLU |
"""


def test_seed_table_builds_and_maps_112_to_14():
    net = rk.from_table(SEED)
    assert isinstance(net, nn.Module)
    assert tuple(net(torch.zeros(1, 3, 112, 112)).shape) == (1, 128, 14, 14)
    assert net.output_size == (128, 14, 14) and net.input_size == (3, 112, 112)
    # 5·5·3·64 + BN, 3·3·64·128 + 1·1·64·128 + BN, ...: every weight the table asks for and nothing else
    convs = 5 * 5 * 3 * 64 + 9 * 64 * 128 + 64 * 128 + 9 * 128 * 256 + 128 * 256 + 9 * 256 * 128 + 256 * 128
    bns = 2 * (64 + 128 + 256 + 128)
    assert count_params(net) == convs + bns


def test_x_and_times_sign_are_the_same():
    a, b = rk.from_table(SEED), rk.from_table(SEED.replace("×", "x"))
    assert [tuple(p.shape) for p in a.parameters()] == [tuple(p.shape) for p in b.parameters()]


def test_shortcut_is_added_before_the_activation():
    net = rk.from_table(SEED).eval()
    helpers_bn_stats(net)
    unit = net.row3
    x = torch.randn(2, 64, 28, 28)
    conv, bn = unit.branch[0], unit.branch[1]
    expected = torch.relu(bn(conv(x)) + unit.shortcut(x))
    torch.testing.assert_close(unit(x), expected)
    assert [type(m) for m in unit.post] == [nn.ReLU]


def helpers_bn_stats(net):
    from helpers import give_trained_bn_stats
    give_trained_bn_stats(net)


def test_blank_cells_mean_none_and_markdown_separator():
    table = """
    | Input size | Operation   | Stride | Padding | Shortcut | After |
    |------------|-------------|--------|---------|----------|-------|
    | 8x8x3      | Conv 3x3x4  |        |         |          |       |
    | 6x6x4      | Avg pool 2x2| 2      |         |          | ReLU  |
    | 3x3x4      | Conv 3x3x4  |        | 1       | Identity | BN    |
    """
    net = rk.from_table(table)
    assert net.row1[0].stride == (1, 1) and net.row1[0].padding == (0, 0) and len(net.row1) == 1
    assert isinstance(net.row3.shortcut, nn.Identity) and len(net.row3.post) == 0
    assert tuple(net(torch.zeros(1, 3, 8, 8)).shape) == (1, 4, 3, 3)


def test_columns_may_be_fewer_and_in_any_order():
    net = rk.from_table("| Operation | Input size |\n| Conv 3×3×8 Stride=2 Padding=1 | 32×32×3 |\n"
                        "| Global avg pool | 16×16×8 |\n| FC 10 | 1×1×8 |")
    assert tuple(net(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)


def test_wrong_declared_size_names_row_sizes_and_formula():
    bad = SEED.replace("| 28×28×64 ", "| 27×27×64 ")
    with pytest.raises(rk.TableError) as info:
        rk.from_table(bad)
    e = info.value
    assert isinstance(e, ValueError)
    assert str(e).startswith("row 3:")
    assert (e.row, e.declared, e.computed) == (3, "27×27×64", "28×28×64")
    assert e.formula == "(56 − 3 + 2·1) // 2 + 1 = 28" and e.formula in str(e)


def test_wrong_declared_channels_are_caught():
    with pytest.raises(rk.TableError, match=r"row 4: declared input size 14×14×64 .* gives 14×14×128"):
        rk.from_table(SEED.replace("| 14×14×128 ", "| 14×14×64  "))


@pytest.mark.parametrize("change, message", [
    (("Max pool 3×3", "Min pool 3×3"), r"row 2: unknown operation 'Min pool 3×3'"),
    (("Conv 5×5×64 | 2 ", "Conv 5×5×64 | two "), r"row 1: Stride must be a whole number"),
    (("Shortcut", "Skip"), r"unknown column 'Skip'"),
    (("Conv 1×1×128 Stride=2", "Conv 1×1×128 Stride=1"), r"row 3: the shortcut .* gives 28×28×128 .* 14×14×128"),
    (("Conv 1×1×256 Stride=1", "Conv 1×1×64 Stride=1"), r"row 4: the shortcut"),
    (("BN, ReLU |\n| 56", "BN, Relu9 |\n| 56"), r"row 1: unknown layer 'Relu9'"),
    (("| 112×112×3  |", "| 112×112    |"), r"row 1: input size '112×112' must be H×W×C"),
    (("Conv 5×5×64", "Conv 5×5×64 Groups=5"), r"row 1: .*Groups=5 must divide"),
    (("Conv 5×5×64", "Conv 199×199×64"), r"row 1: Conv 199×199×64 does not fit its 112×112 input"),
    (("Conv 5×5×64", "Conv 999×999×64"), r"row 1: Conv 999×999×64 on 3 channels would have 191,616,192 weights"),
    (("Max pool 3×3| 2      | 1 ", "Max pool 3×3| 2      | 2 "), r"row 2: .*padding 2 is more than half"),
    (("|          |\n| 28×28×64", "\n| 28×28×64"), r"row 2: has 4 cells but the header has 6 columns"),
    (("Conv 5×5×64 | 2 ", "Conv 5×5×64 | ² "), r"row 1: Stride must be a whole number .*got '²'"),
    (("Conv 5×5×64 | 2 ", "Conv 5×5×64 | ２ "), r"row 1: Stride must be a whole number"),
    (("Conv 5×5×64 | 2      | 2 ", "Conv 5×5×64 | 2      | −2 "), r"row 1: Padding must be a whole number"),
    (("Conv 5×5×64", "Conv ５×５×64"), r"row 1: unknown operation 'Conv ５×５×64'"),
    (("| 112×112×3  |", "| 112×112×³  |"), r"row 1: input size '112×112×³' is malformed"),
    (("Conv 5×5×64", "Conv 5×5×64 Groups=2×2"), r"row 1: Groups must be a whole number, got '2×2'"),
    (("Conv 5×5×64 | 2 ", "Conv 5×5×64 | 99999999999999999999999 "),
     r"row 1: Stride must be at most 65,536, got '99999999999999999999999'"),
    (("Conv 5×5×64 | 2      | 2 ", "Conv 5×5×64 | 2      | 99999999999999 "),
     r"row 1: Padding must be at most 65,536, got '99999999999999'"),
    (("Conv 1×1×128 Stride=2", "Conv 1×1×128 Stride=99999999999"), r"row 3: Stride must be at most 65,536"),
    (("Conv 5×5×64", "Conv 5×5×64 Dilation=100000"), r"row 1: Dilation must be at most 65,536"),
    (("Max pool 3×3", "Max pool 3×99999999"), r"row 2: 'Max pool 3×99999999': a kernel larger than 65,536"),
])
def test_mistakes_are_table_errors_naming_the_row(change, message):
    old, new = change
    assert old in SEED
    with pytest.raises(rk.TableError, match=message):
        rk.from_table(SEED.replace(old, new, 1))


def test_first_row_must_declare_and_headers_need_columns():
    with pytest.raises(rk.TableError, match="row 1: the first row must declare"):
        rk.from_table("| Input size | Operation |\n|  | Conv 3×3×8 |")
    with pytest.raises(rk.TableError, match="no 'Operation' column"):
        rk.from_table("| Input size | Stride |\n| 8×8×3 | 1 |")
    with pytest.raises(rk.TableError, match="not a table row"):
        rk.from_table("Conv 3×3×64\n| Input size | Operation |")
    with pytest.raises(rk.TableError, match="no data rows"):
        rk.from_table("| Input size | Operation |")


# ------------------------------------------------------------------ property-based: nothing but TableError
LISTED = ["", "1", "2", "0", "3×3", "x", "-1", "BN", "ReLU", "BN, ReLU", "Identity", "Conv 1×1×8",
          "Conv 1×1×8 Stride=2", "Conv 3x3x8", "Max pool 2×2", "Avg pool 3×3", "Global avg pool",
          "FC 4", "8×8×3", "4×4×8", "Conv 0×0×0", "Conv 3×3×8 Groups=3", "Stride=", "Ceil", "||",
          "Conv 3×3×99999999", "Max pool 9×9 Ceil", "Conv 3×3×8 Dilation=2", "1e3", "∞",
          "²", "３", "−1", "Conv ３×３×8", "8×8×³", "Conv 3×3×8 Groups=2×2", "FC 4", "BN",
          "99999999999999999999999", "Conv 3×3×8 Stride=99999999999", "4",
          # the unit grammar and the posts' notations
          "Block: Conv 3×3×8 Padding=1 + BN, ReLU → Conv 3×3×8 Padding=1", "SE 2", "SE 0", "SE 2 Relu9",
          "Ghost concat 8 (Conv 1×1×4 + BN; Conv 3×3×4 Groups=4 Padding=1)", "Ghost concat 99 (Conv 1×1×4; "
          "Conv 3×3×4)", "Ghost concat 8 (Conv 1×1×4)", "Ghost concat 8 (", "Zero-pad 16 Stride=2",
          "Zero-pad 1", "conv 3x3, 8", "3×3 conv, 8", "3*3 max pool", "8*8*3", "→", "+", "Block:",
          "Conv 1×1×4 → FC 3", "Conv 1×1×4 + FC", "[3×3, 8] ×2", "conv 1x1, 8, stride 2", "BN，ReLU",
          "1000-d fc", "average pool", "Conv 3×3×8 Bias", "Max pool 3×3 Dilation=2", "Avg pool 3×3 Dilation=2",
          "[3×3, 8; 3×3, 8] ×0", "[3×3, 8] ×99999999", "[3×3, 8; 3×3 8]", "[]", "[3×3, 8] ×2, [1×1, 8]", "3×3, 8",
          "7×7, 64, stride 2",
          "3×3 max pool, stride 2", "average pool, 10-d fc, softmax", "softmax", "1×1", "0×0"]
CELL = st.one_of(
    st.sampled_from(LISTED),
    # besides ASCII: digits that str.isdigit() or \d take but int() rejects or tables never write
    st.text(alphabet="Conv MaxpolAg×x0123456789=,|SdeBNRLU \t-²³¹３٣−→+:;()*Ghstcz", max_size=24),
)
HEADER = "| Input size | Operation | Stride | Padding | Shortcut | After |"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(CELL, min_size=5, max_size=7), min_size=0, max_size=4),
       header=st.sampled_from([HEADER, HEADER.replace("After", "Aftr"), "| Operation | Input size |", ""]))
def test_random_malformed_tables_raise_only_table_error(rows, header):
    _builds_and_runs_or_table_error("\n".join([header] + ["| " + " | ".join(r) + " |" for r in rows]))


def _builds_and_runs_or_table_error(text):
    try:
        net = rk.from_table(text)
    except rk.TableError:
        return
    # it built: then it must really run on its declared input and give the shape it promised
    size = (1, *net.input_size)
    if torch.Size(size).numel() <= 200_000:
        with torch.no_grad():
            out = net.eval()(torch.zeros(size))
        assert tuple(out.shape[1:]) == net.output_size


SMALL = [["8×8×3", "Conv 3×3×8", "1", "1", "", "BN, ReLU"],
         ["8×8×8", "Conv 3×3×8", "2", "1", "Conv 1×1×8 Stride=2", "BN, ReLU"],
         ["4×4×8", "Block: Conv 1×1×4 + BN, ReLU → SE 2 → Conv 3×3×8 Padding=1", "1", "", "Identity", "BN, ReLU"],
         ["4×4×8", "Unit: Ghost concat 12 (Conv 1×1×6 + BN, ReLU; Conv 3×3×6 Groups=6 Padding=1 + BN)", "1", "",
          "Zero-pad 12", ""],
         ["4×4×12", "Max pool 2×2", "2", "", "", ""],
         ["2×2×12", "Global avg pool", "", "", "", ""],
         ["12", "FC 4", "", "", "", "BN"]]
# number-like cells: ASCII digits mixed with ones str.isdigit() or \d accept ('²', '３', '٣') and a unicode minus
NUMBERISH = st.text(alphabet="0123456789²³¹３٣−-×x ", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=st.integers(0, len(SMALL) - 1), col=st.integers(0, 5), cell=st.one_of(CELL, NUMBERISH))
def test_one_bad_cell_in_a_valid_table_raises_only_table_error(row, col, cell):
    """Every row before the changed cell is valid, so the parser really reaches it (a random table rarely does)."""
    rows = [list(r) for r in SMALL]
    rows[row][col] = cell
    _builds_and_runs_or_table_error("\n".join([HEADER] + ["| " + " | ".join(r) + " |" for r in rows]))


def test_every_listed_cell_anywhere_in_a_valid_table_raises_only_table_error():
    """The listed cells at every position of both table forms: the fuzz samples them, this tries each."""
    for cell in LISTED:
        for row, col in [(r, c) for r in range(len(SMALL)) for c in range(6)]:
            rows = [list(r) for r in SMALL]
            rows[row][col] = cell
            _builds_and_runs_or_table_error("\n".join([HEADER] + ["| " + " | ".join(r) + " |" for r in rows]))
        for row, col in [(r, c) for r in range(len(PAPER_SMALL)) for c in range(3)]:
            rows = [list(r) for r in PAPER_SMALL]
            rows[row][col] = cell
            _builds_and_runs_or_table_error(_paper_small(rows))


def test_the_fuzzed_tables_are_valid_before_the_change():
    net = rk.from_table("\n".join([HEADER] + ["| " + " | ".join(r) + " |" for r in SMALL]))
    assert net.output_size == (4,) and type(net.row4.branch[0]).__name__ == "TableGhost"
    net = rk.from_table(_paper_small(PAPER_SMALL))
    assert tuple(net.eval()(torch.zeros(1, 3, 16, 16)).shape) == (1, 10)


PAPER_SMALL = [["conv1", "8×8", "3×3, 8, stride 2"], ["conv2_x", "4×4", "3×3 max pool, stride 2, [3×3, 8; 3×3, 8] ×1"],
               ["conv3_x", "2×2", "[1×1, 4; 3×3, 4; 1×1, 16] ×2"], ["", "1×1", "average pool, 10-d fc, softmax"]]


def _paper_small(rows):
    return "\n".join(["| layer name | output size | 18-layer |", "| --- | --- | --- |"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=st.integers(0, len(PAPER_SMALL) - 1), col=st.integers(0, 2), cell=st.one_of(CELL, NUMBERISH))
def test_one_bad_cell_in_a_paper_table_raises_only_table_error(row, col, cell):
    rows = [list(r) for r in PAPER_SMALL]
    rows[row][col] = cell
    _builds_and_runs_or_table_error(_paper_small(rows))


def test_bn_after_an_fc_row_normalises_its_features_and_runs():
    net = rk.from_table(f"{HEADER}\n| 4 | FC 2 | | | | BN |\n| 2 | FC 3 | | | | BN, ReLU |")
    assert [type(m) for m in net.row1] == [nn.Linear, nn.BatchNorm1d]
    assert tuple(net.train()(torch.randn(5, 4)).shape) == (5, 3)
    assert tuple(net.eval()(torch.zeros(1, 4)).shape) == (1, 3) and net.output_size == (3,)
    assert "BN" in rk.to_table(net, (1, 4))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3),
       d=st.integers(1, 3), c=st.integers(1, 5), kind=st.sampled_from(["Conv", "Max pool", "Avg pool"]),
       ceil=st.booleans())
def test_valid_single_rows_build_exactly_what_torch_computes(h, k, s, p, d, c, kind, ceil):
    """torch itself is the reference: the row builds iff torch's own layer runs, with torch's output size."""
    opts = (f" Dilation={d}" if kind != "Avg pool" else "") + (" Ceil" if ceil and kind != "Conv" else "")
    op = f"Conv {k}×{k}×{c}" if kind == "Conv" else f"{kind} {k}×{k}"
    text = f"{HEADER}\n| {h}×{h}×2 | {op}{opts} | {s} | {p} | | |"
    x = torch.zeros(1, 2, h, h)
    try:
        layer = nn.Conv2d(2, c, k, s, p, d) if kind == "Conv" else \
            nn.MaxPool2d(k, s, p, d, ceil_mode=ceil) if kind == "Max pool" else nn.AvgPool2d(k, s, p, ceil_mode=ceil)
        with torch.no_grad():
            expected = tuple(layer(x).shape[1:])
    except (RuntimeError, ValueError):
        expected = None
    if expected is None or 0 in expected:
        with pytest.raises(rk.TableError, match=r"^row 1: "):
            rk.from_table(text)
        return
    net = rk.from_table(text)
    with torch.no_grad():
        assert tuple(net(x).shape[1:]) == net.output_size == expected


# ------------------------------------------------------------------ property-based: valid tables must build
CONV_FORMS = ["Conv {k}{x}{k}{x}{c}", "conv {k}{x}{k}, {c}", "{k}{x}{k} conv, {c}"]
HEADERS = {"en": HEADER, "zh": "| 输入大小 | 操作 | 步长 | 填充 | 快捷连接 | 之后 |",
           "zh2": "| 输入尺寸 | 操作 | 步长 | 填充 | 捷径 | 激活 |"}


def _out(n, k, s, p):
    return (n + 2 * p - (k - 1) - 1) // s + 1  # PyTorch's Conv2d/MaxPool2d size formula (dilation 1)


@st.composite
def valid_tables(draw):
    """A random consistent table in random notations, with the shapes and parameter count it must give."""
    x = draw(st.sampled_from(["×", "x", "*"]))
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(4, 20)), draw(st.integers(4, 20))
    size = lambda c, h, w: f"{h}{x}{w}{x}{c}"  # noqa: E731
    rows, shapes, params = [], [], 0
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "pool", "residual", "bottleneck"]))
        co, s = draw(st.integers(1, 8)), draw(st.integers(1, 2))
        if kind == "pool" and min(h, w) >= 3:
            k = draw(st.integers(2, 3))
            p = draw(st.integers(0, k // 2))
            rows.append([size(c, h, w), f"{draw(st.sampled_from(['Max', 'Avg']))} pool {k}{x}{k}", str(s), str(p),
                         "", ""])
            h, w = _out(h, k, s, p), _out(w, k, s, p)
        elif kind in ("conv", "pool", "residual"):
            k = draw(st.sampled_from([1, 3, 5]))
            after = draw(st.sampled_from(["", "BN", "ReLU", "BN, ReLU", "BN，ReLU6"]))
            shortcut = ""
            if kind == "residual":
                proj = (s, co) != (1, c) or draw(st.booleans())
                shortcut = f"Conv 1{x}1{x}{co} Stride={s}" + draw(st.sampled_from(["", ", BN"])) if proj else \
                    draw(st.sampled_from(["Identity", ""]))
                params += c * co + (2 * co if shortcut.endswith("BN") else 0) if proj else 0
            rows.append([size(c, h, w), draw(st.sampled_from(CONV_FORMS)).format(k=k, x=x, c=co), str(s), str(k // 2),
                         shortcut, after])
            params += k * k * c * co + (2 * co if "BN" in after else 0)
            c, h, w = co, _out(h, k, s, k // 2), _out(w, k, s, k // 2)
        else:  # a unit of three steps, as to_table writes them
            m = draw(st.integers(1, 6))
            op = (f"Bottleneck: Conv 1{x}1{x}{m} + BN, ReLU → Conv 3{x}3{x}{m} Stride={s} Padding=1 + BN, ReLU "
                  f"→ Conv 1{x}1{x}{co}")
            proj = (s, co) != (1, c)
            rows.append([size(c, h, w), op, str(s), "", f"Conv 1{x}1{x}{co} Stride={s}, BN" if proj else "Identity",
                         "BN, ReLU"])
            params += c * m + 2 * m + 9 * m * m + 2 * m + m * co + 2 * co + ((c * co + 2 * co) if proj else 0)
            c, h, w = co, _out(h, 3, s, 1), _out(w, 3, s, 1)
        shapes.append((c, h, w))
    if draw(st.booleans()):
        n = draw(st.integers(1, 5))
        rows += [[size(c, h, w), "Global avg pool", "", "", "", ""], [str(c), f"FC {n}", "", "", "", ""]]
        shapes += [(c, 1, 1), (n,)]
        params += c * n + n
    header = HEADERS[draw(st.sampled_from(sorted(HEADERS)))]
    text = "\n".join([header] + ["| " + " | ".join(r) + " |" for r in rows])
    return text, shapes, params


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=valid_tables())
def test_random_valid_tables_build_with_the_declared_shapes(table):
    """The counterpart of the fuzz above: a parser that rejected everything would fail here."""
    text, shapes, params = table
    net = rk.from_table(text)  # any TableError fails the test
    assert [s.out_shape for s in net.specs] == shapes
    assert count_params(net) == params
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, *net.input_size))
    assert tuple(out.shape[1:]) == shapes[-1]


# ------------------------------------------------------------------ to_table
def test_to_table_round_trips_a_plain_conv_net():
    plain = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 32, 3, 1, 1, groups=4, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        nn.Conv2d(32, 32, 3, 1, 2, dilation=2, bias=False), nn.SiLU(),
        nn.AvgPool2d(2, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    text = rk.to_table(plain, (1, 3, 64, 64))
    rebuilt = rk.from_table(text)
    x = torch.zeros(1, 3, 64, 64)
    assert tuple(rebuilt(x).shape) == tuple(plain(x).shape) == (1, 10)
    assert count_params(rebuilt) == count_params(plain)  # the same layers: bias-free convs, BNs, one FC
    assert "Conv 3×3×32 Groups=4" in text and "Dilation=2" in text and "BN, ReLU6" in text


def test_to_table_of_a_table_net_gives_the_table_back():
    text = rk.to_table(rk.from_table(SEED), (1, 3, 112, 112))
    again = rk.from_table(text)
    assert [(s.in_shape, s.out_shape, s.op.text, s.after) for s in again.specs] == \
        [(s.in_shape, s.out_shape, s.op.text, s.after) for s in rk.from_table(SEED).specs]
    assert_golden("to_table_seed.txt", text)


def test_to_table_renders_residual_units_as_one_row():
    text = rk.to_table(rk.create_model("resnet18"), (1, 3, 224, 224))
    lines = text.splitlines()
    assert len(lines) == 1 + 2 + 8 + 2        # header, stem conv + max pool, 8 BasicBlocks, global pool, FC
    assert lines[-2].startswith("| 7×7×512    | Global avg pool ")
    assert "Conv 1×1×128 Stride=2, BN" in lines[5]
    assert "Identity" in lines[4]
    # conv1 → bn1 → relu → conv2 → bn2, + shortcut, → relu: the inner BN and ReLU are written, the last
    # conv's BN and the ReLU after the addition are the After cell (as for a one-conv residual row)
    assert "| BasicBlock: Conv 3×3×64 Padding=1 + BN, ReLU → Conv 3×3×64 Padding=1 " in lines[3]
    assert lines[3].rstrip(" |").endswith("| BN, ReLU")
    assert_golden("to_table_resnet18.txt", text)
    # and it is a table from_table reads: torchvision's parameter count (11,689,512), unit by unit
    rebuilt = rk.from_table(text)
    assert count_params(rebuilt) == 11_689_512
    assert [type(m).__name__ for m in rebuilt.children()].count("TableResidual") == 8
