"""Size and time to first render of `resnetkit view` pages in headless Chromium; writes benchmarks/view_page.md.

    .venv/bin/python benchmarks/view_page.py                  # resnet18, resnet152, ghostnet_100
    .venv/bin/python benchmarks/view_page.py --models resnet50 --runs 9
    .venv/bin/python benchmarks/view_page.py --screenshot docs/view_resnet50.png   # the README's picture

Per model: the page's size, the time rk.view takes to build it (one forward pass with hooks, rk.draw's figure,
the templates), and, over --runs fresh tabs opening the file, the median first contentful paint and the median
time until the page's script has laid out the tree and the diagram (``body[data-ready]``, the page usable),
both from the navigation's start as Chromium's performance timeline reports them. Goal (issue 25): resnet152's
page at most 1 MB and rendered within 1 s. Needs /usr/bin/chromium (Debian's package) and playwright.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

import resnetkit as rk

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
OUT = Path(__file__).with_name("view_page.md")


def render_times(browser, url: str, runs: int) -> tuple[float, float]:
    """Median (first contentful paint, script done) in ms from navigation start, each run in a fresh tab."""
    paints, ready = [], []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        tab.goto(url)
        tab.wait_for_selector("body[data-ready]")
        paints.append(tab.wait_for_function(  # (the entry appears once the frame is presented)
            "() => performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0]").json_value())
        ready.append(float(tab.evaluate("document.body.dataset.readyAt")))  # stamped by the page's script
        context.close()
    return statistics.median(paints), statistics.median(ready)


def screenshot(browser, path: Path) -> None:
    """resnet50's page with layer2.0.conv2 clicked (its block expanded), as the README shows it."""
    with tempfile.TemporaryDirectory() as tmp:
        rk.view("resnet50", None, Path(tmp) / "r50.html")
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        tab.goto((Path(tmp) / "r50.html").as_uri())
        tab.locator("#rk-layers tr:has(.rk-n:text-is('layer2.0')) .rk-tog").click()
        tab.locator("#rk-layers tr:has(.rk-n:text-is('layer2.0.conv2'))").click()
        tab.evaluate("() => { window.scrollTo(0, 0); document.getElementById('rk-table-box').scrollTop = 0; }")
        tab.screenshot(path=str(path), full_page=True)
        context.close()


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet152", "ghostnet_100"])
    p.add_argument("--runs", type=int, default=5, help="fresh tabs per page (default 5)")
    p.add_argument("--screenshot", type=Path, default=None, help="only write this PNG of resnet50's page")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    if args.screenshot:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            screenshot(browser, args.screenshot)
            browser.close()
        print(f"wrote {args.screenshot}")
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        version = browser.version
        for name in args.models:
            model = rk.create_model(name)
            start = time.perf_counter()
            page = rk.view(model, None, Path(tmp) / f"{name}.html")
            built = time.perf_counter() - start
            paint, ready = render_times(browser, (Path(tmp) / f"{name}.html").as_uri(), args.runs)
            size = len(page.html.encode())
            rows.append((name, page.data.input, len(page.data.layers), size, built, paint, ready))
            print(f"{name}: {size / 1e3:.0f} kB, built in {built:.2f} s, first paint {paint:.0f} ms, "
                  f"ready {ready:.0f} ms", flush=True)
        browser.close()
    lines = [
        "## `resnetkit view` pages: size and time to first render",
        "",
        f"`python benchmarks/view_page.py` on {date.today()}; CPU: {cpu_name()}; {torch.get_num_threads()} torch "
        f"threads; headless Chromium {version} (Debian's package, {' '.join(ARGS)}), 1400×1000 viewport. "
        f"Times from the navigation's start, median of {args.runs} fresh tabs opening the file; *built*: "
        "`rk.view` in Python (forward pass, diagram, templates). Goal: resnet152's page ≤ 1 MB, rendered ≤ 1 s.",
        "",
        "| model | input | layers (rows) | page size | built in | first contentful paint | page ready (script done) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {n} | {i} | {k} | {s / 1e3:.0f} kB | {b:.2f} s | {fp:.0f} ms | {r:.0f} ms |"
          for n, i, k, s, b, fp, r in rows),
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
