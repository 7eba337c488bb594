#!/usr/bin/env bash
# Runs alignctl under qemu-user emulating an x86-64 CPU without AVX (Nehalem: SSE4.2 at most) and
# checks that the one binary (1) starts and picks its SSE2 kernels by itself, (2) refuses a forced
# AVX2 set with a clear error, and (3) generates exactly the greedy completion it generates natively
# (on this machine's own kernels, AVX2 on most): the kernel sets give the same bits.
#
#   scripts/check-other-cpus.sh ALIGNCTL [MODEL]
#
# MODEL defaults to models/SmolLM2-135M-Instruct.Q4_1.gguf. Needs qemu-x86_64 (Debian: qemu-user;
# scripts/setup.sh --test installs it). Exits 0 without checking on non-x86-64 machines.
# (qemu 7.2's emulation of AVX2 itself is not exact — a -cpu Haswell guest's greedy text drifted from
# native AVX2 hardware's after five tokens here — so only the CPU without AVX is emulated.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALIGNCTL="${1:?usage: check-other-cpus.sh ALIGNCTL [MODEL]}"
MODEL="${2:-${ALIGND_MODELS_DIR:-$ROOT/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
[[ "$(uname -m)" == x86_64 ]] || { echo "check-other-cpus.sh: not x86-64, nothing to emulate" >&2; exit 0; }
command -v qemu-x86_64 >/dev/null || { echo "check-other-cpus.sh: qemu-x86_64 missing (apt-get install qemu-user)" >&2; exit 2; }
[[ -f "$MODEL" ]] || { echo "check-other-cpus.sh: model missing: $MODEL (scripts/fetch-models.sh)" >&2; exit 2; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
CPU=Nehalem
generate() { "$@" generate --model "$MODEL" --prompt "The capital of France is" --max-tokens 8 --temperature 0 --json; }
# qemu warns about host features its TCG does not model; those lines are noise here.
emulated() { qemu-x86_64 -cpu "$CPU" "$@" 2> >(grep -v "TCG doesn't support" >&2); }

generate "$ALIGNCTL" >"$TMP/native.json"
start=$(date +%s)
if ! emulated "$ALIGNCTL" bench --model "$MODEL" --prompt-tokens 4 --gen-tokens 2 --batch 2 --batch-prompt-tokens 2 --runs 1 --json >"$TMP/bench.json"; then
  echo "check-other-cpus.sh: alignctl failed on an emulated $CPU" >&2
  exit 1
fi
if ! grep -q '"kernels" *: *"sse2"' "$TMP/bench.json"; then
  echo "check-other-cpus.sh: on an emulated $CPU the engine did not pick sse2: $(cat "$TMP/bench.json")" >&2
  exit 1
fi
if ALIGND_KERNELS=avx2 emulated "$ALIGNCTL" bench --model "$MODEL" --runs 1 >"$TMP/forced.out" 2>&1; then
  echo "check-other-cpus.sh: ALIGND_KERNELS=avx2 was accepted on an emulated $CPU" >&2
  exit 1
fi
grep -q "needs CPU features this machine lacks" "$TMP/forced.out" || {
  echo "check-other-cpus.sh: forcing avx2 on $CPU failed without the expected message: $(cat "$TMP/forced.out")" >&2
  exit 1
}
if ! emulated "$ALIGNCTL" >"$TMP/emulated.json" generate --model "$MODEL" --prompt "The capital of France is" --max-tokens 8 --temperature 0 --json; then
  echo "check-other-cpus.sh: generation failed on an emulated $CPU" >&2
  exit 1
fi
if ! cmp -s "$TMP/native.json" "$TMP/emulated.json"; then
  echo "check-other-cpus.sh: the emulated $CPU generated other tokens than this machine:" >&2
  echo "  native:   $(cat "$TMP/native.json")" >&2
  echo "  emulated: $(cat "$TMP/emulated.json")" >&2
  exit 1
fi
echo "   emulated $CPU (no AVX): sse2 kernels chosen, avx2 refused, greedy tokens equal to this machine's ($(( $(date +%s) - start )) s)" >&2
