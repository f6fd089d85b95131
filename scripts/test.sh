#!/usr/bin/env bash
# Runs every test: installs the real clients the tests drive (socket.io-client from npm,
# python-socketio from PyPI) if they are missing, then the whole Cargo workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d e2e/node_modules/socket.io-client ] || [ ! -d e2e/node_modules/playwright-core ]; then
    (cd e2e && npm ci --no-audit --no-fund)
fi
# The Python clients go into a virtual environment of their own, not the system's Python.
if ! e2e/.venv/bin/python -c 'import socketio, websocket' 2>/dev/null; then
    python3 -m venv e2e/.venv
    e2e/.venv/bin/python -m pip install --quiet -r e2e/requirements.txt
fi

# The MCP test servers: FastMCP for the system's Python, and a published npm server, both
# under /usr where a conversation's sandbox sees them (so installing them needs root; without
# them the MCP tests are skipped with a notice, and fail under CI).
if [ "$(id -u)" = 0 ]; then
    if ! /usr/bin/python3 -c 'import mcp.server.fastmcp' 2>/dev/null; then
        /usr/bin/python3 -m pip install --quiet --break-system-packages -r e2e/mcp/requirements.txt
    fi
    if [ ! -x /usr/bin/mcp-server-everything ]; then
        npm install --global --no-audit --no-fund --prefix /usr @modelcontextprotocol/server-everything@2026.8.31
    fi
fi

# Every test binary runs, even after one fails; the exit status says whether any did.
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

# The agent's shell tests once more as a background job of a script runs them (`nohup ... &`):
# with SIGINT ignored, which every process inherits unless ohd gives it back, so that C-c would
# never reach a command. Only for a whole run (arguments pick tests).
if [ $# -eq 0 ]; then
    (trap '' INT; OHD_EXPECT_SIGINT_IGNORED=1 exec cargo test --workspace --test shell) || status=$?
fi
exit "$status"
