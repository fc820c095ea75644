// The lakehouse status page: polls /api/history and draws it. Plain JS, no
// dependencies, no build step; charts are drawn on canvas by drawChart.
(function () {
  "use strict";

  var COLORS = ["#2f6fde", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#5c940d", "#862e9c", "#495057"];
  var ACKS = ["ok", "buffered", "fallback", "duplicate"];
  var state = { samples: [], last: 0, windowMs: 15 * 60 * 1000, intervalMs: 2000, tables: [], view: null, failures: 0 };

  function $(id) { return document.getElementById(id); }

  function fmt(v, digits) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + " G";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + " k";
    if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
    return v.toFixed(digits === undefined ? 2 : digits);
  }
  function fmtBytes(b) {
    b = Number(b) || 0;
    if (b >= 1 << 30) return (b / (1 << 30)).toFixed(2) + " GiB";
    if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + " MiB";
    if (b >= 1 << 10) return (b / (1 << 10)).toFixed(1) + " KiB";
    return b + " B";
  }
  function ago(ms, now) {
    ms = Number(ms) || 0;
    if (!ms) return "never";
    var s = Math.max(0, (now - ms) / 1000);
    if (s < 1) return "now";
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function clock(ms) {
    var d = new Date(Number(ms));
    return d.toLocaleTimeString([], { hour12: false });
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function fillTable(id, rows, cols, empty) {
    var tbody = $(id).tBodies[0];
    var frag = document.createDocumentFragment();
    if (!rows.length) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = cell(tr, empty);
      td.colSpan = cols;
      frag.appendChild(tr);
    }
    rows.forEach(function (r) { frag.appendChild(r); });
    tbody.replaceChildren(frag);
  }

  // drawChart draws series [{name, color, points: [[t, v], ...]}] on canvas
  // over the window ending at now, and records how many points it drew in
  // canvas.dataset.points.
  function drawChart(canvas, series, now, opts) {
    opts = opts || {};
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 300, h = canvas.clientHeight || 150;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var style = getComputedStyle(document.body);
    var fg = style.color, line = "rgba(128,128,128,0.25)";
    // The x axis spans the data held, at least 2 minutes and at most the
    // window (15 minutes), so that a young server's charts are readable.
    var span = state.windowMs;
    if (state.samples.length) span = Math.min(state.windowMs, Math.max(120000, now - state.samples[0].t));
    var t0 = now - span;
    if (opts.stacked) {
      // Each series is drawn on top of the ones before it.
      var base = {};
      series = series.map(function (s) {
        return { name: s.name, color: s.color, points: s.points.map(function (p) {
          var v = (base[p[0]] || 0) + (p[1] || 0);
          base[p[0]] = v;
          return [p[0], v, p[1]];
        }) };
      });
    }
    var ymax = opts.min || 0;
    series.forEach(function (s) {
      s.points.forEach(function (p) { if (p[0] >= t0 && p[1] > ymax) ymax = p[1]; });
    });
    if (ymax <= 0) ymax = 1;
    var mag = Math.pow(10, Math.floor(Math.log10(ymax)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return ymax / s <= 4; }) || mag * 10;
    ymax = Math.ceil(ymax / step) * step;
    var left = 44, right = 6, top = 6, bottom = 18;
    var pw = w - left - right, ph = h - top - bottom;
    function x(t) { return left + (t - t0) / span * pw; }
    function y(v) { return top + ph - v / ymax * ph; }
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillStyle = fg;
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (var v = 0; v <= ymax + step / 2; v += step) {
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(w - right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(fmt(v, 1), left - 4, y(v));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    [1, 2 / 3, 1 / 3, 0].forEach(function (f) {
      var sec = Math.round(span * f / 1000);
      var label = !sec ? "now" : sec % 60 ? "-" + sec + "s" : "-" + sec / 60 + "m";
      ctx.fillText(label, Math.min(Math.max(x(now - span * f), left + 10), w - right - 12), top + ph + 4);
    });
    var drawn = 0;
    series.forEach(function (s) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      var started = false, prevT = 0, n = 0;
      s.points.forEach(function (p) {
        if (p[0] < t0 || p[1] === null || p[1] === undefined) { started = false; return; }
        // A gap of more than three intervals (server restarted, page
        // asleep) breaks the line.
        if (started && p[0] - prevT > 3 * state.intervalMs) started = false;
        if (started) ctx.lineTo(x(p[0]), y(p[1])); else ctx.moveTo(x(p[0]), y(p[1]));
        started = true;
        prevT = p[0];
        n++;
      });
      ctx.stroke();
      if (opts.dots) {
        s.points.forEach(function (p) {
          if (p[0] >= t0 && p[1] !== null) { ctx.beginPath(); ctx.arc(x(p[0]), y(p[1]), 2, 0, 2 * Math.PI); ctx.fill(); }
        });
      }
      drawn += n;
    });
    canvas.dataset.points = String(drawn);
    var legend = canvas.nextElementSibling;
    legend.replaceChildren();
    series.forEach(function (s) {
      var span = document.createElement("span");
      var i = document.createElement("i");
      i.style.background = s.color;
      span.appendChild(i);
      var lastV = null;
      for (var k = s.points.length - 1; k >= 0; k--) {
        var pk = s.points[k];
        if (pk[1] !== null) { lastV = pk.length > 2 ? pk[2] : pk[1]; break; }
      }
      span.appendChild(document.createTextNode(s.name + (lastV === null ? "" : " " + fmt(lastV))));
      legend.appendChild(span);
    });
  }

  function series(name, i, f) {
    return { name: name, color: COLORS[i % COLORS.length], points: state.samples.map(function (s) { return [s.t, f(s)]; }) };
  }

  function keysOf(field) {
    var seen = {};
    state.samples.forEach(function (s) { Object.keys(s[field] || {}).forEach(function (k) { seen[k] = true; }); });
    return Object.keys(seen).sort();
  }

  function drawCharts(now) {
    drawChart($("c-entries"), [series("entries/s", 0, function (s) { return s.entries_per_sec; })], now);
    drawChart($("c-bytes"), [series("MB/s", 1, function (s) { return s.bytes_per_sec / 1e6; })], now);
    var acks = ACKS.concat(keysOf("acks").filter(function (k) { return ACKS.indexOf(k) < 0; }));
    drawChart($("c-acks"), acks.map(function (k, i) { return series(k, i, function (s) { return (s.acks || {})[k] || 0; }); }), now);
    var nacks = keysOf("nacks");
    drawChart($("c-nacks"), nacks.length ? nacks.map(function (k, i) { return series(k, i + 1, function (s) { return s.nacks[k] || 0; }); })
      : [series("none", 9, function () { return 0; })], now);
    drawChart($("c-buffer"), [series("utilization %", 4, function (s) { return s.buffer_utilization * 100; })], now, { min: 10 });
    drawChart($("c-wal"), [
      series("log MB", 5, function (s) { return s.wal_bytes / 1e6; }),
      series("staged MB", 6, function (s) { return s.staged_bytes / 1e6; }),
    ], now);
    drawChart($("c-latency"), [series("commit ms", 3, function (s) { return s.commits > 0 && s.commit_seconds > 0 ? s.commit_seconds * 1000 : null; })], now, { dots: true });
    var tables = state.tables.length ? state.tables : [];
    drawChart($("c-commits"), tables.length ? tables.map(function (t, i) { return series(t, i, function (s) { return (s.commits_by_table || {})[t] || 0; }); })
      : [series("flushes", 0, function (s) { return s.commits; })], now, { stacked: true });
  }

  function renderTables(v) {
    var now = v.now_ms;
    var st = v.status || {};
    var rows = (v.sources || []).map(function (s) {
      var tr = document.createElement("tr");
      tr.dataset.source = s.id;
      tr.dataset.rate = String(s.entries_per_sec);
      cell(tr, s.id);
      cell(tr, s.shard || "");
      cell(tr, s.mode);
      cell(tr, s.connected ? "yes" : "no", s.connected ? "ok" : "");
      cell(tr, fmt(s.entries_per_sec, 0), "n");
      cell(tr, String(s.last_accepted), "n");
      cell(tr, String(s.last_persisted), "n");
      cell(tr, String(s.lag_batches), "n");
      cell(tr, s.lag_seconds ? s.lag_seconds.toFixed(0) : "0", "n" + (s.lag_seconds > 120 ? " bad" : ""));
      cell(tr, ago(s.last_seen_ms, now));
      return tr;
    });
    fillTable("sources", rows, 10, "no sources yet");

    rows = (v.commits || []).slice(0, 24).map(function (c) {
      var tr = document.createElement("tr");
      cell(tr, clock(c.time_ms));
      cell(tr, c.table || "(all tables)");
      cell(tr, c.snapshot_id ? String(c.snapshot_id) : "–");
      cell(tr, fmt(c.rows), "n");
      cell(tr, c.duration_ms + " ms", "n");
      cell(tr, c.trigger);
      return tr;
    });
    fillTable("commits", rows, 6, "no commits yet");

    rows = (st.tables || []).map(function (t) {
      var tr = document.createElement("tr");
      cell(tr, t.name);
      cell(tr, String(t.snapshots), "n");
      cell(tr, String(t.data_files), "n");
      cell(tr, String(t.manifests), "n");
      cell(tr, fmtBytes(t.metadata_bytes), "n");
      var lm = Number(t.last_maintenance_time_ms);
      cell(tr, lm ? ago(lm, now) + " (" + t.last_maintenance_duration_ms + " ms)" : "not yet");
      if (t.last_error) cell(tr, t.last_error, "bad");
      else cell(tr, lm ? "ok; expired " + t.expired_snapshots + ", compacted " + t.files_compacted + ", orphans " + t.orphans_removed : "–", lm ? "ok" : "");
      return tr;
    });
    fillTable("tables", rows, 7, "no table health yet (reported after the first maintenance pass)");

    var rec = st.recovery || {};
    var lf = st.last_flush || {};
    var lines = [];
    if (rec.active) {
      lines.push("RECOVERING: storage commits fail; data waits in the write-ahead log, acks say fallback.");
      lines.push("attempt " + rec.attempt + ", " + rec.pending_batches + " batches pending, next retry " +
        (Number(rec.next_retry_time_ms) ? "in " + Math.max(0, Math.round((Number(rec.next_retry_time_ms) - now) / 1000)) + " s" : "–"));
    } else {
      lines.push("Not recovering: commits succeed.");
    }
    if (rec.last_error) lines.push("last error: " + rec.last_error);
    if (Number(st.last_flush_time_ms)) {
      lines.push("last flush " + ago(st.last_flush_time_ms, now) + ": " + (lf.success ? "ok" : "FAILED") + ", " +
        fmt(Number(lf.entries_flushed)) + " entries in " + lf.duration_ms + " ms" + (lf.error ? " — " + lf.error : ""));
    }
    var box = $("recovery");
    box.textContent = lines.join("\n");
    box.className = "card" + (rec.active ? " bad" : "");

    var stateName = String(st.state || "").replace("PARENT_STATE_", "").toLowerCase() || "unknown";
    var pill = $("state");
    pill.textContent = stateName;
    pill.className = "pill " + stateName;
    var buf = st.buffer || {};
    $("summary").textContent = (st.connected_sources || 0) + " connected · buffer " + fmtBytes(buf.total_size_bytes) +
      " (" + ((buf.utilization || 0) * 100).toFixed(0) + "%) · log " + fmtBytes((st.wal || {}).size_bytes);
  }

  function apply(v) {
    state.windowMs = v.window_ms || state.windowMs;
    state.intervalMs = v.interval_ms || state.intervalMs;
    state.tables = v.tables || [];
    (v.samples || []).forEach(function (s) { if (s.t > state.last) { state.samples.push(s); state.last = s.t; } });
    var cut = v.now_ms - state.windowMs;
    while (state.samples.length && state.samples[0].t < cut) state.samples.shift();
    state.view = v;
    document.body.dataset.samples = String(state.samples.length);
    drawCharts(v.now_ms);
    renderTables(v);
    $("updated").textContent = "updated " + clock(v.now_ms);
  }

  function poll() {
    fetch("/api/history?since=" + state.last, { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (v) { state.failures = 0; apply(v); })
      .catch(function () {
        state.failures++;
        $("updated").textContent = "server unreachable, retrying…";
      })
      .then(function () { setTimeout(poll, Math.min(state.intervalMs * Math.pow(2, state.failures), 30000)); });
  }

  window.addEventListener("resize", function () { if (state.view) drawCharts(state.view.now_ms); });
  poll();
})();
