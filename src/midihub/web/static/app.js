// midihub dashboard: no framework, no build step, no request to any host but the hub.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
};
const NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const noteName = (n) => `${NAMES[n % 12]}${Math.floor(n / 12) - 1}`;
const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
const when = (iso) => { // a time today, a date and time before
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
};
const duration = (s) => {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(sec).padStart(2, "0")}s`;
};

// -- token and requests -------------------------------------------------------
const tokenInput = $("#token");
tokenInput.value = localStorage.getItem("midihub-token") || "";
tokenInput.addEventListener("change", () => {
  localStorage.setItem("midihub-token", tokenInput.value.trim());
  connectLive();
});
const token = () => tokenInput.value.trim();

function setStatus(text) { $("#status").textContent = text; }

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// -- pages --------------------------------------------------------------------
const pages = { overview: refreshOverview, latency: refreshLatency, stuck: refreshStuck, monitor: openMonitor };
let current = "overview";
let ports = [];
let latencyRows = null;

function show(page) {
  current = page;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.page === page);
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  if (page !== "monitor") closeMonitor();
  location.hash = page;
  pages[page]();
}
for (const tab of document.querySelectorAll("button.tab")) tab.addEventListener("click", () => show(tab.dataset.page));

async function loadPorts() {
  try {
    ports = (await api("/api/participants")).ports;
    setStatus("");
  } catch (error) {
    setStatus(error.message);
  }
  return ports;
}

// -- overview -----------------------------------------------------------------
async function refreshOverview() {
  if (!live.connected) await loadPorts();
  renderOverview();
}

function renderOverview() {
  const box = $("#overview");
  box.replaceChildren(...ports.map((port) => {
    const list = port.participants.length
      ? el("ul", {}, ...port.participants.map((p) => el("li", { class: "participant", "data-name": p.name, "data-id": p.id },
          el("span", {}, p.name || "(unnamed)", " ", el("span", { class: "addr" }, p.transport && p.transport !== "rtp" ? `${p.address} · ${p.transport}` : p.address)),
          el("span", { class: "addr since", "data-since": p.connectedSince || "" }, duration(p.connectedFor)))))
      : el("p", { class: "empty" }, "no one connected");
    return el("div", { class: "card port", "data-port": String(port.port) },
      el("h2", {}, port.label),
      el("div", { class: "sub" }, `${port.kind} · port ${port.port} (data ${port.dataPort})`,
        port.halfOpen ? el("span", { class: "half-open", title: "invitations not yet proven by a clock sync" }, ` · ${port.halfOpen} half-open`) : ""),
      list);
  }));
}

// -- latency ------------------------------------------------------------------
async function refreshLatency() {
  if (!live.connected || latencyRows === null) {
    try {
      latencyRows = await api("/api/latency");
    } catch (error) {
      setStatus(error.message);
      return;
    }
  }
  renderLatency(latencyRows);
  drawChart();
}

// Who is connected now, apart from earlier sessions the history database remembers.
function renderLatency(rows) {
  const cell = (v, cls = "") => el("td", { class: cls }, v);
  const line = (r) => el("tr", { "data-name": r.name },
    cell(r.clientName || "(unnamed)"), cell(r.address || "–", "addr"), cell(String(r.clientPort)), cell(when(r.timestamp)),
    cell(fmt(r.averageLatency), "num"), cell(fmt(r.minLatency), "num"), cell(when(r.minLatencyTime)),
    cell(fmt(r.maxLatency), "num"), cell(when(r.maxLatencyTime)), cell(fmt(r.lastLatency), "num"),
    cell(when(r.lastLatencyTime)), cell(fmt(r.jitter), "num"), cell(r.lossPercent === undefined ? "–" : fmt(r.lossPercent), "num"));
  const live = rows.filter((r) => r.connected);
  const past = rows.filter((r) => !r.connected);
  $("#latency-table tbody").replaceChildren(...live.map(line));
  $("#latency-none").hidden = live.length > 0;
  $("#latency-past tbody").replaceChildren(...past.map(line));
  $("#latency-history").hidden = past.length === 0;
  const select = $("#chart-participant");
  const names = [...new Set([...live, ...past].map((r) => r.name))];
  const chosen = select.value;
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n || "(unnamed)")));
  if (names.includes(chosen)) select.value = chosen;
  if (select.value !== chosen) drawChart();
}
$("#chart-participant").addEventListener("change", drawChart);
$("#chart-span").addEventListener("change", drawChart);

async function drawChart() {
  const svg = $("#chart");
  const who = $("#chart-participant").value;
  if (!who) { svg.replaceChildren(); return; }
  let rows = [];
  try {
    rows = await api(`/api/latency/history?participant=${encodeURIComponent(who)}&since=${$("#chart-span").value}`);
  } catch (error) {
    setStatus(error.message);
  }
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const W = 800, H = 240, L = 50, R = 10, T = 10, B = 30;
  const items = [node("line", { class: "grid", x1: L, x2: W - R, y1: H - B, y2: H - B })];
  if (!rows.length) {
    items.push(node("text", { x: W / 2 - 60, y: H / 2 }, "no history yet"));
    svg.replaceChildren(...items);
    return;
  }
  // One series per session (name, address, hub port), in time order, broken where
  // minutes are missing: a line never runs back in time or across a gap.
  const sessions = new Map();
  for (const r of rows) {
    const key = `${r.address} ${r.port}`;
    if (!sessions.has(key)) sessions.set(key, []);
    sessions.get(key).push({ ...r, t: Date.parse(r.minute), step: (r.step || 60) * 1000 });
  }
  const runs = [];
  for (const points of sessions.values()) {
    points.sort((a, b) => a.t - b.t);
    let run = [];
    for (const point of points) {
      const last = run[run.length - 1];
      if (last && point.t - last.t > 1.5 * last.step) { runs.push(run); run = []; }
      run.push(point);
    }
    runs.push(run);
  }
  const all = runs.flat();
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t + p.step));
  const top = Math.max(...all.map((p) => p.maxLatency)) * 1.1 || 1;
  const x = (p) => L + ((p.t + p.step / 2 - t0) / (t1 - t0)) * (W - L - R); // a bucket's middle
  const y = (v) => H - B - (v / top) * (H - T - B);
  for (const frac of [0, 0.5, 1]) {
    items.push(node("line", { class: "grid", x1: L, x2: W - R, y1: y(top * frac), y2: y(top * frac) }));
    items.push(node("text", { x: 4, y: y(top * frac) + 4 }, `${(top * frac).toFixed(0)} ms`));
  }
  for (const run of runs) {
    if (run.length === 1) { // a lone minute: its range as a whisker, its average as a dot
      const [p] = run;
      items.push(node("line", { class: "whisker", x1: x(p), x2: x(p), y1: y(p.minLatency), y2: y(p.maxLatency) }));
      items.push(node("circle", { class: "dot", cx: x(p), cy: y(p.avgLatency), r: 3 }));
      continue;
    }
    const upper = run.map((p) => `${x(p)},${y(p.maxLatency)}`);
    const lower = run.map((p) => `${x(p)},${y(p.minLatency)}`).reverse();
    items.push(node("polygon", { class: "band", points: [...upper, ...lower].join(" ") }));
    items.push(node("polyline", { class: "avg", points: run.map((p) => `${x(p)},${y(p.avgLatency)}`).join(" ") }));
  }
  items.push(node("text", { x: L, y: H - 8 }, new Date(t0).toLocaleTimeString()));
  items.push(node("text", { x: W - R - 60, y: H - 8 }, new Date(t1).toLocaleTimeString()));
  items.push(node("text", { x: W / 2 - 120, y: H - 8 }, "line: average · band: min to max, per minute"));
  svg.replaceChildren(...items);
}

// -- stuck notes --------------------------------------------------------------
async function panic(body, mark, message) {
  mark.className = "mark";
  mark.textContent = "…";
  try {
    await api("/api/panic", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    mark.className = "mark ok";
    mark.textContent = "✓";
    message.textContent = "";
  } catch (error) {
    mark.className = "mark fail";
    mark.textContent = "✗";
    message.textContent = error.message;
  }
  setTimeout(() => { if (mark.textContent !== "…") { mark.textContent = ""; mark.className = "mark"; } }, 2000);
}

async function refreshStuck() {
  if (!live.connected) await loadPorts();
  renderStuck();
}

function renderStuck() {
  $("#stuck").replaceChildren(...ports.map((port) => {
    const mark = el("span", { class: "mark", "data-port": String(port.port) });
    const message = el("div", { class: "message" });
    const buttons = ["Low", "Mid", "High", "All"].map((range) => {
      const button = el("button", { class: "panic", "data-port": String(port.port), "data-range": range }, range);
      button.addEventListener("click", () => panic({ port: port.port, range }, mark, message));
      return button;
    });
    const people = port.participants.map((p) => {
      const pmark = el("span", { class: "mark", "data-participant": p.id });
      const pmessage = el("div", { class: "message" });
      const release = el("button", { class: "release", "data-participant": p.id }, "release");
      release.addEventListener("click", () => panic({ participant: p.id, range: "All" }, pmark, pmessage));
      return el("li", {}, el("span", {}, p.name || "(unnamed)"), el("span", { class: "buttons" }, release, pmark), pmessage);
    });
    return el("div", { class: "card", "data-port": String(port.port) },
      el("h2", {}, port.label), el("div", { class: "sub" }, `port ${port.port}`),
      el("div", { class: "buttons" }, ...buttons, mark), message,
      people.length ? el("ul", {}, ...people) : el("p", { class: "empty" }, "no one connected"));
  }));
}

// -- monitor ------------------------------------------------------------------
let source = null;

// All 128 notes, filling the page's width (scrolling below 75 keys of 14 px).
function buildKeyboard() {
  const board = $("#keyboard");
  if (board.children.length) return;
  const keys = el("div", { class: "keys" });
  const width = 100 / 75; // 75 white keys in notes 0..127
  let white = 0;
  for (let n = 0; n < 128; n++) {
    const black = NAMES[n % 12].includes("#");
    const key = el("div", { class: `key ${black ? "black" : "white"}`, "data-note": String(n), title: noteName(n) });
    key.append(el("span", { class: "ch" }));
    key.style.left = `${(black ? white - 0.32 : white) * width}%`;
    key.style.width = `${black ? width * 0.64 : width}%`;
    if (!black) {
      if (n % 12 === 0) key.append(el("span", { class: "name" }, noteName(n)));
      white++;
    }
    keys.append(key);
  }
  board.append(keys);
}

function showHeld(held) {
  const byNote = new Map();
  for (const ch of held) for (const n of ch.notes) byNote.set(n.note, [...(byNote.get(n.note) || []), ch.channel]);
  for (const key of document.querySelectorAll(".key")) {
    const channels = byNote.get(Number(key.dataset.note));
    key.classList.toggle("held", Boolean(channels));
    key.dataset.channels = channels ? channels.join(",") : "";
    key.querySelector(".ch").textContent = channels ? channels.join(" ") : "";
  }
  $("#channels").replaceChildren(...held.map((ch) => el("span", { class: "chan", "data-channel": String(ch.channel) },
    `ch${ch.channel}: ${ch.notes.length} held`, ch.sustain ? " · sustain" : "", ch.sostenuto ? " · sostenuto" : "",
    ch.bend ? ` · bend ${ch.bend > 0 ? "+" : ""}${ch.bend}` : "")));
}

function log(line) {
  const list = $("#monitor-log");
  list.prepend(el("li", {}, line));
  while (list.children.length > 300) list.lastChild.remove();
}

function closeMonitor() {
  if (source) { source.close(); source = null; }
}

async function openMonitor() {
  buildKeyboard();
  await loadPorts();
  const select = $("#monitor-port");
  const chosen = select.value;
  select.replaceChildren(...ports.map((p) => el("option", { value: String(p.port) },
    `${p.port} ${p.label} (${p.participants.length} connected)`)));
  if (chosen && ports.some((p) => String(p.port) === chosen)) select.value = chosen;
  else if (ports.length) { // first visit: the port where most people are
    const busiest = ports.reduce((a, b) => (b.participants.length > a.participants.length ? b : a));
    select.value = String(busiest.port);
  }
  connectMonitor();
}
$("#monitor-port").addEventListener("change", connectMonitor);

function connectMonitor() {
  closeMonitor();
  $("#monitor-log").replaceChildren(); // one port's events at a time
  const port = $("#monitor-port").value;
  if (!port) return;
  const query = token() ? `&token=${encodeURIComponent(token())}` : "";
  source = new EventSource(`/api/monitor?port=${port}${query}`);
  const who = (list) => { $("#monitor-who").textContent = list.length ? `playing: ${list.map((p) => p.name).join(", ")}` : "no one connected"; };
  source.addEventListener("snapshot", (e) => { const d = JSON.parse(e.data); showHeld(d.held); who(d.participants); });
  source.addEventListener("participants", (e) => { const d = JSON.parse(e.data); showHeld(d.held); who(d.participants); });
  source.addEventListener("midi", (e) => {
    const d = JSON.parse(e.data);
    for (const event of d.events) {
      const time = new Date(event.at * 1000).toLocaleTimeString();
      for (const m of event.messages) log(`${time}  ${event.from.name}  ${m.text}`);
    }
    showHeld(d.held);
  });
  source.addEventListener("panic", (e) => {
    const d = JSON.parse(e.data);
    log(`${new Date(d.at * 1000).toLocaleTimeString()}  ${d.text}`);
    showHeld(d.held);
  });
  source.onerror = () => setStatus("monitor: connection lost, retrying");
  source.onopen = () => setStatus("");
}

// -- live updates -------------------------------------------------------------
// The hub pushes participants and latency over one EventSource (/api/events) when
// they change; the page polls only while that stream is down.
const params = new URLSearchParams(location.search);
const POLL_MS = Number(params.get("poll")) || 5000;
const CHART_MS = 60000;
const live = { connected: false, events: 0, polls: 0, source: null, timer: null };
window.midihubLive = live;

function who(list) { return JSON.stringify(list.map((p) => [p.port, p.participants.map((q) => q.id)])); }

function connectLive() {
  if (live.source) live.source.close();
  const query = token() ? `?token=${encodeURIComponent(token())}` : "";
  const source = new EventSource(`/api/events${query}`);
  live.source = source;
  source.addEventListener("participants", (e) => {
    live.events++;
    const before = who(ports);
    ports = JSON.parse(e.data).ports;
    if (current === "overview") renderOverview();
    else if (current === "stuck" && who(ports) !== before) renderStuck();
  });
  source.addEventListener("latency", (e) => {
    live.events++;
    latencyRows = JSON.parse(e.data);
    if (current === "latency") renderLatency(latencyRows);
  });
  source.onopen = () => { live.connected = true; stopPolling(); setStatus(""); };
  source.onerror = () => {
    live.connected = false;
    if (source.readyState === EventSource.CLOSED && live.source === source) setTimeout(connectLive, POLL_MS);
    startPolling();
  };
}

function poll() {
  live.polls++;
  if (current === "overview") refreshOverview();
  else if (current === "latency") refreshLatency();
}
function startPolling() { if (live.timer === null) live.timer = setInterval(poll, POLL_MS); }
function stopPolling() { if (live.timer !== null) { clearInterval(live.timer); live.timer = null; } }

// Connected-for times tick in the page; no request needed.
setInterval(() => {
  for (const span of document.querySelectorAll(".since[data-since]")) {
    if (span.dataset.since) span.textContent = duration((Date.now() - Date.parse(span.dataset.since)) / 1000);
  }
}, 1000);
// History points are a minute wide: the chart refreshes about as often.
setInterval(() => { if (current === "latency") drawChart(); }, CHART_MS);

connectLive();
show((location.hash || "#overview").slice(1) in pages ? location.hash.slice(1) || "overview" : "overview");
