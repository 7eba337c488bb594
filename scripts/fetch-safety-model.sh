#!/usr/bin/env bash
# Fetch the trained offensive-language classifier shipped in the PyPI package
# alt-profanity-check and convert it (scripts/convert-profanity-model.py) into one plain JSON
# file in the git-ignored models folder, read by AlignServing's LexicalClassifier.
# Idempotent: does nothing when the file is present with the checksum in scripts/models.lock.
#
# The conversion runs in a venv of its own, created once:
#   ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/venv-safety
# holding the pinned alt-profanity-check wheel (sha256-checked) and scikit-learn. The same venv
# runs Tests/Fixtures/safety/make_lexical_fixtures.py. Never touches a model hub.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${ALIGND_MODELS_DIR:-$ROOT/models}"
CACHE_DIR="${ALIGND_CACHE_DIR:-$ROOT/.build-cache}"
VENV="$CACHE_DIR/venv-safety"
LOCK="$ROOT/scripts/models.lock"

lock() { sed -n "s/^$1=//p" "$LOCK"; }
PACKAGE="$(lock safety_lexical_package)"            # alt-profanity-check==1.9.1
WHEEL_SHA256="$(lock safety_lexical_wheel_sha256)"
REQUIREMENTS="$(lock safety_lexical_requirements)"  # scikit-learn==... and its dependencies
OUTPUT_SHA256="$(lock safety_lexical_sha256)"
OUTPUT_NAME="$(lock safety_lexical_file)"
[[ -n "$PACKAGE" && -n "$WHEEL_SHA256" && -n "$OUTPUT_SHA256" && -n "$OUTPUT_NAME" ]] \
  || { echo "error: safety_lexical_* entries missing from $LOCK" >&2; exit 1; }

mkdir -p "$MODELS_DIR"
target="$MODELS_DIR/$OUTPUT_NAME"
if [[ -f "$target" ]] && echo "$OUTPUT_SHA256  $target" | sha256sum --check --status; then
  exit 0
fi

# Python 3.11 or newer (the package's floor). Debian 12's python3 is 3.11; prefer an explicit
# python3.11 so the Unicode tables recorded in the output (Unicode 14.0) match the lock.
PYTHON="${ALIGND_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if command -v python3.11 >/dev/null; then PYTHON=python3.11; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "error: $PYTHON is older than 3.11 (alt-profanity-check needs >= 3.11)" >&2; exit 1; }

venv_ready() {
  [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - "$PACKAGE" <<'PY' 2>/dev/null
import sys
from importlib import metadata
name, version = sys.argv[1].split("==")
sys.exit(0 if metadata.version(name) == version else 1)
PY
}

if ! venv_ready; then
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv support separately.
    echo "installing python3-venv" >&2
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  echo "creating $VENV with $PACKAGE ..." >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  "$PYTHON" -m venv "$VENV"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$PACKAGE"
  wheel="$(ls "$tmp"/*.whl)"
  echo "$WHEEL_SHA256  $wheel" | sha256sum --check --status \
    || { echo "error: checksum mismatch for $wheel" >&2; exit 1; }
  # shellcheck disable=SC2086 # REQUIREMENTS is a space-separated list of pins
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    "$wheel" $REQUIREMENTS
  venv_ready || { echo "error: $PACKAGE did not install into $VENV" >&2; exit 1; }
fi

"$VENV/bin/python" "$ROOT/scripts/convert-profanity-model.py" "$target.partial"
if ! echo "$OUTPUT_SHA256  $target.partial" | sha256sum --check --status; then
  echo "error: the converted file's sha256 $(sha256sum "$target.partial" | cut -d' ' -f1)" \
    "differs from safety_lexical_sha256 in $LOCK (a different Python/Unicode version or" \
    "package build?); left it at $target.partial" >&2
  exit 1
fi
mv "$target.partial" "$target"
echo "safety classifier ready: $target" >&2
