#!/usr/bin/env python3
"""Times tool calls made directly with the Python `mcp` client, for the MCP benchmark
(crates/mcp/benches/call.rs), against the same server ohd calls.

Usage: bench_client.py stdio COMMAND... --calls N
       bench_client.py shttp URL --calls N
Prints one JSON object: {"calls": N, "median_us": ..., "p99_us": ..., "mean_us": ...}.
"""

import argparse
import asyncio
import json
import statistics
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

parser = argparse.ArgumentParser()
parser.add_argument("transport", choices=["stdio", "shttp"])
parser.add_argument("target", nargs="+")
parser.add_argument("--calls", type=int, default=500)
parser.add_argument("--warmup", type=int, default=20)
options = parser.parse_args()


async def timed(session):
    await session.initialize()
    for _ in range(options.warmup):
        await session.call_tool("echo", {"text": "warm"})
    times = []
    for i in range(options.calls):
        started = time.perf_counter()
        result = await session.call_tool("echo", {"text": f"call {i}"})
        times.append((time.perf_counter() - started) * 1e6)
        assert result.content[0].text == f"call {i}"
    times.sort()
    return {
        "calls": len(times),
        "median_us": statistics.median(times),
        "p99_us": times[int(len(times) * 0.99) - 1],
        "mean_us": statistics.fmean(times),
    }


async def main():
    if options.transport == "stdio":
        command, *args = options.target
        async with stdio_client(StdioServerParameters(command=command, args=args)) as (r, w):
            async with ClientSession(r, w) as session:
                print(json.dumps(await timed(session)))
    else:
        async with streamablehttp_client(options.target[0]) as (r, w, _):
            async with ClientSession(r, w) as session:
                print(json.dumps(await timed(session)))


asyncio.run(main())
