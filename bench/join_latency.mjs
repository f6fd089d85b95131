#!/usr/bin/env node
// Join-to-first-event latency with socket.io-client (issue 13): the same measurement as
// bench/join_latency.py, for the JavaScript client the web UI uses. The conversation must be
// seeded already (join_latency.py seeds it and prints nothing else when given --joins 0).
//
//   node bench/join_latency.mjs --url http://127.0.0.1:3000 --conversation ID
//       [--transport websocket|polling] [--joins 1000]
//
// Prints one JSON object like join_latency.py's.

import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

// socket.io-client is installed for the end-to-end tests, in e2e/node_modules.
const require = createRequire(new URL("../e2e/package.json", import.meta.url));
const { io } = require("socket.io-client");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, i, all) => (i % 2 ? pairs : [...pairs, [value.replace(/^--/, ""), all[i + 1]]]), []),
);
const url = (args.url || "").replace(/\/$/, "");
const transport = args.transport || "websocket";
const joins = Number(args.joins || 1000);
if (!url || !args.conversation) {
  process.stderr.write("usage: join_latency.mjs --url URL --conversation ID [--transport T] [--joins N]\n");
  process.exit(2);
}

function join() {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let acked = null;
    const socket = io(url, {
      transports: [transport],
      query: { conversation_id: args.conversation, latest_event_id: "-1" },
      reconnection: false,
      forceNew: true,
    });
    const timer = setTimeout(() => { socket.disconnect(); reject(new Error("no oh_event within 10 s")); }, 10000);
    socket.on("connect", () => { acked ??= performance.now(); });
    socket.on("connect_error", (e) => { clearTimeout(timer); reject(e); });
    socket.once("oh_event", () => {
      const now = performance.now();
      clearTimeout(timer);
      socket.disconnect();
      resolve({ connect: now - started, ack: now - (acked ?? now) });
    });
  });
}

function percentiles(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.max(0, Math.floor(sorted.length * q) - 1)];
  const median = sorted.length % 2
    ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  const round = (v) => Math.round(v * 1000) / 1000;
  return { median_ms: round(median), p99_ms: round(at(0.99)), max_ms: round(sorted[sorted.length - 1]) };
}

const connectSpans = [];
const ackSpans = [];
for (let i = 0; i < joins; i++) {
  const { connect, ack } = await join();
  connectSpans.push(connect);
  ackSpans.push(ack);
}
process.stdout.write(JSON.stringify({
  client: "socket.io-client", transport, joins,
  connect: percentiles(connectSpans), ack: percentiles(ackSpans),
}) + "\n");
process.exit(0);
