#!/usr/bin/env bash
# Constrained-decoding benchmark: chat completions constrained by a JSON schema against the same
# requests unconstrained, at 1 and 32 streams, on one alignd with the default models, 127.0.0.1.
#
# One command:   Benchmarks/run-structured-bench.sh
# Writes the "## Constrained decoding benchmark" section of Benchmarks/RESULTS.md (between
# <!-- structured-bench:start --> and <!-- structured-bench:end -->) and keeps raw JSON, the
# server log and its /metrics in $BENCH_OUT (default /var/cache/alignd/bench/structured-<UTC>).
# Run it on a quiet machine: it waits up to QUIET_TIMEOUT s for CPU use below QUIET_MAX.
#
# Environment:
#   ALIGND_BUILD_DIR  build folder holding release/alignd (default /var/cache/alignd/build)
#   MODELS_DIR        models folder (default <repo>/models)
#   RUNS (3)  REQUESTS (8; at least 2 × streams)  TOKENS (64)  CONCURRENCY (1,32)
#   ALIGND_ARGS       extra flags for alignd serve; RESULTS_FILE; NOTES; QUIET_MAX; QUIET_TIMEOUT
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=structured-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGND="${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignd"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
RUNS="${RUNS:-3}"
START_TIMEOUT="${START_TIMEOUT:-180}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/structured-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -x "$ALIGND" ]] || { log "alignd not built: $ALIGND (scripts/build.sh, or set ALIGND_BUILD_DIR)"; exit 1; }
[[ -d "$MODELS_DIR" ]] || { log "models folder not found: $MODELS_DIR (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/structured-bench.XXXXXX)"
bench_traps "$TMP"
log "raw outputs in $BENCH_OUT"

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

wait_quiet "structured-bench"
python3 "$HERE/structured_bench.py" run --http-port "$HTTP_PORT" --runs "$RUNS" --requests "${REQUESTS:-8}" \
    --tokens "${TOKENS:-64}" --concurrency "${CONCURRENCY:-1,32}" --out "$BENCH_OUT/raw.json"
kill -0 "$SERVER_PID" 2>/dev/null || { log "alignd exited during the run (see alignd.log)"; exit 1; }
curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" >"$BENCH_OUT/metrics.txt" || true
MASK="$(python3 - "$BENCH_OUT/metrics.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read() if sys.argv[1] else ""
s = re.search(r'^alignd_constraint_mask_seconds_sum\{[^}]*\} (\S+)', text, re.M)
c = re.search(r'^alignd_constraint_mask_seconds_count\{[^}]*\} (\S+)', text, re.M)
print(f"{int(float(c.group(1)))} masks, mean {1000 * float(s.group(1)) / max(float(c.group(1)), 1):.3f} ms" if s and c else "")
PY
)"
stop_server

export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_MACHINE="$(machine_description)" H_LOAD="$LOAD_BEFORE" \
    H_RUNS="$RUNS" H_MODELS="$MODELS_JSON" H_NOTES="${NOTES:-}" H_MASK="$MASK" \
    H_COMMIT="$(git -C "$REPO" rev-parse --short HEAD)" \
    H_CMD="$(rel "$ALIGND") serve --port PORT --http-port PORT --models-dir $(rel "$MODELS_DIR") --data-dir TMP/data${ALIGND_ARGS:+ $ALIGND_ARGS}"
python3 - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
roles = {m.get("role"): m["id"] for m in json.loads(e["H_MODELS"])["data"] if not m.get("canary")}
json.dump({"date": e["H_DATE"], "machine": e["H_MACHINE"], "load_before": e["H_LOAD"], "runs": int(e["H_RUNS"]),
           "alignd_cmd": e["H_CMD"], "policy": roles.get("policy", "?"), "commit": e["H_COMMIT"],
           "mask": e["H_MASK"], "notes": e["H_NOTES"]}, open(sys.argv[1], "w"), indent=1)
PY
python3 "$HERE/structured_bench.py" report --meta "$BENCH_OUT/meta.json" --raw "$BENCH_OUT/raw.json" --results "$RESULTS_FILE"
show_section "$RESULTS_FILE"
