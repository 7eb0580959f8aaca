"""rk.view's page and `resnetkit view --serve` in a real browser: headless Chromium (Debian's package) driven
by Playwright. Clicks show what rk.summary and rk.explain compute, the page makes no network request, and the
live editor marks a bad row at its line, keeps the last good network, and rebuilds after the fix.

Without /usr/bin/chromium (or Playwright) these tests skip and say why; with RESNETKIT_REQUIRE_BROWSER=1 (CI)
they fail instead."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

import resnetkit as rk
from test_table import SEED
from view_pages import count_text, expected_rows, explain_subtree, running_server, shape_text

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SIZE = (1, 3, 224, 224)
SEED_SIZE = (1, 3, 112, 112)


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("RESNETKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RESNETKIT_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(f"the browser tests need headless Chromium: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@contextmanager
def opened(browser, url: str, allowed: str | None = None, ready: str = "body[data-ready]"):
    """A tab on ``url`` once ``ready`` shows; afterwards, no script error, and no request but ``url`` itself
    (or under ``allowed``)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    requests, errors = [], []
    tab.on("request", lambda r: requests.append(r.url))
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    tab.goto(url)
    tab.wait_for_selector(ready)
    yield tab
    context.close()
    assert errors == []  # a blocked request would show here as a Content-Security-Policy refusal
    assert requests[0] == url and all(u == url or (allowed and u.startswith(allowed)) for u in requests), requests


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    model = rk.create_model("resnet50")
    path = tmp_path_factory.mktemp("view") / "r50.html"
    rk.view(model, SIZE, path)
    return model, path.as_uri(), {r.name: r for r in rk.summary(model, SIZE, depth=9).rows}


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    net = rk.from_table(SEED)
    path = tmp_path_factory.mktemp("view") / "seed.html"
    rk.view(net, SEED_SIZE, path)
    return net, path.as_uri(), {r.name: r for r in rk.summary(net, SEED_SIZE, depth=9).rows}


def selected(tab) -> list[str]:
    return tab.eval_on_selector_all("#rk-layers tr.rk-sel", "rows => rows.map(r => r.querySelector('.rk-n').textContent)")


def detail(tab) -> list[dict]:
    """Each section of the detail panel: its fields and its derivation lines (stripped)."""
    return tab.eval_on_selector_all("#rk-detail section", """secs => secs.map(s => ({
        name: s.querySelector('.rk-d-name').textContent,
        in: s.querySelector('.rk-d-in').textContent, shape: s.querySelector('.rk-d-shape').textContent,
        params: s.querySelector('.rk-d-params').textContent, macs: s.querySelector('.rk-d-macs').textContent,
        stride: s.querySelector('.rk-d-stride').textContent, field: s.querySelector('.rk-d-field').textContent,
        lines: s.querySelector('.rk-d-lines') ? s.querySelector('.rk-d-lines').textContent.split('\\n').map(l => l.trim()) : []}))""")


def row_locator(tab, name: str):
    return tab.locator(f"#rk-layers tr:has(.rk-n:text-is('{name}'))")


def test_resnet50_click_stage_2(browser, r50):
    model, url, rows = r50
    with opened(browser, url) as tab:
        tab.click("#rk-col-2")  # the diagram's "stage 2 · stride 8" card
        assert selected(tab) == ["layer2"]
        assert "rk-sel" in tab.get_attribute("#rk-col-2", "class")
        [shown] = detail(tab)
        layer2 = rows["layer2"]
        assert shown["name"] == "layer2 (Sequential)"
        assert (shown["shape"], shown["params"], shown["macs"]) == \
            (shape_text(layer2.output_shape), count_text(layer2.params), count_text(layer2.macs))
        assert shown["params"] == "1,219,584" and shown["stride"] == "8"
        assert shown["lines"] == explain_subtree(model, SIZE, "layer2")
        assert shown["lines"][0].startswith("layer2.0 (Bottleneck): shortcut = projection `downsample`")


def test_resnet50_click_a_strided_conv_in_the_table(browser, r50):
    model, url, rows = r50
    with opened(browser, url) as tab:
        conv = row_locator(tab, "layer2.0.conv2")
        assert not conv.is_visible()  # layers start folded inside their blocks
        row_locator(tab, "layer2.0").locator(".rk-tog").click()
        conv.click()
        assert selected(tab) == ["layer2.0.conv2"]
        assert "rk-sel" in tab.get_attribute("#rk-box-2-0", "class")  # its block's card in the diagram
        [shown] = detail(tab)
        ref = rows["layer2.0.conv2"]
        assert (shown["shape"], shown["params"], shown["macs"]) == \
            (shape_text(ref.output_shape), count_text(ref.params), count_text(ref.macs))
        assert shown["params"] == f"{128 * 128 * 3 * 3:,}" and shown["macs"] == f"{128 * 128 * 3 * 3 * 28 * 28:,}"
        assert (shown["in"], shown["shape"]) == ("[1, 128, 56, 56]", "[1, 128, 28, 28]")
        assert shown["lines"] == explain_subtree(model, SIZE, "layer2.0.conv2")
        assert shown["lines"][0].startswith("layer2.0.conv2: (56 − 3 + 2·1) // 2 + 1 = 28")
        # layer1 ends at receptive field 35 and stride 4; a 3×3 stride-2 conv there: 35 + 2·4 = 43, stride 8
        assert (shown["field"], shown["stride"]) == ("43", "8")


def test_resnet50_filter_and_zoom(browser, r50):
    _, url, rows = r50
    with opened(browser, url) as tab:
        tab.fill("#rk-filter", "downsample")
        visible = tab.eval_on_selector_all("#rk-layers tbody tr:not([hidden]) .rk-n", "ns => ns.map(n => n.textContent)")
        hits = [n for n, r in rows.items() if "downsample" in f"{n} ({r.type})".lower()]
        assert len(hits) == 12  # 4 projections × (Sequential, conv, BN)
        ancestors = {".".join(h.split(".")[:k]) for h in hits for k in range(1, h.count(".") + 1)}
        assert visible == [n for n in rows if n in set(hits) | ancestors]
        width = tab.evaluate("document.querySelector('#rk-diagram svg').getBoundingClientRect().width")
        tab.click("[data-zoom=in]")
        wider = tab.evaluate("document.querySelector('#rk-diagram svg').getBoundingClientRect().width")
        assert wider == pytest.approx(width * 1.25, rel=1e-3)


def test_seed_table_net_click_stage_and_strided_conv(browser, seed):
    net, url, rows = seed
    with opened(browser, url) as tab:
        tab.click("#rk-col-1")  # "stage 1": the three residual rows, which no module holds together
        assert selected(tab) == ["row3", "row4", "row5"]
        shown = detail(tab)
        assert [(s["shape"], s["params"], s["macs"]) for s in shown] == \
            [(shape_text(rows[n].output_shape), count_text(rows[n].params), count_text(rows[n].macs))
             for n in ("row3", "row4", "row5")]
        assert [s["lines"] for s in shown] == [explain_subtree(net, SEED_SIZE, n) for n in ("row3", "row4", "row5")]
        row_locator(tab, "row1.0").click()  # Conv 5×5×64, stride 2
        assert "rk-sel" in tab.get_attribute("#rk-box-0-0", "class")
        [conv] = detail(tab)
        assert (conv["in"], conv["shape"], conv["params"], conv["macs"]) == \
            ("[1, 3, 112, 112]", "[1, 64, 56, 56]", f"{5 * 5 * 3 * 64:,}", f"{5 * 5 * 3 * 64 * 56 * 56:,}")
        assert conv["lines"] == ["row1.0: (112 − 5 + 2·2) // 2 + 1 = 56   [3×112×112 → 64×56×56] Conv2d"]
        assert conv["lines"] == explain_subtree(net, SEED_SIZE, "row1.0")


def test_inline_display_works_inside_its_frame(browser, seed, tmp_path):
    """What Jupyter shows for rk.view(...): the page in a sandboxed frame, answering clicks there."""
    net, _, rows = seed
    notebook = tmp_path / "notebook.html"
    notebook.write_text(f"<!DOCTYPE html><html><body><h1>cell output</h1>{rk.view(net, SEED_SIZE)._repr_html_()}"
                        "</body></html>", encoding="utf-8")
    with opened(browser, notebook.as_uri(), allowed="about:srcdoc", ready="iframe") as tab:
        frame = tab.frame_locator("iframe")
        frame.locator("body[data-ready]").wait_for(state="attached")
        frame.locator("#rk-col-1").click()
        assert frame.locator("#rk-layers tr.rk-sel .rk-n").all_text_contents() == ["row3", "row4", "row5"]
        assert frame.locator("#rk-detail .rk-d-params").all_text_contents() == \
            [count_text(rows[n].params) for n in ("row3", "row4", "row5")]


@pytest.fixture
def live():
    with running_server() as srv:
        yield srv


def wait_answer(tab, state: str) -> None:
    tab.wait_for_function("s => document.body.dataset.state === s && document.body.dataset.sent "
                          "&& document.body.dataset.answered === document.body.dataset.sent", arg=state)


def test_live_editor_marks_the_bad_row_keeps_the_last_network_and_rebuilds(browser, live):
    with opened(browser, live.url, allowed=live.url) as tab:
        assert tab.text_content(".rk-total-params") == "743,232"
        bad = SEED.replace("| 28×28×64 ", "| 27×27×64 ")
        with pytest.raises(rk.TableError) as caught:
            rk.from_table(bad)
        line = next(i for i, text in enumerate(bad.split("\n"), 1) if text.startswith("| 27×27×64"))
        tab.fill("#rk-text", bad)
        wait_answer(tab, "error")
        assert tab.text_content("#rk-error") == f"line {line}: {caught.value}"
        assert tab.eval_on_selector_all("#rk-gutter .rk-bad", "s => s.map(x => x.id)") == [f"rk-ln-{line}"]
        assert tab.text_content(".rk-total-params") == "743,232"  # the last good network stays
        fixed = SEED.replace("Conv 3×3×128| 1      | 1       | Conv 1×1×128 Stride=1",
                             "Conv 3×3×64 | 1      | 1       | Conv 1×1×64 Stride=1 ")
        tab.fill("#rk-text", fixed)
        wait_answer(tab, "built")
        net = rk.from_table(fixed)
        assert tab.text_content(".rk-total-params") == f"{rk.summary(net, SEED_SIZE, depth=0).total_params:,}"
        assert tab.eval_on_selector_all("#rk-layers tbody tr", """rows => rows.map(r => [r.cells[0].textContent.trim(),
            r.cells[1].textContent, r.cells[2].textContent, r.cells[3].textContent])""") == \
            [list(r) for r in expected_rows(net, SEED_SIZE)]
        assert tab.is_hidden("#rk-error") and tab.eval_on_selector_all("#rk-gutter .rk-bad", "s => s.length") == 0
        tab.click("#rk-col-1")  # the rebuilt page answers clicks
        assert selected(tab) == ["row3", "row4", "row5"]


def _lan_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by connecting a UDP socket
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_live_server_is_not_reachable_from_the_network(browser, live):
    address = _lan_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback to try the server from")
    context = browser.new_context()
    tab = context.new_page()
    try:
        with pytest.raises(Exception, match="ERR_CONNECTION_REFUSED"):
            tab.goto(f"http://{address}:{live.server_address[1]}/")
    finally:
        context.close()
