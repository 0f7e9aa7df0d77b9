/* controlloop dashboard: polls /ui/api/cycles and draws with uPlot (vendored). */
(function () {
  "use strict";
  var API = "api/cycles";
  var POLL_MS = 1000;
  var COLORS = ["#2f6fdf", "#e8710a", "#1a7f37", "#a142f4", "#c62828", "#12a4af", "#9e6b00", "#5f6368"];
  var state = { cycles: [], latest: 0, meta: null, selected: null, charts: {}, keys: {} };
  window.controlloopDashboard = state; // for tests and the curious

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) { return "–"; }
    return Number(v).toFixed(digits === undefined ? 0 : digits);
  }
  function money(cents) { return cents === null || cents === undefined ? "–" : "$" + (cents / 100).toFixed(2); }
  function alloc(acc, n) { return (acc || "–") + " × " + (n === null || n === undefined ? "?" : n); }
  function isSim() { return state.meta && state.meta.clock === "sim"; }
  function tLabel(t) {
    if (isSim()) { return "t=" + Math.round(t / 60) + " min"; }
    return new Date(t * 1000).toLocaleTimeString();
  }

  // --- charts --------------------------------------------------------------------------------

  function chartSize(box) { return { width: Math.max(box.clientWidth - 12, 200), height: 200 }; }

  function xAxis() {
    // cycles are a minute or so apart: ticks on whole minutes, at least 70 px apart
    var axis = { stroke: "#6b7384", grid: { stroke: "#eef0f3" }, space: 70,
      incrs: [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800] };
    if (isSim()) { // simulated seconds from 0: "12m", "2.5h"
      axis.values = function (u, splits) {
        return splits.map(function (s) { return s >= 7200 ? (s / 3600).toFixed(1) + "h" : Math.round(s / 60) + "m"; });
      };
    }
    return axis;
  }

  function yAxis(label) {
    return { label: label, stroke: "#6b7384", grid: { stroke: "#eef0f3" }, size: 56 };
  }

  /* Create or update chart ``id``: ``series`` is [{label, color, dash, step}], ``data`` uPlot columns.
     The chart is rebuilt when its key (series labels, selection) changes. */
  function draw(id, title, ylabel, series, data, extra) {
    var box = $(id);
    var key = title + "|" + series.map(function (s) { return s.label; }).join(",");
    var chart = state.charts[id];
    if (chart && state.keys[id] === key) {
      chart.setData(data);
      return chart;
    }
    if (chart) { chart.destroy(); }
    box.textContent = "";
    var size = chartSize(box);
    var opts = {
      title: title, width: size.width, height: size.height,
      scales: { x: { time: !isSim() }, y: extra && extra.log ? { distr: 3, log: 10 } : { range: function (u, min, max) {
        var lo = Math.min(0, min === null ? 0 : min), hi = max === null ? 1 : max;
        return [lo, hi <= lo ? lo + 1 : hi * 1.08];
      } } },
      axes: [xAxis(), yAxis(ylabel)],
      legend: { live: false },
      series: [{ label: "time", value: function (u, v) { return v === null ? "–" : tLabel(v); } }].concat(
        series.map(function (s) {
          var out = { label: s.label, stroke: s.color, width: s.width || 2, spanGaps: !!s.spanGaps,
            points: { show: false } };
          if (s.dash) { out.dash = s.dash; }
          if (s.step) { out.paths = uPlot.paths.stepped({ align: 1 }); }
          if (s.fill) { out.fill = s.fill; }
          return out;
        })),
      hooks: extra && extra.hooks ? extra.hooks : {},
    };
    chart = new uPlot(opts, data, box);
    state.charts[id] = chart;
    state.keys[id] = key;
    return chart;
  }

  /* Vertical marks where the server's accelerator changes, labelled with the new one. */
  function acceleratorMarks() {
    return { draw: [function (u) {
      var marks = state.accMarks || [];
      var ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#a142f4";
      ctx.fillStyle = "#a142f4";
      ctx.setLineDash([4, 4]);
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.font = (11 * devicePixelRatio) + "px system-ui, sans-serif";
      marks.forEach(function (m) {
        var x = u.valToPos(m.t, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) { return; }
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillText("→ " + m.acc, x + 4 * devicePixelRatio, u.bbox.top + 12 * devicePixelRatio);
      });
      ctx.restore();
    }] };
  }

  /* GPU types some server ran or was told to run in the history shown (not every type
     the config lists). */
  function usedTypes() {
    var types = {};
    state.cycles.forEach(function (x) { Object.keys(x.gpus || {}).forEach(function (k) {
      if (x.gpus[k].used || x.gpus[k].desired) { types[k] = true; }
    }); });
    return Object.keys(types).sort();
  }

  function fleetCharts() {
    var c = state.cycles;
    var ts = c.map(function (x) { return x.t; });
    draw("chart-cost", "Cost ($/h)", "$/h", [{ label: "total", color: COLORS[0], fill: "rgba(47,111,223,0.08)" }],
      [ts, c.map(function (x) { return x.totalCostCentsPerHour === null ? null : x.totalCostCentsPerHour / 100; })]);

    var names = usedTypes();
    var series = [], data = [ts];
    names.forEach(function (name, i) {
      var color = COLORS[i % COLORS.length];
      series.push({ label: name + " used", color: color, step: true });
      data.push(c.map(function (x) { var g = (x.gpus || {})[name]; return g ? g.used : 0; }));
      var hasCap = c.some(function (x) { var g = (x.gpus || {})[name]; return g && g.capacity !== null; });
      if (hasCap) {
        series.push({ label: name + " capacity", color: color, dash: [6, 4], width: 1.5, step: true });
        data.push(c.map(function (x) { var g = (x.gpus || {})[name]; return g && g.capacity !== null ? g.capacity : null; }));
      }
    });
    draw("chart-gpus", "GPUs used vs capacity", "cards", series, data);

    draw("chart-slo", "SLO attainment (% of servers)", "%", [{ label: "meeting ITL and TTFT", color: COLORS[2] }],
      [ts, c.map(function (x) {
        var known = x.servers.filter(function (s) { return s.sloMet !== null; });
        return known.length ? 100 * known.filter(function (s) { return s.sloMet; }).length / known.length : null;
      })]);
  }

  function serverCharts() {
    var name = state.selected;
    var rows = [], ts = [];
    state.cycles.forEach(function (x) {
      var r = x.servers.find(function (s) { return s.server === name; });
      if (r) { rows.push(r); ts.push(x.t); }
    });
    $("server-title").textContent = name ? "Server " + name : "Server";
    function col(f) { return rows.map(f); }
    draw("chart-load", name + ": load (req/min)", "req/min", [{ label: "arrival rate", color: COLORS[0] }],
      [ts, col(function (r) { return r.arrivalRpm; })]);
    var marks = [];
    for (var i = 1; i < rows.length; i++) {
      if (rows[i].currentAccelerator !== rows[i - 1].currentAccelerator) {
        marks.push({ t: ts[i], acc: rows[i].currentAccelerator });
      }
    }
    state.accMarks = marks; // read by the chart's draw hook
    draw("chart-replicas", name + ": replicas and accelerator", "replicas", [
      { label: "current", color: COLORS[0], step: true },
      { label: "desired", color: COLORS[1], step: true, dash: [6, 4] },
    ], [ts, col(function (r) { return r.currentReplicas; }), col(function (r) { return r.desiredReplicas; })],
    { hooks: acceleratorMarks() });
    var lat = [
      { label: "observed", color: COLORS[0] },
      { label: "predicted", color: COLORS[1] },
      { label: "SLO", color: COLORS[4], dash: [6, 4], width: 1.5, spanGaps: true },
    ];
    function pos(v) { return v === null || v <= 0 ? null : v; } // log scale: no zeros
    // Log scale: a latency 50x over its target and one 10 % under it both stay readable.
    draw("chart-itl", name + ": ITL (ms, log scale)", "ms", lat, [ts, col(function (r) { return pos(r.observedItlMs); }),
      col(function (r) { return pos(r.predictedItlMs); }), col(function (r) { return pos(r.sloItlMs); })], { log: true });
    draw("chart-ttft", name + ": TTFT (ms, log scale)", "ms", lat, [ts, col(function (r) { return pos(r.observedTtftMs); }),
      col(function (r) { return pos(r.predictedTtftMs); }), col(function (r) { return pos(r.sloTtftMs); })], { log: true });
    tuning(name, rows);
    decisionLog(rows, ts);
  }

  /* The online tuning (when the controller tunes): the selected server's
     (model, accelerator) multipliers over time, and every pair's estimates now. */
  function tuning(name, rows) {
    var last = state.cycles[state.cycles.length - 1];
    var section = $("tuning-section");
    if (!last || !last.tuning || !last.tuning.length) { section.hidden = true; return; }
    section.hidden = false;
    var row = rows[rows.length - 1];
    var pair = row ? row.model + "/" + row.currentAccelerator : "";
    var ts = [], byParam = {};
    state.cycles.forEach(function (x) {
      var p = (x.tuning || []).find(function (t) { return t.pair === pair; });
      if (!p) { return; }
      ts.push(x.t);
      Object.keys(p.applied || {}).forEach(function (k) { (byParam[k] = byParam[k] || {})[ts.length - 1] = p.applied[k]; });
    });
    var names = Object.keys(byParam).sort();
    draw("chart-tuning", pair + ": applied multipliers", "× profile", names.map(function (k, i) {
      return { label: k, color: COLORS[i % COLORS.length], step: true };
    }), [ts].concat(names.map(function (k) { return ts.map(function (_, i) { var v = byParam[k][i]; return v === undefined ? null : v; }); })));
    var body = $("tuning").querySelector("tbody");
    body.textContent = "";
    last.tuning.forEach(function (p) {
      Object.keys(p.params || {}).sort().forEach(function (k, i) {
        var tr = el("tr", { "data-pair": p.pair, "class": p.pair === pair ? "selected" : "" });
        tr.appendChild(el("td", {}, i === 0 ? p.pair + (p.warmedUp ? "" : " (warming up)") : ""));
        tr.appendChild(el("td", {}, k));
        tr.appendChild(el("td", { "class": "num" }, fmt(p.params[k], 4)));
        tr.appendChild(el("td", { "class": "num" }, fmt((p.applied || {})[k], 3)));
        tr.appendChild(el("td", { "class": "num" }, fmt((p.sigma || {})[k], 3)));
        tr.appendChild(el("td", { "class": "num" }, i === 0 ? (p.observations || 0) + " (" + (p.rejected || 0) + " rejected)" : ""));
        body.appendChild(tr);
      });
    });
  }

  function decisionLog(rows, ts) {
    var body = $("decision-log").querySelector("tbody");
    body.textContent = "";
    var shown = 0;
    for (var i = rows.length - 1; i >= 0 && shown < 12; i--) {
      var r = rows[i];
      if (r.verdict === "unchanged" && i !== rows.length - 1) { continue; }
      var tr = el("tr");
      tr.appendChild(el("td", { "class": "num" }, tLabel(ts[i])));
      var td = el("td");
      td.appendChild(el("span", { "class": "verdict " + r.verdict }, r.verdict));
      tr.appendChild(td);
      tr.appendChild(el("td", { "class": "num" }, change(r)));
      tr.appendChild(el("td", { "class": "reason" }, r.reason));
      body.appendChild(tr);
      shown++;
    }
  }

  function change(r) {
    var now = alloc(r.currentAccelerator, r.currentReplicas);
    if (r.desiredReplicas === null) { return now; }
    var then = alloc(r.desiredAccelerator, r.desiredReplicas);
    return then === now ? now : now + " → " + then;
  }

  // --- overview and table --------------------------------------------------------------------

  function latency(obs, pred, slo) {
    var td = el("td", { "class": "num" });
    var o = el("span", { "class": obs === null || !slo ? "" : obs > slo ? "miss" : "met" }, fmt(obs, 1));
    td.appendChild(o);
    td.appendChild(document.createTextNode(" / " + fmt(pred, 1) + " / " + fmt(slo, 0)));
    return td;
  }

  function overview(last) {
    $("cost").textContent = money(last.totalCostCentsPerHour) + "/h";
    $("cost-sub").textContent = fmt(last.totalCostCentsPerHour, 1) + " ¢/h for the desired allocation";
    var known = last.servers.filter(function (s) { return s.sloMet !== null; });
    var met = known.filter(function (s) { return s.sloMet; }).length;
    $("slo").textContent = known.length ? Math.round(100 * met / known.length) + "%" : "–";
    $("slo-sub").textContent = met + " of " + known.length + " servers within ITL and TTFT targets";
    var counts = {};
    last.servers.forEach(function (s) { counts[s.verdict] = (counts[s.verdict] || 0) + 1; });
    var changed = (counts.scaled || 0) + (counts.moved || 0);
    $("decisions").textContent = changed + " changed";
    $("decisions-sub").textContent = Object.keys(counts).sort().map(function (k) { return counts[k] + " " + k; }).join(", ");
    if (last.errors && last.errors.length) { // the cycle's own errors (collection, specs, patches)
      $("decisions-sub").appendChild(el("div", { "class": "miss", "id": "cycle-errors" },
        last.errors.length + " error" + (last.errors.length > 1 ? "s" : "") + ": " + last.errors[0]));
    }
    var gpus = $("gpus");
    gpus.textContent = "";
    var used = usedTypes();
    used.forEach(function (type) {
      var g = (last.gpus || {})[type] || { used: 0, desired: 0, capacity: null };
      gpus.appendChild(el("div", { "class": "gpu-type" }, type));
      var bar = el("div", { "class": "bar" });
      var share = g.capacity ? Math.min(1, g.used / g.capacity) : 0;
      var fill = el("span", { "class": share >= 0.999 ? "full" : "" });
      fill.style.width = (100 * share) + "%";
      bar.appendChild(fill);
      gpus.appendChild(bar);
      var desired = g.desired !== g.used ? " (→ " + g.desired + ")" : "";
      gpus.appendChild(el("div", { "class": "num" }, g.used + desired + " / " + (g.capacity === null ? "∞" : g.capacity)));
    });
    if (!used.length) { gpus.appendChild(el("div", { "class": "sub idle" }, "no cards in use reported")); }
    var idle = Object.keys(last.gpus || {}).filter(function (t) { return used.indexOf(t) < 0; });
    if (idle.length) {
      gpus.appendChild(el("div", { "class": "sub idle" }, "unused: " + idle.join(", ")));
    }
  }

  function table(last) {
    var body = $("servers").querySelector("tbody");
    body.textContent = "";
    last.servers.forEach(function (r) {
      var tr = el("tr", { "data-server": r.server });
      if (r.server === state.selected) { tr.className = "selected"; }
      tr.appendChild(el("td", {}, r.server));
      tr.appendChild(el("td", {}, r.model + " / " + r.serviceClass));
      tr.appendChild(el("td", { "class": "num" }, change(r)));
      tr.appendChild(el("td", { "class": "num" }, r.arrivalRpm === null ? r.loadStatus : fmt(r.arrivalRpm) + " rpm"));
      tr.appendChild(latency(r.observedItlMs, r.predictedItlMs, r.sloItlMs));
      tr.appendChild(latency(r.observedTtftMs, r.predictedTtftMs, r.sloTtftMs));
      tr.appendChild(el("td", { "class": "num" }, fmt(r.costCentsPerHour, 1) + " ¢/h"));
      var td = el("td");
      td.appendChild(el("span", { "class": "verdict " + r.verdict }, r.verdict));
      tr.appendChild(td);
      tr.appendChild(el("td", { "class": "reason" }, r.reason));
      tr.addEventListener("click", function () {
        state.selected = r.server;
        state.userSelected = true;
        render();
      });
      body.appendChild(tr);
    });
  }

  function render() {
    var last = state.cycles[state.cycles.length - 1];
    if (!last) { return; }
    var gone = !last.servers.some(function (s) { return s.server === state.selected; });
    if (!state.userSelected || gone) { // until a row is clicked, follow the busiest server
      // the server scaled or moved most often is the interesting one to show first
      var changes = {};
      state.cycles.forEach(function (x) { x.servers.forEach(function (s) {
        changes[s.server] = (changes[s.server] || 0) + (s.verdict === "scaled" || s.verdict === "moved" ? 1 : 0);
      }); });
      // ties keep the server shown (no jumping between equals)
      var best = !gone && state.selected ? state.selected : (last.servers[0] ? last.servers[0].server : null);
      last.servers.forEach(function (s) { if ((changes[s.server] || 0) > (changes[best] || 0)) { best = s.server; } });
      state.selected = best;
    }
    overview(last);
    table(last);
    fleetCharts();
    if (state.selected) { serverCharts(); }
    var m = state.meta;
    var progress = m.totalCycles ? " of " + m.totalCycles : "";
    $("status").textContent = "cycle " + state.cycles.length + progress + " shown (" + last.cycleId + ", " +
      last.outcome + (last.dryRun ? ", dry-run" : "") + ") at " + tLabel(last.t) +
      (m.finished ? " · run finished" : "");
    $("status").className = "status" + (m.finished ? "" : " live");
    document.body.setAttribute("data-cycles", String(state.cycles.length));
    document.body.setAttribute("data-latest", String(state.latest));
  }

  function poll() {
    fetch(API + "?since=" + state.latest, { cache: "no-store" }).then(function (resp) {
      if (!resp.ok) { throw new Error("HTTP " + resp.status); }
      return resp.json();
    }).then(function (doc) {
      if (doc.latest < state.latest) { state.cycles = []; } // the server restarted
      state.meta = doc;
      $("title").textContent = doc.title;
      document.title = doc.title + " · controlloop";
      var changed = doc.cycles.length > 0 || doc.latest < state.latest || !state.rendered ||
        (state.meta && doc.finished !== state.wasFinished);
      state.wasFinished = doc.finished;
      state.cycles = state.cycles.concat(doc.cycles);
      if (state.cycles.length > doc.history) { state.cycles = state.cycles.slice(-doc.history); }
      state.latest = doc.latest;
      if (changed && state.cycles.length) { render(); state.rendered = true; }
      else if (changed) { $("status").textContent = "waiting for the first cycle…"; }
    }).catch(function (err) {
      $("status").textContent = "cannot reach the controller: " + err.message;
      $("status").className = "status";
    }).then(function () { setTimeout(poll, POLL_MS); });
  }

  window.addEventListener("resize", function () {
    Object.keys(state.charts).forEach(function (id) { state.charts[id].setSize(chartSize($(id))); });
  });
  poll();
})();
