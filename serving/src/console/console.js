// The web console's script: see index.html.
"use strict";
// How much history the charts show, and how often the page reads the API.
const WINDOW_MS = 5 * 60 * 1000;
const POLL_MS = 1000;
const state = { streams: new Map(), views: [], token: "" };

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-") || k === "id") e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const fmt = (n) => (n === null || n === undefined) ? "–" : (typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 3 }) : String(n));
const show = (v) => (v !== null && typeof v === "object") ? JSON.stringify(v) : fmt(v);

async function api(path, options) {
  const r = await fetch(path, Object.assign({ cache: "no-store" }, options || {}));
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  return { status: r.status, body };
}

// --- Streams: totals, receivers and three charts per stream. ---
function streamBox(name) {
  let s = state.streams.get(name);
  if (s) return s;
  const charts = {};
  const row = el("div", { "data-stream": name });
  const chartBox = el("div", { class: "charts" });
  for (const [key, title, unit] of [["rate", "input rate", "records/s"], ["processing", "processing time", "ms"], ["delay", "scheduling delay", "ms"]]) {
    const last = el("span", { id: `chart-${name}-${key}-last` }, "–");
    const canvas = el("canvas", { id: `chart-${name}-${key}`, "data-points": "0" });
    chartBox.append(el("div", { class: "chart" }, el("div", { class: "title" }, el("span", {}, `${title} (${unit})`), last), canvas));
    charts[key] = { canvas, last };
  }
  const summary = el("table", {}, el("thead", {}, el("tr", {},
    el("th", {}, "stream"), el("th", {}, "format"), el("th", { class: "num" }, "records"),
    el("th", { class: "num" }, "dead letters"), el("th", { class: "num" }, "late records"), el("th", {}, "watermark"))),
    el("tbody", {}, el("tr", {},
      el("td", {}, el("b", {}, name)), el("td", { id: `stream-${name}-format` }),
      el("td", { class: "num", id: `stream-${name}-records` }), el("td", { class: "num", id: `stream-${name}-dead` }),
      el("td", { class: "num", id: `stream-${name}-late` }), el("td", { id: `stream-${name}-watermark` }))));
  const receivers = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "receiver"), el("th", {}, "state"),
    el("th", { class: "num" }, "records"), el("th", { class: "num" }, "lag (records)"))), el("tbody", { id: `stream-${name}-receivers` }));
  row.append(summary, chartBox, receivers);
  $("stream-list").append(row);
  s = { charts, batches: [], since: null };
  state.streams.set(name, s);
  return s;
}

function drawChart(chart, points) {
  const { canvas, last } = chart;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 110;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  canvas.setAttribute("data-points", String(points.length));
  if (!points.length) { last.textContent = "–"; return; }
  const now = Date.now(), t0 = now - WINDOW_MS;
  const max = Math.max(1e-9, ...points.map((p) => p[1])) * 1.1;
  g.strokeStyle = "#d9dde3"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
  g.fillStyle = "#6b7380"; g.font = "10px system-ui";
  g.fillText(fmt(max / 1.1), 2, 10);
  g.strokeStyle = "#2f6fde"; g.lineWidth = 1.5; g.beginPath();
  points.forEach(([t, v], i) => {
    const x = (t - t0) / WINDOW_MS * w, y = h - 2 - v / max * (h - 14);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  const value = points[points.length - 1][1];
  last.textContent = fmt(value);
  canvas.setAttribute("data-last", String(value));
}

async function pollStreams() {
  const { body } = await api("/v1/streams");
  for (const s of (body && body.streams) || []) {
    const box = streamBox(s.name);
    $(`stream-${s.name}-format`).textContent = s.format;
    $(`stream-${s.name}-records`).textContent = fmt(s.records_total);
    $(`stream-${s.name}-records`).setAttribute("data-value", String(s.records_total));
    $(`stream-${s.name}-dead`).textContent = fmt(s.dead_letters_total);
    $(`stream-${s.name}-late`).textContent = fmt(s.late_records_total);
    $(`stream-${s.name}-watermark`).textContent = s.watermark || "–";
    const rows = $(`stream-${s.name}-receivers`);
    rows.replaceChildren(...(s.receiver_status || []).map((r) => el("tr", { "data-receiver": r.receiver },
      el("td", {}, r.receiver), el("td", {}, r.status || "listening"),
      el("td", { class: "num" }, fmt(r.records_total)), el("td", { class: "num" }, fmt(r.lag_records)))));
    // New micro-batches only.
    const q = box.since === null ? "" : `?since=${box.since}`;
    const got = await api(`/v1/streams/${encodeURIComponent(s.name)}/batches${q}`);
    for (const b of (got.body && got.body.batches) || []) {
      box.batches.push(b);
      box.since = b.id;
    }
    const cutoff = Date.now() - WINDOW_MS;
    box.batches = box.batches.filter((b) => b.processing_end_us / 1000 >= cutoff);
    const rate = [], processing = [], delay = [];
    box.batches.forEach((b, i) => {
      const t = b.processing_end_us / 1000;
      const prev = box.batches[i - 1];
      const span = prev ? (b.processing_start_us - prev.processing_start_us) / 1e6 : 0;
      if (span > 0) rate.push([t, b.records / span]);
      processing.push([t, b.processing_ms]);
      delay.push([t, b.scheduling_delay_ms]);
    });
    drawChart(box.charts.rate, rate);
    drawChart(box.charts.processing, processing);
    drawChart(box.charts.delay, delay);
  }
  const deadSelect = $("dead-stream");
  if (!deadSelect.options.length) {
    for (const name of state.streams.keys()) deadSelect.append(el("option", { value: name }, name));
  }
}

// --- Views: list, key lookup, top-k. ---
async function pollViews() {
  const { body } = await api("/v1/views");
  if (!body) return;
  $("watermark").textContent = body.watermark_epoch === null ? "none yet" : String(body.watermark_epoch);
  state.views = body.views || [];
  $("view-rows").replaceChildren(...state.views.map((v) => el("tr", { "data-view": v.name },
    el("td", {}, v.name), el("td", {}, v.stream), el("td", {}, v.aggregate),
    el("td", { class: "num", id: `view-${v.name}-keys`, "data-value": String(v.keys !== undefined ? v.keys : v.cells) },
      fmt(v.keys !== undefined ? v.keys : v.cells)))));
  for (const id of ["lookup-view", "top-view"]) {
    const sel = $(id);
    if (sel.options.length !== state.views.length) {
      const keep = sel.value;
      sel.replaceChildren(...state.views.map((v) => el("option", { value: v.name }, v.name)));
      if (keep) sel.value = keep;
    }
  }
}

async function lookup() {
  const view = $("lookup-view").value, key = $("lookup-key").value;
  if (!view || !key) return;
  const { status, body } = await api(`/v1/views/${encodeURIComponent(view)}/keys/${encodeURIComponent(key)}`);
  const out = $("lookup-result");
  out.className = status === 200 ? "" : "bad";
  if (status !== 200) { out.textContent = (body && body.error && body.error.message) || `HTTP ${status}`; return; }
  out.replaceChildren(el("span", { id: "lookup-value", "data-value": JSON.stringify(body.value) }, `${key} = ${show(body.value)}`),
    el("span", { class: "muted" }, `  (batch ${show(body.batch_value)} + real-time ${show(body.realtime_value)})`));
}

async function pollTop() {
  const view = $("top-view").value;
  if (!view) return;
  const k = Math.max(1, Math.min(10000, parseInt($("top-k").value, 10) || 10));
  const { status, body } = await api(`/v1/views/${encodeURIComponent(view)}/top?k=${k}`);
  const rows = $("top-rows");
  if (status !== 200) {
    rows.replaceChildren(el("tr", {}, el("td", { colSpan: 3, class: "muted" }, (body && body.error && body.error.message) || `HTTP ${status}`)));
    return;
  }
  rows.setAttribute("data-view", view);
  rows.replaceChildren(...(body.items || []).map((it, i) => el("tr", { "data-key": it.key, "data-value": JSON.stringify(it.value) },
    el("td", {}, i + 1), el("td", {}, it.key), el("td", { class: "num" }, show(it.value)))));
}

// --- Batch runs: progress of the running one, the history, the button. ---
async function pollRuns() {
  const { body } = await api("/v1/batch/runs");
  const runs = (body && body.runs) || [];
  const running = runs.find((r) => r.state === "running");
  const progress = $("run-progress");
  if (running && running.progress) {
    const p = running.progress;
    const fraction = p.bytes_total ? p.bytes_done / p.bytes_total : (p.rows_total ? p.rows_done / p.rows_total : 0);
    progress.replaceChildren(el("span", {}, `run ${running.id}: `),
      el("span", { class: "bar" }, el("div", { style: `width:${(fraction * 100).toFixed(1)}%` })),
      el("span", { id: "run-fraction", "data-value": String(fraction) },
        ` ${(fraction * 100).toFixed(0)}%  ${fmt(p.rows_done)}/${fmt(p.rows_total)} rows` +
        (p.compacting ? "  compacting the master dataset" : p.view ? `  view ${p.view} (${p.views_done + 1}/${p.views_total})` : "")));
  } else {
    progress.replaceChildren();
  }
  $("run-rows").replaceChildren(...runs.map((r) => {
    const took = r.started_at_us && r.finished_at_us ? (r.finished_at_us - r.started_at_us) / 1e6 : null;
    const note = r.error || (r.compaction && r.compaction.files_in ? `compacted ${r.compaction.files_in} files into ${r.compaction.files_out}` : "");
    return el("tr", { "data-run": String(r.id), "data-state": r.state },
      el("td", {}, r.id), el("td", { class: r.state === "failed" ? "bad" : r.state === "succeeded" ? "ok" : "" }, r.state),
      el("td", {}, r.trigger), el("td", {}, r.started_at_us ? new Date(r.started_at_us / 1000).toISOString().replace("T", " ").slice(0, 19) : "–"),
      el("td", { class: "num" }, took === null ? "–" : took.toFixed(2)), el("td", { class: "num" }, r.epoch === null || r.epoch === undefined ? "–" : String(r.epoch)),
      el("td", { class: "num" }, fmt(r.files)), el("td", { class: "num" }, fmt(r.rows)), el("td", { class: "num" }, fmt(r.keys)),
      el("td", { class: r.error ? "bad" : "muted" }, note));
  }));
}

async function requestRun(event) {
  event.preventDefault();
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.authorization = `Bearer ${token}`;
  const { status, body } = await api("/v1/batch/runs", { method: "POST", headers });
  const msg = $("run-message");
  if (status === 202) { msg.className = "ok"; msg.textContent = `run ${body.id} ${body.state}`; }
  else if (status === 401) { msg.className = "bad"; msg.textContent = "the server needs its token for this: enter it beside the button"; }
  else { msg.className = "bad"; msg.textContent = (body && body.error && body.error.message) || `HTTP ${status}`; }
  pollRuns();
}

async function pollDead() {
  const stream = $("dead-stream").value;
  if (!stream) return;
  const { body } = await api(`/v1/streams/${encodeURIComponent(stream)}/dead_letters?limit=20`);
  $("dead-rows").replaceChildren(...((body && body.items) || []).map((d) => el("tr", {},
    el("td", {}, d.seq), el("td", {}, d.reason), el("td", {}, el("pre", {}, d.record)))));
}

async function pollHealth() {
  const { status, body } = await api("/healthz");
  const h = $("health");
  h.className = status === 200 ? "ok" : "bad";
  h.textContent = status === 200 ? "ok" : ((body && body.problems) || []).map((p) => `${p.component}: ${p.message}`).join("; ") || `HTTP ${status}`;
}

let busy = false;
async function tick() {
  if (busy) return;
  busy = true;
  try {
    await Promise.all([pollHealth(), pollStreams(), pollViews().then(pollTop), pollRuns()]);
    await pollDead();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.setAttribute("data-polls", String(Number(document.body.getAttribute("data-polls") || 0) + 1));
  } catch (e) {
    $("updated").textContent = `cannot reach the server: ${e}`;
  } finally {
    busy = false;
  }
}

$("lookup-form").addEventListener("submit", (e) => { e.preventDefault(); lookup(); });
$("top-form").addEventListener("change", pollTop);
$("run-form").addEventListener("submit", requestRun);
$("dead-stream").addEventListener("change", pollDead);
// #view=NAME&key=KEY looks a key up at once (links from elsewhere).
(async () => {
  await tick();
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("view")) { $("lookup-view").value = params.get("view"); $("top-view").value = params.get("view"); }
  if (params.get("key")) { $("lookup-key").value = params.get("key"); await lookup(); }
  await pollTop();
  setInterval(tick, POLL_MS);
})();
