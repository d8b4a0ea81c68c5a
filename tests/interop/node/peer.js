#!/usr/bin/env node
// A third-party RTP MIDI participant (npm `rtpmidi`) for midihub's interop tests.
//
// Usage: node peer.js --name NAME --port EVEN_PORT
// stdin, one JSON object per line:
//   {"cmd": "connect", "host": "127.0.0.1", "port": 5040}   invite a hub port
//   {"cmd": "send", "messages": [[144, 60, 100], ...]}       MIDI, in order, one packet
//   {"cmd": "end"}                                           BY to every peer, then exit 0
// stdout, one JSON object per line, each with an "event" field:
//   ready {port}, connected {name, ssrc}, synced {name}, midi {data, t}, sent {id, t},
//   disconnected {name}, ended {}, error {message}
// t: this process's monotonic clock in ms (sub-ms precision), when a message arrived or,
// for a send with an "id", when rtpmidi was handed the messages.
// Only lines starting with "{" are events; rtpmidi's own log goes to stderr.

'use strict';

const logger = require('rtpmidi/src/logger');

// rtpmidi logs through winston to stdout; keep stdout for events only.
logger.clear();
logger.add(new (require('winston').transports.Console)({
  level: process.env.RTPMIDI_LOG || 'warn',
  stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'],
}));

const { Session } = require('rtpmidi');
const readline = require('readline');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const clock = () => Number(process.hrtime.bigint()) / 1e6;

function emit(event, fields) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

const name = arg('name', 'node-peer');
const port = Number(arg('port', '5004'));
const session = new Session(port, name, name, undefined, false, 4);
const synced = new Set();

session.on('ready', () => emit('ready', { port }));
session.on('error', (err) => emit('error', { message: String(err) }));
session.on('streamAdded', ({ stream }) => emit('connected', { name: stream.name, ssrc: stream.ssrc }));
session.on('streamRemoved', ({ stream }) => emit('disconnected', { name: stream.name }));
session.on('message', (_delta, message) => emit('midi', { data: Array.from(message), t: clock() }));

// rtpmidi sends nothing to a stream until its own clock sync has measured the latency.
setInterval(() => {
  for (const stream of session.streams) {
    const ready = stream.isConnected && stream.latency !== null && stream.timeDifference !== null;
    if (ready && !synced.has(stream)) {
      synced.add(stream);
      emit('synced', { name: stream.name });
    }
  }
}, 20);

function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    emit('error', { message: `bad command: ${line}` });
    return;
  }
  switch (request.cmd) {
    case 'connect':
      session.connect({ address: request.host, port: request.port });
      break;
    case 'send':
      if (request.id !== undefined) {
        // Timed send: queue and flush now, not on setImmediate, so "sent" is the sending time.
        for (const message of request.messages) {
          session.queue.push({ cTime: session.now(), data: Buffer.from(message) });
        }
        session.flushQueue();
        emit('sent', { id: request.id, t: clock() });
        break;
      }
      // rtpmidi 1.0.0's one-argument sendMessage loses its message, and a Buffer is lost
      // too: call it with (time, array). Messages sent in the same tick leave in one packet.
      for (const message of request.messages) {
        session.sendMessage(session.now() + session.startTime, Array.from(message));
      }
      break;
    case 'end':
      session.end(() => {
        emit('ended', {});
        process.exit(0);
      });
      break;
    default:
      emit('error', { message: `unknown command: ${request.cmd}` });
  }
}

readline.createInterface({ input: process.stdin }).on('line', handle).on('close', () => {
  session.end(() => process.exit(0));
});

session.start();
