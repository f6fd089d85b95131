#!/usr/bin/env bash
# Memory of 100 conversations whose agents each ran a command (shell and sandbox live), then
# after ohd released them for being idle. Release builds; ohd on embedded defaults, with the
# scripted model standing in for the LLM.
#   bench/agents.sh            # 100 conversations
#   N=20 bench/agents.sh       # fewer
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
IDLE=${IDLE:-20}
cargo build -q --release -p ohd -p ohd-bench -p ohd-scripted-llm
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# Two turns per conversation: one command, then finish.
python3 - "$N" > "$work/script.json" <<'PY'
import json, sys
n = int(sys.argv[1])
turns = []
for i in range(n):
    turns.append({"tool_calls": [{"name": "execute_bash", "arguments": {"command": f"echo task-{i}"}}]})
    turns.append({"tool_calls": [{"name": "finish", "arguments": {"message": "done"}}]})
print(json.dumps({"turns": turns, "aside": "Bench"}))
PY
target/release/scripted-llm --script "$work/script.json" > "$work/llm.out" &
for _ in $(seq 50); do grep -q listening "$work/llm.out" 2>/dev/null && break; sleep 0.1; done
llm=$(sed -n 's/.*listening on //p' "$work/llm.out")

printf '[agent]\nidle_timeout_secs = %s\n' "$IDLE" > "$work/config.toml"
port=$((20000 + RANDOM % 20000))
LLM_MODEL=openai/bench-model LLM_API_KEY=sk-bench LLM_BASE_URL="$llm/v1" \
    target/release/ohd serve --port "$port" --data-dir "$work/data" --config "$work/config.toml" \
    > "$work/ohd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/alive" >/dev/null && break; sleep 0.1; done
target/release/ohd-bench agents --url "http://127.0.0.1:$port" --pid "$pid" \
    --conversations "$N" --label ohd
