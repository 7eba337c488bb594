#!/usr/bin/env bash
# Prompt-lookup benchmark: `alignctl bench-lookup` on the default policy over the committed editing
# prompt set (Benchmarks/prompts/editing.jsonl: fix typos, rewrite, summarise, reformat a given
# text), greedy, with and without prompt-lookup speculation side by side in one run (alternating per
# prompt), the two outputs checked equal token for token. Also reports the other figures a user
# meets: the same comparison on the free-form chat prompts of the quality gate, where little is
# copied.
#
# One command:   Benchmarks/run-lookup-bench.sh
# Writes the "## Prompt lookup" section of Benchmarks/RESULTS.md (between <!-- lookup-bench:start -->
# and <!-- lookup-bench:end -->); raw JSON goes to $BENCH_OUT (default /var/cache/alignd/bench/lookup-<UTC>).
#
# Environment:
#   ALIGND_BUILD_DIR (default /var/cache/alignd/build)  MODELS_DIR (<repo>/models)  RUNS (3)
#   MAX_TOKENS (256)  DRAFT_TOKENS (4)  KV_CACHE (float16)  RESULTS_FILE; QUIET_MAX; QUIET_TIMEOUT
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_TAG=lookup-bench
# shellcheck source=Benchmarks/lib.sh
source "$HERE/lib.sh"
CACHE="${ALIGND_CACHE_DIR:-/var/cache/alignd}"
ALIGNCTL="${ALIGND_BUILD_DIR:-$CACHE/build}/release/alignctl"
MODELS="${MODELS_DIR:-$REPO/models}"
MODEL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
RUNS="${RUNS:-3}"
MAX_TOKENS="${MAX_TOKENS:-256}"
DRAFT_TOKENS="${DRAFT_TOKENS:-4}"
KV_CACHE="${KV_CACHE:-float16}"
RESULTS_FILE="${RESULTS_FILE:-$HERE/RESULTS.md}"
BENCH_OUT="${BENCH_OUT:-$CACHE/bench/lookup-$(date -u +%Y%m%dT%H%M%SZ)}"
EDITING="$HERE/prompts/editing.jsonl"
CHAT="$MODELS/eval/policy-eval-prompts.jsonl"

[[ -x "$ALIGNCTL" ]] || { log "alignctl not built: $ALIGNCTL (scripts/build.sh, or set ALIGND_BUILD_DIR)"; exit 1; }
[[ -f "$MODEL" ]] || { log "model not found: $MODEL (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
COMMIT="$(commit_description)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_quiet "$BENCH_TAG"
common=(--model "$MODEL" --threads 2 --max-tokens "$MAX_TOKENS" --draft-tokens "$DRAFT_TOKENS" --runs "$RUNS"
        --kv-cache "$KV_CACHE" --json)
log "editing set: $EDITING"
"$ALIGNCTL" bench-lookup --prompts "$EDITING" "${common[@]}" >"$BENCH_OUT/editing.json"
if [[ -f "$CHAT" ]]; then
    # The quality gate's prompts as {id, messages} rows.
    python3 - "$CHAT" "$BENCH_OUT/chat.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for i, line in enumerate(l for l in open(sys.argv[1]) if l.strip()):
        row = json.loads(line)
        messages = row.get("messages") or [{"role": "user", "content": row.get("prompt", "")}]
        out.write(json.dumps({"id": row.get("id", f"chat-{i}"), "messages": messages}) + "\n")
PY
    log "chat set: $CHAT"
    "$ALIGNCTL" bench-lookup --prompts "$BENCH_OUT/chat.jsonl" "${common[@]}" >"$BENCH_OUT/chat.json"
fi

export H_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" H_MACHINE="$(machine_description)" H_LOAD="$LOAD_BEFORE" \
    H_COMMIT="$COMMIT" H_RUNS="$RUNS" H_MAX="$MAX_TOKENS" H_K="$DRAFT_TOKENS" H_KV="$KV_CACHE"
python3 - "$BENCH_OUT" "$RESULTS_FILE" <<'PY'
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[2])))
from bench_common import write_section
e = os.environ
start, end = "<!-- lookup-bench:start -->", "<!-- lookup-bench:end -->"
lines = [start, "## Prompt lookup (speculative decoding without a draft model)", "",
         f"{e['H_DATE']} · {e['H_MACHINE']} · load before {e['H_LOAD']} · commit {e['H_COMMIT']}", "",
         "`alignctl bench-lookup --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompts SET --threads 2 "
         f"--max-tokens {e['H_MAX']} --draft-tokens {e['H_K']} --runs {e['H_RUNS']} --kv-cache {e['H_KV']}` "
         "(Benchmarks/run-lookup-bench.sh): each prompt rendered with the chat template and decoded greedily "
         "to its end token or the limit, once plain and once with prompt lookup (n-grams 4 down to 3), "
         "alternating which goes first; both outputs are checked equal token for token (the command fails "
         "otherwise). Decode tok/s = tokens after the first ÷ time after the first, summed over the set; "
         "each figure is the median of the runs. The editing set is committed (Benchmarks/prompts/editing.jsonl); "
         "the chat set is the policy quality gate's prompts (models/eval/policy-eval-prompts.jsonl).", "",
         "| prompt set | prompts | tokens | plain decode tok/s | lookup decode tok/s | lookup / plain (decode) | "
         "end to end | forward passes plain → lookup | drafted tokens kept | runs (lookup / plain) |",
         "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
for name, label in [("editing", "editing (rewrite, fix, summarise a given text)"), ("chat", "free-form chat (quality-gate prompts)")]:
    path = os.path.join(sys.argv[1], name + ".json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    kept = r["accepted"] / r["drafted"] if r["drafted"] else 0
    lines.append(f"| {label} | {r['prompts']} | {r['generated_tokens']} | {r['plain_decode_tok_s']:.1f} | "
                 f"{r['lookup_decode_tok_s']:.1f} | **{r['decode_ratio']:.2f}×** | {r['end_to_end_ratio']:.2f}× | "
                 f"{r['plain_passes']} → {r['lookup_passes']} | {r['accepted']} of {r['drafted']} ({100 * kept:.0f}%) | "
                 + ", ".join(f"{x:.2f}" for x in r["runs_decode_ratio"]) + " |")
r = json.load(open(os.path.join(sys.argv[1], "editing.json")))
k, cost = r["draft_tokens"], r["verify_pass_cost"]
lines += ["", f"**What limits it here**: measured in the same run, one forward pass of {1 + k} rows (the fed token and "
          f"{k} drafted ones, verified on the decode path) takes {r['verify_pass_ms']:.1f} ms against "
          f"{r['one_row_pass_ms']:.1f} ms for one row — **{cost:.2f}×**. A token's matrix products are compute-bound "
          "in these kernels on 2 cores (the row kernel runs well below the int8 roof; see the engine table), so a "
          f"verified row is far from free, and even drafts that are always kept give at most {1 + k}/{cost:.2f} = "
          f"{(1 + k) / cost:.2f}× per pass. Issue 17's ≥ 1.8× target on the editing set is not met on this machine. "
          "Prompts whose drafts are mostly kept (copying a list, a dialogue, a recipe) reach 1.5–2×; a per-completion "
          "gate (DraftGate) stops drafting where proposals are mostly rejected, so the rest stay near 1.0×."]
lines += ["", "Per editing prompt (last run): decode tok/s plain → lookup, drafted tokens kept.", "",
          "| prompt | prompt tokens | tokens | plain | lookup | ratio | passes | kept |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
for p in r["per_prompt"]:
    lines.append(f"| {p['id']} | {p['prompt_tokens']} | {p['tokens']} | {p['plain_decode_tok_s']:.1f} | "
                 f"{p['lookup_decode_tok_s']:.1f} | {p['lookup_decode_tok_s'] / p['plain_decode_tok_s']:.2f} | "
                 f"{p['passes']} | {p['accepted']} / {p['drafted']} |")
lines += ["", end]
write_section(sys.argv[2], "\n".join(lines) + "\n", start, end, "<!-- kernels-bench:end -->")
PY
show_section "$RESULTS_FILE"
