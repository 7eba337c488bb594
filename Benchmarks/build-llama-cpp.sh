#!/usr/bin/env bash
# Build llama.cpp as the reference peer for alignd's engine (fixtures and benchmarks).
#
# Source: the llama.cpp tree vendored in the PyPI sdist of llama-cpp-python (pinned below),
# fetched with pip (no git, no model hub). Built with Debian's cmake, Release, CPU only
# (GGML_NATIVE, OpenMP; no BLAS, no CUDA/Vulkan/Metal, no curl/openssl, no web UI download),
# shared libraries (libllama.so, libggml*.so) so that fixture generators can link libllama.
#
# Nothing of llama.cpp is committed: everything lives in $LLAMA_CPP_DIR (default
# /var/cache/alignd/llama.cpp):
#   $LLAMA_CPP_DIR/src/llama_cpp_python-<ver>/vendor/llama.cpp   source tree
#   $LLAMA_CPP_DIR/build/bin/                                    llama-bench, llama-batched-bench,
#                                                                llama-simple, llama-tokenize,
#                                                                llama-server, llama-cli, lib*.so
#   $LLAMA_CPP_DIR/build/bin/libllama.so  (+ libggml.so, libggml-base.so, libggml-cpu.so)
#   $LLAMA_CPP_DIR/include/                                      llama.h, ggml*.h (for C programs)
#
# Idempotent: exits at once when every wanted binary already exists (set LLAMA_CPP_FORCE=1 to
# rebuild). Runs under `nice -n 10` because the 2 cores are shared with Swift builds.
#
# Environment:
#   LLAMA_CPP_DIR          cache folder (default /var/cache/alignd/llama.cpp)
#   LLAMA_CPP_PY_VERSION   llama-cpp-python sdist version (default 0.3.36)
#   LLAMA_CPP_SERVER=0     skip llama-server / llama-cli (they take most of the build time)
#   LLAMA_CPP_JOBS         parallel compile jobs (default 2)
#   LLAMA_CPP_FORCE=1      rebuild even if the binaries exist
set -euo pipefail

LLAMA_CPP_DIR="${LLAMA_CPP_DIR:-/var/cache/alignd/llama.cpp}"
PY_VERSION="${LLAMA_CPP_PY_VERSION:-0.3.36}"
# sha256 of llama_cpp_python-0.3.36.tar.gz as downloaded from PyPI on 2025-11-29.
SDIST_SHA256_0_3_36="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
JOBS="${LLAMA_CPP_JOBS:-2}"
WANT_SERVER="${LLAMA_CPP_SERVER:-1}"

SRC_PARENT="$LLAMA_CPP_DIR/src"
SRC_DIR="$SRC_PARENT/llama_cpp_python-$PY_VERSION/vendor/llama.cpp"
BUILD_DIR="$LLAMA_CPP_DIR/build"
BIN_DIR="$BUILD_DIR/bin"

core_targets=(llama llama-bench llama-batched-bench llama-simple llama-tokenize)
server_targets=(llama-server llama-cli)
core_outputs=("$BIN_DIR/libllama.so" "$BIN_DIR/llama-bench" "$BIN_DIR/llama-batched-bench" \
              "$BIN_DIR/llama-simple" "$BIN_DIR/llama-tokenize")
server_outputs=("$BIN_DIR/llama-server" "$BIN_DIR/llama-cli")

log() { printf '[build-llama-cpp] %s\n' "$*" >&2; }

all_present() {
    local f
    for f in "$@"; do [[ -x "$f" || -f "$f" ]] || return 1; done
    return 0
}

wanted_outputs=("${core_outputs[@]}")
wanted_targets=("${core_targets[@]}")
if [[ "$WANT_SERVER" == "1" ]]; then
    wanted_outputs+=("${server_outputs[@]}")
    wanted_targets+=("${server_targets[@]}")
fi

if [[ "${LLAMA_CPP_FORCE:-0}" != "1" ]] && all_present "${wanted_outputs[@]}" \
        && [[ -f "$LLAMA_CPP_DIR/include/llama.h" ]]; then
    log "already built in $BIN_DIR (set LLAMA_CPP_FORCE=1 to rebuild)"
    exit 0
fi

if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
    log "installing the build tools (scripts/setup.sh --bench)"
    "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/setup.sh" --bench >&2
fi

mkdir -p "$SRC_PARENT" "$BUILD_DIR"

# 1. Source: the sdist from PyPI, through pip (an ordinary registry client).
if [[ ! -f "$SRC_DIR/CMakeLists.txt" ]]; then
    tarball="$SRC_PARENT/llama_cpp_python-$PY_VERSION.tar.gz"
    if [[ ! -f "$tarball" ]]; then
        log "downloading llama-cpp-python==$PY_VERSION sdist from PyPI"
        # --no-binary for this package only: with :all: pip builds the sdist's build tools (ninja, cmake)
        # from source just to read its metadata, which takes many minutes.
        python3 -m pip download --quiet --no-binary llama-cpp-python --no-deps \
            "llama-cpp-python==$PY_VERSION" -d "$SRC_PARENT"
    fi
    if [[ "$PY_VERSION" == "0.3.36" ]]; then
        echo "$SDIST_SHA256_0_3_36  $tarball" | sha256sum -c --quiet - \
            || { log "checksum mismatch for $tarball"; exit 1; }
    fi
    log "unpacking $tarball"
    tar -xzf "$tarball" -C "$SRC_PARENT"
fi
[[ -f "$SRC_DIR/CMakeLists.txt" ]] || { log "no llama.cpp tree at $SRC_DIR"; exit 1; }

# 2. Configure (Release, CPU only).
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" || "${LLAMA_CPP_FORCE:-0}" == "1" ]]; then
    log "configuring in $BUILD_DIR"
    nice -n 10 cmake -S "$SRC_DIR" -B "$BUILD_DIR" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON \
        -DGGML_NATIVE=ON \
        -DGGML_OPENMP=ON \
        -DGGML_BLAS=OFF \
        -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=ON \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        >"$BUILD_DIR/configure.log" 2>&1 \
        || { tail -40 "$BUILD_DIR/configure.log" >&2; exit 1; }
fi

# 3. Build only the targets we use (core first, so fixtures/benchmarks can start early).
build_targets() {
    log "building: $* (jobs=$JOBS, nice 10)"
    local start=$SECONDS
    nice -n 10 cmake --build "$BUILD_DIR" --config Release -j "$JOBS" --target "$@" \
        >>"$BUILD_DIR/build.log" 2>&1 \
        || { tail -40 "$BUILD_DIR/build.log" >&2; exit 1; }
    log "done in $((SECONDS - start)) s"
}
all_present "${core_outputs[@]}" || build_targets "${core_targets[@]}"
if [[ "$WANT_SERVER" == "1" ]]; then
    all_present "${server_outputs[@]}" || build_targets "${server_targets[@]}"
fi

# 4. Public headers for small C programs linked against libllama.
mkdir -p "$LLAMA_CPP_DIR/include"
cp -f "$SRC_DIR/include/llama.h" "$SRC_DIR"/ggml/include/*.h "$LLAMA_CPP_DIR/include/"

# Provenance: which source was built.
{
    echo "llama-cpp-python sdist: $PY_VERSION"
    echo "source: $SRC_DIR"
    grep -m1 -o 'LLAMA_BUILD_NUMBER[^)]*' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true
    "$BIN_DIR/llama-bench" --version 2>&1 | head -n 3 || true
} >"$LLAMA_CPP_DIR/PROVENANCE.txt" 2>/dev/null
log "built into $BIN_DIR"
