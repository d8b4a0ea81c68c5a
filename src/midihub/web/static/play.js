// The /play page: join a room or group of the hub over a WebSocket and play with the
// on-screen keyboard, the computer keyboard or a Web MIDI device; hear the others on the
// built-in synth or a Web MIDI output. Wire format: docs/protocol.md, "Browser participants".
"use strict";

const $ = (selector) => document.querySelector(selector);
const NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const LOW = 36; // C2 .. C7 on screen
const HIGH = 96;
const CHANNEL = 0;
// Computer keyboard (physical positions, any layout): semitones above the octave's C.
const KEYMAP = {
  KeyA: 0, KeyW: 1, KeyS: 2, KeyE: 3, KeyD: 4, KeyF: 5, KeyT: 6, KeyG: 7, KeyY: 8, KeyH: 9,
  KeyU: 10, KeyJ: 11, KeyK: 12, KeyO: 13, KeyL: 14, KeyP: 15, Semicolon: 16,
};
const SENDER_BYTES = 2; // each frame from the hub starts with the sender's index (big-endian)
const QUIET_CLOSE = new Set([4400, 4403, 4404, 4409, 4429, 1009]); // retrying would not help
// What a close code means to the player (docs/protocol.md, the play page's wire).
const CLOSED_BECAUSE = {
  1001: "the hub is stopping",
  1009: "disconnected: a message was too large",
  4400: "not joined: the hub did not understand the join",
  4403: "not joined: wrong room key",
  4404: "not joined: this room is not open to browsers",
  4408: "disconnected: the hub heard nothing from this page",
  4409: "not joined: the room is full",
  4410: "the hub closed this room to browsers",
  4429: "disconnected: too many refused messages",
  4503: "disconnected: this page could not keep up",
};

function closedLabel(code) {
  if (code === 1000 || code === 1005) return "not connected";
  return CLOSED_BECAUSE[code] || `connection closed (code ${code})`;
}
const STORE = { name: "midihub.play.name", input: "midihub.play.midiIn", output: "midihub.play.midiOut", sound: "midihub.play.sound", volume: "midihub.play.volume" };

const synth = new window.Synth();
const params = new URLSearchParams(location.search);

const state = {
  connection: "idle", // idle, connecting, joined, closed
  ws: null,
  wanted: false, // the player wants to be in (reconnect after a network loss)
  retry: 0,
  me: null, // {id, index, name, color}
  welcome: null,
  people: new Map(), // index -> participant
  lit: new Map(), // index -> Map("channel:note" -> note)
  octave: 4,
  velocity: 100,
  sustain: false,
  held: new Map(), // what I hold: source ("key:KeyA", "ptr:1", "midi") -> note
  ports: [],
  midi: { access: null, input: null, output: null, status: "" },
  received: [], // every message heard, for the test hook: [index, [bytes]]
  sent: [], // every frame sent
  closeCode: null,
  closeReason: "",
};

// -- small helpers ---------------------------------------------------------------

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function store(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode */ }
}

function stored(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}

function noteName(n) { return `${NAMES[n % 12]}${Math.floor(n / 12) - 1}`; }

function say(text, info = false) {
  const box = $("#message");
  box.textContent = text;
  box.classList.toggle("info", info);
}

function setConnection(value, label) {
  state.connection = value;
  const node = $("#state");
  node.dataset.state = value;
  node.textContent = label;
  const joined = value === "joined" || value === "connecting";
  $("#join").hidden = joined;
  $("#leave").hidden = !joined;
  for (const id of ["#name", "#port", "#key"]) $(id).disabled = joined;
}

// Message lengths by status byte (0 for SysEx, read to F7).
function messageLength(status) {
  if (status < 0xf0) return [0xc0, 0xd0].includes(status & 0xf0) ? 2 : 3;
  if (status === 0xf1 || status === 0xf3) return 2;
  if (status === 0xf2) return 3;
  if (status === 0xf0) return 0;
  return 1;
}

function splitMessages(bytes) {
  const out = [];
  let i = 0;
  while (i < bytes.length) {
    const status = bytes[i];
    if (status < 0x80) break; // the hub sends complete messages only
    let length = messageLength(status);
    if (length === 0) {
      const end = bytes.indexOf(0xf7, i);
      if (end < 0) break;
      length = end - i + 1;
    }
    out.push(bytes.slice(i, i + length));
    i += length;
  }
  return out;
}

// -- the keyboard on screen ------------------------------------------------------

// The on-screen keys: all of LOW..HIGH where they fit, else as many white keys as fit at
// a width a finger can hit, around the octave the computer keyboard plays (the octave
// buttons move it). Keys outside the window stay in the page, hidden, so what is lit
// there is still known.
const FINGER_PX = 40; // a white key's least width on a touch screen
const MOUSE_PX = 30; // ... and with a mouse
const WHITES = [];
for (let n = LOW; n <= HIGH; n++) if (!NAMES[n % 12].includes("#")) WHITES.push(n);

function buildPiano() {
  const piano = $("#piano");
  for (let n = LOW; n <= HIGH; n++) {
    const black = NAMES[n % 12].includes("#");
    const key = el("div", { class: `pkey ${black ? "black" : "white"}`, "data-note": String(n), title: noteName(n) });
    if (!black && n % 12 === 0) key.append(el("span", { class: "label" }, noteName(n)));
    piano.append(key);
  }
  layoutPiano();
}

function layoutPiano() {
  const piano = $("#piano");
  const least = matchMedia("(pointer: coarse)").matches ? FINGER_PX : MOUSE_PX;
  const count = Math.max(7, Math.min(WHITES.length, Math.floor(piano.clientWidth / least)));
  // Centre the window on the octave's C..B, kept inside LOW..HIGH.
  const c = WHITES.indexOf(Math.max(LOW, Math.min(HIGH, 12 * (state.octave + 1))));
  const first = Math.max(0, Math.min(WHITES.length - count, c - Math.floor((count - 7) / 2)));
  const width = 100 / count;
  let whites = 0; // white keys below the current note
  for (const key of piano.querySelectorAll(".pkey")) {
    const black = key.classList.contains("black");
    const at = whites - first; // in white-key widths from the window's left edge
    const shown = black ? at >= 1 && at <= count - 1 : at >= 0 && at < count;
    key.hidden = !shown;
    key.style.left = `${(black ? at - 0.32 : at) * width}%`;
    key.style.width = `${black ? width * 0.64 : width}%`;
    if (!black) whites++;
  }
  piano.dataset.first = String(WHITES[first]);
  piano.dataset.last = String(WHITES[first + count - 1]);
}

function setOctave(octave) {
  state.octave = Math.max(0, Math.min(8, octave));
  $("#octave").textContent = String(state.octave);
  layoutPiano();
}

function keyAt(x, y) {
  const found = document.elementFromPoint(x, y);
  const key = found && found.closest ? found.closest(".pkey") : null;
  return key && $("#piano").contains(key) ? key : null;
}

// Velocity by where the key is struck: near its front (bottom) is loud, its back is soft.
function velocityAt(key, y) {
  const box = key.getBoundingClientRect();
  const depth = Math.min(Math.max((y - box.top) / box.height, 0), 1);
  return Math.max(1, Math.min(127, Math.round(20 + depth * 107)));
}

function bindPiano() {
  const piano = $("#piano");
  const pointers = new Map(); // pointerId -> note
  piano.addEventListener("pointerdown", (event) => {
    const key = keyAt(event.clientX, event.clientY);
    if (!key) return;
    event.preventDefault();
    piano.setPointerCapture(event.pointerId);
    const note = Number(key.dataset.note);
    pointers.set(event.pointerId, note);
    press(`ptr:${event.pointerId}`, note, velocityAt(key, event.clientY));
  });
  piano.addEventListener("pointermove", (event) => {
    if (!pointers.has(event.pointerId)) return;
    const key = keyAt(event.clientX, event.clientY);
    const note = key ? Number(key.dataset.note) : null;
    if (note === pointers.get(event.pointerId)) return;
    release(`ptr:${event.pointerId}`);
    pointers.delete(event.pointerId);
    if (note !== null) { // a glissando
      pointers.set(event.pointerId, note);
      press(`ptr:${event.pointerId}`, note, velocityAt(key, event.clientY));
    } else {
      pointers.set(event.pointerId, null);
    }
  });
  const up = (event) => {
    if (!pointers.has(event.pointerId)) return;
    pointers.delete(event.pointerId);
    release(`ptr:${event.pointerId}`);
  };
  piano.addEventListener("pointerup", up);
  piano.addEventListener("pointercancel", up);
  piano.addEventListener("contextmenu", (event) => event.preventDefault());
  new ResizeObserver(() => layoutPiano()).observe(piano);
  $("#octave-down").addEventListener("click", () => setOctave(state.octave - 1));
  $("#octave-up").addEventListener("click", () => setOctave(state.octave + 1));
  // The sustain pedal on screen: held while pressed (a second finger on a phone).
  const pedal = $("#sustain");
  pedal.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pedal.setPointerCapture(event.pointerId);
    setSustain(true);
  });
  for (const type of ["pointerup", "pointercancel"]) pedal.addEventListener(type, () => setSustain(false));
  pedal.addEventListener("contextmenu", (event) => event.preventDefault());
}

function showLit() {
  const colors = new Map(); // note -> colour of whoever pressed it last
  for (const [index, notes] of state.lit) {
    const person = state.people.get(index);
    const color = person ? person.color : "#f29d38";
    for (const note of notes.values()) colors.set(note, color);
  }
  for (const key of document.querySelectorAll(".pkey")) {
    const note = Number(key.dataset.note);
    const color = colors.get(note);
    key.classList.toggle("lit", color !== undefined);
    key.style.background = color || "";
    if (color) key.dataset.color = color; else delete key.dataset.color;
  }
}

function light(index, channel, note, on) {
  if (!state.lit.has(index)) state.lit.set(index, new Map());
  const notes = state.lit.get(index);
  if (on) notes.set(`${channel}:${note}`, note); else notes.delete(`${channel}:${note}`);
  if (!notes.size) state.lit.delete(index);
  scheduleLit();
}

let litPending = false;
function scheduleLit() {
  if (litPending) return;
  litPending = true;
  requestAnimationFrame(() => { litPending = false; showLit(); });
}

// -- what I play -----------------------------------------------------------------

function send(bytes) {
  if (state.connection !== "joined" || !state.welcome || !state.welcome.plays) return;
  state.ws.send(new Uint8Array(bytes));
  state.sent.push(Array.from(bytes));
}

// Play locally (lit key, own synth) and send; every input goes through here.
function playMessages(messages) {
  const frame = [];
  for (const message of messages) {
    hear(state.me ? state.me.index : 0, message, true);
    frame.push(...message);
  }
  if (frame.length) send(frame);
}

function press(source, note, velocity) {
  if (note < 0 || note > 127 || state.held.has(source)) return;
  synth.resume();
  state.held.set(source, note);
  playMessages([[0x90 | CHANNEL, note, velocity]]);
}

function release(source) {
  const note = state.held.get(source);
  if (note === undefined || note === null) { state.held.delete(source); return; }
  state.held.delete(source);
  playMessages([[0x80 | CHANNEL, note, 64]]);
}

function setSustain(down) {
  if (state.sustain === down) return;
  state.sustain = down;
  $("#sustain").classList.toggle("down", down);
  playMessages([[0xb0 | CHANNEL, 64, down ? 127 : 0]]);
}

function releaseEverything() {
  for (const source of [...state.held.keys()]) release(source);
  setSustain(false);
}

function typing(event) {
  const tag = event.target && event.target.tagName;
  return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA";
}

function bindComputerKeyboard() {
  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const code = event.code;
    if (code in KEYMAP) {
      event.preventDefault();
      if (!event.repeat) press(`key:${code}`, 12 * (state.octave + 1) + KEYMAP[code], state.velocity);
    } else if (code === "Space") {
      event.preventDefault();
      setSustain(true);
    } else if (code === "KeyZ" || code === "KeyX") {
      setOctave(state.octave + (code === "KeyZ" ? -1 : 1));
    } else if (code === "KeyC" || code === "KeyV") {
      state.velocity = Math.max(10, Math.min(127, state.velocity + (code === "KeyC" ? -15 : 15)));
      $("#velocity").textContent = String(state.velocity);
    }
  });
  document.addEventListener("keyup", (event) => {
    if (event.code in KEYMAP) release(`key:${event.code}`);
    else if (event.code === "Space") setSustain(false);
  });
  // A key released while the page had no focus would never send its NoteOff.
  window.addEventListener("blur", releaseEverything);
}

// -- what I hear -----------------------------------------------------------------

function hear(index, message, mine = false) {
  const status = message[0];
  const kind = status & 0xf0;
  const channel = status & 0x0f;
  const source = index;
  const sound = !mine || $("#monitor-self").checked;
  if (status >= 0xf0) return;
  if (kind === 0x90 && message[2] > 0) {
    light(index, channel, message[1], true);
    if (sound) synth.noteOn(source, channel, message[1], message[2]);
  } else if (kind === 0x80 || kind === 0x90) {
    light(index, channel, message[1], false);
    synth.noteOff(source, channel, message[1]);
  } else if (kind === 0xb0 && message[1] === 64) {
    synth.sustain(source, channel, message[2] >= 64);
  } else if (kind === 0xb0 && (message[1] === 120 || message[1] === 123)) {
    synth.allOff(source, channel);
    forget(index, channel);
  }
}

function forget(index, channel = null) {
  const notes = state.lit.get(index);
  if (!notes) return;
  for (const key of [...notes.keys()]) {
    if (channel === null || key.startsWith(`${channel}:`)) notes.delete(key);
  }
  if (!notes.size) state.lit.delete(index);
  scheduleLit();
}

function onFrame(data) {
  const bytes = new Uint8Array(data);
  if (bytes.length < SENDER_BYTES) return;
  const index = (bytes[0] << 8) | bytes[1];
  const output = state.midi.output;
  for (const message of splitMessages(bytes.subarray(SENDER_BYTES))) {
    state.received.push([index, Array.from(message)]);
    if (state.received.length > 5000) state.received.splice(0, 1000);
    hear(index, message);
    if (output) {
      try { output.send(message); } catch { /* a device unplugged meanwhile */ }
    }
  }
}

function showPeople(list) {
  const before = state.people;
  state.people = new Map(list.map((p) => [p.index, p]));
  for (const [index, person] of before) {
    const now = state.people.get(index);
    if (!now || now.id !== person.id) { // gone: nothing of theirs may keep sounding
      synth.allOff(index);
      forget(index);
    }
  }
  const ul = $("#people");
  ul.replaceChildren();
  for (const person of list) {
    const li = el("li", { "data-name": person.name, "data-id": person.id });
    const dot = el("span", { class: "dot" });
    dot.style.background = person.color;
    li.append(dot, el("span", { class: "who" }, person.name));
    if (person.you) li.append(el("span", { class: "you" }, "(you)"));
    else if (person.transport !== "browser") li.append(el("span", { class: "you" }, person.transport));
    li.append(el("span", { class: "rtt" }, person.rtt === null ? "–" : `${Math.round(person.rtt)} ms`));
    ul.append(li);
  }
  scheduleLit();
}

// -- the connection --------------------------------------------------------------

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/play/ws`;
}

function join() {
  const name = $("#name").value.trim();
  const port = Number($("#port").value);
  if (!name) { say("Type a name first: the others see it."); return; }
  if (!port) { say("This hub has no room or group open to browsers."); return; }
  store(STORE.name, name);
  synth.resume();
  state.wanted = true;
  connect(name, port, $("#key").value || null);
}

function connect(name, port, key) {
  setConnection("connecting", "connecting…");
  say("");
  state.closeCode = null;
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", name, port, key }));
  ws.onmessage = (event) => {
    if (ws !== state.ws) return;
    if (typeof event.data !== "string") { onFrame(event.data); return; }
    const message = JSON.parse(event.data);
    if (message.type === "ping") ws.send(JSON.stringify({ type: "pong", t: message.t }));
    else if (message.type === "welcome") welcomed(message);
    else if (message.type === "participants") showPeople(message.participants);
    else if (message.type === "error") { state.closeReason = message.reason; say(message.message); }
  };
  ws.onclose = (event) => {
    if (ws !== state.ws) return;
    state.closeCode = event.code;
    state.welcome = null;
    state.held.clear();
    synth.allOff();
    state.lit.clear();
    scheduleLit();
    if (state.wanted && !QUIET_CLOSE.has(event.code)) {
      const wait = Math.min(10, 2 ** state.retry++);
      setConnection("connecting", `connection lost; trying again in ${wait} s`);
      setTimeout(() => { if (state.wanted) connect(name, port, key); }, wait * 1000);
    } else {
      state.wanted = false;
      setConnection("closed", closedLabel(event.code));
    }
  };
}

function welcomed(message) {
  state.retry = 0;
  state.welcome = message;
  state.me = message.you;
  setConnection("joined", `joined ${message.label}`);
  const role = message.plays && message.listens ? "You play and hear everyone in this room."
    : message.plays ? "You play into this group; its listeners hear you (you hear no one here)."
      : "You listen to this group; what you play is not sent.";
  $("#role").textContent = role;
  showPeople(message.participants);
  const invite = new URL("/play", location.href);
  invite.searchParams.set("port", String(message.port));
  if ($("#key").value) invite.searchParams.set("key", $("#key").value);
  $("#invite").value = invite.href;
  $("#invite-row").hidden = false;
}

function leave() {
  state.wanted = false;
  releaseEverything();
  if (state.ws) state.ws.close(1000, "left");
  setConnection("idle", "not connected");
  $("#people").replaceChildren();
  $("#invite-row").hidden = true;
}

async function loadPorts() {
  const select = $("#port");
  try {
    const response = await fetch("/api/play/ports");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.ports = (await response.json()).ports;
  } catch (err) {
    say(`Cannot list the rooms: ${err.message}`);
    return;
  }
  select.replaceChildren();
  const what = { room: "play and hear", in: "play into the group", out: "listen to the group" };
  for (const port of state.ports) {
    const text = `${port.label} (${what[port.role]})${port.keyed ? " 🔒" : ""}`;
    select.append(el("option", { value: String(port.port) }, text));
  }
  if (!state.ports.length) {
    say("The host has opened no room or group to browsers (browser = true in its config).");
  }
  const wanted = params.get("port");
  if (wanted && state.ports.some((p) => String(p.port) === wanted)) select.value = wanted;
  showKey();
}

function showKey() {
  const port = state.ports.find((p) => String(p.port) === $("#port").value);
  $("#key-label").hidden = !(port && port.keyed);
  // The same hub port takes RTP MIDI sessions: what to type into a MIDI network app.
  $("#rtp-host").textContent = location.hostname;
  $("#rtp-port").textContent = port ? String(port.port) : "–";
}

// -- Web MIDI --------------------------------------------------------------------

function midiStatus(text) {
  state.midi.status = text;
  $("#midi-status").textContent = text;
}

async function setupMidi() {
  if (!window.isSecureContext) {
    midiStatus("Web MIDI needs a secure page: open this page over HTTPS (or on localhost). "
      + "The on-screen and computer keyboards work meanwhile.");
    return;
  }
  if (!navigator.requestMIDIAccess) {
    midiStatus("This browser has no Web MIDI (Chrome, Edge, Opera and Firefox do). "
      + "The on-screen and computer keyboards work meanwhile.");
    return;
  }
  let access;
  try {
    access = await navigator.requestMIDIAccess({ sysex: false });
  } catch (err) {
    midiStatus(`Web MIDI was refused (${err && err.name ? err.name : err}): allow MIDI devices `
      + "for this site to use them. The on-screen and computer keyboards work meanwhile.");
    return;
  }
  state.midi.access = access;
  access.onstatechange = () => listDevices();
  listDevices();
}

function listDevices() {
  const access = state.midi.access;
  const fill = (select, ports, key) => {
    const remembered = select.value || stored(key) || "";
    select.replaceChildren(el("option", { value: "" }, "none"));
    for (const port of ports.values()) select.append(el("option", { value: port.id }, port.name || port.id));
    select.value = [...ports.keys()].includes(remembered) ? remembered : "";
    select.disabled = false;
  };
  fill($("#midi-in"), access.inputs, STORE.input);
  fill($("#midi-out"), access.outputs, STORE.output);
  useInput($("#midi-in").value);
  useOutput($("#midi-out").value);
  const count = access.inputs.size + access.outputs.size;
  midiStatus(count ? `${access.inputs.size} input(s), ${access.outputs.size} output(s).`
    : "No MIDI device found; plug one in and it appears here.");
}

function useInput(id) {
  const access = state.midi.access;
  if (state.midi.input) state.midi.input.onmidimessage = null;
  state.midi.input = id && access ? access.inputs.get(id) || null : null;
  if (state.midi.input) state.midi.input.onmidimessage = onDeviceMessage;
}

function useOutput(id) {
  const access = state.midi.access;
  state.midi.output = id && access ? access.outputs.get(id) || null : null;
}

// One complete message per event (Web MIDI parses running status). Clock and active
// sensing would flood the room: they stay on this computer.
function onDeviceMessage(event) {
  const data = Array.from(event.data);
  if (!data.length || data[0] === 0xf8 || data[0] === 0xfe) return;
  synth.resume();
  playMessages(splitMessages(Uint8Array.from(data)).map((m) => Array.from(m)));
}

// -- start -----------------------------------------------------------------------

function start() {
  buildPiano();
  bindPiano();
  bindComputerKeyboard();
  $("#name").value = stored(STORE.name) || "";
  if (params.get("key")) $("#key").value = params.get("key");
  const sound = stored(STORE.sound);
  if (sound) { $("#wave").value = sound; synth.setSound(sound); }
  const volume = stored(STORE.volume);
  if (volume !== null) { $("#volume").value = volume; synth.setVolume(Number(volume) / 100); }
  $("#join-form").addEventListener("submit", (event) => { event.preventDefault(); join(); });
  $("#leave").addEventListener("click", leave);
  $("#port").addEventListener("change", showKey);
  $("#panic").addEventListener("click", () => {
    releaseEverything();
    playMessages([[0xb0 | CHANNEL, 123, 0]]);
  });
  $("#wave").addEventListener("change", () => { synth.setSound($("#wave").value); store(STORE.sound, $("#wave").value); });
  $("#volume").addEventListener("input", () => { synth.setVolume(Number($("#volume").value) / 100); store(STORE.volume, $("#volume").value); });
  $("#synth-on").addEventListener("change", () => { synth.enabled = $("#synth-on").checked; if (!synth.enabled) synth.allOff(); });
  $("#midi-in").addEventListener("change", () => { store(STORE.input, $("#midi-in").value); useInput($("#midi-in").value); });
  $("#midi-out").addEventListener("change", () => { store(STORE.output, $("#midi-out").value); useOutput($("#midi-out").value); });
  window.addEventListener("pagehide", () => { if (state.ws) state.ws.close(1000, "page closed"); });
  setConnection("idle", "not connected");
  loadPorts();
  setupMidi();
}

// Read-only state for tests and curious users (window.midihubPlay in the console).
window.midihubPlay = Object.freeze({
  get connection() { return state.connection; },
  get closeCode() { return state.closeCode; },
  get closeReason() { return state.closeReason; },
  get me() { return state.me ? { ...state.me } : null; },
  get participants() { return [...state.people.values()].map((p) => ({ ...p })); },
  // note -> colour of the player whose key is lit there
  get litKeys() {
    const out = {};
    for (const key of document.querySelectorAll(".pkey.lit")) out[key.dataset.note] = key.dataset.color;
    return out;
  },
  get lit() {
    const out = {};
    for (const [index, notes] of state.lit) out[index] = [...notes.values()].sort((a, b) => a - b);
    return out;
  },
  get voices() {
    return { active: synth.active, started: synth.started.map((v) => ({ ...v })), stopped: synth.stopped.map((v) => ({ ...v })), audio: synth.ctx ? synth.ctx.state : synth.audioProblem || "not started" };
  },
  get received() { return state.received.map(([i, m]) => [i, [...m]]); },
  get sent() { return state.sent.map((m) => [...m]); },
  get octave() { return state.octave; },
  get midi() {
    const access = state.midi.access;
    return {
      status: state.midi.status,
      inputs: access ? [...access.inputs.values()].map((p) => p.name) : [],
      outputs: access ? [...access.outputs.values()].map((p) => p.name) : [],
      input: state.midi.input ? state.midi.input.name : null,
      output: state.midi.output ? state.midi.output.name : null,
    };
  },
});

start();
