#!/usr/bin/env bash
# The Python clients the tests drive alignd with, in a venv of pinned PyPI packages created once
# under ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/venv-test and re-created when the pins change:
#   openai             the official OpenAI client (HTTP gateway tests)
#   prometheus_client  the reference Prometheus text parser (/metrics tests)
#   grpcio, grpcio-tools, protobuf   gRPC clients of the reliability and security scenarios
#   datasets           Hugging Face `datasets` (its JSON loader, pyarrow underneath) reads the
#                      training exports back (Tests/Clients/export_readback.py); with pandas,
#                      numpy, huggingface_hub and the rest of its runtime dependencies
# Prints the venv's python path on stdout (scripts/test.sh exports it as ALIGND_TEST_PYTHON).
# Every dependency is pinned and installed with --no-deps, so the venv is the same everywhere.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${ALIGND_CACHE_DIR:-$ROOT/.build-cache}"
VENV="$CACHE_DIR/venv-test"

REQUIREMENTS=(
  openai==3.57.0
  annotated-types==0.8.0
  anyio==4.16.0
  h11==0.16.0
  httpcore2==2.16.2
  httpx2==2.16.2
  idna==3.20
  jiter==0.19.0
  pydantic==2.14.4
  pydantic_core==2.50.5
  sniffio==1.3.1
  truststore==0.10.5
  typing-inspection==0.4.5
  typing_extensions==4.16.0
  prometheus_client==0.26.0
  grpcio==1.85.3
  grpcio-tools==1.85.1
  protobuf==7.36.2
  setuptools==84.2.1
  datasets==5.2.0
  click==8.5.1
  dill==0.4.1
  filelock==4.3.2
  fsspec==2026.9.0
  hf-xet==1.8.0
  huggingface_hub==2.5.0
  multiprocess==0.70.19
  numpy==2.4.6
  packaging==26.4
  pandas==3.1.1
  pyarrow==26.0.1
  python-dateutil==4.0.0
  PyYAML==6.0.4
  tqdm==4.70.1
  tzdata==2026.6
  xxhash==4.1.0
)
source "$ROOT/scripts/pinned-venv.sh"
ensure_pinned_venv "$VENV" "${REQUIREMENTS[@]}"
echo "$VENV/bin/python"
