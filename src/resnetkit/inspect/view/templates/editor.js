/* resnetkit view --serve: each edit of the layer table is sent to the local server, which answers with the
   rebuilt page or the table's error; a bad row is marked at its line and the last good network stays. */
"use strict";
(function () {
  const text = document.getElementById("rk-text");
  const gutter = document.getElementById("rk-gutter");
  const mark = document.getElementById("rk-mark");
  const error = document.getElementById("rk-error");
  const status = document.getElementById("rk-status");
  const fields = ["rk-text", "rk-column", "rk-input"];
  const LINE = 18, PAD = 6;  // px: the editor's line height and padding (view.css)
  let timer = null, sent = 0, answered = 0, bad = 0;

  function lines() {
    const n = text.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, k) => {
      const s = document.createElement("span");
      s.id = "rk-ln-" + (k + 1);
      s.textContent = String(k + 1);
      if (k + 1 === bad) s.className = "rk-bad";
      return s;
    }));
    scroll();
  }

  function scroll() {
    gutter.scrollTop = text.scrollTop;
    mark.style.top = PAD + (bad - 1) * LINE - text.scrollTop + "px";
  }

  function show(answer) {
    if (answer.ok) {
      if (answer.body !== undefined) {  // (the first answer's page is already there)
        document.getElementById("rk-main").innerHTML = answer.body;
        window.rkView.init();
      }
      bad = 0;
      error.hidden = true;
      error.textContent = "";
      status.textContent = "built: " + answer.summary;
    } else {
      bad = answer.line || 0;
      error.hidden = false;
      error.dataset.line = String(bad || "");
      error.textContent = (bad ? "line " + bad + ": " : "") + answer.error;
      status.textContent = "not built: the page shows the last network that built";
    }
    mark.hidden = !bad;
    document.body.dataset.state = answer.ok ? "built" : "error";
    lines();
  }

  function send() {
    const id = ++sent;
    document.body.dataset.sent = String(sent);
    status.textContent = "building…";
    const [table, column, input] = fields.map((f) => document.getElementById(f).value);
    fetch("build", { method: "POST", headers: { "Content-Type": "application/json" },
                     body: JSON.stringify({ table, column, input }) })
      .then((r) => r.json())
      .then((answer) => { if (id > answered) { answered = id; show(answer); } })
      .catch((e) => { status.textContent = "the server did not answer (" + e + "): is resnetkit view --serve running?"; })
      .finally(() => { document.body.dataset.answered = String(Math.max(answered, Number(document.body.dataset.answered || 0))); });
  }

  fields.forEach((f) => document.getElementById(f).addEventListener("input", () => {
    if (f === "rk-text") lines();
    clearTimeout(timer);
    timer = setTimeout(send, 300);
  }));
  text.addEventListener("scroll", scroll);
  show(JSON.parse(document.getElementById("rk-first").textContent));
})();
