#!/usr/bin/env bash
# Builds the libFuzzer targets of the inference engine (Fuzz/, -sanitize=fuzzer,address) and runs
# each for a set time, one after another. Prints per target: runs, exec/s, corpus size, crashes.
#
#   scripts/fuzz.sh [--seconds N] [--quick] [--no-build] [--update-corpus] [--no-record] [target...]
#
# Targets: gguf safetensors tokenizer chat-template (default: all four).
#   --seconds N       fuzzing time per target (default 600).
#   --quick           20 s per target, committed files untouched (= --seconds 20 --no-record); for
#                     the test command.
#   --no-build        reuse the last build.
#   --update-corpus   merge what the run found into Fuzz/Corpus/<target>/ and minimize it
#                     (libFuzzer -merge=1; seeds named seed-* are always kept; then the largest
#                     inputs are dropped until the folder is within 300 KB).
#   --no-record       do not write the figures into Fuzz/RESULTS.md.
#
# Builds in ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/fuzz-build (never the main build folder); the
# run's corpus and any crash/timeout/oom inputs go to ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/fuzz-run/.
# A crash is a trap, an AddressSanitizer report, a broken harness property, a run over 10 s on one
# input (-timeout=10) or more than 2 GB resident (-rss_limit_mb=2048). Exits 1 if any target crashed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ALIGND_CACHE_DIR:-$ROOT/.build-cache}"
BUILD="$CACHE/fuzz-build"
RUN="$CACHE/fuzz-run"
SECONDS_PER_TARGET=600
BUILD_FIRST=1
UPDATE_CORPUS=0
CORPUS_BUDGET=$((300 * 1024))
RECORD=1
TARGETS=()
ALL_TARGETS=(gguf safetensors tokenizer chat-template)

die() { echo "fuzz.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--seconds needs a number"; SECONDS_PER_TARGET="$2"; shift 2 ;;
    --quick) SECONDS_PER_TARGET=20; RECORD=0; shift ;;
    --no-build) BUILD_FIRST=0; shift ;;
    --update-corpus) UPDATE_CORPUS=1; shift ;;
    --no-record) RECORD=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ " ${ALL_TARGETS[*]} " == *" $1 "* ]] || die "unknown target $1 (${ALL_TARGETS[*]})"; TARGETS+=("$1"); shift ;;
  esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")

# Longest input per target: whole small GGUF files, safetensors headers and configs, text, templates.
max_len() {
  case "$1" in
    gguf) echo 16384 ;;
    safetensors) echo 8192 ;;
    tokenizer) echo 2048 ;;
    chat-template) echo 8192 ;;
  esac
}

if [[ $BUILD_FIRST == 1 ]]; then
  echo "== build (release, -sanitize=fuzzer,address) in $BUILD" >&2
  start=$(date +%s)
  swift build -c release --package-path "$ROOT/Fuzz" --scratch-path "$BUILD" \
    -Xswiftc -sanitize=fuzzer,address 2>&1 | grep -v "__asan_extra_spill_area" >&2
  echo "   built in $(( $(date +%s) - start )) s" >&2
fi
BIN="$(swift build -c release --package-path "$ROOT/Fuzz" --scratch-path "$BUILD" --show-bin-path)"

# Swift's own crash backtracer would catch signals before libFuzzer/ASan do. Leak detection is off:
# the Swift runtime's metadata and Foundation's caches live until exit and would be reported as leaks.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}"

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$ROOT" status --porcelain -- Sources/AlignEngine Fuzz 2>/dev/null)" ]]; then COMMIT="$COMMIT+dirty"; fi
DATE="$(date -u +%Y-%m-%dT%H:%MZ)"
FAILED=0
SUMMARY=()

# The harnesses write each input to a scratch file (the parsers take paths) under this folder,
# in memory when /dev/shm is there; removed when the script ends.
if [[ -w /dev/shm ]]; then SCRATCH_BASE=/dev/shm; else SCRATCH_BASE="${TMPDIR:-/tmp}"; fi
export ALIGND_FUZZ_SCRATCH="$SCRATCH_BASE/alignd-fuzz-scratch-$$"
trap 'rm -rf "$ALIGND_FUZZ_SCRATCH"' EXIT

corpus_size() {  # files bytes
  local n b
  n=$(find "$1" -type f | wc -l)
  b=$(find "$1" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  echo "$n $b"
}

record() {  # target seconds execs execs_per_s files bytes crashes
  local file="$ROOT/Fuzz/RESULTS.md" row
  row="| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $DATE | $COMMIT |"
  if [[ ! -f "$file" ]]; then
    cat >"$file" <<'HEADER'
# Fuzzing results

Latest run of each target by `scripts/fuzz.sh` (one row per target, replaced by each recorded run).
Corpus = the committed corpus `Fuzz/Corpus/<target>/` after the run (minimized with `--update-corpus`).
Crashes = crash, timeout (> 10 s) or out-of-memory (> 2 GB) inputs found in the run.

| target | seconds | execs | exec/s | corpus files | corpus bytes | crashes | date (UTC) | commit |
|---|---|---|---|---|---|---|---|---|
HEADER
  fi
  awk -v t="| $1 |" -v row="$row" '
    index($0, t) == 1 { if (!done) print row; done = 1; next }
    { print }
    END { if (!done) print row }' "$file" >"$file.tmp"
  mv "$file.tmp" "$file"
}

for target in "${TARGETS[@]}"; do
  seeds="$ROOT/Fuzz/Corpus/$target"
  work="$RUN/$target/corpus"
  artifacts="$RUN/$target/artifacts"
  log="$RUN/$target/fuzz.log"
  mkdir -p "$seeds" "$work" "$artifacts"
  rm -f "$artifacts"/*
  echo "== fuzz-$target for ${SECONDS_PER_TARGET} s (log: $log)" >&2
  set +e
  "$BIN/fuzz-$target" "$work" "$seeds" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len="$(max_len "$target")" -detect_leaks=0 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  status=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(find "$artifacts" -type f | wc -l)
  if [[ $status -ne 0 && $crashes -eq 0 ]]; then crashes=1; fi
  if [[ $UPDATE_CORPUS == 1 && $crashes -eq 0 ]]; then
    # Minimize seeds + what this run found into a fresh folder, then keep the seeds under their names.
    fresh="$RUN/$target/merged"
    rm -rf "$fresh"; mkdir -p "$fresh"
    "$BIN/fuzz-$target" -merge=1 -max_len="$(max_len "$target")" -timeout=10 -rss_limit_mb=2048 \
      -detect_leaks=0 "$fresh" "$seeds" "$work" >>"$log" 2>&1 || true
    find "$seeds" -type f ! -name 'seed-*' -delete
    for f in "$fresh"/*; do
      [[ -e "$f" ]] || continue
      cp "$f" "$seeds/"
    done
    # Drop copies of seeds that the merge kept under their hash names.
    for s in "$seeds"/seed-*; do
      h=$(sha1sum "$s" | cut -d' ' -f1)
      rm -f "$seeds/$h"
    done
    # Keep the committed corpus within CORPUS_BUDGET bytes: drop the largest non-seed inputs first.
    while read -r size name; do
      read -r _ total < <(corpus_size "$seeds")
      [[ $total -le $CORPUS_BUDGET ]] && break
      rm -f "$seeds/$name"
    done < <(find "$seeds" -type f ! -name 'seed-*' -printf '%s %f\n' | sort -rn)
  fi
  read -r files bytes < <(corpus_size "$seeds")
  line="$target: ${execs:-0} runs in ${SECONDS_PER_TARGET} s (${rate:-0}/s), corpus $files files / $bytes bytes, crashes: $crashes"
  echo "   $line" >&2
  SUMMARY+=("$line")
  if [[ $crashes -gt 0 ]]; then
    FAILED=1
    echo "   crash inputs in $artifacts; the report is at the end of $log" >&2
    tail -n 40 "$log" >&2
  fi
  if [[ $RECORD == 1 ]]; then record "$target" "$SECONDS_PER_TARGET" "${execs:-0}" "${rate:-0}" "$files" "$bytes" "$crashes"; fi
done

echo "== summary" >&2
for l in "${SUMMARY[@]}"; do echo "$l"; done
exit $FAILED
