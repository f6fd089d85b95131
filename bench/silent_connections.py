#!/usr/bin/env python3
"""Resident memory of an ohd server before, while N connections that send nothing are open, and
after they close (issue 9: connections held forever, memory kept after they close).

    ulimit -n 20000; python3 bench/silent_connections.py target/debug/ohd 2000 [--after 12]

The server runs with --no-agent on a fresh data directory with timeouts long enough that it
does not close the connections itself; only 127.0.0.1 is used. Prints one line of figures.
"""
import argparse
import os
import socket
import subprocess
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("binary")
parser.add_argument("connections", type=int)
parser.add_argument("--after", type=float, default=12.0, help="seconds to wait after closing")
args = parser.parse_args()

data = tempfile.mkdtemp(prefix="ohd-silent-")
config = os.path.join(data, "config.toml")
with open(config, "w") as f:
    f.write("[server]\nheader_read_timeout_secs = 600\nidle_timeout_secs = 600\n")
server = subprocess.Popen(
    [args.binary, "serve", "--port", "0", "--no-agent", "--data-dir", data, "--config", config],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    host, port = server.stdout.readline().strip().rsplit("http://", 1)[1].rsplit(":", 1)

    def rss_kib():
        with open(f"/proc/{server.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        return 0

    time.sleep(1)
    before = rss_kib()
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(args.connections)]
    time.sleep(3)
    during = rss_kib()
    fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    for s in held:
        s.close()
    time.sleep(args.after)
    after = rss_kib()
    per = (during - before) / max(args.connections, 1)
    print(f"{os.path.basename(args.binary)}: {args.connections} silent connections; RSS before "
          f"{before} KiB, with them {during} KiB ({per:.1f} KiB each, {fds} fds), "
          f"{args.after:.0f} s after they closed {after} KiB ({after - before:+d} KiB)")
finally:
    server.terminate()
    server.wait(timeout=10)
