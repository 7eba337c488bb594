#!/usr/bin/env bash
# Offline validation of the Dockerfile and Deploy/ (no cluster, no Docker engine): runs
# scripts/validate_deploy.py in a venv of pinned PyPI packages, created once under
#   ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/venv-deploy
# and re-created when the pins below change.
#   kubernetes-validate  Kubernetes JSON schemas (1.25 to 1.37) shipped in the wheel
#   xds-protos           Envoy's data-plane API as generated protobuf modules
#   dockerfile           BuildKit's Dockerfile parser
# Every dependency is pinned and installed with --no-deps, so the venv is the same everywhere.
# Extra arguments go to validate_deploy.py (--deploy-dir, --dockerfile).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${ALIGND_CACHE_DIR:-$ROOT/.build-cache}"
VENV="$CACHE_DIR/venv-deploy"

REQUIREMENTS=(
  kubernetes-validate==1.37.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  attrs==26.1.0
  importlib_resources==7.1.0
  typing_extensions==4.16.0
  packaging==26.4
  PyYAML==6.0.3
  xds-protos==1.85.0
  grpcio==1.85.3
  protobuf==7.36.2
  dockerfile==3.4.0
)
source "$ROOT/scripts/pinned-venv.sh"
ensure_pinned_venv "$VENV" "${REQUIREMENTS[@]}"
exec "$VENV/bin/python" "$ROOT/scripts/validate_deploy.py" --root "$ROOT" "$@"
