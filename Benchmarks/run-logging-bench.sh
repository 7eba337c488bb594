#!/usr/bin/env bash
# Generation-log benchmark: served tokens/s at $STREAMS concurrent gRPC streams with the generation
# log off and on (sample rate 1), in one run, alternating off/on servers so both sides see the same
# machine noise. The issue's target: with the log on, ≥ 95 % of the tokens/s with it off.
#
# One command:   Benchmarks/run-logging-bench.sh
# Writes the "## Generation log benchmark" section of Benchmarks/RESULTS.md (between
# <!-- logging-bench:start --> and <!-- logging-bench:end -->, placed after the toxicity benchmark
# the first time; the rest of the file is kept) and keeps raw JSON and server logs in $BENCH_OUT
# (default /var/cache/alignd/bench/logging-<UTC timestamp>).
#
# Steps (the driver is Benchmarks/logging_bench.py; its docstring defines workload and metrics;
# shell helpers shared by the run-*-bench.sh scripts are in Benchmarks/lib.sh):
#   1. Python with grpcio + grpcio-tools ($VENV, created idempotently); stubs from Schemas/ into a
#      temp folder.
#   2. 2 x $RUNS runs in the order off, on, off, on, ...: each starts alignd on free loopback ports and
#      a fresh data folder, waits for GET /readyz, drives one warm-up round and $ROUNDS rounds of
#      $STREAMS streams x $MAX_TOKENS tokens (ignore_eos), and stops the server.
#   3. report -> RESULTS.md (medians per side, on/off ratio, TTFT p50/p99, per-run load averages).
# The server it starts is killed on exit (by PID). Bounded: each server start waits at most
# $START_TIMEOUT s, each driver call runs under `timeout`. Duration on 2 quiet cores: ~5 min.
#
# Environment:
#   ALIGND_BIN_DIR    folder holding alignd (default ${ALIGND_BUILD_DIR:-/var/cache/alignd/build}/release)
#   MODELS_DIR        models folder (default <repo>/models)
#   RUNS (5 per side)  STREAMS (32)  MAX_TOKENS (64)  ROUNDS (3 per run)  ENGINE_THREADS (2)
#   VENV              Python venv with grpcio and grpcio-tools (default /var/cache/alignd/venv-bench)
#   ALIGND_ARGS       extra flags for alignd serve, both sides (recorded in RESULTS.md)
#   RESULTS_FILE      where the section is written (default Benchmarks/RESULTS.md); NOTES  free text appended to it
#   QUIET_MAX, QUIET_TIMEOUT  before the first run, wait up to QUIET_TIMEOUT s (default 120) for machine CPU
#                     use below QUIET_MAX (default 0.25), then measure anyway (each run's load is recorded);
#                     before every later run wait up to RUN_QUIET_TIMEOUT s (default 30) the same way.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=logging-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
BIN_DIR="${ALIGND_BIN_DIR:-${ALIGND_BUILD_DIR:-$CACHE/build}/release}"
ALIGND="$BIN_DIR/alignd"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
RUNS="${RUNS:-5}"
STREAMS="${STREAMS:-32}"
MAX_TOKENS="${MAX_TOKENS:-64}"
ROUNDS="${ROUNDS:-3}"
ENGINE_THREADS="${ENGINE_THREADS:-2}"
START_TIMEOUT="${START_TIMEOUT:-180}"
VENV="${VENV:-$CACHE/venv-bench}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/logging-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -x "$ALIGND" ]] || { log "alignd not found: $ALIGND (build it, or set ALIGND_BIN_DIR)"; exit 1; }
[[ -f "$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ]] || { log "no default model in $MODELS_DIR (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/logging-bench.XXXXXX)"
bench_traps "$TMP"
log "raw outputs in $BENCH_OUT, scratch in $TMP"

# --- 1. Python and stubs --------------------------------------------------------------------------
bench_venv "$VENV" 'grpc, grpc_tools' grpcio grpcio-tools
STUBS="$TMP/pystubs"
bench_stubs "$STUBS"

COMMIT="$(git -C "$REPO" rev-parse HEAD)"
if [[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then TREE="clean tree"
else TREE="tree not clean: $(git -C "$REPO" status --porcelain --untracked-files=no | wc -l) tracked files modified — the lead was editing; the binary may not match the commit"; fi
FLAGS="$(lscpu | sed -n 's/^Flags:[[:space:]]*//p' | tr ' ' '\n' | grep -E '^(sse4_2|fma|avx|avx2|f16c|avx512.*)$' | tr '\n' ' ' | sed 's/ $//')"
ALIGND_SHA="$(sha256sum "$ALIGND" | cut -c1-12)"
ALIGND_MTIME="$(date -u -r "$ALIGND" '+%Y-%m-%d %H:%M UTC')"
BASE_ARGS=(--host 127.0.0.1 --models-dir "$MODELS_DIR" --max-running-sequences "$STREAMS" --engine-threads "$ENGINE_THREADS")

# --- 2. runs --------------------------------------------------------------------------------------
wait_quiet "logging-bench"
ORDER=()
FILES=()
for (( i = 1; i <= 2 * RUNS; i++ )); do
    if (( i % 2 == 1 )); then side=off; logargs=(--generation-log false)
    else side=on; logargs=(--generation-log true --generation-log-sample-rate 1); fi
    ORDER+=("$side")
    (( i > 1 )) && QUIET_TIMEOUT="${RUN_QUIET_TIMEOUT:-30}" wait_quiet "run $i"
    GRPC_PORT="$(free_port)"; HTTP_PORT="$(free_port)"
    DATA="$TMP/data-$i"; mkdir -p "$DATA"
    log "run $i/$((2 * RUNS)): log $side (gRPC $GRPC_PORT, HTTP $HTTP_PORT)"
    "$ALIGND" serve "${BASE_ARGS[@]}" --port "$GRPC_PORT" --http-port "$HTTP_PORT" --data-dir "$DATA" \
        "${logargs[@]}" ${ALIGND_ARGS:-} >"$BENCH_OUT/alignd-$i-$side.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_http_ok "http://127.0.0.1:$HTTP_PORT/readyz" "$SERVER_PID" "$START_TIMEOUT"; then
        log "alignd did not become ready (see $BENCH_OUT/alignd-$i-$side.log)"; tail -20 "$BENCH_OUT/alignd-$i-$side.log" >&2 || true
        stop_server; continue
    fi
    timeout 900 "$PY" "$HERE/logging_bench.py" run --target "127.0.0.1:$GRPC_PORT" --stubs "$STUBS" --side "$side" \
        --index "$i" --n "$STREAMS" --max-tokens "$MAX_TOKENS" --rounds "$ROUNDS" --http-port "$HTTP_PORT" \
        --data-dir "$DATA" --pid "$SERVER_PID" --out "$BENCH_OUT/run-$i-$side.json" || log "run $i: driver failed or timed out"
    kill -0 "$SERVER_PID" 2>/dev/null || log "run $i: alignd exited during the run (see its log)"
    stop_server
    FILES+=("$BENCH_OUT/run-$i-$side.json")
done

# --- 3. report ------------------------------------------------------------------------------------
export L_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" L_OUT="$BENCH_OUT" L_MACHINE="$(machine_description)" \
    L_FLAGS="$FLAGS" L_COMMIT="$COMMIT" L_TREE="$TREE" L_ALIGND="$(rel "$ALIGND")" L_SHA="$ALIGND_SHA" \
    L_MTIME="$ALIGND_MTIME" L_RUNS="$RUNS" L_N="$STREAMS" L_MAXT="$MAX_TOKENS" L_ROUNDS="$ROUNDS" \
    L_THREADS="$ENGINE_THREADS" L_ORDER="${ORDER[*]}" L_NOTES="${NOTES:-}" \
    L_CMD="$(rel "$ALIGND") serve --host 127.0.0.1 --models-dir $(rel "$MODELS_DIR") --max-running-sequences $STREAMS --engine-threads $ENGINE_THREADS --port PORT --http-port PORT --data-dir TMP/data-i${ALIGND_ARGS:+ $ALIGND_ARGS}" \
    L_DRIVER="$(rel "$PY") Benchmarks/logging_bench.py run --target 127.0.0.1:PORT --stubs STUBS --side off|on --index i --n $STREAMS --max-tokens $MAX_TOKENS --rounds $ROUNDS --http-port PORT --data-dir TMP/data-i --out run-i-SIDE.json"
"$PY" - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
json.dump({"date": e["L_DATE"], "out": e["L_OUT"], "machine": e["L_MACHINE"], "flags": e["L_FLAGS"],
           "commit": e["L_COMMIT"], "tree": e["L_TREE"], "alignd": e["L_ALIGND"], "alignd_sha": e["L_SHA"],
           "alignd_mtime": e["L_MTIME"], "runs": int(e["L_RUNS"]), "n": int(e["L_N"]),
           "max_tokens": int(e["L_MAXT"]), "rounds": int(e["L_ROUNDS"]), "engine_threads": int(e["L_THREADS"]),
           "order": ", ".join(e["L_ORDER"].split()), "alignd_cmd": e["L_CMD"], "driver_cmd": e["L_DRIVER"],
           "notes": e["L_NOTES"]}, open(sys.argv[1], "w"), indent=1)
PY
(cd "$HERE" && "$PY" logging_bench.py report --meta "$BENCH_OUT/meta.json" --runs "${FILES[@]}" --results "$RESULTS_FILE")
show_section "$RESULTS_FILE"
