#!/usr/bin/env bash
# HTTP gateway benchmark: the same requests over gRPC, HTTP/2 JSON (h2c) and HTTP/1.1 JSON against
# one alignd with the default models, all sent by nghttp2's h2load, 127.0.0.1 only. The ratios say
# what the OpenAI-compatible gateway's transcoding costs next to calling the gRPC service directly.
#
# One command:   Benchmarks/run-http-bench.sh
# Writes the "## HTTP gateway benchmark" section of Benchmarks/RESULTS.md (between
# <!-- http-bench:start --> and <!-- http-bench:end -->, placed after the judging benchmark the
# first time; the rest of the file is kept) and keeps raw JSON and the server log in $BENCH_OUT
# (default /var/cache/alignd/bench/http-<UTC timestamp>).
#
# Steps (the driver is Benchmarks/http_bench.py; its docstring defines workloads and metrics):
#   1. h2load and nghttp (Debian's nghttp2-client, installed if missing).
#   2. alignd serve on two free loopback ports (gRPC, HTTP); wait for GET /readyz 200.
#   3. wait for a quiet machine, then $RUNS interleaved runs of moderation and generation over the
#      three protocols. 4. report -> RESULTS.md.
# The server it starts is killed on exit. Bounded: the server start waits at most $START_TIMEOUT s,
# each h2load call at most 600 s. Duration on 2 quiet cores: ~2 min with the defaults.
#
# Environment:
#   ALIGND_BUILD_DIR  build folder holding release/alignd (default /var/cache/alignd/build)
#   MODELS_DIR        models folder (default <repo>/models; scripts/fetch-models.sh fills it)
#   RUNS (3)  MOD_REQUESTS (20000)  MOD_CONC (16)  GEN_REQUESTS (64)  GEN_CONC (8)
#   ALIGND_ARGS       extra flags for alignd serve (recorded in RESULTS.md)
#   RESULTS_FILE      where the section is written (default Benchmarks/RESULTS.md); NOTES  free text appended to it
#   QUIET_MAX, QUIET_TIMEOUT  wait up to QUIET_TIMEOUT s (default 120) for machine CPU use below
#                     QUIET_MAX (default 0.25) before measuring, then measure anyway (the load is recorded).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=http-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGND="${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignd"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
RUNS="${RUNS:-3}"
START_TIMEOUT="${START_TIMEOUT:-180}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/http-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -x "$ALIGND" ]] || { log "alignd not built: $ALIGND (swift build -c release, or set ALIGND_BUILD_DIR)"; exit 1; }
[[ -d "$MODELS_DIR" ]] || { log "models folder not found: $MODELS_DIR (run scripts/fetch-models.sh)"; exit 1; }
if ! command -v h2load >/dev/null || ! command -v nghttp >/dev/null; then
    log "installing nghttp2-client (h2load, nghttp)"
    SUDO=""; [[ "$(id -u)" != "0" ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nghttp2-client >&2
fi
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/http-bench.XXXXXX)"
bench_traps "$TMP"
log "raw outputs in $BENCH_OUT"

# --- alignd ---------------------------------------------------------------------------------------
GRPC_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
mkdir -p "$TMP/data"
log "starting alignd (gRPC $GRPC_PORT, HTTP $HTTP_PORT)"
"$ALIGND" serve --port "$GRPC_PORT" --http-port "$HTTP_PORT" --models-dir "$MODELS_DIR" --data-dir "$TMP/data" \
    ${ALIGND_ARGS:-} >"$BENCH_OUT/alignd.log" 2>&1 &
SERVER_PID=$!
if ! wait_http_ok "http://127.0.0.1:$HTTP_PORT/readyz" "$SERVER_PID" "$START_TIMEOUT"; then
    log "alignd did not become ready within ${START_TIMEOUT}s (see $BENCH_OUT/alignd.log)"
    tail -20 "$BENCH_OUT/alignd.log" >&2 || true
    exit 1
fi
MODELS_JSON="$(curl -sf "http://127.0.0.1:$HTTP_PORT/v1/models")"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- runs -----------------------------------------------------------------------------------------
wait_quiet "http-bench"
python3 "$HERE/http_bench.py" run --grpc-port "$GRPC_PORT" --http-port "$HTTP_PORT" --runs "$RUNS" \
    --moderation-requests "${MOD_REQUESTS:-20000}" --moderation-concurrency "${MOD_CONC:-16}" \
    --generation-requests "${GEN_REQUESTS:-64}" --generation-concurrency "${GEN_CONC:-8}" \
    --out "$BENCH_OUT/raw.json"
kill -0 "$SERVER_PID" 2>/dev/null || { log "alignd exited during the run (see alignd.log)"; exit 1; }
stop_server

# --- report ---------------------------------------------------------------------------------------
export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_OUT="$BENCH_OUT" H_MACHINE="$(machine_description)" \
    H_LOAD="$LOAD_BEFORE" H_RUNS="$RUNS" H_MODELS="$MODELS_JSON" H_NOTES="${NOTES:-}" \
    H_CMD="$(rel "$ALIGND") serve --port PORT --http-port PORT --models-dir $(rel "$MODELS_DIR") --data-dir TMP/data${ALIGND_ARGS:+ $ALIGND_ARGS}"
python3 - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
roles = {m.get("role"): m["id"] for m in json.loads(e["H_MODELS"])["data"] if not m.get("canary")}
json.dump({"date": e["H_DATE"], "out": e["H_OUT"], "machine": e["H_MACHINE"], "load_before": e["H_LOAD"],
           "runs": int(e["H_RUNS"]), "alignd_cmd": e["H_CMD"], "policy": roles.get("policy", "?"),
           "safety": roles.get("safety", "?"), "notes": e["H_NOTES"]}, open(sys.argv[1], "w"), indent=1)
PY
python3 "$HERE/http_bench.py" report --meta "$BENCH_OUT/meta.json" --raw "$BENCH_OUT/raw.json" --results "$RESULTS_FILE"
show_section "$RESULTS_FILE"
