#!/usr/bin/env bash
# Joins (issue 13): join-to-first-event latency and connect storms, ohd against the
# python-socketio baseline (bench/baseline_server.py), the raw websocket reference
# (ohd-bench rawcast) and, where it is installed, the original OpenHands server, in one run.
#
#   bench/joins.sh                 # JOINS=1000 STORMS="1000 10000"
#   ORIGINAL_URL=http://127.0.0.1:3001 bench/joins.sh
#       # also an original OpenHands server (openhands-ai 0.59) already running there, with an
#       # LLM saved in its settings (any: the joins never reach the model); its storms are
#       # ORIGINAL_STORMS (default 1000)
#
# Latency: bench/join_latency.py (python-socketio) and bench/join_latency.mjs (socket.io-client),
# over websocket and long-polling, JOINS joins one after another to a conversation holding 10
# events. Storms: bench/storm.mjs, N socket.io-client sockets connecting at once. Every result is
# one JSON line in bench/results/joins.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

JOINS=${JOINS:-1000}
STORMS=${STORMS:-"1000 10000"}
OUT=bench/results/joins.jsonl
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p ohd -p ohd-bench
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
[ -d e2e/node_modules/socket.io-client ] || (cd e2e && npm ci --no-audit --no-fund)
python3 -c 'import socketio, aiohttp, requests' 2>/dev/null ||
    python3 -m pip install --quiet -r bench/requirements.txt -r e2e/requirements.txt
mkdir -p bench/results
: >"$OUT"

# start NAME COMMAND...: starts a server whose first stdout line ends with its URL.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PIDS+=($!)
    for _ in $(seq 600); do
        URL=$(grep -o 'http://[0-9.:]*' "$WORK/$name.out" | head -n1 || true)
        [[ -n "$URL" ]] && return 0
        sleep 0.05
    done
    echo "$name did not start:" >&2
    cat "$WORK/$name.log" >&2
    return 1
}

record() {
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["server"]=sys.argv[1]; d.update(json.loads(sys.argv[2])); print(json.dumps(d))' "$@" | tee -a "$OUT"
}

measure() {
    local server=$1 kind=$2 url=$3
    local conv
    conv=$(python3 bench/join_latency.py --url "$url" --kind "$kind" --joins 0 |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["conversation"])')
    python3 bench/join_latency.py --url "$url" --kind "$kind" --conversation "$conv" \
        --client raw --joins "$JOINS" | record "$server" '{}'
    for transport in websocket polling; do
        python3 bench/join_latency.py --url "$url" --kind "$kind" --conversation "$conv" \
            --transport "$transport" --joins "$JOINS" | record "$server" '{}'
        node bench/join_latency.mjs --url "$url" --conversation "$conv" \
            --transport "$transport" --joins "$JOINS" | record "$server" '{}'
    done
    for n in $STORMS; do
        node --max-old-space-size=4096 bench/storm.mjs --url "$url" --conversation "$conv" \
            --clients "$n" --timeout-ms 120000 | record "$server" "{\"test\": \"storm\"}"
    done
}

# ohd starts with the usual soft open-file limit of 1,024 and raises it itself.
start ohd bash -c 'ulimit -S -n 1024; exec "$@"' ohd \
    "$TARGET_DIR/release/ohd" serve --no-agent --port 0 --data-dir "$WORK/ohd-data"
measure ohd ohd "$URL"
kill "${PIDS[-1]}"

start python python3 bench/baseline_server.py --host 127.0.0.1 --port 0
measure python-socketio baseline "$URL"
kill "${PIDS[-1]}"

# The raw reference replays nothing: its storms count connections only.
start rawcast "$TARGET_DIR/release/ohd-bench" rawcast --port 0
for n in $STORMS; do
    node --max-old-space-size=4096 bench/storm.mjs --url "$URL" --conversation raw \
        --clients "$n" --until connect | record rawcast '{"test": "storm"}'
done
kill "${PIDS[-1]}"

if [[ -n "${ORIGINAL_URL:-}" ]]; then
    STORMS=${ORIGINAL_STORMS:-1000} measure original original "$ORIGINAL_URL"
fi
echo "results in $OUT" >&2
