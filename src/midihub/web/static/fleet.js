// midihub dashboard: the Fleet page (every hub of the fleet, from /api/fleet).
// Loaded after app.js and uses its helpers ($, el, api, pages, setStatus, fmt, when).
"use strict";

const FLEET_MS = 5000; // the directory is re-read about as often as hubs renew

async function refreshFleet() {
  let fleet;
  try {
    fleet = await api("/api/fleet");
    setStatus("");
  } catch (error) {
    setStatus(error.message);
    return;
  }
  $("#fleet-off").hidden = fleet.enabled;
  $("#fleet-on").hidden = !fleet.enabled;
  if (!fleet.enabled) return;
  $("#fleet-summary").textContent = `Seen from ${fleet.name}: ${fleet.hubs.length} hub(s)` +
    (fleet.connected ? "" : ` · no database: ${fleet.error || "not yet connected"} (showing the last read)`);
  const linked = new Set(fleet.links.filter((l) => l.up).map((l) => l.hub));
  $("#fleet-hubs").replaceChildren(...fleet.hubs.map((hub) => {
    const rooms = hub.rooms.map((r) => `${r.name} (${r.kind} ${r.ports.join("/")})`).join(", ") || "no rooms";
    const players = hub.participants.length
      ? el("ul", {}, ...hub.participants.map((p) => el("li", { class: "participant", "data-name": p.name, "data-id": p.id },
          el("span", {}, p.name || "(unnamed)", " ", el("span", { class: "addr" }, `${p.room || p.port} · ${p.transport}`)),
          el("span", { class: "addr num" }, p.latency === null ? "–" : `${fmt(p.latency)} ms`))))
      : el("p", { class: "empty" }, "no one connected");
    const state = el("span", { class: `hub-state ${hub.up ? "up" : "down"}` }, hub.up ? "up" : "down");
    return el("div", { class: `card hub${hub.self ? " self" : ""}`, "data-hub": hub.name },
      el("h2", {}, hub.name, " ", state, hub.self ? el("span", { class: "addr" }, " (this hub)") : "",
        linked.has(hub.name) ? el("span", { class: "addr" }, " · linked") : ""),
      el("div", { class: "sub" }, `${hub.address} · v${hub.version} · last heartbeat ${when(hub.lastSeen)}`),
      el("div", { class: "sub rooms" }, rooms),
      players);
  }));
}

pages.fleet = refreshFleet;
setInterval(() => { if (current === "fleet") refreshFleet(); }, FLEET_MS);
