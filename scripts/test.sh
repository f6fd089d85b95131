#!/usr/bin/env bash
# Runs every test: installs the real clients the tests drive (socket.io-client from npm,
# python-socketio from PyPI) if they are missing, then the whole Cargo workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d e2e/node_modules/socket.io-client ] || [ ! -d e2e/node_modules/playwright-core ]; then
    (cd e2e && npm ci --no-audit --no-fund)
fi
if ! python3 -c 'import socketio, websocket' 2>/dev/null; then
    python3 -m pip install --quiet -r e2e/requirements.txt
fi

cargo test --workspace "$@"
