/* rk.view's page: the layer table as a collapsible tree with a filter, the diagram's zoom, and the
   derivation of whatever is clicked, highlighted in the diagram and in the table. No library, no request. */
"use strict";
(function () {
  let data = null;     // the page's #rk-data: derivations, inputs, and which cards go with which rows
  let rows = [];       // the table's rows, in the order of the forward pass (a row's nested rows follow it)
  let byIndex = new Map();
  let svg = null, natural = null, scale = 1;

  const indexOf = (tr) => Number(tr.id.slice(4));  // "rk-r123" -> 123
  const depthOf = (tr) => Number(tr.dataset.d);
  const parentOf = (tr) => (tr.dataset.p ? byIndex.get(Number(tr.dataset.p)) : null);
  const filterBox = () => document.getElementById("rk-filter");

  function add(parent, tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    parent.appendChild(el);
    return el;
  }

  // ---------------------------------------------------------------- the tree
  function refresh() {
    const q = filterBox().value.trim().toLowerCase();
    if (q) {  // matching rows and the rows they are nested in
      const show = new Set();
      for (const tr of rows) {
        if (!tr.cells[0].textContent.toLowerCase().includes(q)) continue;
        for (let t = tr; t && !show.has(t); t = parentOf(t)) show.add(t);
      }
      rows.forEach((tr) => { tr.hidden = !show.has(tr); });
      return;
    }
    let closed = Infinity;  // depth of the closed row whose nested rows are being skipped
    for (const tr of rows) {
      const d = depthOf(tr);
      if (d > closed) { tr.hidden = true; continue; }
      closed = Infinity;
      tr.hidden = false;
      if (tr.classList.contains("rk-nest") && !tr.classList.contains("rk-open")) closed = d;
    }
  }

  function openAll(open) {
    rows.forEach((tr) => tr.classList.toggle("rk-open", open && tr.classList.contains("rk-nest")));
    refresh();
  }

  // ---------------------------------------------------------------- selection
  function derivation(tr) {  // explain's lines for the row and everything nested in it
    const out = [], d0 = depthOf(tr);
    for (let k = rows.indexOf(tr); k < rows.length; k++) {
      const t = rows[k];
      if (t !== tr && depthOf(t) <= d0) break;
      const indent = "  ".repeat(depthOf(t) - d0);
      data.rows[indexOf(t)].lines.forEach((line) => out.push(indent + line));
    }
    return out;
  }

  function showDetail(chosen) {
    const box = document.getElementById("rk-detail");
    box.replaceChildren();
    for (const tr of chosen) {
      const info = data.rows[indexOf(tr)];
      const sec = add(box, "section", "rk-pick");
      add(sec, "h3", "rk-d-name", tr.querySelector(".rk-n").textContent + " " + tr.querySelector(".rk-t").textContent);
      const dl = add(sec, "dl");
      for (const [label, value, cls] of [
        ["input", info.in, "rk-d-in"], ["output", tr.cells[1].textContent, "rk-d-shape"],
        ["parameters", tr.cells[2].textContent, "rk-d-params"], ["MACs per image", tr.cells[3].textContent, "rk-d-macs"],
        ["stride", info.stride, "rk-d-stride"], ["receptive field", tr.cells[4].textContent, "rk-d-field"]]) {
        add(dl, "dt", null, label);
        add(dl, "dd", cls, value);
      }
      const lines = derivation(tr);
      add(sec, "h4", null, lines.length ? "Derivation" : "No size formula: the layer keeps its input's size");
      if (lines.length) add(sec, "pre", "rk-d-lines", lines.join("\n"));
    }
    if (chosen.length) add(box, "p", "rk-formula", data.header);
  }

  function select(indices, clicked) {
    document.querySelectorAll(".rk-sel").forEach((el) => el.classList.remove("rk-sel"));
    const chosen = indices.map((i) => byIndex.get(i)).filter(Boolean);
    const cards = new Set(clicked ? [clicked] : []);
    for (const tr of chosen) {
      tr.classList.add("rk-sel");
      for (let t = parentOf(tr); t; t = parentOf(t)) t.classList.add("rk-open");
      data.rows[indexOf(tr)].cards.forEach((id) => cards.add(id));
    }
    cards.forEach((id) => { const g = document.getElementById(id); if (g) g.classList.add("rk-sel"); });
    refresh();
    if (chosen.some((tr) => tr.hidden)) { filterBox().value = ""; refresh(); }
    if (chosen.length) chosen[0].scrollIntoView({ block: "nearest" });
    if (!clicked && cards.size) {
      const g = document.getElementById([...cards][0]);
      if (g) g.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    showDetail(chosen);
  }

  // ---------------------------------------------------------------- zoom
  function zoom(s) {
    scale = Math.min(8, Math.max(0.1, s));
    svg.style.width = natural.w * scale + "px";
    svg.style.height = natural.h * scale + "px";
  }

  function fitScale() {
    return (document.getElementById("rk-diagram").clientWidth - 2) / natural.w;
  }

  function setupZoom() {
    svg = document.querySelector("#rk-diagram svg");
    if (!svg) return;
    const box = svg.viewBox.baseVal;  // in points, as matplotlib writes it
    natural = { w: (box.width * 4) / 3, h: (box.height * 4) / 3 };
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    zoom(Math.min(1, fitScale()));
    document.getElementById("rk-diagram").addEventListener("wheel", (e) => {
      if (!e.ctrlKey) return;
      e.preventDefault();
      zoom(scale * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
    }, { passive: false });
  }

  // ---------------------------------------------------------------- events
  document.addEventListener("click", (e) => {
    const t = e.target;
    const card = t.closest && t.closest("#rk-diagram g[id^='rk-']");
    if (card) return select(data.picks[card.id] || [], card.id);
    const z = t.closest && t.closest("[data-zoom]");
    if (z) {
      const how = z.dataset.zoom;
      return zoom(how === "in" ? scale * 1.25 : how === "out" ? scale / 1.25 : how === "fit" ? fitScale() : 1);
    }
    const tree = t.closest && t.closest("[data-tree]");
    if (tree) return openAll(tree.dataset.tree === "open");
    const tr = t.closest && t.closest("#rk-layers tbody tr");
    if (!tr) return;
    if (t.classList.contains("rk-tog")) {
      tr.classList.toggle("rk-open");
      return refresh();
    }
    select([indexOf(tr)], null);
  });
  document.addEventListener("input", (e) => { if (e.target.id === "rk-filter") refresh(); });

  function init() {
    const el = document.getElementById("rk-data");
    if (!el) return;
    data = JSON.parse(el.textContent);
    rows = Array.from(document.querySelectorAll("#rk-layers tbody tr"));
    byIndex = new Map(rows.map((tr) => [indexOf(tr), tr]));
    document.querySelector("#rk-layers table").classList.add("rk-tree");
    rows.forEach((tr) => tr.classList.toggle("rk-open", depthOf(tr) === 1 && tr.classList.contains("rk-nest")));
    setupZoom();
    refresh();
    document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1);  // times built
    document.body.dataset.readyAt = performance.now().toFixed(1);  // ms since navigation (benchmarks/view_page.py)
  }

  window.rkView = { init, select };
  init();
})();
