// midihub dashboard: the Recordings page (record buttons per port, the list, replays).
// Loaded after app.js and uses its helpers ($, el, api, pages, current, duration).
"use strict";

const sizeText = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);
const postJson = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });

async function recordingAction(action, message) {
  message.textContent = "";
  try {
    await action();
  } catch (error) {
    message.textContent = error.message;
  }
  refreshRecordings();
}

async function refreshRecordings() {
  let list;
  try {
    await loadPorts();
    list = await api("/api/recordings");
  } catch (error) {
    setStatus(error.message);
    return;
  }
  const running = new Map();
  for (const r of list.recordings) if (r.state === "recording" || r.state === "stopping") running.set(r.port, r);
  const recordable = ports.filter((p) => p.role !== "out");
  const cards = $("#record-ports");
  const messages = new Map([...cards.querySelectorAll(".message")].map((m) => [m.dataset.port, m.textContent]));
  cards.replaceChildren(...recordable.map((port) => {
    const rec = running.get(port.port);
    const message = el("div", { class: "message", "data-port": String(port.port) }, messages.get(String(port.port)) || "");
    const button = el("button", { class: `record${rec ? " on" : ""}`, "data-port": String(port.port) }, rec ? "■ Stop" : "● Record");
    button.addEventListener("click", () => recordingAction(
      () => (rec ? postJson(`/api/recordings/${encodeURIComponent(rec.id)}/stop`) : postJson("/api/recordings", { port: port.port })), message));
    const info = el("span", { class: "rec-status", "data-port": String(port.port) },
      rec ? `${rec.state} ${duration(rec.duration)} · ${sizeText(rec.size)}${rec.auto ? " · auto" : ""}` : "");
    return el("div", { class: "card", "data-port": String(port.port) },
      el("h2", {}, port.kind === "room" ? port.label : port.owner),
      el("div", { class: "sub" }, `${port.kind} · port ${port.port}`),
      el("div", { class: "buttons" }, button, info), message);
  }));

  const portOptions = () => ports.map((p) => el("option", { value: String(p.port) }, `${p.port} ${p.label}`));
  const rowMessage = (id) => el("div", { class: "message", "data-id": id });
  $("#recordings-table tbody").replaceChildren(...list.recordings.map((r) => {
    const msg = rowMessage(r.id);
    const actions = el("td", { class: "actions" });
    if (r.file) {
      actions.append(el("a", { class: "download", href: r.file, download: `${r.id}.mid` }, "download"));
      const target = el("select", { class: "play-port" }, ...portOptions());
      target.value = String(r.port);
      const play = el("button", { class: "play", "data-id": r.id }, "play");
      play.addEventListener("click", () => recordingAction(() => postJson(`/api/recordings/${encodeURIComponent(r.id)}/play`, { port: Number(target.value) }), msg));
      actions.append(" ", target, play);
    }
    if (r.state !== "recording" && r.state !== "stopping") {
      const del = el("button", { class: "delete", "data-id": r.id }, "delete");
      del.addEventListener("click", () => recordingAction(() => api(`/api/recordings/${encodeURIComponent(r.id)}`, { method: "DELETE" }), msg));
      actions.append(" ", del);
    }
    actions.append(msg);
    return el("tr", { "data-id": r.id, "data-state": r.state },
      el("td", {}, r.name), el("td", {}, `${r.port} ${r.label}`), el("td", {}, new Date(r.start).toLocaleString()),
      el("td", { class: "num" }, duration(r.duration)), el("td", {}, r.players.join(", ") || "–"),
      el("td", { class: "num" }, sizeText(r.size)), el("td", { class: "state" }, r.error ? `${r.state}: ${r.error}` : r.state), actions);
  }));
  $("#recordings-empty").hidden = list.recordings.length > 0;

  $("#replays").replaceChildren(...list.replays.filter((p) => p.state === "playing" || p.state === "connecting").map((p) => {
    const stop = el("button", { class: "stop-replay", "data-replay": p.id }, "stop");
    const msg = el("span", { class: "message" });
    stop.addEventListener("click", () => recordingAction(() => postJson(`/api/replays/${p.id}/stop`), msg));
    return el("li", { "data-replay": p.id }, el("span", {}, `${p.recording} → port ${p.port}: ${p.state} ${duration(p.position)} / ${duration(p.duration)}`), stop, msg);
  }));
}

pages.recordings = refreshRecordings;
setInterval(() => { if (current === "recordings") refreshRecordings(); }, 1000);
if (location.hash === "#recordings") show("recordings");
