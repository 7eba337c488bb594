#!/usr/bin/env bash
# The figures of the reward model card (Docs/REWARD.md): the default reward model and the
# generative judge on the held-out TEST pairs, by group, source and kind, beside a seeded random
# baseline.
#
#   Training/reward/model-card.sh [--out DIR] [--markdown FILE] [--no-judge] [--file PAIRS]
#
#   --out DIR        keep the alignctl JSON outputs and the server log here (default: a temporary
#                    folder, removed at the end)
#   --markdown FILE  write the tables to FILE as well as to stdout
#   --no-judge       skip the generative judge (its columns are left out)
#   --file PAIRS     the preference file (default: Tests/Fixtures/reward/heldout-test.jsonl)
#
# 1. `alignctl eval-reward PAIRS --model $MODELS/alignd-reward-minilm --json --by G` for G in
#    group, source, kind (in process; a few seconds each).
# 2. `alignd serve --reward-model judge` on free ports with a scratch data folder; once it answers
#    health checks, `alignctl eval-reward PAIRS --server 127.0.0.1:PORT --json --by G` for the same
#    three groupings (the judge runs the 135M policy: a few minutes per pass on two cores); then
#    the server is stopped.
# 3. `python3 Training/reward/model_card.py` reads the six JSON files, adds the random baseline and
#    prints the tables.
#
# Binaries: $ALIGND_BIN_DIR, default ${ALIGND_BUILD_DIR:-<repo>/.build}/release (alignd, alignctl).
# Models: $ALIGND_MODELS_DIR, default <repo>/models (alignd-reward-minilm, all-MiniLM-L6-v2, the
# ported classifiers and SmolLM2-135M-Instruct.Q4_1.gguf: scripts/setup.sh fetches them).
# Run it under `nice -n 10` on a shared machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${ALIGND_BIN_DIR:-${ALIGND_BUILD_DIR:-$ROOT/.build}/release}"
MODELS="${ALIGND_MODELS_DIR:-$ROOT/models}"
FILE="$ROOT/Tests/Fixtures/reward/heldout-test.jsonl"
OUT=""
MARKDOWN=""
JUDGE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --markdown) MARKDOWN="$2"; shift 2 ;;
    --no-judge) JUDGE=0; shift ;;
    --file) FILE="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "model-card.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done

die() { echo "model-card.sh: $*" >&2; exit 1; }
for b in alignd alignctl; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b not found (build with scripts/build.sh or set ALIGND_BIN_DIR)"
done
[[ -d "$MODELS/alignd-reward-minilm" ]] || die "$MODELS has no alignd-reward-minilm (run scripts/setup.sh)"
[[ -f "$FILE" ]] || die "$FILE not found"

KEEP_OUT=1
if [[ -z "$OUT" ]]; then
  OUT="$(mktemp -d)"
  KEEP_OUT=0
fi
mkdir -p "$OUT"
DATA=""
PID=""
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  [[ -n "$DATA" ]] && rm -rf "$DATA"
  [[ "$KEEP_OUT" == 0 ]] && rm -rf "$OUT"
  return 0
}
trap cleanup EXIT

GROUPINGS=(group source kind)

# 1. The default reward model, in process.
for g in "${GROUPINGS[@]}"; do
  echo "model-card.sh: default reward model, by $g" >&2
  "$BIN/alignctl" eval-reward "$FILE" --model "$MODELS/alignd-reward-minilm" --models-dir "$MODELS" \
    --json --by "$g" >"$OUT/default-$g.json"
done

# 2. The generative judge, through a server started with --reward-model judge.
if [[ "$JUDGE" == 1 ]]; then
  DATA="$(mktemp -d)"
  LOG="$OUT/judge-server.log"
  # Only this script's own settings: no ALIGND_* configuration from the caller's environment.
  env $(env | sed -n 's/^\(ALIGND_[A-Z_]*\)=.*/-u \1/p') \
    "$BIN/alignd" serve --host 127.0.0.1 --port 0 --http-port 0 --models-dir "$MODELS" --data-dir "$DATA" \
    --reward-model judge --kv-cache-tokens 4096 2>"$LOG" >/dev/null &
  PID=$!
  PORT=""
  for _ in $(seq 1 600); do
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; die "alignd exited before listening"; }
    # e.g. `... info alignd: address=[ipv4]127.0.0.1:41234 protocol=grpc [AlignServer] alignd listening`
    PORT="$(grep 'alignd listening' "$LOG" 2>/dev/null | grep 'protocol=grpc' | sed -n 's/.*address=[^ ]*:\([0-9][0-9]*\).*/\1/p' | head -n 1 || true)"
    [[ -n "$PORT" ]] && break
    sleep 0.5
  done
  [[ -n "$PORT" ]] || { cat "$LOG" >&2; die "alignd did not start listening within 300 s"; }
  SERVING=0
  for _ in $(seq 1 300); do
    HEALTH="$("$BIN/alignctl" health --server "127.0.0.1:$PORT" 2>/dev/null || true)"
    if grep -qi 'serving' <<<"$HEALTH" && ! grep -qi 'not_serving' <<<"$HEALTH"; then
      SERVING=1
      break
    fi
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; die "alignd exited while loading"; }
    sleep 1
  done
  [[ "$SERVING" == 1 ]] || { cat "$LOG" >&2; die "alignd did not report SERVING within 300 s"; }
  for g in "${GROUPINGS[@]}"; do
    echo "model-card.sh: generative judge (127.0.0.1:$PORT), by $g" >&2
    "$BIN/alignctl" eval-reward "$FILE" --server "127.0.0.1:$PORT" --json --by "$g" >"$OUT/judge-$g.json"
  done
  kill -TERM "$PID"
  wait "$PID" || true
  PID=""
fi

# 3. Tables.
ARGS=(--results "$OUT" --file "$FILE")
[[ -n "$MARKDOWN" ]] && ARGS+=(--markdown "$MARKDOWN")
python3 "$ROOT/Training/reward/model_card.py" "${ARGS[@]}"
