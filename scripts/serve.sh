#!/usr/bin/env bash
# Sets up what is missing, builds, and serves the default models on 127.0.0.1:50051.
# Extra arguments go to `alignd serve` (see `alignd serve --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
BIN="$("$ROOT/scripts/build.sh")"
cd "$ROOT"
exec "$BIN/alignd" serve "$@"
