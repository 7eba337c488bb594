#!/usr/bin/env bash
# Judging benchmark over gRPC, 127.0.0.1 only:
#   Score pairs/s of the default reward model (alignd-reward-minilm) one pair per RPC and 32 pairs
#   per RPC, beside the same model computed by its reference implementation (sentence-transformers
#   + the Python reference classifiers + numpy head: Benchmarks/judge_reference.py) in the same
#   runs -- targets >= 2x the reference and >= the generative judge's 7.6 pairs/s; and
#   CheckSafety texts/s of the default policy (trained classifier + rules) beside a lexical-only
#   policy (lexical + rules: the previous default) in the same runs.
#
# One command:   Benchmarks/run-judging-bench.sh
# Writes the "## Judging benchmark" section of Benchmarks/RESULTS.md (between
# <!-- judging-bench:start --> and <!-- judging-bench:end -->, placed after the load benchmark the
# first time; the rest of the file is kept) and keeps raw JSON, server logs and the reference's
# log in $BENCH_OUT (default /var/cache/alignd/bench/judging-<UTC timestamp>).
#
# Steps (the driver is Benchmarks/judging_bench.py; its docstring defines workloads and metrics;
# shell helpers shared by the run-*-bench.sh scripts are in Benchmarks/lib.sh):
#   1. venv $VENV (grpcio, grpcio-tools, grpcio-health-checking), created idempotently; Python stubs
#      generated from Schemas/alignd/v1/*.proto into a temp folder. The reference's Python
#      ($REF_PY) must import torch, sentence_transformers, safetensors and numpy.
#   2. alignd "default" (default models; --port 0 --http-port 0, the gRPC port read from its
#      "alignd listening" log line, then wait for grpc.health.v1 SERVING).
#   3. Score: $RUNS runs of $PAIRS pairs; per run the modes (a) one pair per RPC sequential,
#      (b) one pair per RPC all concurrent, (c) $PER_RPC pairs per RPC, and the reference
#      (started once by the driver, $REF_THREADS threads) one pair per call and $PER_RPC per call,
#      each alignd mode right beside the reference mode it is compared with.
#   4. alignd "lexical" (--safety-policy = Config/safety-policy.json with backends
#      ["lexical", "rules"], written to the scratch folder and copied to $BENCH_OUT) next to the
#      default one; CheckSafety: $RUNS runs of $TEXTS texts, each mode on both servers back to back.
#      Both servers are stopped.
#   5. (MEASURE_JUDGE=1) alignd "judge" (--reward-model judge): Score, $JUDGE_RUNS run(s), no
#      reference; stopped. Otherwise the judge's figure is quoted ($JUDGE_SOURCE).
#   6. report -> $RESULTS_FILE: commit (+ dirty), CPU model and SIMD flags, date, load.
# Every server this script starts is killed on exit (by PID); the reference is a child of the
# driver (ends with it: end of its input, or timeout's signal to the driver's process group).
# Bounded: each driver call runs under `timeout`, a server start waits at most $START_TIMEOUT s.
# Duration on 2 quiet cores: ~2 min Score (3 runs x 5 modes x >= MIN_SECONDS, plus the reference's
# start), ~1 min CheckSafety, ~1 min judge; the quiet waits add to it on a busy machine.
#
# Environment:
#   ALIGND_BIN        the alignd binary (default $ALIGND_BUILD_DIR/release/alignd; copy it elsewhere (cp -p)
#                     when the build folder is being rebuilt during the run)
#   ALIGND_BUILD_DIR  build folder holding release/alignd (default /var/cache/alignd/build)
#   MODELS_DIR        models folder (default <repo>/models; scripts/fetch-models.sh fills it)
#   VENV              Python venv of the gRPC driver (default ${ALIGND_CACHE_DIR:-/var/cache/alignd}/venv-bench)
#   REF_PY            Python of the reference (default ${ALIGND_CACHE_DIR:-/var/cache/alignd}/venv-train/bin/python)
#   REF_THREADS       torch/BLAS threads of the reference (default 2 = alignd's engine_threads)
#   SKIP_REFERENCE=1  Score without the reference
#   RUNS              runs per workload (default 3)    PAIRS  Score pairs (default 64, at most 64)
#   PER_RPC           pairs per RPC in mode (c) and per reference call (default 32, the 64-response limit)
#   TEXTS             CheckSafety texts (default 64)   MIN_SECONDS  least wall time of a mode (default 3)
#   MEASURE_JUDGE     1 (default): also measure the generative judge ($JUDGE_RUNS runs, default 1);
#                     0: quote its figure. JUDGE_TARGET (default 7.6) is the pairs/s target either way.
#   SCORE_TIMEOUT, SAFETY_TIMEOUT, JUDGE_TIMEOUT  bounds of the driver calls in s (default 1500, 600,
#                     900); the driver writes its JSON after every run, so runs completed before the
#                     bound are reported
#   ALIGND_ARGS       extra flags for every alignd serve (recorded in RESULTS.md)
#   SKIP_SCORE=1 / SKIP_SAFETY=1   skip a workload
#   RESULTS_FILE      where the section is written (default Benchmarks/RESULTS.md); NOTES  free text
#                     appended to it; SMOKE  a banner line at the top of the section (e.g. "smoke run, noisy")
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
ALIGND="${ALIGND_BIN:-$BUILD/release/alignd}"
MODELS_DIR="${MODELS_DIR:-$REPO/models}"
VENV="${VENV:-$CACHE/venv-bench}"
REF_PY="${REF_PY:-$CACHE/venv-train/bin/python}"
REF_THREADS="${REF_THREADS:-2}"
RUNS="${RUNS:-3}"
PAIRS="${PAIRS:-64}"
PER_RPC="${PER_RPC:-32}"
TEXTS="${TEXTS:-64}"
MIN_SECONDS="${MIN_SECONDS:-3}"
MEASURE_JUDGE="${MEASURE_JUDGE:-1}"
JUDGE_RUNS="${JUDGE_RUNS:-1}"
JUDGE_TARGET="${JUDGE_TARGET:-7.6}"
JUDGE_SOURCE="${JUDGE_SOURCE:-7.6 pairs/s = the generative judge batched on this machine as committed in Benchmarks/RESULTS.md at 7b527fa (run of 2026-11-29 18:41 UTC, median of 3 runs: 7.61 with 64 concurrent one-pair RPCs, 7.58 with 32 pairs per RPC)}"
START_TIMEOUT="${START_TIMEOUT:-180}"
SCORE_TIMEOUT="${SCORE_TIMEOUT:-1500}"     # bound of the Score driver (runs completed by then are kept)
SAFETY_TIMEOUT="${SAFETY_TIMEOUT:-600}"
JUDGE_TIMEOUT="${JUDGE_TIMEOUT:-900}"
QUIET_MAX="${QUIET_MAX:-0.25}"
QUIET_TIMEOUT="${QUIET_TIMEOUT:-60}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/judging-$STAMP}"

[[ -x "$ALIGND" ]] || { log "alignd not built: $ALIGND (swift build -c release, or set ALIGND_BUILD_DIR / ALIGND_BIN)"; exit 1; }
[[ -d "$MODELS_DIR" ]] || { log "models folder not found: $MODELS_DIR (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
TMP="$(mktemp -d /tmp/judging-bench.XXXXXX)"
bench_traps "$TMP"
SERVER_PIDS=()
cleanup() {  # kill only the servers this script started (by PID), remove the scratch folder
    local p
    for p in "${SERVER_PIDS[@]}"; do SERVER_PID="$p"; stop_server; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log "raw outputs in $BENCH_OUT, scratch in $TMP"

# --- 1. venvs and stubs ---------------------------------------------------------------------------
bench_venv "$VENV" 'grpc, grpc_tools, grpc_health.v1' grpcio grpcio-tools grpcio-health-checking
STUBS="$TMP/pystubs"
bench_stubs "$STUBS"
DRIVER=("$PY" "$HERE/judging_bench.py")
COMMON_ARGS=(--stubs "$STUBS" --quiet-max "$QUIET_MAX" --quiet-timeout "$QUIET_TIMEOUT" --min-seconds "$MIN_SECONDS")
REF_STATE="not run (SKIP_REFERENCE=1)"
REF_ARGS=()        # --reference-cmd for the Score driver
REF_CMD_REL=""     # the same, as shown in RESULTS.md
if [[ "${SKIP_REFERENCE:-0}" != "1" ]]; then
    if "$REF_PY" -c 'import torch, sentence_transformers, safetensors, numpy' 2>/dev/null; then
        REF_ARGS=(--reference-cmd "$REF_PY $HERE/judge_reference.py --head $MODELS_DIR/alignd-reward-minilm --encoder $MODELS_DIR/all-MiniLM-L6-v2 --models $MODELS_DIR --threads $REF_THREADS")
        REF_CMD_REL="$(rel "$REF_PY") Benchmarks/judge_reference.py --head $(rel "$MODELS_DIR")/alignd-reward-minilm --encoder $(rel "$MODELS_DIR")/all-MiniLM-L6-v2 --models $(rel "$MODELS_DIR") --threads $REF_THREADS"
        REF_STATE="ran"
    else
        REF_STATE="not run: $REF_PY cannot import torch, sentence_transformers, safetensors and numpy"
        log "$REF_STATE"
    fi
fi

# Commit, machine, binary.
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY_TRACKED="$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
DIRTY_UNTRACKED="$(git -C "$REPO" status --porcelain 2>/dev/null | grep -c '^??' || true)"
if [[ "$DIRTY_TRACKED" == 0 && "$DIRTY_UNTRACKED" == 0 ]]; then TREE_DESC="clean tree"
else TREE_DESC="dirty tree: $DIRTY_TRACKED tracked files modified, $DIRTY_UNTRACKED untracked"; fi
ALL_FLAGS="$(lscpu 2>/dev/null | sed -n 's/^Flags:[[:space:]]*//p' || true)"
[[ -n "$ALL_FLAGS" ]] || ALL_FLAGS="$(sed -n '0,/^flags/s/^flags[[:space:]]*: //p' /proc/cpuinfo)"
CPU_FLAGS="$(tr ' ' '\n' <<<"$ALL_FLAGS" | grep -E '^(sse4_2|avx|avx2|fma|f16c|avx_vnni|avx512.*|amx.*)$' | tr '\n' ' ' | sed 's/ $//' || true)"
BINARY_DESC="\`$(rel "$ALIGND")\`, file mtime $(date -u -r "$ALIGND" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$ALIGND" | cut -c1-12)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
ALIGND_STATE="ran"
: >"$TMP/servers.tsv"

# --- servers --------------------------------------------------------------------------------------
# start_alignd NAME ARGS...: alignd serve with ARGS (plus ALIGND_ARGS) on free ports, logging to
# $BENCH_OUT/alignd-NAME.log; waits for SERVING; sets STARTED_PID, STARTED_PORT, STARTED_CMD (as shown).
# record_server NAME WHAT: the server's line of the report (command and what it served).
LOGF=""; PORT=""
alignd_serving() {  # PORT from alignd's gRPC "alignd listening" log line once it is there, then a health check
    if [[ -z "$PORT" ]]; then
        PORT="$(sed -n 's/.*address=\[ipv4\]127\.0\.0\.1:\([0-9]*\).*alignd listening.*/\1/p' "$LOGF" | head -1 || true)"
    fi
    [[ -n "$PORT" ]] && grpc_serving "$PORT"
}
start_alignd() {
    local name="$1"; shift
    LOGF="$BENCH_OUT/alignd-$name.log"; PORT=""
    mkdir -p "$TMP/data-$name"
    log "starting alignd $name"
    # shellcheck disable=SC2086
    "$ALIGND" serve --port 0 --http-port 0 --models-dir "$MODELS_DIR" --data-dir "$TMP/data-$name" "$@" ${ALIGND_ARGS:-} \
        >"$LOGF" 2>&1 &
    STARTED_PID=$!
    SERVER_PIDS+=("$STARTED_PID")
    if ! wait_until "$STARTED_PID" "$START_TIMEOUT" alignd_serving; then
        log "alignd $name did not reach SERVING within ${START_TIMEOUT}s (see $LOGF)"
        tail -20 "$LOGF" >&2 || true
        exit 1
    fi
    STARTED_PORT="$PORT"
    local args="" x
    for x in "$@"; do x="$(rel "$x")"; args+=" ${x/#$TMP/TMP}"; done
    STARTED_CMD="$(rel "$ALIGND") serve --port 0 --http-port 0 --models-dir $(rel "$MODELS_DIR") --data-dir TMP/data-$name$args${ALIGND_ARGS:+ $ALIGND_ARGS}"
    log "alignd $name SERVING on 127.0.0.1:$STARTED_PORT (pid $STARTED_PID)"
}
record_server() { printf '%s\t%s\t%s\n' "$1" "$STARTED_CMD" "$2" >>"$TMP/servers.tsv"; }
stop_alignd() { SERVER_PID="$1"; stop_server; }
versions_of() {  # NAME -> "reward=… safety=…" from its "models loaded" log line
    local line
    line="$(grep -m1 'models loaded' "$BENCH_OUT/alignd-$1.log" || true)"
    echo "$(sed -n 's/.* reward=\([^ ]*\) .*/\1/p' <<<"$line") $(sed -n 's/.* safety=\([^ ]*\) .*/\1/p' <<<"$line")"
}

# --- 2./3. default server, Score beside the reference ---------------------------------------------
start_alignd default
DEFAULT_PID="$STARTED_PID"; DEFAULT_PORT="$STARTED_PORT"
read -r REWARD_VERSION SAFETY_VERSION <<<"$(versions_of default)"
record_server default "default models: reward \`$REWARD_VERSION\`, safety \`$SAFETY_VERSION\`; Score (beside the reference) and CheckSafety"
SCORE_ARGS=(--pairs "$PAIRS" --per-rpc "$PER_RPC")
if [[ "${SKIP_SCORE:-0}" != "1" ]]; then
    log "Score: $RUNS runs x $PAIRS pairs, reference: $REF_STATE"
    timeout "$SCORE_TIMEOUT" "${DRIVER[@]}" score --target "127.0.0.1:$DEFAULT_PORT" "${COMMON_ARGS[@]}" --runs "$RUNS" \
        "${SCORE_ARGS[@]}" "${REF_ARGS[@]}" --out "$BENCH_OUT/score.json" \
        || { ALIGND_STATE="$ALIGND_STATE; the Score driver failed or timed out"; log "$ALIGND_STATE"; }
fi

# --- 4. CheckSafety: default vs lexical-only, side by side ----------------------------------------
if [[ "${SKIP_SAFETY:-0}" != "1" ]]; then
    LEX_POLICY="$TMP/lexical-only-policy.json"
    "$PY" - "$REPO/Config/safety-policy.json" "$LEX_POLICY" <<'PY'
import json, sys
policy = json.load(open(sys.argv[1]))
policy["backends"] = ["lexical", "rules"]   # the previous default's backends (its guard: none configured)
policy["name"], policy["version"] = "lexical-only", "1"   # only the version stamp on answers
json.dump(policy, open(sys.argv[2], "w"), indent=1)
PY
    cp "$LEX_POLICY" "$BENCH_OUT/lexical-only-policy.json"
    start_alignd lexical --safety-policy "$LEX_POLICY"
    LEX_PID="$STARTED_PID"; LEX_PORT="$STARTED_PORT"
    read -r _ LEX_SAFETY_VERSION <<<"$(versions_of lexical)"
    record_server lexical-only "policy file = Config/safety-policy.json with \"backends\": [\"lexical\", \"rules\"] and name lexical-only@1 (the previous default's checker: lexical + rules, its guard had no model configured; the file is kept as lexical-only-policy.json in the raw outputs): safety \`$LEX_SAFETY_VERSION\`; CheckSafety only"
    log "CheckSafety: $RUNS runs x $TEXTS texts, default vs lexical-only"
    timeout "$SAFETY_TIMEOUT" "${DRIVER[@]}" safety --target "default=127.0.0.1:$DEFAULT_PORT" --target "lexical-only=127.0.0.1:$LEX_PORT" \
        "${COMMON_ARGS[@]}" --runs "$RUNS" --texts "$TEXTS" --out "$BENCH_OUT/safety.json" \
        || { ALIGND_STATE="$ALIGND_STATE; the CheckSafety driver failed or timed out"; log "$ALIGND_STATE"; }
    kill -0 "$LEX_PID" 2>/dev/null || ALIGND_STATE="$ALIGND_STATE; alignd lexical exited during the run"
    stop_alignd "$LEX_PID"
fi
kill -0 "$DEFAULT_PID" 2>/dev/null || ALIGND_STATE="$ALIGND_STATE; alignd default exited during the run (see alignd-default.log)"
stop_alignd "$DEFAULT_PID"

# --- 5. the generative judge ----------------------------------------------------------------------
JUDGE_JSON=""
if [[ "$MEASURE_JUDGE" == "1" && "${SKIP_SCORE:-0}" != "1" ]]; then
    start_alignd judge --reward-model judge
    JUDGE_PID="$STARTED_PID"
    read -r JUDGE_VERSION _ <<<"$(versions_of judge)"
    record_server judge "the generative judge on the policy: reward \`$JUDGE_VERSION\`; Score only, $JUDGE_RUNS run(s), no reference"
    log "Score (judge): $JUDGE_RUNS run(s) x $PAIRS pairs"
    JUDGE_JSON="$BENCH_OUT/judge-score.json"
    timeout "$JUDGE_TIMEOUT" "${DRIVER[@]}" score --target "127.0.0.1:$STARTED_PORT" "${COMMON_ARGS[@]}" --runs "$JUDGE_RUNS" \
        "${SCORE_ARGS[@]}" --label judge --out "$JUDGE_JSON" \
        || { ALIGND_STATE="$ALIGND_STATE; the judge Score driver failed or timed out"; log "$ALIGND_STATE"; }
    kill -0 "$JUDGE_PID" 2>/dev/null || ALIGND_STATE="$ALIGND_STATE; alignd judge exited during the run"
    stop_alignd "$JUDGE_PID"
    JUDGE_SOURCE="$JUDGE_SOURCE; the judge measured in this run is listed above"
fi

# --- 6. report ------------------------------------------------------------------------------------
VENV_REL="$(rel "$VENV")"
DRIVER_CMDS="$VENV_REL/bin/python Benchmarks/judging_bench.py score --target 127.0.0.1:PORT --stubs STUBS --runs $RUNS --pairs $PAIRS --per-rpc $PER_RPC --min-seconds $MIN_SECONDS${REF_CMD_REL:+ --reference-cmd '$REF_CMD_REL'} --out score.json
$VENV_REL/bin/python Benchmarks/judging_bench.py safety --target default=127.0.0.1:PORT --target lexical-only=127.0.0.1:PORT2 --stubs STUBS --runs $RUNS --texts $TEXTS --min-seconds $MIN_SECONDS --out safety.json"
[[ -n "$JUDGE_JSON" ]] && DRIVER_CMDS+="
$VENV_REL/bin/python Benchmarks/judging_bench.py score --target 127.0.0.1:PORT3 --stubs STUBS --runs $JUDGE_RUNS --pairs $PAIRS --per-rpc $PER_RPC --min-seconds $MIN_SECONDS --label judge --out judge-score.json"
export J_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" J_OUT="$BENCH_OUT" J_MACHINE="$(machine_description)" J_LOAD="$LOAD_BEFORE" \
    J_STATE="$ALIGND_STATE; reference $REF_STATE" J_COMMIT="$COMMIT" J_TREE="$TREE_DESC" J_FLAGS="$CPU_FLAGS" J_BINARY="$BINARY_DESC" \
    J_RUNS="$RUNS" J_MIN_SECONDS="$MIN_SECONDS" J_QMAX="$QUIET_MAX" J_QTIMEOUT="$QUIET_TIMEOUT" J_NOTES="${NOTES:-}" \
    J_SMOKE="${SMOKE:-}" J_JUDGE_TARGET="$JUDGE_TARGET" J_JUDGE_SOURCE="$JUDGE_SOURCE" J_DRIVERS="$DRIVER_CMDS" \
    J_SERVERS="$TMP/servers.tsv"
"$PY" - "$BENCH_OUT/meta.json" <<'PY'
import json, os, sys
e = os.environ
servers = [dict(zip(("name", "cmd", "what"), line.rstrip("\n").split("\t"))) for line in open(e["J_SERVERS"]) if line.strip()]
json.dump({"date": e["J_DATE"], "out": e["J_OUT"], "machine": e["J_MACHINE"], "cpu_flags": e["J_FLAGS"],
           "commit": e["J_COMMIT"], "tree": e["J_TREE"], "binary": e["J_BINARY"], "load_before": e["J_LOAD"],
           "alignd_state": e["J_STATE"], "servers": servers, "runs": int(e["J_RUNS"]),
           "min_seconds": float(e["J_MIN_SECONDS"]), "quiet_max": float(e["J_QMAX"]), "quiet_timeout": float(e["J_QTIMEOUT"]),
           "judge_target": float(e["J_JUDGE_TARGET"]), "judge_source": e["J_JUDGE_SOURCE"],
           "safety_labels": {"default": "default policy (trained classifier + rules)",
                             "lexical-only": "lexical-only policy (lexical + rules, the previous default)"},
           "driver_cmds": e["J_DRIVERS"], "notes": e["J_NOTES"], "smoke": e["J_SMOKE"]}, open(sys.argv[1], "w"), indent=1)
PY
"${DRIVER[@]}" report --meta "$BENCH_OUT/meta.json" --score "$BENCH_OUT/score.json" --safety "$BENCH_OUT/safety.json" \
    ${JUDGE_JSON:+--judge "$JUDGE_JSON"} --results "$RESULTS_FILE" >/dev/null
show_section "$RESULTS_FILE"
