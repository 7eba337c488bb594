#!/usr/bin/env bash
# Fetch the two trained classifiers that AlignServing ports to Swift and convert them
# (scripts/convert-safety-ports.py) into plain files in the git-ignored models folder:
#   tox-block==0.1.2  Keras BiLSTM (Jigsaw toxic comments) -> tox-block-0.1.2.safetensors
#                                                             + tox-block-0.1.2.tokenizer.json
#   hatesonar==0.1.0  ONNX TF-IDF + logistic regression    -> hatesonar-0.1.0.json
# Idempotent: does nothing when every output is present with the checksum in scripts/models.lock.
#
# The conversion runs in a venv of its own, created once:
#   ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/venv-safety-ports
# holding pinned numpy, h5py, onnx and onnxruntime (no TensorFlow: the .h5 is read with h5py).
# The wheels (sha256-checked) are kept beside it in safety-ports-wheels/. onnxruntime needs the
# en_US.UTF-8 locale: when the system lacks it, it is compiled into ${ALIGND_CACHE_DIR}/locale
# (localedef, from Debian's `locales` package) and used through LOCPATH, so the system's locale
# configuration is left alone. Never touches a model hub.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${ALIGND_MODELS_DIR:-$ROOT/models}"
CACHE_DIR="${ALIGND_CACHE_DIR:-$ROOT/.build-cache}"
VENV="$CACHE_DIR/venv-safety-ports"
WHEELS="$CACHE_DIR/safety-ports-wheels"
LOCK="$ROOT/scripts/models.lock"

lock() {
  local value
  value="$(sed -n "s/^$1=//p" "$LOCK")"
  [[ -n "$value" ]] || { echo "error: $1 missing from $LOCK" >&2; exit 1; }
  echo "$value"
}
REQUIREMENTS="$(lock safety_ports_requirements)"  # numpy, h5py, onnx, onnxruntime and their dependencies
TOXBLOCK_PACKAGE="$(lock safety_toxblock_package)"
TOXBLOCK_WHEEL_SHA256="$(lock safety_toxblock_wheel_sha256)"
TOXBLOCK_WEIGHTS="$(lock safety_toxblock_weights_file)"
TOXBLOCK_WEIGHTS_SHA256="$(lock safety_toxblock_weights_sha256)"
TOXBLOCK_TOKENIZER="$(lock safety_toxblock_tokenizer_file)"
TOXBLOCK_TOKENIZER_SHA256="$(lock safety_toxblock_tokenizer_sha256)"
HATESONAR_PACKAGE="$(lock safety_hatesonar_package)"
HATESONAR_WHEEL_SHA256="$(lock safety_hatesonar_wheel_sha256)"
HATESONAR_FILE="$(lock safety_hatesonar_file)"
HATESONAR_SHA256="$(lock safety_hatesonar_sha256)"

present() { [[ -f "$MODELS_DIR/$1" ]] && echo "$2  $MODELS_DIR/$1" | sha256sum --check --status; }
toxblock_ready() {
  present "$TOXBLOCK_WEIGHTS" "$TOXBLOCK_WEIGHTS_SHA256" && present "$TOXBLOCK_TOKENIZER" "$TOXBLOCK_TOKENIZER_SHA256"
}
hatesonar_ready() { present "$HATESONAR_FILE" "$HATESONAR_SHA256"; }
if toxblock_ready && hatesonar_ready; then
  exit 0
fi
mkdir -p "$MODELS_DIR" "$WHEELS"

# Python 3.11 (the tox-block tokenizer tables record str.lower() of this Python's Unicode 14.0).
PYTHON="${ALIGND_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if command -v python3.11 >/dev/null; then PYTHON=python3.11; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "error: $PYTHON is older than 3.11" >&2; exit 1; }

apt_install() {
  local SUDO=""
  if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >&2
}

# The venv is keyed by its requirement pins: a changed pin rebuilds it.
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]]; then
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "installing python3-venv" >&2
    apt_install python3-venv
  fi
  echo "creating $VENV ..." >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  "$PYTHON" -m venv "$VENV"
  # shellcheck disable=SC2086 # REQUIREMENTS is a space-separated list of pins
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    $REQUIREMENTS
  echo "$REQUIREMENTS" > "$VENV/.requirements"
fi

# The pinned wheel of a package, downloaded once and checked every time.
wheel() {
  local package="$1" sha256="$2" name file
  name="${package%%==*}"
  file="$(ls "$WHEELS"/"${name//-/_}"-"${package##*==}"-*.whl 2>/dev/null | head -n 1 || true)"
  if [[ -z "$file" ]]; then
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --dest "$WHEELS" "$package" >&2
    file="$(ls "$WHEELS"/"${name//-/_}"-"${package##*==}"-*.whl | head -n 1)"
  fi
  echo "$sha256  $file" | sha256sum --check --status \
    || { echo "error: checksum mismatch for $file (expected $sha256 from $LOCK)" >&2; exit 1; }
  echo "$file"
}

# Moves a converted file into place once its checksum matches the lock.
install_output() {
  local name="$1" sha256="$2" key="$3"
  if ! echo "$sha256  $MODELS_DIR/$name.partial" | sha256sum --check --status; then
    echo "error: the converted $name has sha256 $(sha256sum "$MODELS_DIR/$name.partial" | cut -d' ' -f1)," \
      "not $key in $LOCK (another Python, numpy or onnxruntime, or another package build?);" \
      "left it at $MODELS_DIR/$name.partial" >&2
    exit 1
  fi
  mv "$MODELS_DIR/$name.partial" "$MODELS_DIR/$name"
}

if ! toxblock_ready; then
  toxblock_wheel="$(wheel "$TOXBLOCK_PACKAGE" "$TOXBLOCK_WHEEL_SHA256")"
  "$VENV/bin/python" "$ROOT/scripts/convert-safety-ports.py" toxblock "$toxblock_wheel" \
    "$MODELS_DIR/$TOXBLOCK_WEIGHTS.partial" "$MODELS_DIR/$TOXBLOCK_TOKENIZER.partial"
  install_output "$TOXBLOCK_WEIGHTS" "$TOXBLOCK_WEIGHTS_SHA256" safety_toxblock_weights_sha256
  install_output "$TOXBLOCK_TOKENIZER" "$TOXBLOCK_TOKENIZER_SHA256" safety_toxblock_tokenizer_sha256
  echo "tox-block ready: $MODELS_DIR/$TOXBLOCK_WEIGHTS, $MODELS_DIR/$TOXBLOCK_TOKENIZER" >&2
fi

if ! hatesonar_ready; then
  hatesonar_wheel="$(wheel "$HATESONAR_PACKAGE" "$HATESONAR_WHEEL_SHA256")"
  # onnxruntime's StringNormalizer insists on the en_US.UTF-8 locale.
  if ! locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$'; then
    if [[ ! -f "$CACHE_DIR/locale/en_US.UTF-8/LC_CTYPE" ]]; then
      [[ -f /usr/share/i18n/locales/en_US ]] || { echo "installing locales" >&2; apt_install locales; }
      mkdir -p "$CACHE_DIR/locale"
      # localedef exits 1 when it only warns; the compiled LC_CTYPE is what counts.
      localedef -i en_US -f UTF-8 "$CACHE_DIR/locale/en_US.UTF-8" || true
      [[ -f "$CACHE_DIR/locale/en_US.UTF-8/LC_CTYPE" ]] \
        || { echo "error: could not compile the en_US.UTF-8 locale into $CACHE_DIR/locale" >&2; exit 1; }
    fi
    export LOCPATH="$CACHE_DIR/locale"
  fi
  "$VENV/bin/python" "$ROOT/scripts/convert-safety-ports.py" hatesonar "$hatesonar_wheel" \
    "$MODELS_DIR/$HATESONAR_FILE.partial"
  install_output "$HATESONAR_FILE" "$HATESONAR_SHA256" safety_hatesonar_sha256
  echo "hatesonar ready: $MODELS_DIR/$HATESONAR_FILE" >&2
fi
