#!/usr/bin/env node
// A command-line Socket.IO client for ohd, built on the JavaScript example in the
// user's document (seeds/000): the same io(url, {transports, query}) call, the same
// connect / oh_event / connect_error / disconnect handlers, and socket.emit of
// "oh_user_action".
//
// Output: one JSON object per line on stdout:
//   {"kind":"connect","id":...}
//   {"kind":"event","event":<oh_event payload>}
//   {"kind":"connect_error","message":...,"data":...}
//   {"kind":"disconnect","reason":...}
//   {"kind":"done","reason":"until-id"|"count"|"idle"|"timeout"|"connect_error"}   (last)
// Exit codes: 0 done normally, 1 usage error, 2 connect_error, 3 timeout.
//
// Usage:
//   node seed_client.mjs --url http://127.0.0.1:3000 [--conversation ID] [--latest N]
//     [--providers LIST] [--transport websocket|polling|default] [--api-key KEY] [--query-key KEY]
//     [--emit-event NAME] [--send JSON|@FILE]... [--send-after-ms N] [--until-id N] [--until-state S1,S2] [--count N] [--idle-ms N]
//     [--timeout-ms N] [--no-reconnect] [--track-latest]
//
// --track-latest: on reconnection, send latest_event_id = the id of the last oh_event received
// with a numeric id (as the seed's best practices and the web UI do), instead of --latest.

import { readFileSync } from "node:fs";
import { io } from "socket.io-client";

function usage(message) {
  process.stderr.write(`seed_client: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = {
    url: null,
    conversation: null,
    latest: "-1",
    providers: null,
    transport: "websocket",
    apiKey: null,
    queryKey: null,
    emitEvent: "oh_user_action",
    send: [],
    sendAfterMs: 0,
    untilId: null,
    untilState: null,
    count: null,
    idleMs: null,
    timeoutMs: 10000,
    reconnect: true,
    trackLatest: false,
  };
  const valued = new Set([
    "--url", "--conversation", "--latest", "--providers", "--transport", "--api-key",
    "--query-key", "--emit-event", "--send", "--send-after-ms", "--until-id", "--until-state", "--count", "--idle-ms", "--timeout-ms",
  ]);
  const number = (flag, v) => {
    const n = Number(v);
    if (v === "" || !Number.isFinite(n)) usage(`${flag} needs a number, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === "--no-reconnect") { opts.reconnect = false; continue; }
    if (flag === "--track-latest") { opts.trackLatest = true; continue; }
    if (flag === "--help" || flag === "-h") usage("see the header of this file for usage");
    if (!valued.has(flag)) usage(`unknown argument ${JSON.stringify(flag)}`);
    if (i + 1 >= argv.length) usage(`${flag} needs a value`);
    const v = argv[++i];
    switch (flag) {
      case "--url": opts.url = v; break;
      case "--conversation": opts.conversation = v; break;
      case "--latest": opts.latest = v; break; // passed through as given, may be non-numeric
      case "--providers": opts.providers = v; break;
      case "--transport":
        // "default" is socket.io-client's own choice: long-polling first, then the upgrade.
        if (!["websocket", "polling", "default"].includes(v)) usage("--transport is websocket, polling or default");
        opts.transport = v;
        break;
      case "--api-key": opts.apiKey = v; break;
      case "--query-key": opts.queryKey = v; break;
      case "--emit-event": opts.emitEvent = v; break;
      case "--send": {
        // "@PATH" reads the JSON from a file (for payloads beyond the argument size limit).
        let text = v;
        if (v.startsWith("@")) {
          try { text = readFileSync(v.slice(1), "utf8"); } catch (e) { usage(`--send ${v}: ${e.message}`); }
        }
        try { opts.send.push(JSON.parse(text)); } catch (e) { usage(`--send is not JSON: ${e.message}`); }
        break;
      }
      case "--send-after-ms": opts.sendAfterMs = number(flag, v); break;
      case "--until-id": opts.untilId = number(flag, v); break;
      case "--until-state": opts.untilState = v.split(","); break;
      case "--count": opts.count = number(flag, v); break;
      case "--idle-ms": opts.idleMs = number(flag, v); break;
      case "--timeout-ms": opts.timeoutMs = number(flag, v); break;
    }
  }
  if (!opts.url) usage("--url is required");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// One line per write. Writes to a pipe can be queued once the pipe is full, so finish() exits only
// from the callback of its last write, when everything before it has reached the pipe.
function out(obj, callback) {
  process.stdout.write(JSON.stringify(obj) + "\n", callback);
}

const query = { latest_event_id: opts.latest };
if (opts.conversation !== null) query.conversation_id = opts.conversation;
if (opts.providers !== null) query.providers_set = opts.providers;
if (opts.queryKey !== null) query.session_api_key = opts.queryKey;

const socketOptions = {
  query,
  reconnection: opts.reconnect,
};
if (opts.transport !== "default") socketOptions.transports = [opts.transport];
if (opts.apiKey !== null) socketOptions.auth = { session_api_key: opts.apiKey };

const socket = io(opts.url, socketOptions);
socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (transport) => out({ kind: "upgrade", transport: transport.name }));
});

let finished = false;
let received = 0;
let idleTimer = null;
let connectedOnce = false;

function finish(reason, code) {
  if (finished) return;
  finished = true;
  clearTimeout(idleTimer);
  clearTimeout(timeoutTimer);
  const transport = socket.io.engine?.transport?.name ?? null;
  socket.disconnect();
  // Exit once stdout is flushed, giving the disconnect packet a moment to leave too.
  out({ kind: "done", reason, transport }, () => setTimeout(() => process.exit(code), 20));
}

function armIdle() {
  if (opts.idleMs === null) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => finish("idle", 0), opts.idleMs);
}

const timeoutTimer = setTimeout(() => finish("timeout", 3), opts.timeoutMs);

socket.on("connect", () => {
  if (finished) return;
  out({ kind: "connect", id: socket.id });
  armIdle();
  if (connectedOnce) return; // --send messages go out once, on the first connect only
  connectedOnce = true;
  opts.send.forEach((payload, i) => {
    setTimeout(() => {
      if (!finished) socket.emit(opts.emitEvent, payload);
    }, opts.sendAfterMs + 50 * i);
  });
});

let sawRunning = false;
socket.on("oh_event", (event) => {
  if (finished) return;
  if (event && event.observation === "agent_state_changed" && event.extras?.agent_state === "running") {
    sawRunning = true;
  }
  received += 1;
  out({ kind: "event", event });
  armIdle();
  if (opts.trackLatest && event && typeof event.id === "number") {
    // The Manager reads its query again on each reconnection attempt.
    socket.io.opts.query.latest_event_id = String(event.id);
  }
  if (opts.untilId !== null && event && typeof event.id === "number" && event.id >= opts.untilId) {
    finish("until-id", 0);
  } else if (opts.untilState !== null && event && event.observation === "agent_state_changed"
             && sawRunning && opts.untilState.includes(event.extras?.agent_state)) {
    // The agent went to work and came to rest in one of the named states.
    finish("until-state", 0);
  } else if (opts.count !== null && received >= opts.count) {
    finish("count", 0);
  }
});

socket.on("connect_error", (err) => {
  if (finished) return;
  out({ kind: "connect_error", message: err.message, data: err.data ?? null });
  // A refusal from the server (a CONNECT_ERROR packet) is never retried by socket.io-client:
  // the socket goes inactive. With reconnection off, no error is retried.
  if (!opts.reconnect || !socket.active) finish("connect_error", 2);
});

socket.on("disconnect", (reason) => {
  if (finished) return;
  out({ kind: "disconnect", reason });
});
