#!/usr/bin/env python3
"""An MCP server for ohd's tests, on the Python `mcp` package's FastMCP.

Usage: server.py stdio
       server.py sse|streamable-http --port N [--key KEY]

With --key, HTTP requests without `Authorization: Bearer KEY` get a 401.

Tools:
  add(a, b)          the sum
  echo(text)         the text back
  whoami()           this server's transport, process id and run (one per start)
  env(name)          an environment variable's value
  slow(seconds)      answers after sleeping that long
  fail(message)      raises, so the result is an error
  crash()            ends the process mid-call
  fetch(url)         "reached <status>" if a GET of the address is answered, else why not
"""

import argparse
import os
import sys
import time
import uuid

from mcp.server.fastmcp import FastMCP

parser = argparse.ArgumentParser()
parser.add_argument("transport", choices=["stdio", "sse", "streamable-http"])
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--key", default=None)
options = parser.parse_args()

# Which start of the server answers (process ids repeat in a sandbox's own namespace).
RUN = uuid.uuid4().hex[:8]

server = FastMCP("ohd-test", host="127.0.0.1", port=options.port, log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Returns the text it is given."""
    return text


@server.tool()
def whoami() -> str:
    """Says which transport and process answer."""
    return f"{options.transport} pid={os.getpid()} run={RUN}"


@server.tool()
def env(name: str) -> str:
    """Returns an environment variable of the server."""
    return os.environ.get(name, "")


@server.tool()
def slow(seconds: float) -> str:
    """Answers after the given number of seconds."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message."""
    raise ValueError(message)


@server.tool()
def fetch(url: str) -> str:
    """GETs an address and says whether it answered."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return f"reached {response.status}"
    except Exception as error:  # noqa: BLE001 - any failure is the answer
        return f"unreachable: {error}"


@server.tool()
def crash() -> str:
    """Ends the server in the middle of the call."""
    sys.stdout.flush()
    os._exit(3)


if options.transport == "stdio":
    server.run("stdio")
else:
    import uvicorn
    from starlette.responses import JSONResponse

    app = server.sse_app() if options.transport == "sse" else server.streamable_http_app()
    if options.key:
        inner = app

        async def app(scope, receive, send):  # noqa: F811 - wraps the app with the key check
            if scope["type"] == "http":
                headers = dict(scope.get("headers") or [])
                if headers.get(b"authorization", b"").decode() != f"Bearer {options.key}":
                    await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                    return
            await inner(scope, receive, send)

    print(f"listening on {options.port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="warning")
