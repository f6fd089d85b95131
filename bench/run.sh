#!/usr/bin/env bash
# Benchmarks ohd against the python-socketio baseline (bench/baseline_server.py) and a raw
# websocket broadcast (`ohd-bench rawcast`), all on 127.0.0.1, and writes a Markdown table to
# bench/results/latest.md. See docs/BENCHMARKS.md for what each figure measures.
#
#   bench/run.sh              # the full run (about 5 minutes on 2 cores, plus the build)
#   PY_FULL=1 bench/run.sh    # also the python baseline at the full fan-out size (7+ minutes more)
#   QUICK=1 bench/run.sh      # a small smoke run of every step
#
# Every server gets its own port (picked by the server) and data directory; every step is bounded
# by `timeout`; every server started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RESULTS=bench/results
RAW=$RESULTS/raw
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ohd-bench.XXXXXX")
SERVER_PIDS=()

cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sizes (QUICK=1 shrinks everything, for checking the script itself).
if [[ "${QUICK:-0}" == 1 ]]; then
    FULL_CLIENTS=50 FULL_EVENTS=500 REDUCED_CLIENTS=50 REDUCED_EVENTS=100
    PACED_CLIENTS=50 PACED_EVENTS=20 PACED_RATE=10 REPLAY_EVENTS=5000 IDLE_CLIENTS=500
else
    FULL_CLIENTS=1000 FULL_EVENTS=10000 REDUCED_CLIENTS=1000 REDUCED_EVENTS=1000
    PACED_CLIENTS=1000 PACED_EVENTS=200 PACED_RATE=10 REPLAY_EVENTS=100000 IDLE_CLIENTS=10000
fi
SIZE=200

# 10,000 sockets on each side need more descriptors than the usual 1024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < IDLE_CLIENTS + 100 )); then
    echo "ulimit -n is $(ulimit -n): too low for $IDLE_CLIENTS clients" >&2
    exit 1
fi

echo "== building" >&2
cargo build --release -p ohd -p ohd-bench
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
OHD=$TARGET_DIR/release/ohd
BENCH=$TARGET_DIR/release/ohd-bench

if ! python3 -c 'import socketio, aiohttp' 2>/dev/null; then
    echo "== installing bench/requirements.txt" >&2
    python3 -m pip install --quiet -r bench/requirements.txt
fi

rm -rf "$RAW"
mkdir -p "$RAW"

# busy_jiffies: CPU time the whole machine has used, in clock ticks.
busy_jiffies() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# wait_quiet: on a shared machine, waits (up to QUIET_WAIT seconds, default 300) until other
# processes use less than a fifth of a CPU, so that they do not skew the next measurement.
wait_quiet() {
    local limit=${QUIET_WAIT:-300} waited=0 before after
    while (( waited < limit )); do
        before=$(busy_jiffies)
        sleep 1
        after=$(busy_jiffies)
        (( after - before < 20 )) && return 0
        (( waited == 0 )) && echo "   waiting for the machine to be quiet..." >&2
        waited=$((waited + 1))
    done
    echo "   the machine stayed busy for $limit s; measuring anyway" >&2
}

# start_server TARGET NAME: starts a fresh server; sets SERVER_PID and SERVER_URL.
start_server() {
    local target=$1 name=$2 out=$WORK/$2.out log=$WORK/$2.log prefix
    wait_quiet
    case $target in
        ohd)
            NO_COLOR=1 "$OHD" serve --no-agent --port 0 --data-dir "$WORK/$name-data" >"$out" 2>"$log" &
            prefix="ohd listening on " ;;
        python)
            python3 bench/baseline_server.py --host 127.0.0.1 --port 0 >"$out" 2>"$log" &
            prefix="listening on " ;;
        rawcast)
            "$BENCH" rawcast --port 0 >"$out" 2>"$log" &
            prefix="rawcast listening on " ;;
    esac
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    for _ in $(seq 200); do
        SERVER_URL=$(sed -n "s|^${prefix}||p" "$out" | head -n1)
        [[ -n "$SERVER_URL" ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "$target did not start; its log:" >&2
    cat "$log" >&2
    return 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# run_step GROUP TARGET SECONDS SUBCOMMAND ARGS...: runs one `ohd-bench` measurement into
# $RAW/GROUP.TARGET.json; a failure or a timeout is recorded as a failed result instead of
# stopping the run.
run_step() {
    local group=$1 target=$2 limit=$3 sub=$4
    shift 4
    local file=$RAW/$group.$target.json
    echo "== $group / $target" >&2
    local status=0
    timeout --kill-after=10 "$limit" "$BENCH" "$sub" --label "$target" --out "$file" "$@" >/dev/null ||
        status=$?
    if [[ ! -s "$file" ]]; then
        local why="exited with status $status"
        [[ $status == 124 ]] && why="did not finish within $limit s"
        local test=${group%%-*}
        printf '{"test":"%s","label":"%s","ok":false,"problems":["%s"]}\n' \
            "$test" "$target" "$why" >"$file"
        echo "   failed: $why" >&2
    fi
}

# conversation_args TARGET: python and rawcast have no REST API; they take any conversation id.
conversation_args() {
    [[ $1 == ohd ]] || echo "--conversation bench$RANDOM$RANDOM"
}

# fanout GROUP TARGET CLIENTS EVENTS LIMIT [EXTRA...]
fanout() {
    local group=$1 target=$2 clients=$3 events=$4 limit=$5
    shift 5
    start_server "$target" "$group-$target"
    # shellcheck disable=SC2046
    run_step "$group" "$target" "$limit" fanout --url "$SERVER_URL" --pid "$SERVER_PID" \
        --clients "$clients" --events "$events" --size "$SIZE" --timeout "$((limit - 20))" \
        $(conversation_args "$target") "$@"
    stop_server
}

fanout fanout-full ohd "$FULL_CLIENTS" "$FULL_EVENTS" 300
fanout fanout-full rawcast "$FULL_CLIENTS" "$FULL_EVENTS" 300
if [[ "${PY_FULL:-0}" == 1 ]]; then
    fanout fanout-full python "$FULL_CLIENTS" "$FULL_EVENTS" 900
fi
for target in ohd python rawcast; do
    fanout fanout-reduced "$target" "$REDUCED_CLIENTS" "$REDUCED_EVENTS" 300
done
for target in ohd python rawcast; do
    fanout fanout-paced "$target" "$PACED_CLIENTS" "$PACED_EVENTS" 300 --rate "$PACED_RATE"
done

# Replay: ohd is filled through a websocket writer as a client would; the baseline from memory.
start_server ohd replay-ohd
run_step replay ohd 300 replay --url "$SERVER_URL" --pid "$SERVER_PID" \
    --events "$REPLAY_EVENTS" --size "$SIZE" --fill ws
stop_server
start_server python replay-python
run_step replay python 300 replay --url "$SERVER_URL" --pid "$SERVER_PID" \
    --events "$REPLAY_EVENTS" --size "$SIZE" --fill seed $(conversation_args python)
stop_server

# Idle memory: a fresh server, its resident set before and after the clients join.
for target in ohd python rawcast; do
    start_server "$target" "idle-$target"
    # shellcheck disable=SC2046
    run_step idle "$target" 300 idle --url "$SERVER_URL" --pid "$SERVER_PID" \
        --clients "$IDLE_CLIENTS" $(conversation_args "$target")
    stop_server
done
# The same, with the clients only opening the Engine.IO transport (what the session adds).
for target in ohd python; do
    start_server "$target" "idle-transport-$target"
    # shellcheck disable=SC2046
    run_step idle-transport "$target" 300 idle --url "$SERVER_URL" --pid "$SERVER_PID" \
        --clients "$IDLE_CLIENTS" --no-join $(conversation_args "$target")
    stop_server
done

# Startup: spawn to /alive answering, each start on a fresh port and data directory.
wait_quiet
run_step startup ohd 120 startup --repeat 5 -- "$OHD" serve --port '{port}' --data-dir '{dir}'
wait_quiet
run_step startup python 120 startup --repeat 5 -- python3 bench/baseline_server.py --port '{port}'

# Warnings and errors ohd logged during the runs (a cut-off client logs a warning).
OHD_LOG_LINES=$(cat "$WORK"/*-ohd.log "$WORK"/idle-transport-ohd.log 2>/dev/null |
    grep -E 'WARN|ERROR' | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -n 20 || true)

{
    echo "# ohd benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [[ -n "${OHD_COMMIT:-}" ]]; then
        echo "- ohd commit: $OHD_COMMIT"
    elif commit=$(git rev-parse --short HEAD 2>/dev/null); then
        git diff --quiet HEAD -- crates || commit="$commit (with uncommitted changes)"
        echo "- ohd commit: $commit"
    fi
    echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
    echo "- $(python3 --version 2>&1), python-socketio $(python3 -c 'import importlib.metadata as m; print(m.version("python-socketio"))'), $(rustc --version)"
    echo "- command: bench/run.sh$([[ "${QUICK:-0}" == 1 ]] && echo ' (QUICK=1)')$([[ "${PY_FULL:-0}" == 1 ]] && echo ' (PY_FULL=1)')"
    echo "- every message carries $SIZE characters of content; clients and servers share the machine's CPUs"
    echo
    "$BENCH" report "$RAW"
    echo
    if [[ -n "$OHD_LOG_LINES" ]]; then
        echo "ohd's warnings and errors during the runs (count, message):"
        echo
        echo '```'
        echo "$OHD_LOG_LINES"
        echo '```'
    else
        echo "ohd logged no warnings or errors during the runs."
    fi
} >"$RESULTS/latest.md"

cat "$RESULTS/latest.md"
