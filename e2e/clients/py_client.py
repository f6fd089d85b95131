#!/usr/bin/env python3
"""A command-line Socket.IO client for ohd on python-socketio 5 (socketio.Client).

Same command line and output as seed_client.mjs:

  python3 py_client.py --url http://127.0.0.1:3000 [--conversation ID] [--latest N]
    [--providers LIST] [--transport websocket|polling] [--api-key KEY] [--query-key KEY]
    [--emit-event NAME] [--send JSON|@FILE]... [--until-id N] [--count N] [--idle-ms N]
    [--timeout-ms N] [--no-reconnect] [--track-latest]

One JSON object per line on stdout:
  {"kind":"connect","id":...}
  {"kind":"event","event":<oh_event payload>}
  {"kind":"connect_error","message":...,"data":...}
  {"kind":"disconnect","reason":...}
  {"kind":"done","reason":"until-id"|"count"|"idle"|"timeout"|"connect_error"}   (last)
Exit codes: 0 done normally, 1 usage error, 2 connect_error, 3 timeout.

--until-id N stops once every id from latest+1 through N has arrived, not at the first id >= N:
the engine.io client runs each message's handler in a thread of its own, so the handler of a
later event can run (and exit) before an earlier one has printed.

The query (conversation_id, latest_event_id, providers_set, session_api_key) goes in the URL;
--api-key goes in the CONNECT auth payload {"session_api_key": KEY}.
--track-latest: on reconnection, send latest_event_id = the id of the last oh_event received with a
numeric id, instead of --latest.
"""

import json
import math
import os
import sys
import threading
import time
import urllib.parse

import socketio


def dumps(obj):
    """JSON exactly as JSON.stringify writes it: compact, non-ASCII left as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def usage(message):
    sys.stderr.write(f"py_client: {message}\n")
    sys.exit(1)


def parse_args(argv):
    opts = {
        "url": None,
        "conversation": None,
        "latest": "-1",
        "providers": None,
        "transport": "websocket",
        "api_key": None,
        "query_key": None,
        "emit_event": "oh_user_action",
        "send": [],
        "until_id": None,
        "count": None,
        "idle_ms": None,
        "timeout_ms": 10000.0,
        "reconnect": True,
        "track_latest": False,
    }
    names = {
        "--url": "url", "--conversation": "conversation", "--latest": "latest",
        "--providers": "providers", "--transport": "transport", "--api-key": "api_key",
        "--query-key": "query_key", "--emit-event": "emit_event", "--send": "send",
        "--until-id": "until_id", "--count": "count", "--idle-ms": "idle_ms",
        "--timeout-ms": "timeout_ms",
    }
    numeric = {"until_id", "count", "idle_ms", "timeout_ms"}
    i = 0
    while i < len(argv):
        flag = argv[i]
        i += 1
        if flag == "--no-reconnect":
            opts["reconnect"] = False
            continue
        if flag == "--track-latest":
            opts["track_latest"] = True
            continue
        if flag in ("-h", "--help"):
            usage("see the docstring of this file for usage")
        if flag not in names:
            usage(f"unknown argument {flag!r}")
        if i >= len(argv):
            usage(f"{flag} needs a value")
        value = argv[i]
        i += 1
        key = names[flag]
        if key == "send":
            text = value
            if value.startswith("@"):  # "@PATH": the JSON is in a file
                try:
                    with open(value[1:], encoding="utf-8") as f:
                        text = f.read()
                except OSError as e:
                    usage(f"--send {value}: {e}")
            try:
                opts["send"].append(json.loads(text))
            except ValueError as e:
                usage(f"--send is not JSON: {e}")
        elif key in numeric:
            try:
                opts[key] = float(value)
            except ValueError:
                usage(f"{flag} needs a number, got {value!r}")
        elif key == "transport":
            if value not in ("websocket", "polling"):
                usage("--transport is websocket or polling")
            opts[key] = value
        else:
            opts[key] = value
    if not opts["url"]:
        usage("--url is required")
    return opts


def build_url(opts):
    """The server URL with the connection query appended (python-socketio keeps it)."""
    params = []
    if opts["conversation"] is not None:
        params.append(("conversation_id", opts["conversation"]))
    params.append(("latest_event_id", opts["latest"]))  # passed through as given
    if opts["providers"] is not None:
        params.append(("providers_set", opts["providers"]))
    if opts["query_key"] is not None:
        params.append(("session_api_key", opts["query_key"]))
    parts = urllib.parse.urlsplit(opts["url"])
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    if parts.query:
        query = parts.query + "&" + query
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


# python-socketio's disconnect reasons, spelled as socket.io-client spells them where they mean
# the same thing, so that both clients print the same lines.
REASONS = {
    "server disconnect": "io server disconnect",
    "client disconnect": "io client disconnect",
}


def main():
    opts = parse_args(sys.argv[1:])
    out_lock = threading.Lock()
    try:
        first_id = max(int(opts["latest"]) + 1, 0)
    except ValueError:
        first_id = 0  # the server reads a non-numeric latest_event_id as -1
    seen_lock = threading.Lock()
    seen_ids = set()
    state = {
        "finished": False,
        "received": 0,
        "last_activity": None,  # monotonic time of the connect or last oh_event
        "connect_error_printed": False,
    }

    def out(obj):
        with out_lock:
            if state["finished"]:  # nothing after the "done" line
                return
            sys.stdout.write(dumps(obj) + "\n")
            sys.stdout.flush()

    sio = socketio.Client(reconnection=opts["reconnect"])

    def finish(reason, code, polite=True):
        with out_lock:
            if state["finished"]:
                return
            state["finished"] = True
            sys.stdout.write(dumps({"kind": "done", "reason": reason}) + "\n")
            sys.stdout.flush()
        if polite:
            # Disconnect politely (41 then the Engine.IO close), but never let it hold the exit
            # for long: with polling, Client.disconnect() also joins the read thread, which sits
            # in a long poll for up to the server's ping interval.
            t = threading.Thread(target=_quiet_disconnect, args=(sio,), daemon=True)
            t.start()
            t.join(0.5)
        os._exit(code)

    @sio.event
    def connect():
        if state["finished"]:
            return
        out({"kind": "connect", "id": sio.get_sid()})
        state["last_activity"] = time.monotonic()

    @sio.event
    def connect_error(data=None):
        # For a server refusal (CONNECT_ERROR packet 44{"message":..,"data":..}) python-socketio
        # passes the whole packet payload, {"message":..,"data":..}; for a transport failure it
        # passes a string (or the HTTP response body).
        if state["finished"]:
            return
        if isinstance(data, dict) and "message" in data:
            message, extra = data.get("message"), data.get("data")
        elif isinstance(data, str):
            message, extra = data, None
        else:
            message, extra = str(data), data
        state["connect_error_printed"] = True
        out({"kind": "connect_error", "message": message, "data": extra})
        # A refusal by the server comes while the Engine.IO transport is up, and python-socketio
        # never retries it (nor does socket.io-client). Finish here rather than after connect()
        # raises: with polling, connect() first joins the long-polling read thread (up to the
        # ping interval, 25 s by default).
        if not opts["reconnect"] or sio.eio.state == "connected":
            finish("connect_error", 2, polite=False)

    @sio.event
    def disconnect(reason=None):
        if state["finished"]:
            return
        out({"kind": "disconnect", "reason": REASONS.get(reason, reason)})

    @sio.on("oh_event")
    def oh_event(event=None, *rest):
        if state["finished"]:
            return
        state["received"] += 1
        out({"kind": "event", "event": event})
        state["last_activity"] = time.monotonic()
        ev_id = event.get("id") if isinstance(event, dict) else None
        numeric_id = isinstance(ev_id, (int, float)) and not isinstance(ev_id, bool)
        if opts["track_latest"] and numeric_id:
            opts["latest"] = str(ev_id)  # build_url runs again on each (re)connection attempt
        if opts["until_id"] is not None and numeric_id:
            with seen_lock:
                seen_ids.add(int(ev_id))
                last = math.floor(opts["until_id"])  # numeric options are read as floats
                done = all(i in seen_ids for i in range(first_id, last + 1))
            if done:
                finish("until-id", 0)
        elif opts["count"] is not None and state["received"] >= opts["count"]:
            finish("count", 0)

    timer = threading.Timer(opts["timeout_ms"] / 1000.0, finish, args=("timeout", 3))
    timer.daemon = True
    timer.start()

    connect_kwargs = {
        "transports": [opts["transport"]],
        "wait_timeout": max(opts["timeout_ms"] / 1000.0, 1.0),
        # Like socket.io-client: with reconnection on, a failed first attempt is retried.
        "retry": opts["reconnect"],
    }
    if opts["api_key"] is not None:
        connect_kwargs["auth"] = {"session_api_key": opts["api_key"]}
    try:
        # A callable URL is evaluated again on every reconnection attempt (for --track-latest).
        sio.connect(lambda: build_url(opts), **connect_kwargs)
    except socketio.exceptions.ConnectionError as e:
        # A namespace refusal raises "One or more namespaces failed to connect: /" here; the
        # server's message and data were already printed by the connect_error handler.
        if not state["connect_error_printed"]:
            out({"kind": "connect_error", "message": str(e), "data": None})
        finish("connect_error", 2, polite=False)

    for i, payload in enumerate(opts["send"]):
        if i:
            time.sleep(0.05)
        if state["finished"]:
            break
        sio.emit(opts["emit_event"], payload)

    idle = opts["idle_ms"] / 1000.0 if opts["idle_ms"] is not None else None
    while True:
        time.sleep(0.01)
        last = state["last_activity"]
        if idle is not None and last is not None and time.monotonic() - last >= idle:
            finish("idle", 0)


def _quiet_disconnect(sio):
    try:
        sio.disconnect()
    except Exception:  # noqa: BLE001 - we are exiting anyway
        pass


if __name__ == "__main__":
    main()
