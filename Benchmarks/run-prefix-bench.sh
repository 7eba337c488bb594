#!/usr/bin/env bash
# Prefix-cache benchmark: time to first token of chat completions whose ~1,000-token system prompt
# is cached, against the same requests with a system prompt that cannot be (alternated, one run,
# one alignd with the default models on 127.0.0.1).
#
# One command:   Benchmarks/run-prefix-bench.sh
# Writes the prefix-bench section of Benchmarks/RESULTS.md and keeps raw JSON and the server log in
# $BENCH_OUT (default /var/cache/alignd/bench/prefix-<UTC>). Waits up to QUIET_TIMEOUT s for a quiet
# machine (CPU use below QUIET_MAX).
# Environment: ALIGND_BUILD_DIR, MODELS_DIR, RUNS (7), ALIGND_ARGS, RESULTS_FILE, QUIET_MAX, QUIET_TIMEOUT
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=prefix-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGND="${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignd"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
RUNS="${RUNS:-7}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/prefix-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -x "$ALIGND" ]] || { log "alignd not built: $ALIGND (scripts/build.sh, or set ALIGND_BUILD_DIR)"; exit 1; }
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/prefix-bench.XXXXXX)"
bench_traps "$TMP"
GRPC_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
mkdir -p "$TMP/data"
log "starting alignd (HTTP $HTTP_PORT); raw outputs in $BENCH_OUT"
"$ALIGND" serve --port "$GRPC_PORT" --http-port "$HTTP_PORT" --models-dir "$MODELS_DIR" --data-dir "$TMP/data" \
    ${ALIGND_ARGS:-} >"$BENCH_OUT/alignd.log" 2>&1 &
SERVER_PID=$!
wait_http_ok "http://127.0.0.1:$HTTP_PORT/readyz" "$SERVER_PID" 180 || { log "alignd did not start (see alignd.log)"; exit 1; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_quiet "prefix-bench"
python3 "$HERE/prefix_bench.py" run --http-port "$HTTP_PORT" --runs "$RUNS" --out "$BENCH_OUT/raw.json"
stop_server

TREE="clean tree"
[[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]] || TREE="uncommitted changes"
export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_LOAD="$LOAD_BEFORE" \
    H_MACHINE="$(machine_description); flags: $(grep -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')" \
    H_COMMIT="$(git -C "$REPO" rev-parse --short HEAD)" H_TREE="$TREE" \
    H_CMD="$(rel "$ALIGND") serve --port PORT --http-port PORT --models-dir $(rel "$MODELS_DIR") --data-dir TMP/data${ALIGND_ARGS:+ $ALIGND_ARGS}"
python3 - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
json.dump({"date": e["H_DATE"], "machine": e["H_MACHINE"], "load_before": e["H_LOAD"], "commit": e["H_COMMIT"],
           "tree": e["H_TREE"], "alignd_cmd": e["H_CMD"]}, open(sys.argv[1], "w"), indent=1)
PY
python3 "$HERE/prefix_bench.py" report --meta "$BENCH_OUT/meta.json" --raw "$BENCH_OUT/raw.json" --results "$RESULTS_FILE"
