#!/usr/bin/env bash
# Sets up what is missing, builds once (release, tests included) and runs every test:
# the generated-code drift check, the deployment files check, the check that only the AVX2 kernel
# module holds AVX code and a run on an emulated CPU without AVX, the Swift test suites (unit and end-to-end against the real alignd binary;
# KernelDispatchTests runs every kernel set this CPU supports), then the quick reliability and
# security scenarios.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${ALIGND_BUILD_DIR:-$ROOT/.build}"
"$ROOT/scripts/setup.sh" --test

echo "== generated code drift check" >&2
"$ROOT/scripts/generate-code.sh" --check

echo "== deployment files (offline)" >&2
"$ROOT/scripts/validate-deploy.sh"

echo "== Python clients for the tests" >&2
# The openai client, prometheus_client and grpcio in a pinned venv; tests run it as ALIGND_TEST_PYTHON.
ALIGND_TEST_PYTHON="$("$ROOT/scripts/test-python-env.sh")"
export ALIGND_TEST_PYTHON

echo "== training-export read-back checker on its examples (Hugging Face datasets)" >&2
# The end-to-end tests read the server's exports back with Tests/Clients/export_readback.py; this
# checks the checker itself: valid examples pass, each invalid one is refused.
"$ROOT/Tests/Clients/check_export_readback.sh" "$ALIGND_TEST_PYTHON"

echo "== build" >&2
"$ROOT/scripts/build.sh" >/dev/null

echo "== one binary for every x86-64 CPU: AVX instructions only in the AVX2 kernel module" >&2
"$ROOT/scripts/check-baseline-code.sh" "$BUILD_DIR/release/alignd" "$BUILD_DIR/release/alignctl"
echo "== the same binary on an emulated CPU without AVX (qemu): SSE2 kernels, the same tokens" >&2
"$ROOT/scripts/check-other-cpus.sh" "$BUILD_DIR/release/alignctl"

echo "== PostgreSQL for the store tests" >&2
# Installs postgresql if missing and runs a throwaway server as the postgres user; exports
# ALIGND_TEST_POSTGRES_URL.
eval "$("$ROOT/scripts/start-test-postgres.sh")"

echo "== tests" >&2
cd "$ROOT"
# At most two tests at a time: most start an alignd whose engine keeps both cores busy, and with
# Swift Testing's default width the load average reached 12 on two cores, where timing-bound
# checks (deadlines, priorities, TLS refusals) failed. Measured here: width 2 ran the whole suite
# in 381 s at load ≤ 6.5, width 4 in 351 s at load 12 — the wall time is held by the longest
# serialized suites, not by the width.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH="${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-2}"
swift test -c release --skip-build --package-path "$ROOT" --scratch-path "$BUILD_DIR" "$@"

echo "== float products on OpenBLAS's AVX2 kernels (what an AVX2-only CPU runs)" >&2
# OpenBLAS picks its sgemm kernels by CPU; on an AVX-512 machine these suites would otherwise never
# meet the Haswell kernels, whose rounding depends on a row's place in the batch.
OPENBLAS_CORETYPE=Haswell swift test -c release --skip-build --package-path "$ROOT" --scratch-path "$BUILD_DIR" \
  --filter 'RewardSequenceClassificationTests|SentenceEncoderTests|EmbeddingHeadTests'

echo "== reliability and security scenarios (quick variants)" >&2
# Overload, drain, swaps under load, SIGKILL/PostgreSQL faults and the security matrix against the
# real binary (Tests/Reliability; full sizes and figures: Docs/RELIABILITY.md).
ALIGND_BIN_DIR="$BUILD_DIR/release" "$ROOT/Tests/Reliability/run.sh" --quick
