#!/usr/bin/env bash
# Judging benchmark: Score pairs/s one-at-a-time vs batched (target ≥ 5×) and CheckSafety texts/s,
# over gRPC against one alignd with the default models, 127.0.0.1 only.
#
# One command:   Benchmarks/run-judging-bench.sh
# Writes the "## Judging benchmark" section of Benchmarks/RESULTS.md (between
# <!-- judging-bench:start --> and <!-- judging-bench:end -->, placed after the load benchmark the
# first time; the rest of the file is kept) and keeps raw JSON and the server log in $BENCH_OUT
# (default /var/cache/alignd/bench/judging-<UTC timestamp>).
#
# Steps (the driver is Benchmarks/judging_bench.py; its docstring defines workloads and metrics;
# shell helpers shared by the run-*-bench.sh scripts are in Benchmarks/lib.sh):
#   1. venv $VENV (grpcio, grpcio-tools, grpcio-health-checking), created idempotently; Python stubs
#      generated from Schemas/alignd/v1/*.proto into a temp folder.
#   2. alignd serve --port 0 with the default models (policy SmolLM2, reward = generative judge on
#      it, safety = lexical + rules); the port is read from its "alignd listening" log line, then
#      wait for grpc.health.v1 SERVING.
#   3. Score: $RUNS runs of $PAIRS pairs (sequential one-pair RPCs / concurrent one-pair RPCs /
#      $PER_RPC pairs per RPC). 4. CheckSafety: $RUNS runs of $TEXTS texts (1 per RPC sequential /
#      1 per RPC concurrent / all in one RPC). One driver process at a time.
#   5. report -> RESULTS.md.
# The server it starts is killed on exit (by PID). Bounded: each driver call runs under `timeout`,
# the server start waits at most $START_TIMEOUT s. Duration: the judge scores ~1 pair/s on 2 quiet
# cores, so a Score run (3 x 64 pairs) takes ~3 min; the whole script ~12 min quiet, ~20 min busy
# (RUNS=1 or PAIRS=32 for a quick look).
#
# Environment:
#   ALIGND_BUILD_DIR  build folder holding release/alignd (default /var/cache/alignd/build)
#   MODELS_DIR        models folder (default <repo>/models; scripts/fetch-models.sh fills it)
#   VENV              Python venv (default ${ALIGND_CACHE_DIR:-/var/cache/alignd}/venv-bench)
#   RUNS              runs per workload (default 3)    PAIRS  Score pairs (default 64)
#   PER_RPC           pairs per RPC in mode (c) (default 32, the 64-response limit)
#   TEXTS             CheckSafety texts (default 64)   MIN_SECONDS  least wall time of a safety mode (default 3)
#   SCORE_TIMEOUT, SAFETY_TIMEOUT  bounds of the two driver calls in s (default 1500, 180); the driver writes
#                     its JSON after every run, so runs completed before the bound are reported
#   ALIGND_ARGS       extra flags for alignd serve (recorded in RESULTS.md)
#   SKIP_SCORE=1 / SKIP_SAFETY=1   skip a workload
#   RESULTS_FILE      where the section is written (default Benchmarks/RESULTS.md); NOTES  free text appended to it
#   QUIET_MAX, QUIET_TIMEOUT  before each run, wait up to QUIET_TIMEOUT s (default 60) for machine CPU
#                     use below QUIET_MAX (default 0.25), then measure anyway (the state is recorded).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=judging-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
BUILD="${ALIGND_BUILD_DIR:-$CACHE/build}"
ALIGND="$BUILD/release/alignd"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
VENV="${VENV:-$CACHE/venv-bench}"
RUNS="${RUNS:-3}"
PAIRS="${PAIRS:-64}"
PER_RPC="${PER_RPC:-32}"
TEXTS="${TEXTS:-64}"
MIN_SECONDS="${MIN_SECONDS:-3}"
START_TIMEOUT="${START_TIMEOUT:-180}"
SCORE_TIMEOUT="${SCORE_TIMEOUT:-1500}"     # bound of the Score driver (runs completed by then are kept)
SAFETY_TIMEOUT="${SAFETY_TIMEOUT:-180}"
QUIET_MAX="${QUIET_MAX:-0.25}"
QUIET_TIMEOUT="${QUIET_TIMEOUT:-60}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/judging-$STAMP}"

[[ -x "$ALIGND" ]] || { log "alignd not built: $ALIGND (swift build -c release, or set ALIGND_BUILD_DIR)"; exit 1; }
[[ -d "$MODELS_DIR" ]] || { log "models folder not found: $MODELS_DIR (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/judging-bench.XXXXXX)"
bench_traps "$TMP"   # kill only what this script started, remove the scratch folder
log "raw outputs in $BENCH_OUT, scratch in $TMP"

# --- 1. venv and stubs ----------------------------------------------------------------------------
bench_venv "$VENV" 'grpc, grpc_tools, grpc_health.v1' grpcio grpcio-tools grpcio-health-checking
STUBS="$TMP/pystubs"
bench_stubs "$STUBS"
DRIVER=("$PY" "$HERE/judging_bench.py")
COMMON_ARGS=(--stubs "$STUBS" --runs "$RUNS" --quiet-max "$QUIET_MAX" --quiet-timeout "$QUIET_TIMEOUT")

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
ALIGND_CMD="$(rel "$ALIGND") serve --port 0 --models-dir $(rel "$MODELS_DIR") --data-dir TMP/data${ALIGND_ARGS:+ $ALIGND_ARGS}"

# --- 2. alignd ------------------------------------------------------------------------------------
mkdir -p "$TMP/data"
log "starting alignd (port 0)"
: >"$BENCH_OUT/alignd.log"
"$ALIGND" serve --port 0 --models-dir "$MODELS_DIR" --data-dir "$TMP/data" ${ALIGND_ARGS:-} \
    >"$BENCH_OUT/alignd.log" 2>&1 &
SERVER_PID=$!
alignd_serving() {  # PORT from alignd's "alignd listening" log line once it is there, then a health check
    if [[ -z "$PORT" ]]; then
        PORT="$(sed -n 's/.*address=\[ipv4\]127\.0\.0\.1:\([0-9]*\).*alignd listening.*/\1/p' "$BENCH_OUT/alignd.log" | head -1 || true)"
    fi
    [[ -n "$PORT" ]] && grpc_serving "$PORT"
}
PORT=""
if ! wait_until "$SERVER_PID" "$START_TIMEOUT" alignd_serving; then
    log "alignd did not reach SERVING within ${START_TIMEOUT}s (see $BENCH_OUT/alignd.log)"
    tail -20 "$BENCH_OUT/alignd.log" >&2 || true
    exit 1
fi
log "alignd SERVING on 127.0.0.1:$PORT"
ALIGND_STATE="ran"
VERSIONS_LINE="$(grep -m1 'models loaded' "$BENCH_OUT/alignd.log" || true)"
REWARD_VERSION="$(sed -n 's/.* reward=\([^ ]*\) .*/\1/p' <<<"$VERSIONS_LINE")"
SAFETY_VERSION="$(sed -n 's/.* safety=\([^ ]*\) .*/\1/p' <<<"$VERSIONS_LINE")"

# --- 3. Score -------------------------------------------------------------------------------------
if [[ "${SKIP_SCORE:-0}" != "1" ]]; then
    log "Score: $RUNS runs x $PAIRS pairs"
    timeout "$SCORE_TIMEOUT" "${DRIVER[@]}" score --target "127.0.0.1:$PORT" "${COMMON_ARGS[@]}" --pairs "$PAIRS" \
        --per-rpc "$PER_RPC" --out "$BENCH_OUT/score.json" \
        || { ALIGND_STATE="ran; the Score driver failed or timed out"; log "$ALIGND_STATE"; }
fi

# --- 4. CheckSafety -------------------------------------------------------------------------------
if [[ "${SKIP_SAFETY:-0}" != "1" ]]; then
    log "CheckSafety: $RUNS runs x $TEXTS texts"
    timeout "$SAFETY_TIMEOUT" "${DRIVER[@]}" safety --target "127.0.0.1:$PORT" "${COMMON_ARGS[@]}" --texts "$TEXTS" \
        --min-seconds "$MIN_SECONDS" --out "$BENCH_OUT/safety.json" \
        || { ALIGND_STATE="$ALIGND_STATE; the CheckSafety driver failed or timed out"; log "$ALIGND_STATE"; }
fi
kill -0 "$SERVER_PID" 2>/dev/null || ALIGND_STATE="$ALIGND_STATE; alignd exited during the run (see alignd.log)"
stop_server

# --- 5. report ------------------------------------------------------------------------------------
VENV_REL="$(rel "$VENV")"
export J_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" J_OUT="$BENCH_OUT" J_MACHINE="$(machine_description)" J_LOAD="$LOAD_BEFORE" \
    J_STATE="$ALIGND_STATE" J_CMD="$ALIGND_CMD" J_REWARD="$REWARD_VERSION" J_SAFETY="$SAFETY_VERSION" \
    J_RUNS="$RUNS" J_MIN_SECONDS="$MIN_SECONDS" J_QMAX="$QUIET_MAX" J_QTIMEOUT="$QUIET_TIMEOUT" J_NOTES="${NOTES:-}" \
    J_DRIVERS="$VENV_REL/bin/python Benchmarks/judging_bench.py score --target 127.0.0.1:PORT --stubs STUBS --runs $RUNS --pairs $PAIRS --per-rpc $PER_RPC --out score.json
$VENV_REL/bin/python Benchmarks/judging_bench.py safety --target 127.0.0.1:PORT --stubs STUBS --runs $RUNS --texts $TEXTS --min-seconds $MIN_SECONDS --out safety.json"
"$PY" - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
json.dump({"date": e["J_DATE"], "out": e["J_OUT"], "machine": e["J_MACHINE"], "load_before": e["J_LOAD"],
           "alignd_state": e["J_STATE"], "alignd_cmd": e["J_CMD"], "reward_version": e["J_REWARD"],
           "safety_version": e["J_SAFETY"], "runs": int(e["J_RUNS"]), "min_seconds": float(e["J_MIN_SECONDS"]),
           "quiet_max": float(e["J_QMAX"]), "quiet_timeout": float(e["J_QTIMEOUT"]),
           "driver_cmds": e["J_DRIVERS"], "notes": e["J_NOTES"]}, open(sys.argv[1], "w"), indent=1)
PY
"${DRIVER[@]}" report --meta "$BENCH_OUT/meta.json" --score "$BENCH_OUT/score.json" \
    --safety "$BENCH_OUT/safety.json" --results "$RESULTS_FILE" >/dev/null
show_section "$RESULTS_FILE"
