#!/usr/bin/env bash
# Checks Tests/Clients/export_readback.py on its example files: every export_examples/valid/FORMAT.jsonl
# must pass (exit 0) and every export_examples/invalid/FORMAT-what.jsonl must be rejected (exit 1),
# with FORMAT the longest export format the file name starts with; plus the usage errors (exit 2).
# Python: $1, else $ALIGND_TEST_PYTHON (scripts/test-python-env.sh), else python3. Exits non-zero
# when any check fails.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${1:-${ALIGND_TEST_PYTHON:-python3}}"
SCRIPT="$HERE/export_readback.py"
EXAMPLES="$HERE/export_examples"
FORMATS=(trl-chat kto-chat sft-chat rollouts trl kto sft)   # longest prefixes first
passed=0
failed=0

format_of() {
  local name="$1" f
  for f in "${FORMATS[@]}"; do
    if [[ "$name" == "$f" || "$name" == "$f-"* ]]; then echo "$f"; return 0; fi
  done
  return 1
}

expect() {  # expect WANTED_RC DESCRIPTION ARGS...
  local want="$1" what="$2" rc
  shift 2
  local err
  err="$("$PYTHON" "$SCRIPT" "$@" 2>&1 >/dev/null)"
  rc=$?
  if [[ "$rc" == "$want" ]]; then
    passed=$((passed + 1))
    echo "ok   $what (exit $rc)${err:+: $(head -n 1 <<<"$err")}"
  else
    failed=$((failed + 1))
    echo "FAIL $what: exit $rc, expected $want"
    [[ -n "$err" ]] && sed 's/^/     /' <<<"$err"
  fi
}

shopt -s nullglob
for file in "$EXAMPLES"/valid/*.jsonl "$EXAMPLES"/invalid/*.jsonl; do
  name="$(basename "$file" .jsonl)"
  kind="$(basename "$(dirname "$file")")"
  if ! format="$(format_of "$name")"; then
    failed=$((failed + 1)); echo "FAIL $kind/$name: no export format in the file name"; continue
  fi
  if [[ "$kind" == valid ]]; then
    expect 0 "valid/$name --format $format" --format "$format" "$file"
  else
    expect 1 "invalid/$name --format $format" --format "$format" "$file"
  fi
done
# Each valid file read as a format it is not must be rejected too (the schemas do not overlap).
expect 1 "valid/trl-chat as --format trl" --format trl "$EXAMPLES/valid/trl-chat.jsonl"
expect 1 "valid/kto as --format sft" --format sft "$EXAMPLES/valid/kto.jsonl"
expect 1 "valid/sft as --format kto" --format kto "$EXAMPLES/valid/sft.jsonl"
expect 1 "valid/trl --min-rows 3" --format trl --min-rows 3 "$EXAMPLES/valid/trl.jsonl"
expect 0 "valid/rollouts in 1 KiB chunks" --format rollouts --chunksize 1024 "$EXAMPLES/valid/rollouts.jsonl"
# A datasets limit, not a schema error: the loader fixes the column types from the first chunk
# (10 MiB), so a column that is null (or []) in every row of that chunk fails to load when a later
# chunk holds values. In one chunk the file loads; in 1 KiB chunks it does not.
CHUNKED="$EXAMPLES/chunked/rollouts-first-chunk-without-rewards.jsonl"
expect 0 "chunked/rollouts-first-chunk-without-rewards in one chunk" --format rollouts "$CHUNKED"
expect 1 "chunked/rollouts-first-chunk-without-rewards in 1 KiB chunks" --format rollouts --chunksize 1024 "$CHUNKED"
# Usage errors.
expect 2 "no arguments"
expect 2 "unknown format" --format dpo "$EXAMPLES/valid/trl.jsonl"
expect 2 "missing file" --format trl "$EXAMPLES/valid/no-such-file.jsonl"
expect 2 "negative --min-rows" --format trl --min-rows -1 "$EXAMPLES/valid/trl.jsonl"

echo "export_readback: $passed passed, $failed failed"
[[ "$failed" == 0 && "$passed" -gt 0 ]]
