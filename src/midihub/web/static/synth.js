// A small polyphonic WebAudio synth: a few oscillator sounds with envelopes, no samples.
// Voices are keyed by source (who played), channel and note, so each player's sustain
// pedal and All Notes Off only touch their own notes. It keeps a log of the voices it
// started and stopped (the play page's test hook reads it), audio device or not.
"use strict";

const SOUNDS = {
  piano: { waves: ["triangle", "sine"], detune: [0, 1200], mix: [0.8, 0.25], attack: 0.004, decay: 1.6, sustain: 0.15, release: 0.25, filter: 5000 },
  organ: { waves: ["square", "sine"], detune: [0, -1200], mix: [0.25, 0.6], attack: 0.01, decay: 0.05, sustain: 0.9, release: 0.08, filter: 2800 },
  strings: { waves: ["sawtooth", "sawtooth"], detune: [-7, 7], mix: [0.35, 0.35], attack: 0.18, decay: 0.3, sustain: 0.8, release: 0.5, filter: 2200 },
  soft: { waves: ["sine"], detune: [0], mix: [0.9], attack: 0.01, decay: 0.4, sustain: 0.6, release: 0.3, filter: 8000 },
  chip: { waves: ["square"], detune: [0], mix: [0.3], attack: 0.002, decay: 0.1, sustain: 0.7, release: 0.05, filter: 9000 },
};
const MAX_VOICES = 48;
const LOG_LIMIT = 2000;

class Synth {
  constructor() {
    this.ctx = null;
    this.master = null;
    this.sound = "piano";
    this.volume = 0.7;
    this.enabled = true;
    this.voices = new Map(); // "source:channel:note" -> voice
    this.sustained = new Map(); // "source:channel" -> Set of voice keys waiting for pedal up
    this.pedals = new Set(); // "source:channel" with the pedal down
    this.started = []; // {source, channel, note, velocity}
    this.stopped = [];
    this.audioProblem = "";
  }

  // AudioContext only after a user gesture (browsers refuse to start one before).
  resume() {
    if (!this.ctx) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) { this.audioProblem = "this browser has no WebAudio"; return; }
      try {
        this.ctx = new Context({ latencyHint: "interactive" });
      } catch (err) {
        this.audioProblem = `no audio: ${err.message}`;
        return;
      }
      const compressor = this.ctx.createDynamicsCompressor();
      compressor.connect(this.ctx.destination);
      this.master = this.ctx.createGain();
      this.master.gain.value = this.volume * 0.5;
      this.master.connect(compressor);
    }
    if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
  }

  setVolume(fraction) {
    this.volume = fraction;
    if (this.master) this.master.gain.setTargetAtTime(fraction * 0.5, this.ctx.currentTime, 0.02);
  }

  setSound(name) { if (SOUNDS[name]) this.sound = name; }

  get active() { return this.voices.size; }

  noteOn(source, channel, note, velocity) {
    const key = `${source}:${channel}:${note}`;
    if (this.voices.has(key)) this._stop(key, true);
    if (this.voices.size >= MAX_VOICES) this._stop(this.voices.keys().next().value, true);
    const voice = { source, channel, note, velocity, nodes: null };
    if (this.enabled && this.ctx) voice.nodes = this._sound(note, velocity);
    this.voices.set(key, voice);
    this._log(this.started, voice);
  }

  noteOff(source, channel, note) {
    const key = `${source}:${channel}:${note}`;
    if (!this.voices.has(key)) return;
    const pedal = `${source}:${channel}`;
    if (this.pedals.has(pedal)) {
      if (!this.sustained.has(pedal)) this.sustained.set(pedal, new Set());
      this.sustained.get(pedal).add(key);
      return;
    }
    this._stop(key, false);
  }

  sustain(source, channel, down) {
    const pedal = `${source}:${channel}`;
    if (down) { this.pedals.add(pedal); return; }
    this.pedals.delete(pedal);
    const waiting = this.sustained.get(pedal);
    this.sustained.delete(pedal);
    if (waiting) for (const key of waiting) this._stop(key, false);
  }

  // Everything from one source (All Notes Off, a player who left), or from everyone.
  allOff(source = null, channel = null) {
    for (const [key, voice] of [...this.voices]) {
      if ((source === null || voice.source === source) && (channel === null || voice.channel === channel)) {
        this._stop(key, false);
      }
    }
    for (const pedal of [...this.pedals]) {
      const [s, c] = pedal.split(":").map(Number);
      if ((source === null || s === source) && (channel === null || c === channel)) {
        this.pedals.delete(pedal);
        this.sustained.delete(pedal);
      }
    }
  }

  _log(list, voice) {
    list.push({ source: voice.source, channel: voice.channel, note: voice.note, velocity: voice.velocity });
    if (list.length > LOG_LIMIT) list.splice(0, list.length - LOG_LIMIT);
  }

  _stop(key, quick) {
    const voice = this.voices.get(key);
    if (!voice) return;
    this.voices.delete(key);
    for (const waiting of this.sustained.values()) waiting.delete(key);
    this._log(this.stopped, voice);
    if (!voice.nodes || !this.ctx) return;
    const { gain, oscillators, release } = voice.nodes;
    const now = this.ctx.currentTime;
    const time = quick ? 0.01 : release;
    gain.gain.cancelScheduledValues(now);
    gain.gain.setValueAtTime(gain.gain.value, now);
    gain.gain.setTargetAtTime(0, now, time / 3);
    for (const osc of oscillators) osc.stop(now + time + 0.05);
  }

  _sound(note, velocity) {
    const ctx = this.ctx;
    const spec = SOUNDS[this.sound];
    const now = ctx.currentTime;
    const frequency = 440 * Math.pow(2, (note - 69) / 12);
    const level = Math.pow(velocity / 127, 1.5) * 0.6;
    const gain = ctx.createGain();
    const filter = ctx.createBiquadFilter();
    filter.type = "lowpass";
    filter.frequency.value = Math.min(spec.filter * (0.5 + velocity / 127), 16000);
    gain.gain.setValueAtTime(0, now);
    gain.gain.linearRampToValueAtTime(level, now + spec.attack);
    gain.gain.setTargetAtTime(level * spec.sustain, now + spec.attack, spec.decay / 3);
    filter.connect(gain);
    gain.connect(this.master);
    const oscillators = spec.waves.map((wave, i) => {
      const osc = ctx.createOscillator();
      osc.type = wave;
      osc.frequency.value = frequency;
      osc.detune.value = spec.detune[i];
      const mix = ctx.createGain();
      mix.gain.value = spec.mix[i];
      osc.connect(mix);
      mix.connect(filter);
      osc.start(now);
      return osc;
    });
    oscillators[0].onended = () => gain.disconnect();
    return { gain, oscillators, release: spec.release };
  }
}

window.Synth = Synth;
