#!/usr/bin/env node
// A connect storm with socket.io-client (issue 13): --clients sockets connect to one
// conversation at once, each over a websocket, and each waits for its first oh_event. Times
// from the first connect() to the last socket's CONNECT acknowledgement, and to the last first
// event; counts errors (a connect_error, a disconnect, no event within --timeout-ms). No retry:
// reconnection is off, so a refused or dropped socket counts as a failure.
//
//   node bench/storm.mjs --url http://127.0.0.1:3000 --conversation ID [--clients 1000]
//       [--timeout-ms 60000] [--until event|connect]
//
// --until connect: a socket is done once connected (for a server that replays nothing, such as
// the raw reference).
//
// Prints one JSON object: {"clients", "connected", "got_event", "errors", "all_connected_ms",
// "all_events_ms"}. The open-file limit must allow --clients sockets (ulimit -n).

import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(new URL("../e2e/package.json", import.meta.url));
const { io } = require("socket.io-client");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, i, all) => (i % 2 ? pairs : [...pairs, [value.replace(/^--/, ""), all[i + 1]]]), []),
);
const url = (args.url || "").replace(/\/$/, "");
const clients = Number(args.clients || 1000);
const timeoutMs = Number(args["timeout-ms"] || 60000);
const untilConnect = args.until === "connect";
if (!url || !args.conversation) {
  process.stderr.write("usage: storm.mjs --url URL --conversation ID [--clients N] [--timeout-ms MS]\n");
  process.exit(2);
}

let connected = 0;
let gotEvent = 0;
let errors = 0;
let lastConnect = 0;
let lastEvent = 0;
const sockets = [];
const started = performance.now();

const done = new Promise((resolve) => {
  const check = () => { if (gotEvent + errors >= clients) resolve(); };
  for (let i = 0; i < clients; i++) {
    const socket = io(url, {
      transports: ["websocket"],
      query: { conversation_id: args.conversation, latest_event_id: "-1" },
      reconnection: false,
      forceNew: true,
      timeout: timeoutMs,
    });
    let finished = false;
    const fail = () => { if (!finished) { finished = true; errors++; check(); } };
    socket.on("connect", () => {
      connected++;
      lastConnect = performance.now();
      if (untilConnect && !finished) { finished = true; gotEvent++; lastEvent = lastConnect; check(); }
    });
    socket.on("connect_error", fail);
    socket.on("disconnect", fail);
    socket.once("oh_event", () => {
      if (finished) return;
      finished = true;
      gotEvent++;
      lastEvent = performance.now();
      check();
    });
    sockets.push(socket);
  }
  setTimeout(resolve, timeoutMs);
});

await done;
const missing = clients - gotEvent - errors;
const result = {
  clients,
  connected,
  got_event: gotEvent,
  errors: errors + missing,
  all_connected_ms: Math.round((lastConnect - started) * 10) / 10,
  all_events_ms: Math.round((lastEvent - started) * 10) / 10,
};
for (const socket of sockets) socket.removeAllListeners("disconnect");
for (const socket of sockets) socket.disconnect();
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
