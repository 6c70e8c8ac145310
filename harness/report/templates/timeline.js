// The run report's timeline: one lane per client worker plus the nemesis,
// operations as bars from invocation to completion coloured by outcome,
// fault intervals shaded across the lanes. Drawn on a canvas, only what is on
// screen, so that 100,000 operations pan and zoom smoothly. Data: the JSON in
// <script id="timeline-data">, columns of equal length (see page.py).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("timeline-data").textContent);
  const O = D.ops;
  const N = O.lane.length;
  const COLORS = ["#6DB6FE", "#FFAA26", "#FEB5DA", "#FFAA26"]; // ok, info, fail, pending (Jepsen's)
  const EDGES = ["#2A6FB0", "#A86400", "#B0336E", "#A86400"];
  const OUTCOMES = ["ok", "info", "fail", "pending"];
  const FAULT_FILL = {partition: "rgba(0,114,178,0.13)", kill: "rgba(213,94,0,0.13)", pause: "rgba(204,121,167,0.16)",
                      clock: "rgba(0,158,115,0.14)", packet: "rgba(230,159,0,0.15)"};
  const LANE = 22, BAR = 14, AXIS = 30, LEFT = 110, FAULT_ROW = 16;

  const canvas = document.getElementById("timeline");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("timeline-tip");
  const detail = document.getElementById("timeline-detail");
  let ordinal = !D.timed;
  let xs = [], xe = [], xmin = 0, xmax = 1;
  let view = [0, 1];
  let visible = [];      // op ids passing the filters, sorted by start
  let longOps = [];      // of those, the ones longer than `shortMax` (checked every frame)
  let shortMax = 0;
  let focused = new Set();
  let dragging = null;
  const faultRows = Math.max(1, D.faultRows || 1);
  const lanes = D.lanes.length;

  function axis() {
    // x positions: real time (ms) or event order (history index)
    if (ordinal) { xs = O.i; xe = O.c.map((c, j) => c < 0 ? D.lastIndex : c); xmin = 0; xmax = D.lastIndex + 1; }
    else { xs = O.s; xe = O.e.map(e => e < 0 ? D.end : e); xmin = 0; xmax = Math.max(D.end, 1); }
  }

  function filter() {
    const key = document.getElementById("f-key").value, proc = document.getElementById("f-process").value;
    const node = document.getElementById("f-node").value, outcome = document.getElementById("f-outcome").value;
    visible = [];
    for (let j = 0; j < N; j++) {
      if (key !== "" && O.k[j] !== +key) continue;
      if (proc !== "" && O.p[j] !== +proc) continue;
      if (node !== "" && O.n[j] !== +node) continue;
      if (outcome !== "" && O.o[j] !== +outcome) continue;
      visible.push(j);
    }
    visible.sort((a, b) => xs[a] - xs[b]);
    const durs = visible.map(j => xe[j] - xs[j]).sort((a, b) => a - b);
    shortMax = durs.length ? durs[Math.floor(durs.length * 0.99)] : 0;
    longOps = visible.filter(j => xe[j] - xs[j] > shortMax);
    document.getElementById("f-count").textContent = visible.length.toLocaleString() + " of " + N.toLocaleString() + " operations";
    draw();
  }

  let width = 0;  // canvas.clientWidth, read once a frame: reading it per bar is a layout query each time
  function px(x) { return LEFT + (x - view[0]) / (view[1] - view[0]) * (width - LEFT - 10); }
  function unpx(p) { return view[0] + (p - LEFT) / (width - LEFT - 10) * (view[1] - view[0]); }
  function laneY(l) { return AXIS + faultRows * FAULT_ROW + l * LANE; }

  function size() {
    const dpr = window.devicePixelRatio || 1;
    const h = laneY(lanes) + 6;
    width = canvas.clientWidth;
    canvas.style.height = h + "px";
    canvas.width = Math.floor(canvas.clientWidth * dpr);
    canvas.height = Math.floor(h * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function firstAtOrAfter(x) { // first position in `visible` whose start >= x
    let lo = 0, hi = visible.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[visible[mid]] < x) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function onScreen() {
    const out = [];
    const a = firstAtOrAfter(view[0] - shortMax), b = firstAtOrAfter(view[1] + 1e-9);
    for (let q = a; q < b; q++) { const j = visible[q]; if (xe[j] >= view[0] && xe[j] - xs[j] <= shortMax) out.push(j); }
    for (const j of longOps) if (xs[j] <= view[1] && xe[j] >= view[0]) out.push(j);
    return out;
  }

  function fmt(x) {
    if (ordinal) return "#" + Math.round(x);
    const s = x / 1000;
    const span = (view[1] - view[0]) / 1000;
    return s.toFixed(span < 0.05 ? 4 : span < 2 ? 3 : span < 60 ? 2 : 1) + " s";
  }

  let drawn = 0;
  function draw() {
    width = canvas.clientWidth;
    const W = width, H = laneY(lanes);
    ctx.clearRect(0, 0, W, H + 6);
    ctx.font = "11px system-ui, sans-serif";
    // lanes
    for (let l = 0; l < lanes; l++) {
      ctx.fillStyle = l % 2 ? "#fafafa" : "#f3f3f3";
      ctx.fillRect(LEFT, laneY(l), W - LEFT, LANE);
      ctx.fillStyle = "#333"; ctx.textBaseline = "middle";
      ctx.fillText(D.lanes[l], 4, laneY(l) + LANE / 2);
    }
    // faults: shaded across every lane, labelled in their row above the lanes
    ctx.save(); ctx.beginPath(); ctx.rect(LEFT, 0, W - LEFT, H); ctx.clip();
    for (const f of D.faults) {
      const a = ordinal ? f.i0 : f.s, b = ordinal ? (f.i1 < 0 ? D.lastIndex : f.i1) : (f.e < 0 ? D.end : f.e);
      if (b < view[0] || a > view[1]) continue;
      const x0 = px(a), x1 = Math.max(px(b), x0 + 2);
      ctx.fillStyle = FAULT_FILL[f.kind] || "rgba(86,86,86,0.12)";
      ctx.fillRect(x0, AXIS, x1 - x0, H - AXIS);
      ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
      const y = AXIS + f.row * FAULT_ROW + FAULT_ROW / 2;
      const room = x1 - Math.max(x0, LEFT) - 4;
      if (room > 20) {
        let t = f.label;
        while (t.length > 3 && ctx.measureText(t).width > room) t = t.slice(0, -2);
        if (t !== f.label) t = t.slice(0, -1) + "…";
        ctx.fillText(t, Math.max(x0, LEFT) + 2, y);
      }
    }
    // operations
    const ops = onScreen();
    drawn = ops.length;
    for (const j of ops) {
      const x0 = px(xs[j]), x1 = Math.max(px(xe[j]), x0 + 1.5), y = laneY(O.lane[j]) + (LANE - BAR) / 2;
      const o = O.o[j];
      ctx.fillStyle = COLORS[o];
      ctx.fillRect(x0, y, x1 - x0, BAR);
      if (x1 - x0 > 6) { ctx.strokeStyle = EDGES[o]; ctx.lineWidth = 1; ctx.strokeRect(x0 + 0.5, y + 0.5, x1 - x0 - 1, BAR - 1); }
      if (x1 - x0 > 40) {
        ctx.fillStyle = "#111"; ctx.textBaseline = "middle";
        let t = D.fs[O.f[j]] + " " + O.v[j];
        const room = x1 - x0 - 6;
        if (ctx.measureText(t).width > room) { while (t.length > 2 && ctx.measureText(t + "…").width > room) t = t.slice(0, -1); t += "…"; }
        ctx.fillText(t, x0 + 3, y + BAR / 2);
      }
    }
    for (const j of ops) {
      if (!focused.has(j)) continue;
      const x0 = px(xs[j]), x1 = Math.max(px(xe[j]), x0 + 3), y = laneY(O.lane[j]) + (LANE - BAR) / 2;
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2.5; ctx.strokeRect(x0 - 2, y - 2, x1 - x0 + 4, BAR + 4);
    }
    ctx.restore();
    // axis
    ctx.fillStyle = "#fff"; ctx.fillRect(LEFT, 0, W - LEFT, AXIS);
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.fillStyle = "#333"; ctx.textBaseline = "top";
    const ticks = Math.max(2, Math.floor((W - LEFT) / 110));
    for (let t = 0; t <= ticks; t++) {
      const x = view[0] + (view[1] - view[0]) * t / ticks, p = px(x);
      ctx.beginPath(); ctx.moveTo(p, AXIS - 6); ctx.lineTo(p, H); ctx.strokeStyle = "rgba(0,0,0,0.08)"; ctx.stroke();
      ctx.fillText(fmt(x), Math.min(p + 2, W - 60), 6);
    }
    ctx.fillText(ordinal ? "event order" : "time since start", 4, 6);
    document.getElementById("timeline-range").textContent =
      fmt(view[0]) + " – " + fmt(view[1]) + " · " + drawn.toLocaleString() + " drawn";
  }

  let pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } }

  function setView(a, b) {
    const span = Math.max(b - a, ordinal ? 4 : 0.01);
    const full = xmax - xmin;
    a = Math.max(xmin - full * 0.02, Math.min(a, xmax + full * 0.02 - span));
    view = [a, a + Math.min(span, full * 1.04)];
    redraw();
  }
  function zoom(factor, at) {
    const c = at === undefined ? (view[0] + view[1]) / 2 : at;
    setView(c - (c - view[0]) * factor, c + (view[1] - c) * factor);
  }
  function reset() { setView(xmin - (xmax - xmin) * 0.01, xmax + (xmax - xmin) * 0.01); }

  function opAt(ev) {
    const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    const l = Math.floor((y - laneY(0)) / LANE);
    if (l < 0 || l >= lanes || x < LEFT) return -1;
    const t = unpx(x), slack = (view[1] - view[0]) / (canvas.clientWidth - LEFT) * 3;
    let best = -1;
    for (const j of onScreen()) if (O.lane[j] === l && xs[j] - slack <= t && xe[j] + slack >= t) best = j;
    return best;
  }

  function describe(j) {
    const lines = O.c[j] >= 0 ? "lines " + (O.i[j] + 1) + "–" + (O.c[j] + 1) : "line " + (O.i[j] + 1);
    const dur = O.e[j] >= 0 && D.timed ? ((O.e[j] - O.s[j])).toFixed(2) + " ms" : "no completion";
    return "process " + O.p[j] + " · " + D.fs[O.f[j]] + (O.k[j] >= 0 ? " " + D.keys[O.k[j]] : "") + " · " + OUTCOMES[O.o[j]] +
      (O.n[j] >= 0 ? " · node " + D.nodes[O.n[j]] : "") + "\n" + O.v[j] +
      "\nat " + (O.s[j] / 1000).toFixed(4) + " s, " + dur + " · history.jsonl " + lines;
  }

  canvas.addEventListener("mousemove", ev => {
    if (dragging) {
      const dx = unpx(dragging.x) - unpx(ev.clientX - canvas.getBoundingClientRect().left);
      setView(dragging.view[0] + dx, dragging.view[1] + dx);
      return;
    }
    const j = opAt(ev);
    if (j < 0) { tip.hidden = true; return; }
    tip.hidden = false; tip.textContent = describe(j);
    tip.style.left = (ev.pageX + 12) + "px"; tip.style.top = (ev.pageY + 12) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; dragging = null; });
  canvas.addEventListener("mousedown", ev => { dragging = {x: ev.clientX - canvas.getBoundingClientRect().left, view: view.slice()}; });
  window.addEventListener("mouseup", () => { dragging = null; });
  canvas.addEventListener("click", ev => { const j = opAt(ev); if (j >= 0) detail.textContent = describe(j); });
  canvas.addEventListener("wheel", ev => {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect();
    if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) {
      const d = (ev.deltaX || ev.deltaY) / canvas.clientWidth * (view[1] - view[0]);
      setView(view[0] + d, view[1] + d);
    } else zoom(ev.deltaY > 0 ? 1.25 : 0.8, unpx(ev.clientX - r.left));
  }, {passive: false});

  document.getElementById("zoom-in").onclick = () => zoom(0.5);
  document.getElementById("zoom-out").onclick = () => zoom(2);
  document.getElementById("zoom-reset").onclick = reset;
  document.getElementById("pan-left").onclick = () => { const d = (view[1] - view[0]) * 0.5; setView(view[0] - d, view[1] - d); };
  document.getElementById("pan-right").onclick = () => { const d = (view[1] - view[0]) * 0.5; setView(view[0] + d, view[1] + d); };
  const ordBox = document.getElementById("ordinal");
  ordBox.checked = ordinal; ordBox.disabled = !D.timed;
  ordBox.onchange = () => { ordinal = ordBox.checked; axis(); filter(); reset(); };
  for (const id of ["f-key", "f-process", "f-node", "f-outcome"]) document.getElementById(id).onchange = filter;
  window.addEventListener("resize", () => { size(); draw(); });

  // Show operations (history indexes, of invocations or completions): zoom
  // the timeline to them with some context, outline them, scroll to it.
  function focusOps(indexes) {
    const want = new Set(indexes);
    focused = new Set();
    for (let j = 0; j < N; j++) if (want.has(O.i[j]) || want.has(O.c[j])) focused.add(j);
    if (!focused.size) return 0;
    let a = Infinity, b = -Infinity;
    for (const j of focused) { a = Math.min(a, xs[j]); b = Math.max(b, xe[j]); }
    const pad = Math.max((b - a) * 0.6, ordinal ? 30 : 150);
    setView(a - pad, b + pad);
    detail.textContent = [...focused].map(describe).join("\n\n");
    canvas.scrollIntoView({block: "center"});
    return focused.size;
  }
  document.querySelectorAll("[data-ops]").forEach(el => el.addEventListener("click", ev => {
    ev.preventDefault();
    focusOps(el.getAttribute("data-ops").split(",").map(Number));
  }));

  // Scroll from the start to the end of the run, one screen at a time, and
  // resolve with the milliseconds taken (the benchmark measures this).
  function sweep(step) {
    return new Promise(resolve => {
      const span = view[1] - view[0], started = performance.now();
      let a = xmin;
      function next() {
        setView(a, a + span); draw();
        a += span * (step || 1);
        if (a > xmax) resolve(performance.now() - started); else requestAnimationFrame(next);
      }
      next();
    });
  }

  window.harnessTimeline = {
    view: () => view.slice(), focus: focusOps, focused: () => [...focused].map(j => O.i[j]),
    drawn: () => drawn, zoom: zoom, reset: reset, sweep: sweep, count: () => visible.length,
  };
  axis(); size(); filter(); reset(); draw();
})();
