#!/usr/bin/env bash
# Checks the engine's integer kernels that the main build does not compile: the main package builds
# AlignEngine with ALIGN_AVX2 and -target-cpu haswell, so only the AVX2 kernels are ever tested
# there. This builds the engine and its tests (Tests/KernelFallbacks, a package of its own that
# symlinks the main sources, tests and fixtures) twice without the AVX2 settings:
#
#   sse2      no defines: the SSE2 kernels, the x86-64 baseline
#   portable  -DALIGN_PORTABLE_KERNELS: the portable Swift kernels (what non-x86 CPUs run)
#
# and runs the kernel-relevant engine suites on each (dequantization, model logits, batching and
# batch invariance, SmolLM2 smoke, llama.cpp agreement). The suites compare against references
# within tolerances, so in addition kernel-digest prints digests of the exact bits the row kernels
# give (random Q4_0/Q4_1/Q8_0 matrices, batches of 1…21 tokens, SmolLM2 logits when
# models/ has it) in each build and in a third, kernel-digest-only build with the main package's
# AVX2 settings; every line must equal the AVX2 one (the engine promises the same bits on every path).
#
#   scripts/test-kernel-fallbacks.sh [--quick]
#
#   --quick   leave out the llama.cpp agreement suite (30-50 s per kernel set, nearly all of the
#             suites' time; the SmolLM2 logits digest still has to equal the AVX2 bits, and the main
#             build's tests run that suite on the AVX2 kernels).
#
# x86-64 with AVX2 only (like the main build): the reference digests come from the AVX2 kernels.
#
# Scratch folders (outside the clone, so later runs are incremental): sse2/, portable/ and avx2/
# under ${ALIGND_FALLBACK_BUILD_DIR:-${ALIGND_CACHE_DIR:-<repo>/.build-cache}/build-fallback}; one
# per kernel set because the defines differ (sharing one folder would rebuild the engine each time).
# Exits 1 if a build, a suite or a digest comparison fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="$ROOT/Tests/KernelFallbacks"
BASE="${ALIGND_FALLBACK_BUILD_DIR:-${ALIGND_CACHE_DIR:-$ROOT/.build-cache}/build-fallback}"
MODEL="${ALIGND_MODELS_DIR:-$ROOT/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
SUITES='QuantTests|ModelLogitsTests|BatchingTests|SmolLM2SmokeTests|LlamaCppAgreementTests'
case "${1:-}" in
  "") ;;
  --quick) SUITES='QuantTests|ModelLogitsTests|BatchingTests|SmolLM2SmokeTests' ;;
  -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
  *) echo "test-kernel-fallbacks.sh: unknown argument $1 (--quick)" >&2; exit 2 ;;
esac
[[ "$(uname -m)" == x86_64 ]] || { echo "test-kernel-fallbacks.sh: needs an x86-64 (AVX2) machine" >&2; exit 2; }
mkdir -p "$BASE" || { echo "test-kernel-fallbacks.sh: cannot create $BASE (set ALIGND_FALLBACK_BUILD_DIR)" >&2; exit 2; }
[[ -f "$MODEL" ]] || echo "note: $MODEL is missing (scripts/fetch-models.sh): SmolLM2 cases are skipped" >&2

# kernel set -> swiftc flags; avx2 mirrors the AlignEngine settings of the main Package.swift.
flags() {
  case "$1" in
    sse2) ;;
    portable) echo "-Xswiftc -DALIGN_PORTABLE_KERNELS" ;;
    avx2) echo "-Xswiftc -DALIGN_AVX2 -Xswiftc -target-cpu -Xswiftc haswell" ;;
  esac
}

build() {  # kernel set, extra swift build arguments...
  local k="$1" start
  shift
  start=$(date +%s)
  # shellcheck disable=SC2046  # flags() is a list of arguments
  swift build -c release --package-path "$PKG" --scratch-path "$BASE/$k" $(flags "$k") "$@" >&2
  echo "   built in $(( $(date +%s) - start )) s" >&2
}

digest() {  # kernel set -> digest file
  "$BASE/$1/release/kernel-digest" "$MODEL" >"$BASE/$1.digest"
}

FAILED=0
echo "== AVX2 reference digests ($BASE/avx2)" >&2
build avx2 --product kernel-digest
digest avx2

for k in sse2 portable; do
  echo "== $k: build engine and tests ($BASE/$k)" >&2
  build "$k" --build-tests
  echo "== $k: kernel digests against AVX2" >&2
  if ! digest "$k"; then
    FAILED=1
  elif ! diff "$BASE/avx2.digest" "$BASE/$k.digest" >&2; then
    echo "   $k kernels give other bits than the AVX2 ones (lines above: < avx2, > $k)" >&2
    FAILED=1
  else
    echo "   $(wc -l <"$BASE/$k.digest") digests equal" >&2
  fi
  echo "== $k: engine suites" >&2
  # shellcheck disable=SC2046
  if ! swift test -c release --skip-build --package-path "$PKG" --scratch-path "$BASE/$k" $(flags "$k") \
    --filter "$SUITES"; then
    FAILED=1
  fi
done

if [[ $FAILED == 0 ]]; then echo "== SSE2 and portable kernels: suites pass, bits equal AVX2" >&2; fi
exit $FAILED
