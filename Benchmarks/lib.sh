# Shared by the Benchmarks/run-*-bench.sh scripts: sourced, not run.
#
# Set BENCH_TAG (the log prefix) before sourcing. Provides:
#   log MSG...              a tagged line on stderr
#   SERVER_PID, stop_server stop the server this script started (TERM, then KILL after 10 s)
#   bench_traps DIR         on exit: stop the server and remove the scratch folder DIR
#   free_port               a free loopback TCP port
#   cpu_busy, wait_quiet L  machine CPU use over 3 s; wait up to QUIET_TIMEOUT s (default 120) for
#                           it to fall below QUIET_MAX (default 0.25), then go on (L names the step)
#   bench_venv VENV IMPORTS PACKAGES...  a Python venv whose python can run `import IMPORTS`,
#                           created idempotently; sets PY
#   bench_stubs DIR         Python gRPC stubs of Schemas/alignd/v1 in DIR (needs PY with grpc_tools)
#   wait_until PID SECONDS CMD...  run CMD (in this shell) every 0.5 s until it succeeds; fails if
#                           PID exits or SECONDS pass
#   grpc_serving PORT       one grpc.health.v1 check: SERVING on 127.0.0.1:PORT (needs PY with grpc_health)
#   wait_grpc_serving PORT PID SECONDS   grpc_serving PORT, retried; fails if PID exits or SECONDS pass
#   http_ok URL             one GET of URL answers 2xx
#   wait_http_ok URL PID SECONDS  http_ok URL, retried; fails if PID exits or SECONDS pass
#   machine_description     CPU, cores, RAM, OS and kernel on one line
#   rel PATH                PATH relative to the repository (REPO must be set)
#   show_section FILE       log that FILE's BENCH_TAG section (<!-- BENCH_TAG:start/end -->) was
#                           written and print it on stdout

log() { printf '[%s] %s\n' "${BENCH_TAG:-bench}" "$*" >&2; }

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

bench_traps() {
    BENCH_SCRATCH="$1"
    trap 'stop_server; rm -rf "$BENCH_SCRATCH"' EXIT
    trap 'exit 130' INT TERM
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cpu_busy() {  # fraction of all CPUs busy over 3 s
    local a b
    a=($(head -n1 /proc/stat)); sleep 3; b=($(head -n1 /proc/stat))
    python3 -c 'import sys
a=list(map(int,sys.argv[1].split())); b=list(map(int,sys.argv[2].split()))
d=[y-x for x,y in zip(a,b)]; print(f"{1-(d[3]+d[4])/max(sum(d),1):.2f}")' "${a[*]:1:8}" "${b[*]:1:8}"
}

wait_quiet() {
    local start=$SECONDS busy
    while :; do
        busy="$(cpu_busy)"
        if python3 -c "import sys; sys.exit(0 if $busy < ${QUIET_MAX:-0.25} else 1)"; then
            log "$1: machine CPU use $busy"; return 0
        fi
        if (( SECONDS - start >= ${QUIET_TIMEOUT:-120} )); then
            log "$1: machine still busy ($busy) after ${QUIET_TIMEOUT:-120}s, measuring anyway"; return 0
        fi
        sleep 5
    done
}

bench_venv() {
    local venv="$1" imports="$2"; shift 2
    PY="$venv/bin/python"
    if ! "$PY" -c "import $imports" 2>/dev/null; then
        log "creating venv $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "$@"
    fi
}

bench_stubs() {  # not named "grpc": a local grpc package would shadow grpcio
    mkdir -p "$1"
    "$PY" -m grpc_tools.protoc -I "$REPO/Schemas" --python_out="$1" --grpc_python_out="$1" \
        "$REPO"/Schemas/alignd/v1/*.proto
}

wait_until() {
    local pid="$1" seconds="$2"; shift 2
    for _ in $(seq 1 $(( seconds * 2 ))); do
        kill -0 "$pid" 2>/dev/null || return 1
        "$@" && return 0
        sleep 0.5
    done
    return 1
}

grpc_serving() {
    "$PY" - "$1" <<'PY' 2>/dev/null
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}")
r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
sys.exit(0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1)
PY
}

wait_grpc_serving() { wait_until "$2" "$3" grpc_serving "$1"; }

http_ok() { curl -sf "$1" >/dev/null 2>&1; }

wait_http_ok() { wait_until "$2" "$3" http_ok "$1"; }

# The short commit of $REPO's HEAD, with " (work tree dirty)" when tracked files have changes.
commit_description() {
    local commit
    commit="$(git -C "$REPO" rev-parse --short HEAD)"
    [[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]] || commit="$commit (work tree dirty)"
    echo "$commit"
}

machine_description() {
    local cpu mem flags
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    mem="$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
    # The SIMD flags that pick kernels (ours and llama.cpp's): AVX2-only and AVX-512 machines differ.
    flags="$(sed -n 's/^flags[[:space:]]*: //p' /proc/cpuinfo | head -1 | tr ' ' '\n' \
        | grep -xE 'sse4_2|fma|f16c|avx|avx2|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx_vnni' | tr '\n' ' ')"
    echo "$cpu, $(nproc) cores visible, SIMD flags: ${flags% }, RAM $mem GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), Linux $(uname -r)"
}

rel() { local p="$1"; echo "${p#"$REPO"/}"; }

show_section() {
    log "wrote the $BENCH_TAG section of $1"
    sed -n "/<!-- $BENCH_TAG:start -->/,/<!-- $BENCH_TAG:end -->/p" "$1"
}
