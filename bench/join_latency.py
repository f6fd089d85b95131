#!/usr/bin/env python3
"""Join-to-first-event latency with python-socketio's client (issue 13).

Joins one conversation --joins times, one after another, each time with a new client, and
times two spans per join:
  connect  from calling connect() to the first oh_event (the whole handshake included)
  ack      from the CONNECT being acknowledged (the `connect` handler) to the first oh_event
The conversation is seeded with --seed events first (REST of the server kind given), so every
join replays a short log.

  python3 bench/join_latency.py --url http://127.0.0.1:3000 --kind ohd|baseline|original \
      [--transport websocket|polling] [--joins 1000] [--seed 10] [--conversation ID]

Prints one JSON object: {"client": "python-socketio", "transport", "joins", "connect": {...},
"ack": {...}} with median, p99 and max in milliseconds.
"""

import argparse
import json
import statistics
import threading
import time

import requests
import socketio

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--kind", choices=["ohd", "baseline", "original"], required=True)
parser.add_argument("--transport", choices=["websocket", "polling"], default="websocket")
parser.add_argument("--joins", type=int, default=1000)
parser.add_argument("--seed", type=int, default=10)
parser.add_argument("--conversation", default=None)
parser.add_argument("--client", choices=["python-socketio", "raw"], default="python-socketio",
                    help="raw: a plain websocket (websocket-client) that sends the CONNECT itself, "
                         "so the span starts at the CONNECT packet")
options = parser.parse_args()
url = options.url.rstrip("/")


def seeded_conversation():
    if options.conversation:
        return options.conversation
    if options.kind == "baseline":
        conversation = "bench-join"
        requests.post(f"{url}/bench/seed", params={"conversation_id": conversation, "count": options.seed, "size": 200}).raise_for_status()
        return conversation
    answer = requests.post(f"{url}/api/conversations", json={})
    answer.raise_for_status()
    conversation = answer.json()["conversation_id"]
    # Seeded over a socket, as a client writes.
    seeder = socketio.Client()
    seeder.connect(f"{url}?conversation_id={conversation}&latest_event_id=-1", transports=["websocket"], wait=True)
    for i in range(options.seed):
        seeder.emit("oh_user_action", {"action": "message", "args": {"content": f"seed {i}"}})
    time.sleep(1.0)
    seeder.disconnect()
    return conversation


def percentiles(values):
    values = sorted(values)
    return {
        "median_ms": round(statistics.median(values), 3),
        "p99_ms": round(values[max(0, int(len(values) * 0.99) - 1)], 3),
        "max_ms": round(values[-1], 3),
    }


def raw_joins(conversation):
    """From sending the CONNECT packet to receiving the first oh_event, over a plain websocket."""
    import websocket  # websocket-client

    ws_url = url.replace("http", "ws", 1) + f"/socket.io/?EIO=4&transport=websocket&conversation_id={conversation}&latest_event_id=-1"
    spans, totals = [], []
    for _ in range(options.joins):
        started = time.perf_counter()
        ws = websocket.create_connection(ws_url)
        ws.sock.setsockopt(__import__("socket").IPPROTO_TCP, __import__("socket").TCP_NODELAY, 1)
        if not ws.recv().startswith("0"):
            raise SystemExit("no Engine.IO open packet")
        sent = time.perf_counter()
        ws.send("40")
        while True:
            frame = ws.recv()
            if frame.startswith('42["oh_event"'):
                break
        now = time.perf_counter()
        spans.append((now - sent) * 1000)
        totals.append((now - started) * 1000)
        ws.close()
    print(json.dumps({
        "client": "raw websocket",
        "server": options.kind,
        "transport": "websocket",
        "joins": options.joins,
        "connect": percentiles(totals),
        "from_connect_packet": percentiles(spans),
    }))


def main():
    conversation = seeded_conversation()
    if options.client == "raw" and options.joins:
        raw_joins(conversation)
        return
    if options.joins == 0:
        # Seeding only, for another client to measure.
        print(json.dumps({"conversation": conversation}))
        return
    connect_spans, ack_spans = [], []
    for _ in range(options.joins):
        client = socketio.Client(reconnection=False)
        first = threading.Event()
        marks = {}

        @client.event
        def connect():
            marks.setdefault("ack", time.perf_counter())

        @client.on("oh_event")
        def on_event(_event):
            if "event" not in marks:
                marks["event"] = time.perf_counter()
                first.set()

        started = time.perf_counter()
        client.connect(f"{url}?conversation_id={conversation}&latest_event_id=-1", transports=[options.transport], wait=True)
        if not first.wait(10):
            raise SystemExit("no oh_event within 10 s of a join")
        connect_spans.append((marks["event"] - started) * 1000)
        ack_spans.append((marks["event"] - marks.get("ack", marks["event"])) * 1000)
        # Closed at once, without the polite end a long-poll would wait out: leaving is not
        # what is measured.
        client.eio.disconnect(abort=True)
    print(json.dumps({
        "client": "python-socketio",
        "server": options.kind,
        "transport": options.transport,
        "joins": options.joins,
        "connect": percentiles(connect_spans),
        "ack": percentiles(ack_spans),
    }))


main()
