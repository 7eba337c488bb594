# Sourced by scripts that need a Python venv of pinned PyPI packages (scripts/validate-deploy.sh,
# scripts/test-python-env.sh).
#
# ensure_pinned_venv VENV PACKAGE==VERSION...
#   Creates VENV with exactly these packages (installed with --no-deps, so the venv is the same
#   everywhere), unless it already holds them; re-creates it when the pins change. Installs
#   Debian's python3-venv first if the interpreter lacks it. All output goes to stderr.
ensure_pinned_venv() {
  local venv="$1"
  shift
  local stamp="$venv/.requirements"
  if [[ -x "$venv/bin/python" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$*" ]]; then
    return 0
  fi
  local python="${ALIGND_PYTHON:-python3}"
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || { echo "error: $python is older than 3.10" >&2; return 1; }
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv support separately.
    echo "installing python3-venv" >&2
    local sudo=""
    if [[ "$(id -u)" != "0" ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  echo "creating $venv ..." >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: "$@" >&2
  "$venv/bin/python" -m pip check --disable-pip-version-check >&2 \
    || { echo "error: the pinned packages for $venv do not fit together" >&2; return 1; }
  echo "$*" > "$stamp"
}
