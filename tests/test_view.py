"""rk.view / `resnetkit view` without a browser: the page's header, table, derivations and diagram against
rk.summary, rk.explain, rk.draw, torchvision and the published parameter count; the page asks for nothing from
the network; summaries render as HTML in Jupyter; the live server binds loopback only, caps requests and names
a bad table's row and line. (The page in a real browser: test_view_browser.py.)"""
import html
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest
import torchvision

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.inspect.view.server import EXAMPLE_TABLE, MAX_BODY
from resnetkit.tables.parse import row_line
from test_table import HEADERS, SEED  # the contract's small residual net, the Chinese headers
from view_pages import count_text, expected_rows, explain_by_name, read_page, running_server

SIZE = (1, 3, 224, 224)
SEED_SIZE = (1, 3, 112, 112)


@pytest.fixture(scope="module")
def r50(one_thread):
    model = rk.create_model("resnet50")
    return model, rk.view(model, SIZE)


@pytest.fixture(scope="module")
def seed_page():
    net = rk.from_table(SEED)
    return net, rk.view(net, SEED_SIZE)


def row_index(page, name: str) -> int:
    return next(lay.index for lay in page.data.layers if lay.name == name)


# ------------------------------------------------------------------------------------------ the page
def test_header_shows_published_params_macs_and_feature_maps(r50):
    model, page = r50
    head = page.html[page.html.index('<header id="rk-head">'):page.html.index("</header>")]
    assert "<h1>resnet50</h1>" in head
    assert '<b class="rk-input">1×3×224×224</b>' in head
    assert '<b class="rk-total-params">25,557,032</b>' in head          # torchvision's published count
    assert f'<b class="rk-total-macs">{rk.summary(model, SIZE, depth=0).total_macs:,}</b>' in head  # 4.09 G
    assert "4.09 GMACs" in head
    cells = re.findall(r'<td class="rk-ch">(\d+)</td>', head), re.findall(r'<td class="rk-st">(\d+)</td>', head)
    assert [list(map(int, c))[1:] for c in cells] == [[256, 512, 1024, 2048], [4, 8, 16, 32]]  # C2..C5
    assert ">C2<" in head and ">C5<" in head


@pytest.mark.parametrize("which", ["r50", "seed_page"])
def test_table_holds_every_summary_row(which, request):
    model, page = request.getfixturevalue(which)
    size = SIZE if which == "r50" else SEED_SIZE
    shown = [tuple(r["cells"][:4]) for r in read_page(page.html).rows]
    assert shown == expected_rows(model, size)
    assert len(shown) == (199 if which == "r50" else 30)


def test_stage_params_equal_torchvision_modules(r50):
    _, page = r50
    tv = torchvision.models.resnet50()
    cells = {r["cells"][0]: r["cells"] for r in read_page(page.html).rows}
    for stage in ("layer1", "layer2", "layer3", "layer4", "fc"):
        module = getattr(tv, stage)
        assert cells[f"{stage} ({type(module).__name__})"][2] == count_text(sum(p.numel() for p in module.parameters()))


def test_receptive_fields_follow_the_recurrence(r50):
    """conv1 7×7/2: 7; maxpool 3×3/2 after it: 7 + 2·2 = 11; stage ends as summary's stage table."""
    model, page = r50
    field = {r["cells"][0].split(" (")[0]: r["cells"][4] for r in read_page(page.html).rows}
    assert (field["conv1"], field["maxpool"]) == ("7", "11")
    stages = rk.summary(model, SIZE, depth=1).stages
    assert [field[s.module] for s in stages] == [str(s.receptive_field) for s in stages]
    assert field["fc"] == "--"


def test_blocks_carry_explains_inside_line():
    """Res2Net's blocks: explain's "inside:" sentence comes with the block's own line."""
    model = rk.create_model("res2net50_26w_4s")
    page = rk.view(model, (1, 3, 64, 64))
    data = read_page(page.html).data
    by_name = explain_by_name(model, (1, 3, 64, 64))
    lines = data["rows"][str(row_index(page, "layer1.0"))]["lines"]
    assert [line.strip() for line in lines] == by_name["layer1.0"] and lines[1].startswith("  inside: ")
    assert all([line.strip() for line in data["rows"][str(lay.index)]["lines"]] == by_name.get(lay.name, [])
               for lay in page.data.layers)


@pytest.mark.parametrize("which", ["r50", "seed_page"])
def test_each_layer_carries_explains_line(which, request):
    model, page = request.getfixturevalue(which)
    size = SIZE if which == "r50" else SEED_SIZE
    data = read_page(page.html).data
    by_name = explain_by_name(model, size)
    for lay in page.data.layers:
        assert [line.strip() for line in data["rows"][str(lay.index)]["lines"]] == by_name.get(lay.name, []), lay.name
    [strided] = data["rows"][str(row_index(page, "layer2.0.conv2" if which == "r50" else "row3.branch.0"))]["lines"]
    assert strided.startswith("layer2.0.conv2: (56 − 3 + 2·1) // 2 + 1 = 28   [128×56×56 → 128×28×28]" if which == "r50"
                              else "row3.branch.0: (28 − 3 + 2·1) // 2 + 1 = 14   [64×28×28 → 128×14×14]")


def test_diagram_is_rk_draws_picture_with_clickable_cards(r50, tmp_path):
    model, page = r50
    rk.draw(model, SIZE, tmp_path / "r50.svg")
    ns = "{http://www.w3.org/2000/svg}"
    drawn = ["".join(t.itertext()) for t in ET.parse(tmp_path / "r50.svg").getroot().iter(ns + "text")]
    svg = page.html[page.html.index("<svg"):page.html.index("</svg>") + 6]
    root = ET.fromstring(svg)
    assert ["".join(t.itertext()) for t in root.iter(ns + "text")] == drawn  # the same picture
    ids = {g.get("id") for g in root.iter(ns + "g") if (g.get("id") or "").startswith("rk-")}
    assert ids == set(page.data.picks)
    assert {"rk-col-2", "rk-box-2-0", "rk-box-2-1"} <= ids
    # stage 2's header selects layer2; its first card layer2.0; the folded card layer2.1 … layer2.3
    names = {lay.index: lay.name for lay in page.data.layers}
    assert [names[i] for i in page.data.picks["rk-col-2"]] == ["layer2"]
    assert [names[i] for i in page.data.picks["rk-box-2-0"]] == ["layer2.0"]
    assert [names[i] for i in page.data.picks["rk-box-2-1"]] == ["layer2.1", "layer2.2", "layer2.3"]
    lit = read_page(page.html).data["rows"]
    assert lit[str(row_index(page, "layer2"))]["cards"] == ["rk-col-2"]
    assert lit[str(row_index(page, "layer2.0.conv2"))]["cards"] == ["rk-box-2-0"]
    assert lit[str(row_index(page, "layer2.2.conv1"))]["cards"] == ["rk-box-2-1"]


def _every_family_case(name):
    return pytest.param(name, marks=() if name in ("mobilenet_v2", "ghostnet_100", "d2l_resnet18", "resnet20",
                                                  "resnest14d") else pytest.mark.slow)


@pytest.mark.parametrize("name", [_every_family_case(n) for n in rk.list_models()])
def test_every_model_gets_its_page(name):
    """Each registered model: the table holds summary's rows, and every card of the diagram selects rows."""
    model = rk.create_model(name)
    size = (1, getattr(model, "default_input_size", (3, 64, 64))[0], 64, 64)
    page = rk.view(model, size)
    assert [tuple(r["cells"][:4]) for r in read_page(page.html).rows] == expected_rows(model, size)
    shown = {lay.index for lay in page.data.layers}
    assert all(picks and set(picks) <= shown for picks in page.data.picks.values())
    assert all(f'id="{card}"' in page.html for card in page.data.picks)


def test_page_is_self_contained(seed_page):
    """No attribute or style points anywhere: no src, href, url(), @import; the policy forbids every request."""
    _, page = seed_page
    text = page.html
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"\s(src|href|srcset|action|xlink:href)\s*=", text)
    assert not re.search(r"url\((?!#)|@import|https?://(?!www\.w3\.org/)", text)  # (url(#id): the SVG's own clip)
    assert "default-src 'none'" in text and "connect-src" not in text
    assert text.count("<script") == 2 and '<script type="application/json" id="rk-data">' in text


def test_view_writes_the_file_and_refuses_bad_paths(tmp_path, seed_page):
    net, _ = seed_page
    page = rk.view(net, SEED_SIZE, tmp_path / "seed.html")
    assert (tmp_path / "seed.html").read_text(encoding="utf-8") == page.html
    assert rk.view(SEED, SEED_SIZE).html == page.html  # a table's text gives the same page
    with pytest.raises(rk.ResnetkitError, match=r"give a path ending in \.html"):
        rk.view(net, SEED_SIZE, tmp_path / "seed.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rk.view(net, SEED_SIZE, tmp_path / "no" / "seed.html")
    with pytest.raises(rk.ResnetkitError, match="fold must be an int >= 0"):
        rk.view(net, SEED_SIZE, fold=-1)
    with pytest.raises(TypeError, match="a module, a model name or a layer table, got int"):
        rk.view(3)
    with pytest.raises(rk.UnknownModelError, match="resnet50"):
        rk.view("resnet5O")


# ------------------------------------------------------------------------------------------ notebooks
def test_summary_renders_as_the_pages_table_in_jupyter():
    model = rk.create_model("resnet18")
    report = rk.summary(model, SIZE)
    shown = read_page(report._repr_html_()).rows
    assert [tuple(r["cells"][:4]) for r in shown] == expected_rows(model, SIZE, depth=3)
    assert len(shown) == len(report.rows) == 78
    assert "11,689,512" in report._repr_html_()
    assert repr(report) == "SummaryReport(ResNet, params=11,689,512, macs=1,814,073,344, rows=78)"  # unchanged


def test_view_displays_inline_in_a_frame(seed_page):
    _, page = seed_page
    frame = page._repr_html_()
    assert frame.startswith("<iframe srcdoc=\"") and 'sandbox="allow-scripts"' in frame
    assert html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1)) == page.html
    assert repr(page) == f"View(TableNet, input 1×3×112×112, 30 layers, {len(page.html.encode()) / 1e3:.0f} kB page)"


# ------------------------------------------------------------------------------------------ CLI
def test_cli_writes_the_page(tmp_path, capsys):
    table = tmp_path / "seed.md"
    table.write_text(SEED, encoding="utf-8")
    out = tmp_path / "seed.html"
    assert main(["view", str(table), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    assert [tuple(r["cells"][:4]) for r in read_page(out.read_text(encoding="utf-8")).rows] == \
        expected_rows(rk.from_table(SEED), SEED_SIZE)


@pytest.mark.parametrize("argv,message", [
    (["view"], "give a model name or a table file"),
    (["view", "resnet18", "-o", "r18.pdf"], "give a path ending in .html"),
    (["view", "--serve", "-o", "x.html"], "leave -o out"),
    (["view", "--serve", "--port", "70000"], "between 1 and 65535"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ live server
@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


def request(srv, path="/", body=None, headers=None):
    """(status, text) of one request to the server."""
    req = urllib.request.Request(srv.url.rstrip("/") + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def build(srv, table, **fields):
    status, text = request(srv, "/build", json.dumps({"table": table, **fields}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200
    return json.loads(text)


def test_server_binds_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"


def test_server_page_holds_the_editor_and_the_example(server):
    status, page = request(server)
    assert status == 200
    assert "<textarea" in page and "connect-src 'self'" in page
    assert html.unescape(page.split('aria-label="layer table">\n', 1)[1].split("</textarea>")[0]) == EXAMPLE_TABLE
    assert [tuple(r["cells"][:4]) for r in read_page(page).rows] == expected_rows(rk.from_table(SEED), SEED_SIZE)


def test_server_rebuilds_from_any_table_form(server):
    answer = build(server, SEED.replace(HEADERS["en"], HEADERS["zh"]))  # Chinese headers
    assert answer["ok"] and "743,232 parameters" in answer["summary"]
    assert [tuple(r["cells"][:4]) for r in read_page(answer["body"]).rows] == \
        expected_rows(rk.from_table(SEED), SEED_SIZE)
    paper = "\n".join(["| layer name | output size | 18-layer | 50-layer |", "| --- | --- | --- | --- |",
                       "| conv1 | 112×112 | 7×7, 64, stride 2 | 7×7, 64, stride 2 |",
                       "| conv2_x | 56×56 | 3×3 max pool, stride 2, [3×3, 64; 3×3, 64] ×2 | "
                       "3×3 max pool, stride 2, [1×1, 64; 3×3, 64; 1×1, 256] ×3 |"])
    answer = build(server, paper, column="50-layer", input="3x224x224")
    assert answer["ok"], answer
    assert "Bottleneck" in answer["body"] or "TableResidual" in answer["body"]


def test_server_names_the_bad_row_and_its_line(server):
    bad = SEED.replace("| 28×28×64 ", "| 27×27×64 ")  # row 3, on line 5 of the text (it starts with a newline)
    with pytest.raises(rk.TableError) as caught:
        rk.from_table(bad)
    answer = build(server, bad)
    assert answer == {"ok": False, "error": str(caught.value), "row": 3, "line": 5}
    answer = build(server, SEED, input="3x112")
    assert not answer["ok"] and "give 4 sizes" in answer["error"] and answer["line"] is None


def test_server_started_on_a_bad_table_shows_its_error_first():
    bad = SEED.replace("| 14×14×256 ", "| 14×14×255 ")  # row 5, line 7
    with running_server(bad) as srv:
        status, page = request(srv)
    assert status == 200 and 'id="rk-data"' not in page  # no network yet: only the editor
    first = json.loads(re.search(r'<script type="application/json" id="rk-first">(.*?)</script>', page, re.S).group(1))
    with pytest.raises(rk.TableError) as caught:
        rk.from_table(bad)
    assert first == {"ok": False, "error": str(caught.value), "row": 5, "line": 7}


@pytest.mark.parametrize("text,row,line", [
    ("| a | b |\n| 1 | 2 |\n| 3 | 4 |", 2, 3),
    ("\n\n| a | b |\n|---|---|\n\n| 1 | 2 |\n| 3 | 4 |\n", 2, 7),
    ("| a | b |\n| 1 | 2 |", 5, None),
])
def test_row_line_counts_rows_as_table_error_does(text, row, line):
    assert row_line(text, row) == line


def test_server_refuses_big_bodies_other_hosts_and_paths(server):
    status, text = request(server, "/build", b"x" * (MAX_BODY + 1), {"Content-Type": "application/json"})
    assert status == 413 and "over the limit of 262,144" in text
    assert request(server, headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert request(server, "/etc/passwd")[0] == 404
    assert request(server, "/build", b"not json")[0] == 400
    assert request(server, "/build", json.dumps({"table": 3}).encode())[0] == 400


def test_cli_serve_prints_the_url_and_stops_on_ctrl_c():
    """Started with SIGINT ignored (as a pytest-xdist worker or a script's background job passes it on, and
    Python then leaves it ignored), Ctrl-C still stops the server, as it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "resnetkit", "view", "--serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        first = proc.stdout.readline()
        url = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", first).group(1)
        with urllib.request.urlopen(url, timeout=60) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, "resnetkit view: stopped\n", "")


def test_docstring_example_runs():
    import doctest

    import resnetkit.inspect.view as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
