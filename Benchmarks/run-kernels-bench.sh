#!/usr/bin/env bash
# Kernel-set benchmark: `alignctl bench` on the default policy with every kernel set this CPU supports
# (avx2, sse2, portable; KernelSet.swift), alternated RUNS times in one run — what the same binary
# gives on a CPU without AVX2 (sse2) or outside x86-64 (portable), measured here side by side.
#
# One command:   Benchmarks/run-kernels-bench.sh
# Writes the "## Kernel sets" section of Benchmarks/RESULTS.md (between <!-- kernels-bench:start -->
# and <!-- kernels-bench:end -->); raw JSON lines go to $BENCH_OUT (default
# /var/cache/alignd/bench/kernels-<UTC>). Run it on a quiet machine.
#
# Environment:
#   ALIGND_BUILD_DIR  build folder holding release/alignctl (default /var/cache/alignd/build)
#   MODELS_DIR (default <repo>/models)  RUNS (3)  KERNELS ("avx2 sse2 portable", unsupported ones
#   are skipped)  KV_CACHE (float16, the server's default)  RESULTS_FILE; QUIET_MAX; QUIET_TIMEOUT
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=kernels-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGNCTL="${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignctl"
MODEL="${MODELS_DIR:-$REPO/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
RUNS="${RUNS:-3}"
KV_CACHE="${KV_CACHE:-float16}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/kernels-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -x "$ALIGNCTL" ]] || { log "alignctl not built: $ALIGNCTL (scripts/build.sh, or set ALIGND_BUILD_DIR)"; exit 1; }
[[ -f "$MODEL" ]] || { log "model not found: $MODEL (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
COMMIT="$(commit_description)"
sets=()
for k in ${KERNELS:-avx2 sse2 portable}; do
    if ALIGND_KERNELS="$k" "$ALIGNCTL" bench --model "$MODEL" --prompt-tokens 4 --gen-tokens 1 --batch 1 \
        --batch-prompt-tokens 4 --runs 1 >/dev/null 2>&1; then sets+=("$k"); else log "skipping $k: not supported here"; fi
done
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_quiet "$BENCH_TAG"
for r in $(seq 1 "$RUNS"); do
    # Rotate the order each run, so drift on a shared machine hits every set alike.
    for i in "${!sets[@]}"; do
        k="${sets[$(( (i + r) % ${#sets[@]} ))]}"
        log "run $r $k"
        "$ALIGNCTL" bench --model "$MODEL" --kernels "$k" --kv-cache "$KV_CACHE" --gen-tokens 32 --runs 3 --json \
            | tail -1 >>"$BENCH_OUT/raw.jsonl"
    done
done

export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_MACHINE="$(machine_description)" H_LOAD="$LOAD_BEFORE" \
    H_COMMIT="$COMMIT" H_RUNS="$RUNS" H_KV="$KV_CACHE"
python3 - "$BENCH_OUT/raw.jsonl" "$RESULTS_FILE" <<'PY'
import json, os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[2])))
from bench_common import write_section
e = os.environ
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
sets = [k for k in ("avx2", "sse2", "portable") if any(r["kernels"] == k for r in rows)]
start, end = "<!-- kernels-bench:start -->", "<!-- kernels-bench:end -->"
lines = [start, "## Kernel sets (one binary: AVX2, SSE2, portable)", "",
         f"{e['H_DATE']} · {e['H_MACHINE']} · load before {e['H_LOAD']} · commit {e['H_COMMIT']}", "",
         "`alignctl bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf --kernels K "
         f"--kv-cache {e['H_KV']} --gen-tokens 32 --runs 3` (Benchmarks/run-kernels-bench.sh), the sets rotated "
         f"{e['H_RUNS']} times; each cell is the median over those runs of alignctl's own medians; 2 engine threads. "
         "Prefill is 128 tokens (sgemm in OpenBLAS, which picks its own kernels by CPU), batch-1 decode starts "
         "from an empty context, batched decode runs 32 sequences after 128-token prompts. Every set gives the "
         "same bits (KernelDispatchTests); sse2 is what a CPU without AVX2 runs, portable what non-x86 CPUs "
         "run (here measured on x86-64, where its vectors become SSE).", "",
         "| figure | " + " | ".join(f"{k} tok/s" for k in sets) + " | " + " | ".join(f"{k} / avx2" for k in sets[1:]) + " |",
         "|---|" + "---|" * (2 * len(sets) - 1)]
for key, name in [("prefill_tok_s", "prefill 128"), ("decode_tok_s", "decode, batch 1"),
                  ("batched_decode_tok_s", "decode, 32 sequences")]:
    med = {k: statistics.median(r[key] for r in rows if r["kernels"] == k) for k in sets}
    lines.append(f"| {name} | " + " | ".join(f"{med[k]:.1f}" for k in sets) + " | "
                 + " | ".join(f"{med[k] / med['avx2']:.2f}" for k in sets[1:]) + " |")
lines += ["", end]
write_section(sys.argv[2], "\n".join(lines) + "\n", start, end, "<!-- kv-precision-bench:end -->")
PY
show_section "$RESULTS_FILE"
