#!/usr/bin/env bash
# Runs the reliability scenarios (Tests/Reliability/scenario_*.py) against the real alignd binary
# on loopback, then renders their figures.
#
#   Tests/Reliability/run.sh                  every scenario at full size; results/*.json and the
#                                             figures table of Docs/RELIABILITY.md are rewritten
#   Tests/Reliability/run.sh --quick          the small variants (the test command); results go to
#                                             results/quick/ and the table is printed, not written
#   Tests/Reliability/run.sh overload drain   only these scenarios (name, scenario_<name> or file)
#
# Binaries: $ALIGND_BIN_DIR, default ${ALIGND_BUILD_DIR:-<repo>/.build}/release (alignd, alignctl).
# Python: the pinned venv of scripts/test-python-env.sh (or $ALIGND_TEST_PYTHON when set).
# Each scenario is bounded by its own watchdog and, as a backstop, by `timeout` here
# (RELIABILITY_SCENARIO_TIMEOUT seconds, default 1800 full / 300 quick).
# Exit status: 0 when every scenario passed, 1 otherwise (every scenario runs regardless).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
QUICK=()
NAMES=()
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=(--quick) ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $arg" >&2; exit 64 ;;
    *) NAMES+=("$arg") ;;
  esac
done

export ALIGND_BIN_DIR="${ALIGND_BIN_DIR:-${ALIGND_BUILD_DIR:-$REPO/.build}/release}"
for b in alignd alignctl; do
  [[ -x "$ALIGND_BIN_DIR/$b" ]] || { echo "run.sh: $ALIGND_BIN_DIR/$b not found (build with scripts/build.sh or set ALIGND_BIN_DIR)" >&2; exit 1; }
done
MODELS="${ALIGND_MODELS_DIR:-$REPO/models}"
[[ -f "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" ]] || { echo "run.sh: $MODELS has no default model (run scripts/fetch-models.sh)" >&2; exit 1; }

PY="${ALIGND_TEST_PYTHON:-}"
if [[ -z "$PY" ]]; then
  PY="$("$REPO/scripts/test-python-env.sh")" || { echo "run.sh: python venv set-up failed" >&2; exit 1; }
fi

SCRIPTS=()
if (( ${#NAMES[@]} == 0 )); then
  for f in "$HERE"/scenario_*.py; do [[ -e "$f" ]] && SCRIPTS+=("$f"); done
else
  for n in "${NAMES[@]}"; do
    n="$(basename "$n" .py)"; n="${n#scenario_}"
    f="$HERE/scenario_$n.py"
    [[ -f "$f" ]] || { echo "run.sh: no scenario $f" >&2; exit 64; }
    SCRIPTS+=("$f")
  done
fi

if (( ${#QUICK[@]} )); then LIMIT="${RELIABILITY_SCENARIO_TIMEOUT:-300}"; else LIMIT="${RELIABILITY_SCENARIO_TIMEOUT:-1800}"; fi
FAILED=()
START=$SECONDS
for f in "${SCRIPTS[@]}"; do
  name="$(basename "$f" .py)"
  echo "=== $name ${QUICK[*]:-} (binaries: $ALIGND_BIN_DIR)" >&2
  t0=$SECONDS
  # --kill-after: the scenario's own watchdog should act first; this is the backstop.
  (cd "$HERE" && timeout --kill-after=10 "$LIMIT" "$PY" "$f" "${QUICK[@]}")
  rc=$?
  echo "=== $name: $([[ $rc == 0 ]] && echo PASS || echo "FAIL (exit $rc)") in $(( SECONDS - t0 ))s" >&2
  (( rc == 0 )) || FAILED+=("$name")
done
echo "=== ${#SCRIPTS[@]} scenario(s) in $(( SECONDS - START ))s; failed: ${FAILED[*]:-none}" >&2

if (( ${#QUICK[@]} )); then
  "$PY" "$HERE/report.py" --results "$HERE/results/quick" --print || FAILED+=("report")
else
  "$PY" "$HERE/report.py" --results "$HERE/results" --doc "$REPO/Docs/RELIABILITY.md" || FAILED+=("report")
fi
(( ${#FAILED[@]} == 0 ))
