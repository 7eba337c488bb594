#!/usr/bin/env bash
# Installs what alignd needs on a Debian 12 machine with Swift 6.3.1, idempotently:
# system packages (only the missing ones) and the default model (scripts/fetch-models.sh).
#   scripts/setup.sh          what serving needs
#   scripts/setup.sh --test   also what the tests need
#   scripts/setup.sh --bench  also what the benchmarks need (Benchmarks/*.sh call it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(libopenblas-dev libsqlite3-dev)
if [[ "${1:-}" == "--test" || "${1:-}" == "--bench" ]]; then
  # protoc: the generated-code drift check; curl (built with nghttp2): the HTTP gateway tests,
  # HTTP/2 with prior knowledge included; binutils (objdump): scripts/check-baseline-code.sh;
  # qemu-user: scripts/check-other-cpus.sh runs alignctl on an emulated CPU without AVX.
  packages+=(protobuf-compiler curl binutils qemu-user)
fi
if [[ "${1:-}" == "--bench" ]]; then
  # cmake and g++: the llama.cpp peer (Benchmarks/build-llama-cpp.sh); h2load: the load benchmarks.
  packages+=(cmake g++ nghttp2-client)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if (( ${#missing[@]} > 0 )); then
  echo "installing system packages: ${missing[*]}" >&2
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

command -v swift >/dev/null || { echo "error: swift is not on PATH (Swift 6.3.1 is required)" >&2; exit 1; }
"$ROOT/scripts/fetch-models.sh"
# The sentence encoder of the trained reward model and safety classifiers (all-MiniLM-L6-v2).
"$ROOT/scripts/fetch-encoder.sh"
# The trained default reward model and safety classifier (committed under Models/).
"$ROOT/scripts/install-judges.sh"
# The offensive-language classifier (alt-profanity-check's linear model, converted once).
"$ROOT/scripts/fetch-safety-model.sh"
# The ported classifiers (tox-block's Jigsaw BiLSTM, hatesonar's TF-IDF model), converted once.
"$ROOT/scripts/fetch-safety-ports.sh"
