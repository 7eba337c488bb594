#!/usr/bin/env bash
# The one build command: release configuration, tests included, one scratch folder, so serving,
# tests and benchmarks share every build product. ALIGND_BUILD_DIR moves the scratch folder
# (CI keeps it in a cache folder outside the clone so later runs are incremental).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${ALIGND_BUILD_DIR:-$ROOT/.build}"
swift build -c release --build-tests --package-path "$ROOT" --scratch-path "$BUILD_DIR" "$@" >&2
echo "$BUILD_DIR/release"
