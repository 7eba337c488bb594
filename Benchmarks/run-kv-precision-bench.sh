#!/usr/bin/env bash
# KV cache precision benchmark: `alignctl bench` on the default policy with a float32 and a float16
# KV cache, alternated RUNS times in one run (same prompts, lengths and threads; each figure is
# already the median of 3 inside alignctl bench), at the batched prompt lengths of BATCH_PROMPTS.
#
# One command:   Benchmarks/run-kv-precision-bench.sh
# Writes the "## KV cache precision" section of Benchmarks/RESULTS.md (between
# <!-- kv-precision-bench:start --> and <!-- kv-precision-bench:end -->); raw JSON lines go to
# $BENCH_OUT (default /var/cache/alignd/bench/kv-precision-<UTC>). Run it on a quiet machine.
#
# Environment:
#   ALIGND_BUILD_DIR  build folder holding release/alignctl (default /var/cache/alignd/build)
#   MODELS_DIR (default <repo>/models)  RUNS (3)  BATCH_PROMPTS ("128 512")  GEN_TOKENS (32)
#   RESULTS_FILE; QUIET_MAX; QUIET_TIMEOUT
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=kv-precision-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGNCTL="${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignctl"
MODEL="${MODELS_DIR:-$REPO/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
RUNS="${RUNS:-3}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/kv-precision-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -x "$ALIGNCTL" ]] || { log "alignctl not built: $ALIGNCTL (scripts/build.sh, or set ALIGND_BUILD_DIR)"; exit 1; }
[[ -f "$MODEL" ]] || { log "model not found: $MODEL (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
COMMIT="$(commit_description)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_quiet "$BENCH_TAG"
for npp in ${BATCH_PROMPTS:-128 512}; do
    for r in $(seq 1 "$RUNS"); do
        # Alternate which precision goes first, so drift on a shared machine hits both alike.
        order="float32 float16"; (( r % 2 == 0 )) && order="float16 float32"
        for precision in $order; do
            log "npp $npp run $r $precision"
            "$ALIGNCTL" bench --model "$MODEL" --kv-cache "$precision" --batch-prompt-tokens "$npp" \
                --gen-tokens "${GEN_TOKENS:-32}" --runs 3 --json | tail -1 >>"$BENCH_OUT/raw.jsonl"
        done
    done
done

export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_MACHINE="$(machine_description)" H_LOAD="$LOAD_BEFORE" \
    H_COMMIT="$COMMIT" H_RUNS="$RUNS" H_GEN="${GEN_TOKENS:-32}"
python3 - "$BENCH_OUT/raw.jsonl" "$RESULTS_FILE" <<'PY'
import json, os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[2])))
from bench_common import write_section
e = os.environ
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
start, end = "<!-- kv-precision-bench:start -->", "<!-- kv-precision-bench:end -->"
lines = [start, "## KV cache precision (float16 against float32)", "",
         f"{e['H_DATE']} · {e['H_MACHINE']} · load before {e['H_LOAD']} · commit {e['H_COMMIT']}", "",
         "`alignctl bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf --kv-cache float32|float16 "
         f"--batch-prompt-tokens NPP --gen-tokens {e['H_GEN']} --runs 3` (Benchmarks/run-kv-precision-bench.sh), "
         f"the two precisions alternated {e['H_RUNS']} times; each cell is the median over those runs of alignctl's "
         "own medians; 2 engine threads. Prefill is 128 tokens, batch-1 decode starts from an empty context, "
         "batched decode runs 32 sequences after NPP-token prompts.", "",
         "| npp | figure | float32 tok/s | float16 tok/s | float16 / float32 |", "|---|---|---|---|---|"]
for npp in sorted({r["batch_prompt_tokens"] for r in rows}):
    for key, name in [("prefill_tok_s", "prefill 128"), ("decode_tok_s", "decode, batch 1"),
                      ("batched_decode_tok_s", "decode, 32 sequences")]:
        med = {p: statistics.median(r[key] for r in rows if r["kv_cache"] == p and r["batch_prompt_tokens"] == npp)
               for p in ("float32", "float16")}
        lines.append(f"| {npp} | {name} | {med['float32']:.1f} | {med['float16']:.1f} | {med['float16'] / med['float32']:.2f} |")
lines += ["", "KV memory per SmolLM2 token: 46,080 bytes in float32, 23,040 in float16 (30 layers × 2 × 192 wide).",
          "", end]
write_section(sys.argv[2], "\n".join(lines) + "\n", start, end, "<!-- structured-bench:end -->")
PY
show_section "$RESULTS_FILE"
