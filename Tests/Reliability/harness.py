"""Shared pieces of the reliability scenarios (Tests/Reliability/scenario_*.py).

Every scenario drives the real `alignd` binary on loopback, is bounded in time and request
count, stops by itself, exits 0 on pass / 1 on fail, and writes its figures as JSON to
Tests/Reliability/results/<scenario>.json (or --out). This module gives them:

- `parser(scenario, doc)` / `parse(parser)`: the common flags --alignd, --alignctl, --quick,
  --out, --workdir, --keep-workdir, --time-limit (a hard wall-clock bound enforced by a watchdog).
- `load_stubs(folder)`: Python gRPC stubs generated at run time from Schemas/ with grpc_tools
  (alignd.v1 + grpc.health.v1), into a temporary folder, never into the repository.
- `AlignServer`: an alignd process on a free port (`serve --port 0`, the port read from the
  "alignd listening" log line), its own data folder, options passed through, log captured.
- `make_keys_file(path)`: a keys file with one admin and one infer key (format of
  Sources/AlignServer/Auth.swift), returning the plain keys.
- `RssSampler`: samples VmRSS of a pid in a thread; peak of the samples and the kernel's VmHWM.
- `pct`, `summary`: percentiles (linear interpolation) and a small distribution summary.
- `Checks`, `Scenario`: pass/fail bookkeeping and the result JSON with date, commit, machine.
- `alignctl(...)`: runs the alignctl binary, returns (status, stdout, stderr).
- Model and checkpoint helpers: `gguf_metadata`, `gguf_tensors`, `kv_bytes_per_token` (KV cache
  bytes per token from the GGUF), `make_policy_variant` (a GGUF copy with scaled final-norm
  weights, as CheckpointEndToEndTests makes it), `make_reward_head` (a valid, untrained
  reward-head folder with seeded weights), `sha256_file`.
- `listening_port(log, protocol)`; `AlignServer.http_port` / `admin_port` read the other
  listeners' ports from the log.

Scenarios import it as `import harness` (run.sh runs them from this folder; scripts put their
own folder first on sys.path anyway).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from typing import Any, Callable, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# The default models: $ALIGND_MODELS_DIR as for the scripts and the Swift tests, else <repo>/models.
MODELS_DIR = os.environ.get("ALIGND_MODELS_DIR") or os.path.join(REPO, "models")
DEFAULT_POLICY = "SmolLM2-135M-Instruct.Q4_1.gguf"
RESULTS_DIR = os.path.join(HERE, "results")

def listening_port(log_text: str, protocol: str = "grpc", admin: bool = False) -> int | None:
    """The port of the "alignd listening" (or "alignd admin listening") log line of `protocol`
    (grpc or http), e.g. `address=[ipv4]127.0.0.1:46037 protocol=grpc [AlignServer] alignd listening`."""
    marker = "alignd admin listening" if admin else "alignd listening"
    for line in log_text.splitlines():
        if marker in line and f"protocol={protocol}" in line:
            m = re.search(r"address=(\S+)", line)
            if m and m.group(1).rsplit(":", 1)[-1].isdigit():
                return int(m.group(1).rsplit(":", 1)[-1])
    return None


def log(msg: str) -> None:
    """A progress line on stderr, prefixed with the elapsed time of the process."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


_T0 = time.monotonic()


# --- arguments --------------------------------------------------------------------------------

def default_bin_dir() -> str:
    """ALIGND_BIN_DIR, else ${ALIGND_BUILD_DIR:-<repo>/.build}/release."""
    if os.environ.get("ALIGND_BIN_DIR"):
        return os.environ["ALIGND_BIN_DIR"]
    build = os.environ.get("ALIGND_BUILD_DIR") or os.path.join(REPO, ".build")
    return os.path.join(build, "release")


def parser(scenario: str, doc: str | None = None) -> argparse.ArgumentParser:
    """The common argparse of every scenario; scenarios add their own options to it."""
    p = argparse.ArgumentParser(prog=f"{scenario}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(scenario=scenario)
    p.add_argument("--alignd", default=None, help="alignd binary (default: $ALIGND_BIN_DIR/alignd)")
    p.add_argument("--alignctl", default=None, help="alignctl binary (default: $ALIGND_BIN_DIR/alignctl)")
    p.add_argument("--quick", action="store_true", help="the small variant (for the test command)")
    p.add_argument("--out", default=None, help=f"result JSON (default: results/{scenario}.json, "
                                                f"results/quick/{scenario}.json with --quick)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a new temp folder)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the scratch folder (logs, data)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="hard wall-clock bound in seconds; the watchdog kills the servers and fails")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and resolves defaults (binaries, out, workdir)."""
    a = p.parse_args(argv)
    bins = default_bin_dir()
    a.alignd = os.path.abspath(a.alignd or os.path.join(bins, "alignd"))
    a.alignctl = os.path.abspath(a.alignctl or os.path.join(bins, "alignctl"))
    if a.out is None:
        sub = os.path.join(RESULTS_DIR, "quick") if a.quick else RESULTS_DIR
        a.out = os.path.join(sub, f"{a.scenario}.json")
    a.out = os.path.abspath(a.out)
    if a.workdir is None:
        a.workdir = tempfile.mkdtemp(prefix=f"alignd-rel-{a.scenario}-")
        a.own_workdir = True
    else:
        os.makedirs(a.workdir, exist_ok=True)
        a.workdir = os.path.abspath(a.workdir)
        a.own_workdir = False
    for b in (a.alignd, a.alignctl):
        if not os.access(b, os.X_OK):
            p.error(f"binary not found or not executable: {b} (set ALIGND_BIN_DIR or pass --alignd/--alignctl)")
    return a


# --- stubs ------------------------------------------------------------------------------------

_STUBS: types.SimpleNamespace | None = None


def load_stubs(folder: str) -> types.SimpleNamespace:
    """Generates Python stubs from Schemas/ into `folder`/pystubs (once per process) and imports
    them: common_pb2, inference_pb2, inference_pb2_grpc, admin_pb2, admin_pb2_grpc, health_pb2,
    health_pb2_grpc. The folder is not named "grpc" (a local grpc package would shadow grpcio)."""
    global _STUBS
    if _STUBS is not None:
        return _STUBS
    import grpc  # noqa: F401, PLC0415  (grpcio first: the stub folder holds a "grpc" namespace folder)
    from grpc_tools import protoc  # noqa: PLC0415
    import grpc_tools  # noqa: PLC0415
    out = os.path.join(folder, "pystubs")
    os.makedirs(out, exist_ok=True)
    schemas = os.path.join(REPO, "Schemas")
    protos = [os.path.join(schemas, "alignd", "v1", f) for f in ("common.proto", "inference.proto", "admin.proto")]
    protos.append(os.path.join(schemas, "grpc", "health", "v1", "health.proto"))
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{schemas}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc})")
    # Namespace packages: grpc/health/v1 lives in a folder named "grpc" inside `out`, which would
    # shadow grpcio; import the health module by file path under another name instead.
    sys.path.insert(0, out)
    import importlib.util  # noqa: PLC0415
    from alignd.v1 import (admin_pb2, admin_pb2_grpc, common_pb2, inference_pb2,  # noqa: PLC0415
                           inference_pb2_grpc)

    def load(name: str, path: str):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    hdir = os.path.join(out, "grpc", "health", "v1")
    # health_pb2_grpc imports "grpc.health.v1.health_pb2"; rewrite it to our private name.
    with open(os.path.join(hdir, "health_pb2_grpc.py")) as f:
        src = f.read().replace("from grpc.health.v1 import health_pb2", "import alignd_rel_health_pb2")
    src = src.replace("grpc_dot_health_dot_v1_dot_health__pb2", "alignd_rel_health_pb2")
    with open(os.path.join(out, "alignd_rel_health_pb2_grpc.py"), "w") as f:
        f.write(src)
    health_pb2 = load("alignd_rel_health_pb2", os.path.join(hdir, "health_pb2.py"))
    health_pb2_grpc = load("alignd_rel_health_pb2_grpc", os.path.join(out, "alignd_rel_health_pb2_grpc.py"))
    _STUBS = types.SimpleNamespace(common_pb2=common_pb2, inference_pb2=inference_pb2,
                                   inference_pb2_grpc=inference_pb2_grpc, admin_pb2=admin_pb2,
                                   admin_pb2_grpc=admin_pb2_grpc, health_pb2=health_pb2,
                                   health_pb2_grpc=health_pb2_grpc, folder=out)
    return _STUBS


# --- keys -------------------------------------------------------------------------------------

def key_line(key: str, role: str, name: str) -> str:
    """A keys-file line (`<role> <sha256-hex> <name>`, as in Sources/AlignServer/Auth.swift)."""
    return f"{role} {hashlib.sha256(key.encode()).hexdigest()} {name}"


def make_keys_file(path: str, roles: Iterable[str] = ("admin", "infer")) -> dict[str, str]:
    """Writes a keys file with one random key per role; returns {role: plain key}."""
    keys = {role: "rel-" + secrets.token_hex(16) for role in roles}
    with open(path, "w") as f:
        f.write("# written by Tests/Reliability/harness.py\n")
        for role, key in keys.items():
            f.write(key_line(key, role, f"rel-{role}") + "\n")
    return keys


def auth(key: str | None) -> list[tuple[str, str]]:
    """gRPC metadata carrying `key` (empty when None)."""
    return [("authorization", f"Bearer {key}")] if key else []


# --- processes --------------------------------------------------------------------------------

_LIVE: set["AlignServer"] = set()
_LIVE_LOCK = threading.Lock()


def free_port() -> int:
    """A currently free loopback TCP port (for a second listener a test controls itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AlignServer:
    """One `alignd serve` process on loopback.

    `options` are passed after `serve` verbatim (e.g. ["--queue-capacity", "16"]). Defaults added
    unless present in `options`: --port 0, --http-port 0 (servers run side by side),
    --models-dir <repo>/models, --data-dir <workdir>/<name>-data, --kv-cache-tokens 4096 (the Swift
    test default). The environment is the caller's minus ALIGND_*
    (plus `env`). stderr/stdout go to <workdir>/<name>.log.
    """

    def __init__(self, alignd: str, workdir: str, options: Iterable[str] = (), name: str = "alignd",
                 data_dir: str | None = None, keys_file: str | None = None,
                 env: dict[str, str] | None = None, kv_cache_tokens: int | None = 4096):
        self.alignd = alignd
        self.workdir = workdir
        self.name = name
        self.options = list(options)
        self.data_dir = data_dir or os.path.join(workdir, f"{name}-data")
        self.keys_file = keys_file
        self.env = env or {}
        self.kv_cache_tokens = kv_cache_tokens
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.returncode: int | None = None
        self.started_at = 0.0

    # -- life cycle
    def command(self) -> list[str]:
        """The full command line (for the result JSON)."""
        o = self.options
        cmd = [self.alignd, "serve"]
        if "--port" not in o:
            cmd += ["--port", "0"]
        if "--http-port" not in o:
            cmd += ["--http-port", "0"]
        if "--models-dir" not in o:
            cmd += ["--models-dir", MODELS_DIR]
        if "--data-dir" not in o:
            cmd += ["--data-dir", self.data_dir]
        if self.keys_file and "--keys-file" not in o:
            cmd += ["--keys-file", self.keys_file]
        if self.kv_cache_tokens is not None and "--kv-cache-tokens" not in o:
            cmd += ["--kv-cache-tokens", str(self.kv_cache_tokens)]
        return cmd + o

    def start(self, timeout: float = 60.0) -> int:
        """Starts the process and waits for the "alignd listening" line; returns the port."""
        os.makedirs(self.data_dir, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGND_")}
        env.update(self.env)
        self._log_file = open(self.log_path, "ab")
        self._log_offset = self._log_file.tell()
        self.returncode = None
        self.port = None
        self.proc = subprocess.Popen(self.command(), stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.started_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = listening_port(self.log_since_start())
            if port:
                self.port = port
                return self.port
            if self.proc.poll() is not None:
                self._reap()
                raise RuntimeError(f"{self.name} exited with {self.returncode} before listening:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not log 'alignd listening' within {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> str:
        """host:port for grpc channels."""
        return f"127.0.0.1:{self.port}"

    @property
    def http_port(self) -> int | None:
        """The HTTP gateway's port from the log (None until it listens, or without a gateway)."""
        return listening_port(self.log_since_start(), "http")

    @property
    def admin_port(self) -> int | None:
        """The separate admin listener's port (None unless `--admin-port` was given)."""
        return listening_port(self.log_since_start(), "grpc", admin=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_serving(self, stubs: types.SimpleNamespace, timeout: float = 120.0) -> float:
        """Polls grpc.health.v1 until SERVING; returns the seconds it took since start."""
        import grpc  # noqa: PLC0415
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as ch:
            stub = stubs.health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if not self.running():
                    self._reap()
                    raise RuntimeError(f"{self.name} exited ({self.returncode}) while loading:\n{self.log_tail()}")
                try:
                    r = stub.Check(stubs.health_pb2.HealthCheckRequest(), timeout=2)
                    if r.status == stubs.health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - self.started_at
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not SERVING within {timeout}s:\n{self.log_tail()}")

    def health(self, stubs: types.SimpleNamespace, timeout: float = 5.0) -> str:
        """The health status name (SERVING, NOT_SERVING, ...) or the gRPC error code name."""
        import grpc  # noqa: PLC0415
        with grpc.insecure_channel(self.target) as ch:
            try:
                r = stubs.health_pb2_grpc.HealthStub(ch).Check(stubs.health_pb2.HealthCheckRequest(), timeout=timeout)
                return stubs.health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.RpcError as e:
                return e.code().name

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Waits for exit; the exit code (negative: killed by that signal), None on timeout."""
        if self.proc is None:
            return self.returncode
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return self.returncode

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.running():
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.kill()
        self._reap()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (only this process) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            with _LIVE_LOCK:
                _LIVE.discard(self)
            try:
                self._log_file.close()
            except Exception:  # noqa: BLE001
                pass

    # -- log
    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        """The log written by the current (last started) process."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_offset", 0))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_since_start().splitlines()[-lines:])

    def __enter__(self) -> "AlignServer":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def kill_all_servers() -> None:
    """SIGKILLs every AlignServer this process started and that still runs (watchdog, atexit)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for s in live:
        s.kill()


def alignctl(binary: str, args: list[str], timeout: float = 120.0, key: str | None = None,
             cwd: str | None = None) -> tuple[int, str, str]:
    """Runs alignctl with `args` (ALIGND_API_KEY = key); returns (status, stdout, stderr).
    A timeout kills it and returns status 124."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGND_")}
    if key:
        env["ALIGND_API_KEY"] = key
    p = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=cwd, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return 124, out.decode("utf-8", "replace"), err.decode("utf-8", "replace") + "\n[timeout]"


# --- memory -----------------------------------------------------------------------------------

def proc_status_kb(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...), None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples VmRSS of `pid` every `interval` s in a thread. `peak_kb` is the largest sample;
    `hwm_kb` the kernel's own high-water mark (VmHWM) read at the last sample, which catches
    peaks between samples. Use as a context manager or start()/stop()."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.peak_kb = 0
        self.hwm_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.sample(t0)
            self._stop.wait(self.interval)
        self.sample(t0)

    def sample(self, t0: float | None = None) -> None:
        rss = proc_status_kb(self.pid, "VmRSS")
        hwm = proc_status_kb(self.pid, "VmHWM")
        if rss is not None:
            self.samples.append((time.monotonic() - (t0 or 0.0), rss))
            self.peak_kb = max(self.peak_kb, rss)
        if hwm is not None:
            self.hwm_kb = max(self.hwm_kb, hwm)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> "RssSampler":
        self._stop.set()
        self._thread.join(timeout=5)
        return self

    def __enter__(self) -> "RssSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def figures(self) -> dict[str, Any]:
        """peak/last/first RSS in MB, VmHWM in MB, sample count."""
        mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
        return {"peak_rss_mb": mb(self.peak_kb), "vm_hwm_mb": mb(self.hwm_kb),
                "first_rss_mb": mb(self.samples[0][1]) if self.samples else None,
                "last_rss_mb": mb(self.samples[-1][1]) if self.samples else None,
                "samples": len(self.samples), "interval_s": self.interval}


# --- statistics -------------------------------------------------------------------------------

def pct(xs: Iterable[float], p: float) -> float | None:
    """Percentile with linear interpolation (p in 0..100); None for no data."""
    s = sorted(xs)
    if not s:
        return None
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(xs: Iterable[float], digits: int = 4) -> dict[str, Any]:
    """n, mean, p50, p90, p99, max of a sample (rounded)."""
    s = sorted(xs)
    r = lambda v: None if v is None else round(v, digits)  # noqa: E731
    return {"n": len(s), "mean": r(sum(s) / len(s)) if s else None, "p50": r(pct(s, 50)),
            "p90": r(pct(s, 90)), "p99": r(pct(s, 99)), "max": r(s[-1] if s else None)}


# --- machine and repository -------------------------------------------------------------------

def git_commit() -> str:
    """HEAD of the repository (with '+dirty' when the work tree differs), or 'unknown'."""
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, kernel and the load averages now."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = proc_meminfo_kb("MemTotal")
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 1048576, 1) if mem else None,
            "kernel": os.uname().release, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def proc_meminfo_kb(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` (whole machine)."""
    def stat() -> list[int]:
        with open("/proc/stat") as f:
            return list(map(int, f.readline().split()[1:9]))
    a = stat()
    time.sleep(seconds)
    b = stat()
    d = [y - x for x, y in zip(a, b)]
    return round(1 - (d[3] + d[4]) / max(sum(d), 1), 2)


# --- checks and results -----------------------------------------------------------------------

class Checks:
    """Named pass/fail checks with their measured value and the bound they were held to."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def check(self, name: str, passed: bool, value: Any = None, bound: Any = None, detail: str = "",
              enforced: bool = True) -> bool:
        """Records a check. `enforced=False` records it (value, bound, outcome) without letting it
        fail the scenario — for figures a run is too small to judge (e.g. a p99 of 20 samples)."""
        self.items.append({"name": name, "passed": bool(passed), "value": value, "bound": bound,
                           "detail": detail, "enforced": enforced})
        tag = ("PASS" if passed else "FAIL") + ("" if enforced else " (not enforced)")
        log(f"check {tag}: {name} value={value!r} bound={bound!r} {detail}")
        return bool(passed)

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(c["passed"] for c in self.items if c.get("enforced", True))

    def failed(self) -> list[str]:
        return [c["name"] for c in self.items if not c["passed"] and c.get("enforced", True)]


class Scenario:
    """Runs a scenario body with a watchdog and writes its result JSON.

    `body(ctx)` gets this object (ctx.args, ctx.checks, ctx.figures, ctx.stubs, ctx.workdir,
    ctx.server(...)) and fills ctx.figures / ctx.checks / ctx.config (server options used) /
    ctx.notes / ctx.headline (a few "label": value figures shown in Docs/RELIABILITY.md's
    table). The result is passed when every check passed and the body raised nothing. `run()` returns the exit code (0 pass, 1 fail).
    """

    def __init__(self, args: argparse.Namespace, default_time_limit: float):
        self.args = args
        self.name = args.scenario
        self.workdir = args.workdir
        self.checks = Checks()
        self.figures: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.notes: list[str] = []
        # A few short figures for the table of Docs/RELIABILITY.md (label -> value), in order.
        self.headline: dict[str, Any] = {}
        self.time_limit = args.time_limit or default_time_limit
        self.stubs: types.SimpleNamespace | None = None
        self._done = threading.Event()

    def server(self, options: Iterable[str] = (), name: str = "alignd", **kw: Any) -> AlignServer:
        """An AlignServer in this scenario's workdir with its binary (not started)."""
        return AlignServer(self.args.alignd, self.workdir, options, name=name, **kw)

    def _watchdog(self) -> None:
        if not self._done.wait(self.time_limit):
            log(f"watchdog: {self.name} exceeded its time limit of {self.time_limit:.0f}s; killing servers")
            kill_all_servers()
            self.checks.check("finished within the time limit", False, None, self.time_limit)
            self.write(error=f"time limit {self.time_limit}s exceeded")
            os._exit(1)

    def run(self, body: Callable[["Scenario"], None]) -> int:
        started = time.time()
        self.started = started
        self.machine_before = machine()
        threading.Thread(target=self._watchdog, daemon=True).start()
        error = None
        try:
            self.stubs = load_stubs(self.workdir)
            body(self)
        except Exception as e:  # noqa: BLE001
            error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            kill_all_servers()
            self._done.set()
        self.write(error=error)
        ok = error is None and self.checks.passed
        log(f"{self.name}: {'PASS' if ok else 'FAIL'}"
            + ("" if ok else f" (failed: {self.checks.failed()}{'; ' + error if error else ''})")
            + f" -> {self.args.out}")
        if self.args.own_workdir and not self.args.keep_workdir and ok:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif not ok:
            log(f"logs kept in {self.workdir}")
        return 0 if ok else 1

    def write(self, error: str | None = None) -> None:
        """Writes the result JSON (atomically)."""
        result = {
            "scenario": self.name,
            "passed": error is None and self.checks.passed,
            "quick": bool(self.args.quick),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "duration_s": round(time.time() - getattr(self, "started", time.time()), 1),
            "machine": getattr(self, "machine_before", None) or machine(),
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "config": self.config,
            "headline": self.headline,
            "figures": self.figures,
            "checks": self.checks.items,
            "notes": self.notes,
            "error": error,
        }
        os.makedirs(os.path.dirname(self.args.out), exist_ok=True)
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=str)
            f.write("\n")
        os.replace(tmp, self.args.out)


def grpc_code_name(e: BaseException) -> str:
    """The status code name of a grpc error, else the exception type name."""
    code = getattr(e, "code", None)
    if callable(code):
        try:
            return code().name
        except Exception:  # noqa: BLE001
            pass
    return type(e).__name__


# --- model facts ------------------------------------------------------------------------------

def gguf_metadata(path: str) -> dict[str, Any]:
    """The scalar and string key/values of a GGUF file's header (arrays are skipped)."""
    import struct  # noqa: PLC0415
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    out: dict[str, Any] = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        _version, _tensors, count = struct.unpack("<IQQ", f.read(20))

        def string() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def value(kind: int) -> Any:
            if kind in scalar:
                fmt = "<" + scalar[kind]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            if kind == 8:
                return string()
            if kind == 9:
                (inner, n) = struct.unpack("<IQ", f.read(12))
                if inner in scalar:
                    f.seek(n * struct.calcsize("<" + scalar[inner]), 1)
                else:
                    for _ in range(n):
                        value(inner)
                return None
            raise ValueError(f"unknown GGUF value type {kind}")

        for _ in range(count):
            key = string()
            (kind,) = struct.unpack("<I", f.read(4))
            v = value(kind)
            if v is not None:
                out[key] = v
    return out


def kv_bytes_per_token(path: str) -> int:
    """KV cache bytes per token of a llama-family GGUF (K and V, every layer, float32 entries —
    the engine's cache layout: README says ~46 KB per token for SmolLM2-135M)."""
    m = gguf_metadata(path)
    arch = m["general.architecture"]
    layers = int(m[f"{arch}.block_count"])
    heads = int(m[f"{arch}.attention.head_count"])
    kv_heads = int(m.get(f"{arch}.attention.head_count_kv", heads))
    head_dim = int(m[f"{arch}.embedding_length"]) // heads
    return layers * 2 * kv_heads * head_dim * 4


def snapshot_memory_mb(path: str, kv_cache_tokens: int) -> tuple[float, float, int]:
    """(weights file MB, KV cache MB, context length) of one policy snapshot serving the GGUF at
    `path`: the engine reserves `kv_cache_tokens` + the model's context (capped at 8192) tokens."""
    ctx_len = min(int(gguf_metadata(path)["llama.context_length"]), 8192)
    kv_mb = (kv_cache_tokens + ctx_len) * kv_bytes_per_token(path) / 2**20
    return os.path.getsize(path) / 2**20, kv_mb, ctx_len


def gguf_tensors(path: str) -> dict[str, dict[str, Any]]:
    """Tensor infos of a GGUF file: {name: {"type": ggml type id, "dims": [...], "offset": absolute
    file offset of its data}} (type 0 = F32)."""
    import struct  # noqa: PLC0415
    meta = gguf_metadata(path)
    with open(path, "rb") as f:
        f.read(4)
        _version, n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))

        def string() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def skip(kind: int) -> None:
            if kind in sizes:
                f.seek(sizes[kind], 1)
            elif kind == 8:
                string()
            elif kind == 9:
                inner, n = struct.unpack("<IQ", f.read(12))
                if inner in sizes:
                    f.seek(n * sizes[inner], 1)
                else:
                    for _ in range(n):
                        skip(inner)
            else:
                raise ValueError(f"unknown GGUF value type {kind}")

        for _ in range(n_kv):
            string()
            (kind,) = struct.unpack("<I", f.read(4))
            skip(kind)
        infos = []
        for _ in range(n_tensors):
            name = string()
            (nd,) = struct.unpack("<I", f.read(4))
            dims = list(struct.unpack(f"<{nd}Q", f.read(8 * nd)))
            kind, offset = struct.unpack("<IQ", f.read(12))
            infos.append((name, kind, dims, offset))
        align = int(meta.get("general.alignment", 32))
        data_start = (f.tell() + align - 1) // align * align
    return {name: {"type": kind, "dims": dims, "offset": data_start + offset} for name, kind, dims, offset in infos}


def make_policy_variant(src: str, dst: str, scale_even: float = 1.3, scale_odd: float = 0.7) -> str:
    """A copy of a llama GGUF whose final norm (`output_norm.weight`, F32) is scaled element-wise
    (even indices by `scale_even`, odd by `scale_odd`): a genuinely different checkpoint with the
    same tokenizer and architecture, as CheckpointEndToEndTests makes it (a uniform scale would not
    change greedy output). Returns dst."""
    import struct  # noqa: PLC0415
    info = gguf_tensors(src)["output_norm.weight"]
    if info["type"] != 0:
        raise ValueError("output_norm.weight is not F32")
    n = 1
    for d in info["dims"]:
        n *= d
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(info["offset"])
        values = list(struct.unpack(f"<{n}f", f.read(4 * n)))
        values = [v * (scale_even if i % 2 == 0 else scale_odd) for i, v in enumerate(values)]
        f.seek(info["offset"])
        f.write(struct.pack(f"<{n}f", *values))
    return dst


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_reward_head(folder: str, base_model: str, seed: int, input_format: str = "chat-template") -> str:
    """A reward-head checkpoint folder (Docs/REWARD.md format: reward-head.safetensors with F32
    `weight` [hidden] and `bias` [1], manifest.json naming the base GGUF by SHA-256) with seeded
    Gaussian weights. It is an untrained head — valid, loadable and distinct per seed, which is
    what swap and rollout scenarios need; its manifest says so (no held-out accuracy, 0 pairs)."""
    import random  # noqa: PLC0415
    import struct  # noqa: PLC0415
    meta = gguf_metadata(base_model)
    hidden = int(meta[f"{meta['general.architecture']}.embedding_length"])
    rng = random.Random(seed)
    weight = [rng.gauss(0.0, 1.0 / hidden ** 0.5) for _ in range(hidden)]
    bias = rng.uniform(-0.5, 0.5)
    header = {"weight": {"dtype": "F32", "shape": [hidden], "data_offsets": [0, 4 * hidden]},
              "bias": {"dtype": "F32", "shape": [1], "data_offsets": [4 * hidden, 4 * hidden + 4]}}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "reward-head.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hjson)) + hjson + struct.pack(f"<{hidden}f", *weight) + struct.pack("<f", bias))
    name = os.path.basename(base_model)
    manifest = {"format": "alignd-reward-head", "format_version": 1,
                "base_model": {"name": name[:-5] if name.endswith(".gguf") else name, "sha256": sha256_file(base_model)},
                "hidden_size": hidden, "feature": "final-norm-last-token", "input": input_format,
                "metrics": {"heldout_accuracy": None, "train_pairs": 0, "heldout_pairs": 0},
                "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return folder
