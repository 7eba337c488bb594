#!/usr/bin/env bash
# Side-by-side engine benchmark: llama.cpp (peer) vs alignd's engine, same GGUF, 2 threads.
# One command:   Benchmarks/run-engine-bench.sh
# Writes Benchmarks/RESULTS.md (medians, ratios vs the issue-3 targets, machine, commands)
# and keeps the raw outputs in $BENCH_OUT (default /var/cache/alignd/bench/<UTC timestamp>).
#
# Measurements (all with --threads 2 / -t 2, on $MODEL):
#   llama.cpp  llama-bench -p 128 -n 64 -r $LLAMA_REPS   -> prefill pp128 and batch-1 decode tg64
#                                                          (median of the per-repetition samples)
#   llama.cpp  llama-batched-bench -npp 16,128 -ntg 64 -npl 32, $BATCHED_RUNS separate runs
#                                                       -> aggregate decode S_TG over 32 sequences with
#                                                          16- and 128-token prompts (median over runs)
#   alignd     "$ALIGNCTL" bench --model $MODEL --threads 2 --json --prompt-tokens 128
#              --gen-tokens 64 --batch 32 --batch-prompt-tokens 128 --runs $ENGINE_RUNS --roofs
#              -> prefill, decode, batched decode (npp 128) and the machine's roofs measured in the
#                 same process: read bandwidth (1 GiB buffer) and int8/f32 multiply-add peaks
#              the same with --batch-prompt-tokens 16 (no roofs) -> batched decode at npp 16
#              If $ALIGNCTL is missing the engine side is recorded as "not run".
#
# Environment:
#   MODEL         GGUF (default <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   ALIGNCTL      alignctl binary (default: first of /var/cache/alignd/build/release/alignctl,
#                 <repo>/.build/release/alignctl that exists)
#   LLAMA_CPP_DIR llama.cpp cache (default /var/cache/alignd/llama.cpp; built on demand)
#   THREADS       default 2
#   LLAMA_REPS    llama-bench repetitions (default 5)    BATCHED_RUNS (default 3)
#   ENGINE_RUNS   passed to alignctl --runs (default 3)
#   SKIP_LLAMA=1  reuse llama.cpp numbers from $REUSE_LLAMA_JSON (a previous llama.json)
#   NICE          niceness for all measured processes (default 0)
#   QUIET_MAX     before each measurement, wait until the whole machine's CPU use (sampled over 3 s)
#                 is below this fraction (default 0.15) ...
#   QUIET_TIMEOUT ... for at most this many seconds (default 1800), then measure anyway and say so.
#                 Why: llama.cpp's threads spin at barriers; with another process on one of the 2
#                 cores its decode speed collapses ~10x (measured: tg64 7 tok/s instead of ~70).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
MODEL="${MODEL:-$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LLAMA_CPP_DIR="${LLAMA_CPP_DIR:-/var/cache/alignd/llama.cpp}"
export LLAMA_CPP_DIR
THREADS="${THREADS:-2}"
LLAMA_REPS="${LLAMA_REPS:-5}"
BATCHED_RUNS="${BATCHED_RUNS:-3}"
ENGINE_RUNS="${ENGINE_RUNS:-3}"
NICE="${NICE:-0}"
PP=128
NPP_LIST=(16 128)
TG=64
NPL=32
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
BENCH_OUT="${BENCH_OUT:-/var/cache/alignd/bench/$STAMP}"
BIN="$LLAMA_CPP_DIR/build/bin"

if [[ -z "${ALIGNCTL:-}" ]]; then
    for c in /var/cache/alignd/build/release/alignctl "$REPO/.build/release/alignctl"; do
        if [[ -x "$c" ]]; then ALIGNCTL="$c"; break; fi
    done
fi
ALIGNCTL="${ALIGNCTL:-}"

log() { printf '[engine-bench] %s\n' "$*" >&2; }
[[ -f "$MODEL" ]] || { log "model not found: $MODEL (run scripts/fetch-models.sh)"; exit 1; }
mkdir -p "$BENCH_OUT"
log "raw outputs in $BENCH_OUT"

run() { nice -n "$NICE" "$@"; }

QUIET_MAX="${QUIET_MAX:-0.15}"
QUIET_TIMEOUT="${QUIET_TIMEOUT:-1800}"
cpu_busy() {  # fraction of all CPUs busy over 3 s, from /proc/stat
    local a b
    a=($(head -n1 /proc/stat)); sleep 3; b=($(head -n1 /proc/stat))
    python3 -c 'import sys
a=list(map(int,sys.argv[1].split())); b=list(map(int,sys.argv[2].split()))
d=[y-x for x,y in zip(a,b)]; idle=d[3]+d[4]; tot=sum(d[:8])
print(f"{1-idle/max(tot,1):.2f}")' "${a[*]:1}" "${b[*]:1}"
}
# wait_quiet NAME: wait for a quiet machine, then record the CPU use seen just before measuring.
wait_quiet() {
    local name="$1" start=$SECONDS busy
    while :; do
        busy="$(cpu_busy)"
        if python3 -c "import sys; sys.exit(0 if float('$busy') <= float('$QUIET_MAX') else 1)"; then break; fi
        if (( SECONDS - start >= QUIET_TIMEOUT )); then
            log "machine still busy ($busy) after ${QUIET_TIMEOUT}s: measuring $name anyway"; break
        fi
        log "machine busy ($busy > $QUIET_MAX), waiting before $name"
        sleep 20
    done
    echo "$busy $(cut -d' ' -f1-3 /proc/loadavg) waited=$((SECONDS - start))s" >"$BENCH_OUT/quiet-$name.txt"
}

# --- llama.cpp side ---------------------------------------------------------------------------
CMD_LLAMA_BENCH=("$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p "$PP" -n "$TG" -r "$LLAMA_REPS" -o json)
CMD_BATCHED=("$BIN/llama-batched-bench" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -c $((NPL * (PP + TG)))
             -b 2048 -ub 512 -npp "$(IFS=,; echo "${NPP_LIST[*]}")" -ntg "$TG" -npl "$NPL" --output-format jsonl)
if [[ "${SKIP_LLAMA:-0}" == "1" ]]; then
    cp "${REUSE_LLAMA_JSON:?set REUSE_LLAMA_JSON to a previous llama.json}" "$BENCH_OUT/llama.json"
else
    "$HERE/build-llama-cpp.sh"
    log "llama-bench pp$PP tg$TG x$LLAMA_REPS"
    wait_quiet llama-bench
    run "${CMD_LLAMA_BENCH[@]}" >"$BENCH_OUT/llama-bench.json" 2>"$BENCH_OUT/llama-bench.stderr"
    for i in $(seq 1 "$BATCHED_RUNS"); do
        log "llama-batched-bench npl$NPL run $i/$BATCHED_RUNS"
        wait_quiet "batched-$i"
        run "${CMD_BATCHED[@]}" >"$BENCH_OUT/batched-$i.jsonl" 2>"$BENCH_OUT/batched-$i.stderr"
    done
    python3 - "$BENCH_OUT" "$BATCHED_RUNS" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1]); runs = int(sys.argv[2])
tests = json.loads((out / "llama-bench.json").read_text())
res = {}
for t in tests:
    kind = "prefill" if t["n_gen"] == 0 else "decode"
    res[kind + "_samples"] = t["samples_ts"]
    res[kind + "_tok_s"] = statistics.median(t["samples_ts"])
    res.setdefault("build_commit", t.get("build_commit"))
    res.setdefault("build_number", t.get("build_number"))
    res.setdefault("cpu_info", t.get("cpu_info"))
    res.setdefault("backends", t.get("backends"))
    res.setdefault("flash_attn", t.get("flash_attn"))
    res.setdefault("model_type", t.get("model_type"))
samples = {}
for i in range(1, runs + 1):
    for line in (out / f"batched-{i}.jsonl").read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            samples.setdefault(str(row["pp"]), []).append(row["speed_tg"])
res["batched_decode_samples"] = samples
res["batched_decode_tok_s"] = {pp: statistics.median(v) for pp, v in samples.items()}
(out / "llama.json").write_text(json.dumps(res, indent=1))
PY
fi

# --- alignd side ------------------------------------------------------------------------------
CMD_ENGINE=("$ALIGNCTL" bench --model "$MODEL" --threads "$THREADS" --json --prompt-tokens "$PP"
            --gen-tokens "$TG" --batch "$NPL" --batch-prompt-tokens "$PP" --runs "$ENGINE_RUNS" --roofs)
CMD_ENGINE_NPP16=("$ALIGNCTL" bench --model "$MODEL" --threads "$THREADS" --json --prompt-tokens "$PP"
            --gen-tokens "$TG" --batch "$NPL" --batch-prompt-tokens 16 --runs "$ENGINE_RUNS")
ENGINE_STATUS="not run"
if [[ -n "$ALIGNCTL" && -x "$ALIGNCTL" ]]; then
    log "alignctl bench"
    wait_quiet engine
    if run "${CMD_ENGINE[@]}" >"$BENCH_OUT/engine.json" 2>"$BENCH_OUT/engine.stderr" \
            && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$BENCH_OUT/engine.json" 2>/dev/null \
            && { wait_quiet engine-npp16; run "${CMD_ENGINE_NPP16[@]}" >"$BENCH_OUT/engine-npp16.json" 2>>"$BENCH_OUT/engine.stderr"; } \
            && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$BENCH_OUT/engine-npp16.json" 2>/dev/null; then
        ENGINE_STATUS="ok"
    else
        ENGINE_STATUS="failed"
        log "alignctl bench failed; see $BENCH_OUT/engine.stderr"
    fi
else
    log "ALIGNCTL not built: engine side recorded as 'not run'"
fi

# --- RESULTS.md -------------------------------------------------------------------------------
printf '%q ' "${CMD_LLAMA_BENCH[@]}" >"$BENCH_OUT/cmd-llama-bench.txt"
printf '%q ' "${CMD_BATCHED[@]}" >"$BENCH_OUT/cmd-batched.txt"
printf '%q ' "${CMD_ENGINE[@]}" >"$BENCH_OUT/cmd-engine.txt"
printf '%q ' "${CMD_ENGINE_NPP16[@]}" >"$BENCH_OUT/cmd-engine-npp16.txt"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then COMMIT="$COMMIT (tree NOT clean)"; fi
export COMMIT
python3 - "$BENCH_OUT" "$ENGINE_STATUS" "$REPO" "$MODEL" "$THREADS" "$LLAMA_CPP_DIR" "$NICE" \
    >"$BENCH_OUT/engine-section.md" <<'PY'
import json, os, pathlib, platform, re, subprocess, sys, datetime
out, engine_status, repo, model, threads, llama_dir, niceness = sys.argv[1:8]
out = pathlib.Path(out)
L = json.loads((out / "llama.json").read_text())
E = json.loads((out / "engine.json").read_text()) if engine_status == "ok" else None

cpu = "unknown"
flags = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("model name") and cpu == "unknown":
        cpu = line.split(":", 1)[1].strip()
    if line.startswith("flags") and not flags:
        fl = line.split(":", 1)[1].split()
        flags = " ".join(f for f in fl if re.match(r"(avx|fma|f16c|amx)", f))
mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
def quiet(name):
    p = out / f"quiet-{name}.txt"
    if not p.exists(): return "n/a"
    busy, l1, l5, l15, waited = p.read_text().split()
    return f"CPU busy {float(busy):.0%}, load {l1}, {waited}"
def rel(p): 
    try: return os.path.relpath(p, repo)
    except ValueError: return p
def cmd(name):
    s = (out / name).read_text().strip()
    return s.replace(repo + "/", "").replace(llama_dir, "$LLAMA_CPP_DIR")

E16 = json.loads((out / "engine-npp16.json").read_text()) if engine_status == "ok" else None
lb = L["batched_decode_tok_s"]
# (label, llama.cpp figure, alignd figure, roof or None, target ratio from issue 17)
rows = [
    ("Prefill, 128-token prompt (tok/s)", L["prefill_tok_s"], E and E["prefill_tok_s"],
     E and E.get("compute_roof_tok_s"), 1.8),
    ("Decode, batch 1 (tok/s)", L["decode_tok_s"], E and E["decode_tok_s"], E and E.get("decode_roof_tok_s"), 1.5),
    ("Aggregate decode, 32 sequences, 128-token prompts (tok/s)", lb["128"], E and E["batched_decode_tok_s"],
     E and E.get("compute_roof_tok_s"), 2.0),
    ("Aggregate decode, 32 sequences, 16-token prompts (tok/s)", lb["16"], E16 and E16["batched_decode_tok_s"],
     E and E.get("compute_roof_tok_s"), None),
]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
p = print
p("<!-- engine-bench:start -->")
p("# Engine benchmark: alignd vs llama.cpp")
p()
p(f"Generated by `Benchmarks/run-engine-bench.sh` on {now} at commit `{os.environ.get('COMMIT', 'unknown')}`. "
  f"Raw outputs: `{out}` (not committed).")
p()
p("## Machine and setup")
p()
p(f"- CPU: {cpu}, {os.cpu_count()} cores visible; flags: {flags}; RAM {mem_kb / 1048576:.1f} GiB; "
  f"{platform.system()} {platform.release()}")
p(f"- Model: `{rel(model)}` (SmolLM2-135M-Instruct, Q4_1 matrices, Q8_0 embeddings), {threads} threads on both sides")
p(f"- Peer: llama.cpp vendored in the PyPI sdist llama-cpp-python==0.3.36 (build_commit `{L.get('build_commit')}`, "
  f"build_number {L.get('build_number')}), Release, CPU backend `{L.get('backends')}`, GGML_NATIVE, OpenMP, "
  f"built by `Benchmarks/build-llama-cpp.sh`; llama-bench flash_attn={L.get('flash_attn')}")
batched_q = "; ".join(f"run {i}: " + quiet(f"batched-{i}") for i in range(1, len(L["batched_decode_samples"]["128"]) + 1))
p(f"- Machine state just before each measurement (whole-machine CPU use over 3 s, 1-min load, time waited for "
  f"quiet): llama-bench {quiet('llama-bench')}; batched {batched_q}; alignd {quiet('engine')}, npp 16 {quiet('engine-npp16')}. "
  f"llama.cpp's spinning threads lose ~10x when a core is taken, so only figures measured on a quiet machine "
  f"mean anything. Niceness of measured processes: {niceness}.")
err = (out / "engine.stderr").read_text().strip().splitlines()[:1] if (out / "engine.stderr").exists() else []
p(f"- alignd engine: {'measured' if E else engine_status}" + (f" (`{err[0]}`)" if not E and err else ""))
if E and "read_gb_s" in E:
    p(f"- Roofs, measured by `alignctl bench --roofs` in the alignd run: read bandwidth {E['read_gb_s']:.1f} GB/s on "
      f"{threads} threads ({E['read_gb_s_1_thread']:.1f} GB/s on one; a 1 GiB buffer, far larger than the L3) → "
      f"**decode roof {E['decode_roof_tok_s']:.0f} tok/s** for {E['weight_bytes_per_token'] / 1e6:.1f} MB of weights "
      f"read per token; int8 multiply-add peak {E.get('int8_gmacs', 0):.1f} GMAC/s (the AVX2 maddubs/madd mix the "
      f"engine's kernels use; f32 FMA {E.get('f32_gmacs', 0):.1f} GMAC/s; the faster of the two counts) → **compute roof "
      f"{E.get('compute_roof_tok_s', 0):.0f} tok/s** for {E['matrix_parameters'] / 1e6:.1f} M matrix weights "
      f"(one multiply-add per weight per token; attention's own products left out).")
p()
p("## Results (medians)")
p()
p("| Metric | llama.cpp | alignd | alignd / llama.cpp | target | met? | roof | llama.cpp share of roof | alignd share of roof |")
p("|---|---:|---:|---:|---:|---|---:|---:|---:|")
for label, lv, ev, roof, target in rows:
    roof_cell = f"{roof:.0f}" if roof else "—"
    lshare = f"{lv / roof:.0%}" if roof else "—"
    if isinstance(ev, (int, float)):
        ratio = ev / lv
        met = "—" if target is None else ("yes" if ratio >= target else "**no**")
        tcell = "—" if target is None else f"≥ {target}×"
        eshare = f"{ev / roof:.0%}" if roof else "—"
        p(f"| {label} | {lv:.1f} | {ev:.1f} | {ratio:.2f}× | {tcell} | {met} | {roof_cell} | {lshare} | {eshare} |")
    else:
        p(f"| {label} | {lv:.1f} | {engine_status} | — | — | not measured | {roof_cell} | {lshare} | — |")
p()
p("Per-run samples (tok/s): "
  f"llama.cpp pp128 {[round(x, 1) for x in L['prefill_samples']]}; "
  f"tg64 {[round(x, 1) for x in L['decode_samples']]}; "
  + "; ".join(f"npl32 npp{pp} S_TG {[round(x, 1) for x in v]}" for pp, v in L['batched_decode_samples'].items()) + ".")
if E:
    p(f"alignd JSON: `{json.dumps(E, sort_keys=True)}`; npp 16: `{json.dumps(E16, sort_keys=True)}`.")
p()
p("Definitions: prefill = 128 prompt tokens in one forward, tokens/s; decode = batch-1 generation of 64 tokens "
  "starting from an empty context on both sides (one token per forward call, the KV cache growing to 64); aggregate decode = 32 sequences, each with its own "
  "16- or 128-token prompt (the same on both sides), advanced together one token per step for 64 steps, total generated tokens / decode time "
  "(llama-batched-bench S_TG, prompt time excluded). Targets are issue 17's.")
p()
p("## Commands")
p()
p("```sh")
p("Benchmarks/run-engine-bench.sh    # the whole measurement, one command")
p(cmd("cmd-llama-bench.txt"))
p(cmd("cmd-batched.txt") + f"   # x{len(L['batched_decode_samples']['128'])} runs")
if engine_status != "not run":
    p(cmd("cmd-engine-npp16.txt"))
p(cmd("cmd-engine.txt") if engine_status != "not run" else
  "$ALIGNCTL bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2 --json --prompt-tokens 128 "
  "--gen-tokens 64 --batch 32 --runs 3   # not run: alignctl not built yet")
p("```")
p("<!-- engine-bench:end -->")
PY
# Merge: RESULTS.md is shared with other benchmark scripts, each owning a block between
# <!-- NAME:start --> and <!-- NAME:end -->. Replace only the engine-bench block; keep the others.
python3 - "$HERE/RESULTS.md" "$BENCH_OUT/engine-section.md" <<'PY'
import pathlib, re, sys
results, section = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text().rstrip("\n")
old = results.read_text() if results.exists() else ""
pat = re.compile(r"<!-- engine-bench:start -->.*?<!-- engine-bench:end -->", re.S)
if pat.search(old):
    new = pat.sub(lambda _: section, old, count=1)
else:
    # Older files (before the markers) held only this script's output: keep other scripts' blocks.
    blocks = [m.group(0) for m in re.finditer(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", old, re.S)]
    new = "\n\n".join([section] + blocks)
results.write_text(new.rstrip("\n") + "\n")
PY
log "wrote $HERE/RESULTS.md (engine-bench block)"
sed -n '/<!-- engine-bench:start -->/,/<!-- engine-bench:end -->/p' "$HERE/RESULTS.md"
