#!/usr/bin/env bash
# Benchmark: the worker pool's scaling on this machine. Starts its own redis-server (loopback,
# temporary folder), a gateway (`sdw serve --redis`) and workers (`sdw worker -t 1`), then prints
#   - throughput: JOBS jobs submitted at once through the gateway, with 1 and then 2 workers:
#     jobs per minute from the first submission to the last completion;
#   - the gateway's added latency per job: one job at a time, submitted and followed to its end
#     (the job's event stream, `complete` event) through the gateway with one worker, against the
#     same job on `sdw serve -m MODEL -t 1`; medians over LAT_RUNS runs of each, alternating, so
#     a machine shared with other work slows both alike. Both the whole time and the time beyond
#     the job's own run (its "elapsed", measured where it ran) are shown: the run time moves with
#     the machine's load, the rest is what the way through the pool costs;
#   - the CPU (model, flags that matter: AVX2, AVX-512, AVX512-BF16, AMX), the cores and the load
#     average before and after, since a loaded machine stretches every number.
#
#   bench/pool.sh                                  # tiny-sd15 fixture, 64x64, 8 steps
#   MODEL=/models/sd15 SIZE=512 STEPS=20 JOBS=8 bench/pool.sh
#   JOBS=40 LAT_RUNS=10 bench/pool.sh
#
# With the tiny fixture model the jobs are short (about a second), so the pool's own costs
# (Redis round trips, the gateway following a job's event stream) weigh as much as they ever
# will. Two workers with -t 1 each can at most double one worker's throughput, and only with
# two free cores. Never run by ctest: timings are reported, not asserted. Needs curl and
# redis-cli. Without a gateway in the build (sdw serve without --redis) it measures through the
# pool's protocol instead: test_pool_cluster with SDW_POOL_BENCH=1 (no gateway latency then).
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURES=${SDW_FIXTURES:-../shared/fixtures}
BIN=${SDW_BIN:-build/sdw}
MODEL=${MODEL:-$FIXTURES/models/tiny-sd15}
SIZE=${SIZE:-64}
STEPS=${STEPS:-8}
JOBS=${JOBS:-20}
LAT_RUNS=${LAT_RUNS:-5}
for tool in redis-server redis-cli curl; do
    command -v $tool >/dev/null || { echo "bench/pool.sh: needs $tool" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench/pool.sh: $BIN not built (cmake --build build)" >&2; exit 1; }

cpu_lines() {
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    local flags
    flags=$(grep -m1 '^flags' /proc/cpuinfo)
    echo "flags: $(for f in avx2 avx512f avx512_bf16 amx_tile amx_bf16; do
        case " $flags " in *" $f "*) printf '%s ' "$f" ;; esac; done)"
    echo "cores: $(nproc); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
}

SERVE_HELP=$("$BIN" serve --help)
if [[ $SERVE_HELP != *--redis* ]]; then
    TEST=${SDW_POOL_TEST:-$(dirname "$BIN")/test_pool_cluster}
    [ -x "$TEST" ] || { echo "bench/pool.sh: no gateway in $BIN and no $TEST" >&2; exit 1; }
    echo "no gateway in this build (sdw serve --redis): measuring through the protocol"
    [ "$MODEL" = "$FIXTURES/models/tiny-sd15" ] || echo "(it runs tiny-sd15: MODEL is not used)"
    cpu_lines
    SDW_BIN=$BIN SDW_FIXTURES=$FIXTURES SDW_POOL_BENCH=1 JOBS=$JOBS SIZE=$SIZE STEPS=$STEPS \
        LAT_RUNS=$LAT_RUNS "$TEST" 2>/dev/null | grep -v '^\[\|passed,'
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi

# Each process in its own session, as a service manager starts them (and as separate machines
# are): with Linux's autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled) the
# processes of one session share a single slice of a busy CPU, so two workers started from
# this script's session would split one worker's share and could never scale.
SESSION=
command -v setsid >/dev/null && SESSION=setsid

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# A free loopback port: bind to port 0 and read what the kernel gave.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RPORT=$(free_port)
$SESSION redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP" --save '' --appendonly yes \
    --appendfsync everysec --daemonize no --logfile "$TMP/redis.log" >/dev/null &
PIDS+=($!)
URL="redis://127.0.0.1:$RPORT/0"
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

# Starts `sdw serve ARGS` on a free port; sets PORT.
start_server() {
    local out=$TMP/serve.$RANDOM
    $SESSION "$BIN" serve --port 0 -q "$@" >"$out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 600); do
        PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$out" | head -1)
        [ -n "$PORT" ] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
        sleep 0.05
    done
    echo "bench/pool.sh: sdw serve $* did not start:" >&2; cat "$out" >&2; exit 1
}

start_worker() {
    $SESSION "$BIN" worker -m "$MODEL" -t 1 --redis "$URL" -q >"$TMP/worker.$1" 2>&1 &
    PIDS+=($!)
}

# Waits until $1 workers have registered (their registry entries in Redis).
wait_workers() {
    for _ in $(seq 600); do
        [ "$(redis-cli -p "$RPORT" --scan --pattern 'sdw:worker:*' | wc -l)" -ge "$1" ] && return 0
        sleep 0.1
    done
    echo "bench/pool.sh: the workers did not register" >&2; exit 1
}

BODY="{\"prompt\":\"a lighthouse at dusk\",\"width\":$SIZE,\"height\":$SIZE,\"steps\":$STEPS,\"seed\":1}"
submit() {
    curl -sf -X POST -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$1/v1/jobs" |
        sed -n 's/.*"job_id":"\([0-9a-f]*\)".*/\1/p'
}
# Follows job $2 on port $1 until its final event.
# (grep ends at that event and closes the pipe: curl's write error is expected, not a failure)
await() {
    { curl -sN "http://127.0.0.1:$1/v1/jobs/$2/stream" || true; } |
        grep -m1 -qE '^event: (complete|error|cancelled)'
}
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

cpu_lines
echo "model: $MODEL, ${SIZE}x${SIZE}, $STEPS steps, each worker and the local server -t 1"
echo

start_server --redis "$URL" --queue 1000
GW=$PORT
start_server -m "$MODEL" -t 1
LOCAL=$PORT
start_worker 1
wait_workers 1

# warm-up: one job each way (first-touch page faults, Redis script cache)
await "$GW" "$(submit "$GW")"
await "$LOCAL" "$(submit "$LOCAL")"

: >"$TMP/lat.gw"
: >"$TMP/lat.local"
: >"$TMP/over.gw"
: >"$TMP/over.local"
# Per job: the client's time (submitted -> final event) and, beyond the job's own run time
# (the job's "elapsed": started -> finished where it ran), what the way there and back added.
# The run time itself moves with the machine's load; the overhead is what the pool changes.
for _ in $(seq "$LAT_RUNS"); do
    for side in gw local; do
        port=$GW; [ $side = local ] && port=$LOCAL
        t0=$(now); id=$(submit "$port"); await "$port" "$id"; t1=$(now)
        run=$(curl -sf "http://127.0.0.1:$port/v1/jobs/$id" | sed -n 's/.*"elapsed": *\([0-9.e+-]*\).*/\1/p')
        awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$TMP/lat.$side"
        awk -v a="$t0" -v b="$t1" -v r="${run:-0}" 'BEGIN {print b - a - r}' >>"$TMP/over.$side"
    done
done
LG=$(median <"$TMP/lat.gw")
LL=$(median <"$TMP/lat.local")
OG=$(median <"$TMP/over.gw")
OL=$(median <"$TMP/over.local")
printf 'one job at a time (medians of %d): sdw serve %.3f s, gateway + 1 worker %.3f s\n' \
    "$LAT_RUNS" "$LL" "$LG"
printf 'beyond the run itself: sdw serve %.0f ms, gateway + worker %.0f ms: the pool adds %.0f ms per job\n' \
    "$(awk -v x="$OL" 'BEGIN {print x * 1000}')" "$(awk -v x="$OG" 'BEGIN {print x * 1000}')" \
    "$(awk -v g="$OG" -v l="$OL" 'BEGIN {print (g - l) * 1000}')"

# Submits JOBS jobs at once, follows each to its end; prints jobs per minute.
batch() {
    local ids=() t0 t1
    t0=$(now)
    for _ in $(seq "$JOBS"); do ids+=("$(submit "$GW")"); done
    for id in "${ids[@]}"; do await "$GW" "$id"; done
    t1=$(now)
    awk -v n="$JOBS" -v a="$t0" -v b="$t1" 'BEGIN {print n * 60 / (b - a)}'
}
T1=$(batch)
printf 'throughput, %d jobs: 1 worker %.1f jobs/min\n' "$JOBS" "$T1"
start_worker 2
wait_workers 2
T2=$(batch)
printf 'throughput, %d jobs: 2 workers %.1f jobs/min (x%.2f)\n' "$JOBS" "$T2" "$(awk -v a="$T1" -v b="$T2" 'BEGIN {print b / a}')"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
