#!/usr/bin/env bash
# Load benchmark: N concurrent gRPC GenerateStream calls against alignd vs llama.cpp's llama-server
# with --parallel N, same GGUF, same prompts and seeds, 127.0.0.1 only, one server at a time.
#
# One command:   Benchmarks/run-load-bench.sh
# Writes the "## Load benchmark (gRPC streams)" section of Benchmarks/RESULTS.md (between
# <!-- load-bench:start --> and <!-- load-bench:end -->; the rest of the file is kept) and keeps
# raw JSON and server logs in $BENCH_OUT (default /var/cache/alignd/bench/load-<UTC timestamp>).
#
# Steps (the driver is Benchmarks/load_bench.py; see its docstring for the workload and metrics;
# shell helpers shared by the run-*-bench.sh scripts are in Benchmarks/lib.sh):
#   1. venv $VENV (grpcio, grpcio-tools, grpcio-health-checking, aiohttp), created idempotently;
#      Python stubs generated from Schemas/alignd/v1/*.proto into a temp folder.
#   2. alignd serve on a free loopback port -> wait for grpc.health.v1 SERVING -> N = $NS, each
#      up to $ROUNDS synchronized rounds of N streams x 128 tokens, at most $MAX_SECONDS per N.
#   3. in-process engine at 1 stream: alignctl generate --model (timed, $INPROC_RUNS runs) and
#      alignctl bench --batch 1 as a cross-check.
#   4. llama-server -t 2 --parallel N -c N*$SLOT_CTX on a free port, per N, same workload over HTTP.
#   5. report -> RESULTS.md.
# Every process it starts is killed on exit (by PID). Bounded: each driver call runs under
# `timeout`, each server start waits at most $START_TIMEOUT s.
#
# Environment:
#   ALIGND_BUILD_DIR  build folder holding release/alignd and release/alignctl (default /var/cache/alignd/build)
#   MODEL             GGUF (default <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   LLAMA_CPP_DIR     llama.cpp cache (default /var/cache/alignd/llama.cpp; llama-server built on demand
#                     with Benchmarks/build-llama-cpp.sh)
#   VENV              Python venv (default /var/cache/alignd/venv-bench)
#   NS                concurrency levels (default 1,8,32,64)
#   ROUNDS            rounds per N (default 2)            MAX_SECONDS  bound per N and side (default 60)
#   INPROC_RUNS       in-process timing runs (default 5)  SLOT_CTX     llama-server context per slot (default 384)
#   MAX_RUNNING       alignd --max-running-sequences (default: the largest N, so both sides run N at once)
#   ALIGND_ARGS       extra flags for alignd serve (e.g. "--max-step-tokens 1024"; recorded in RESULTS.md)
#   SKIP_LLAMA=1 / SKIP_ALIGND=1 / SKIP_INPROC=1   skip a side (the table says "not run")
#   RESULTS_FILE      where the section is written (default Benchmarks/RESULTS.md); NOTES  free text appended to it
#   QUIET_MAX, QUIET_TIMEOUT  before each side, wait up to QUIET_TIMEOUT s (default 120) for machine CPU
#                     use below QUIET_MAX (default 0.25), then measure anyway (the state is recorded).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=load-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
BUILD="${ALIGND_BUILD_DIR:-/var/cache/alignd/build}"
ALIGND="$BUILD/release/alignd"
ALIGNCTL="$BUILD/release/alignctl"
MODEL="${MODEL:-$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LLAMA_CPP_DIR="${LLAMA_CPP_DIR:-/var/cache/alignd/llama.cpp}"
export LLAMA_CPP_DIR
LLAMA_SERVER="$LLAMA_CPP_DIR/build/bin/llama-server"
VENV="${VENV:-/var/cache/alignd/venv-bench}"
NS="${NS:-1,8,32,64}"
ROUNDS="${ROUNDS:-2}"
MAX_SECONDS="${MAX_SECONDS:-60}"
INPROC_RUNS="${INPROC_RUNS:-5}"
SLOT_CTX="${SLOT_CTX:-384}"
START_TIMEOUT="${START_TIMEOUT:-180}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
BENCH_OUT="${BENCH_OUT:-/var/cache/alignd/bench/load-$STAMP}"
IFS=, read -r -a NLIST <<<"$NS"
MAXN=0; for n in "${NLIST[@]}"; do (( n > MAXN )) && MAXN=$n; done
MAX_RUNNING="${MAX_RUNNING:-$(( MAXN > 32 ? MAXN : 32 ))}"
# Driver time bound per call: rounds are bounded by MAX_SECONDS per N, plus warm-up and slack.
DRIVER_TIMEOUT=$(( (MAX_SECONDS + 60) * ${#NLIST[@]} + 120 ))

[[ -f "$MODEL" ]] || { log "model not found: $MODEL (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/load-bench.XXXXXX)"
bench_traps "$TMP"   # kill only what this script started, remove the scratch folder
log "raw outputs in $BENCH_OUT, scratch in $TMP"

# --- 1. venv and stubs ----------------------------------------------------------------------------
bench_venv "$VENV" 'grpc, grpc_tools, grpc_health.v1, aiohttp' grpcio grpcio-tools grpcio-health-checking aiohttp
STUBS="$TMP/pystubs"
bench_stubs "$STUBS"
DRIVER=("$PY" "$HERE/load_bench.py")

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
ALIGND_STATE="ran"
ALIGND_CMD="$ALIGND serve --host 127.0.0.1 --port PORT --models-dir $(dirname "$MODEL") --policy-model $(basename "$MODEL") --data-dir TMP/data --max-running-sequences $MAX_RUNNING${ALIGND_ARGS:+ $ALIGND_ARGS}"

# --- 2. alignd ------------------------------------------------------------------------------------
if [[ "${SKIP_ALIGND:-0}" == "1" ]]; then
    ALIGND_STATE="skipped (SKIP_ALIGND=1)"
elif [[ ! -x "$ALIGND" ]]; then
    ALIGND_STATE="not built: $ALIGND missing"; log "$ALIGND_STATE"
else
    wait_quiet "alignd"
    PORT="$(free_port)"
    mkdir -p "$TMP/data"
    log "starting alignd on 127.0.0.1:$PORT"
    "$ALIGND" serve --host 127.0.0.1 --port "$PORT" --models-dir "$(dirname "$MODEL")" \
        --policy-model "$(basename "$MODEL")" --data-dir "$TMP/data" \
        --max-running-sequences "$MAX_RUNNING" ${ALIGND_ARGS:-} >"$BENCH_OUT/alignd.log" 2>&1 &
    SERVER_PID=$!
    if wait_grpc_serving "$PORT" "$SERVER_PID" "$START_TIMEOUT"; then
        log "alignd SERVING; driving N=$NS"
        if ! timeout "$DRIVER_TIMEOUT" "${DRIVER[@]}" grpc --target "127.0.0.1:$PORT" --stubs "$STUBS" \
                --ns "$NS" --rounds "$ROUNDS" --max-seconds "$MAX_SECONDS" --out "$BENCH_OUT/alignd.json"; then
            ALIGND_STATE="driver failed or timed out (see $BENCH_OUT/alignd.log)"; log "$ALIGND_STATE"
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { ALIGND_STATE="alignd exited during the run (see alignd.log)"; log "$ALIGND_STATE"; }
    else
        ALIGND_STATE="failed to reach SERVING within ${START_TIMEOUT}s (see $BENCH_OUT/alignd.log)"
        log "$ALIGND_STATE"; tail -20 "$BENCH_OUT/alignd.log" >&2 || true
    fi
    stop_server
fi

# --- 3. in-process engine -------------------------------------------------------------------------
if [[ "${SKIP_INPROC:-0}" != "1" && -x "$ALIGNCTL" ]]; then
    wait_quiet "in-process engine"
    log "in-process engine: alignctl generate x $INPROC_RUNS"
    timeout 1200 "${DRIVER[@]}" inprocess --alignctl "$ALIGNCTL" --model "$MODEL" --runs "$INPROC_RUNS" \
        --bench --out "$BENCH_OUT/inprocess.json" || log "in-process measurement failed"
fi

# --- 4. llama-server ------------------------------------------------------------------------------
LLAMA_FILES=()
LLAMA_VERSION="not run"
if [[ "${SKIP_LLAMA:-0}" != "1" ]]; then
    if [[ ! -x "$LLAMA_SERVER" ]]; then
        log "llama-server missing: building it with Benchmarks/build-llama-cpp.sh (nice 10)"
        nice -n 10 "$HERE/build-llama-cpp.sh" || log "llama.cpp build failed"
    fi
fi
if [[ "${SKIP_LLAMA:-0}" != "1" && -x "$LLAMA_SERVER" ]]; then
    LLAMA_VERSION="$("$LLAMA_SERVER" --version 2>&1 | grep -m1 version || true); llama-cpp-python sdist $(sed -n 's/^llama-cpp-python sdist: //p' "$LLAMA_CPP_DIR/PROVENANCE.txt" 2>/dev/null || echo "unknown (no PROVENANCE.txt)")"
    idx=0
    for n in "${NLIST[@]}"; do
        wait_quiet "llama-server N=$n"
        PORT="$(free_port)"
        ctx=$(( n * SLOT_CTX ))
        log "starting llama-server --parallel $n -c $ctx on 127.0.0.1:$PORT"
        "$LLAMA_SERVER" -m "$MODEL" -t 2 -tb 2 --parallel "$n" -c "$ctx" --host 127.0.0.1 --port "$PORT" \
            --no-webui >"$BENCH_OUT/llama-server-$n.log" 2>&1 &
        SERVER_PID=$!
        if wait_http_ok "http://127.0.0.1:$PORT/health" "$SERVER_PID" "$START_TIMEOUT"; then
            timeout $(( MAX_SECONDS + 180 )) "${DRIVER[@]}" http --url "http://127.0.0.1:$PORT" --n "$n" \
                --k-offset $(( idx * 10000 )) --rounds "$ROUNDS" --max-seconds "$MAX_SECONDS" \
                --out "$BENCH_OUT/llama-$n.json" || log "llama-server N=$n: driver failed or timed out"
            LLAMA_FILES+=("$BENCH_OUT/llama-$n.json")
        else
            log "llama-server N=$n did not become healthy (see llama-server-$n.log)"
            tail -20 "$BENCH_OUT/llama-server-$n.log" >&2 || true
        fi
        stop_server
        idx=$(( idx + 1 ))
    done
fi

# --- 5. report ------------------------------------------------------------------------------------
MACHINE="$(machine_description)"
"$PY" - "$BENCH_OUT/meta.json" <<PY
import json, sys
json.dump({
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "out": "$BENCH_OUT", "machine": """$MACHINE""",
  "load_before": "$LOAD_BEFORE", "model_rel": "$(rel "$MODEL")", "ns": "$NS", "rounds": $ROUNDS,
  "max_seconds": $MAX_SECONDS, "alignd_state": """$ALIGND_STATE""",
  "alignd_cmd": """$(rel "$ALIGND_CMD")""".replace("$REPO/", ""),
  "llama_version": """$LLAMA_VERSION""",
  "llama_cmd": "\$LLAMA_CPP_DIR/build/bin/llama-server -m $(rel "$MODEL") -t 2 -tb 2 --parallel N -c N*$SLOT_CTX --host 127.0.0.1 --port PORT --no-webui",
  "driver_cmds": "\n".join([
    "$(rel "$VENV")/bin/python Benchmarks/load_bench.py grpc --target 127.0.0.1:PORT --stubs STUBS --ns $NS --rounds $ROUNDS --max-seconds $MAX_SECONDS --out alignd.json",
    "$(rel "$VENV")/bin/python Benchmarks/load_bench.py http --url http://127.0.0.1:PORT --n N --k-offset 10000*index(N) --rounds $ROUNDS --max-seconds $MAX_SECONDS --out llama-N.json",
    "$(rel "$VENV")/bin/python Benchmarks/load_bench.py inprocess --alignctl $ALIGNCTL --model $(rel "$MODEL") --runs $INPROC_RUNS --bench --out inprocess.json"]),
  "notes": """${NOTES:-}""",
}, open(sys.argv[1], "w"), indent=1)
PY
"${DRIVER[@]}" report --meta "$BENCH_OUT/meta.json" --alignd "$BENCH_OUT/alignd.json" \
    --llama "${LLAMA_FILES[@]}" --inprocess "$BENCH_OUT/inprocess.json" --results "$RESULTS_FILE" >/dev/null
show_section "$RESULTS_FILE"
