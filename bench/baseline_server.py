#!/usr/bin/env python3
"""Benchmark baseline: a minimal python-socketio server doing ohd's fan-out and replay from memory.

It is what the benchmark compares ohd against, so it uses python-socketio the normal, efficient way
(AsyncServer on aiohttp, one room per conversation, one room emit per event, which encodes the packet
once for all members). It keeps everything in memory and has no agent, store or auth.

  python3 bench/baseline_server.py --host 127.0.0.1 --port 3000

Socket.IO (path /socket.io/, namespace /):
  connect   query conversation_id (required, else refused with
            44{"message":"No conversation_id in query params"}) and latest_event_id (not an integer: -1).
            Every event with id > latest_event_id is emitted to this socket as oh_event, ascending,
            then the socket joins the conversation's room. Replay and room join happen under the
            conversation's lock, so no live event falls between them or is sent twice.
  oh_user_action
            {"type":"message","message":text} or {"action":"message","args":{"content":text}}:
            stored with the next dense id (from 0) and emitted to the room, sender included.
            Anything else: {"error":true,"message":..,"code":"BAD_ACTION"} to the sender only.
HTTP:
  GET  /alive                                           {"status":"ok"}
  POST /bench/seed?conversation_id=X&count=N&size=BYTES appends N user messages whose text is BYTES
                                                        characters long; answers {"conversation_id",
                                                        "count","last_id"}

Prints "listening on http://HOST:PORT" on stdout once it accepts connections (--port 0 picks a
free port and prints it).
"""

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from urllib.parse import parse_qs

import socketio
from aiohttp import web

MAX_HTTP_BUFFER_SIZE = 4 * 1024 * 1024


class Conversation:
    __slots__ = ("events", "lock")

    def __init__(self):
        self.events = []  # events[i]["id"] == i
        self.lock = asyncio.Lock()


conversations = {}


def conversation(conversation_id):
    conv = conversations.get(conversation_id)
    if conv is None:
        conv = conversations[conversation_id] = Conversation()
    return conv


def room_of(conversation_id):
    return "room:" + conversation_id


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def message_event(event_id, text):
    return {
        "id": event_id,
        "timestamp": now_iso(),
        "source": "user",
        "message": text,
        "type": "message",
        "action": "message",
        "args": {
            "content": text,
            "file_urls": [],
            "image_urls": [],
            "wait_for_response": False,
            "security_risk": -1,
        },
    }


def message_text(data):
    """The text of a user message in either accepted form, or None."""
    if not isinstance(data, dict):
        return None
    if data.get("action") == "message":
        args = data.get("args")
        if isinstance(args, dict) and isinstance(args.get("content"), str):
            return args["content"]
        return None
    if data.get("type") == "message" and "action" not in data and "observation" not in data:
        if isinstance(data.get("message"), str):
            return data["message"]
    return None


sio = socketio.AsyncServer(
    async_mode="aiohttp",
    cors_allowed_origins="*",
    max_http_buffer_size=MAX_HTTP_BUFFER_SIZE,
    logger=False,
    engineio_logger=False,
)


@sio.event
async def connect(sid, environ, auth=None):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    conversation_id = (query.get("conversation_id") or [""])[0]
    if not conversation_id:
        raise socketio.exceptions.ConnectionRefusedError("No conversation_id in query params")
    try:
        latest_event_id = int((query.get("latest_event_id") or ["-1"])[0])
    except ValueError:
        latest_event_id = -1
    conv = conversation(conversation_id)
    await sio.save_session(sid, {"conversation_id": conversation_id})
    async with conv.lock:
        for event in conv.events[max(latest_event_id + 1, 0):]:
            await sio.emit("oh_event", event, to=sid)
        await sio.enter_room(sid, room_of(conversation_id))


@sio.on("oh_user_action")
async def oh_user_action(sid, data=None):
    session = await sio.get_session(sid)
    conversation_id = session["conversation_id"]
    text = message_text(data)
    if text is None:
        await sio.emit(
            "oh_event",
            {"error": True, "message": "unsupported action", "code": "BAD_ACTION"},
            to=sid,
        )
        return
    conv = conversation(conversation_id)
    async with conv.lock:
        event = message_event(len(conv.events), text)
        conv.events.append(event)
        await sio.emit("oh_event", event, room=room_of(conversation_id))


async def alive(request):
    return web.json_response({"status": "ok"})


async def seed(request):
    q = request.query
    conversation_id = q.get("conversation_id", "")
    try:
        count = int(q.get("count", "0"))
        size = int(q.get("size", "0"))
    except ValueError:
        return web.json_response({"error": "count and size must be integers", "code": "BAD_REQUEST"},
                                 status=400)
    if not conversation_id or count < 0 or size < 0:
        return web.json_response({"error": "conversation_id, count>=0 and size>=0 are required",
                                  "code": "BAD_REQUEST"}, status=400)
    text = ("x" * size)
    conv = conversation(conversation_id)
    async with conv.lock:
        for _ in range(count):
            conv.events.append(message_event(len(conv.events), text))
        last_id = len(conv.events) - 1
    return web.json_response({"conversation_id": conversation_id, "count": count, "last_id": last_id})


async def serve(host, port):
    app = web.Application(client_max_size=MAX_HTTP_BUFFER_SIZE)
    sio.attach(app)
    app.router.add_get("/alive", alive)
    app.router.add_post("/bench/seed", seed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound_port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
