"""Helpers shared by scenario_faults.py and scenario_security.py (beyond harness.py).

- ThrowawayPostgres: a PostgreSQL cluster of the reliability scenarios' own (own data folder and
  port, never the test server of scripts/start-test-postgres.sh), which a scenario may stop and
  restart at will.
- Feedback records and a streaming client that tracks acknowledgements (StreamFeedback).
- Checkpoint uploads with a header that may lie.
- Reflection: the services and methods the running server lists (grpc.reflection.v1).
- A minimal raw HTTP/2 client (frames by hand, HPACK literals only) for what grpcio hides:
  partial prefaces and streams beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import grpc

# --- PostgreSQL --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Optional[str]:
    candidates = ["/usr/lib/postgresql/15/bin"]
    if os.path.isdir("/usr/lib/postgresql"):
        candidates += sorted(
            (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")), reverse=True)
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    return None


class PostgresUnavailable(Exception):
    """PostgreSQL is not installed or cannot be started here (the scenario is then skipped)."""


class ThrowawayPostgres:
    """A PostgreSQL cluster under `${ALIGND_CACHE_DIR:-/tmp}/pg-reliability` on a free loopback port.

    As root the server runs as the `postgres` system user (initdb and postgres refuse root), as in
    scripts/start-test-postgres.sh. The cluster is created once and reused; each start picks a
    free port. The role and database are `alignd_rel` (password `alignd_rel`); scenarios use
    their own schema in it.
    """

    ROLE = "alignd_rel"
    PASSWORD = "alignd_rel"
    DATABASE = "alignd_rel"

    def __init__(self, base: Optional[str] = None):
        self.bin = _pg_bin()
        if self.bin is None:
            raise PostgresUnavailable("no PostgreSQL installation under /usr/lib/postgresql (scripts/start-test-postgres.sh installs it)")
        cache = os.environ.get("ALIGND_CACHE_DIR") or "/tmp"
        self.base = base or os.path.join(cache, "pg-reliability")
        self.data = os.path.join(self.base, "data")
        self.run_dir = os.path.join(self.base, "run")
        self.log = os.path.join(self.base, "server.log")
        self.port = 0
        self.is_root = os.geteuid() == 0
        self.user = "postgres" if self.is_root else None

    def _as_server(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self.is_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(args, **kw)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = self._as_server([os.path.join(self.bin, "pg_ctl"), "-D", self.data, *args], timeout=120)
        if check and r.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl {' '.join(args)} failed: {r.stdout}{r.stderr}{self.log_tail()}")
        return r

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def _ensure_cluster(self) -> None:
        os.makedirs(self.base, exist_ok=True)
        if self.is_root:
            shutil.chown(self.base, "postgres")
        os.chmod(self.base, 0o700)
        if os.path.isfile(os.path.join(self.data, "PG_VERSION")):
            return
        shutil.rmtree(self.data, ignore_errors=True)
        r = self._as_server([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "-E", "UTF8",
                             "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"], timeout=180)
        if r.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {r.stdout}{r.stderr}")

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def ready(self) -> bool:
        r = subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                           capture_output=True)
        return r.returncode == 0

    def start(self, port: Optional[int] = None) -> None:
        """Starts the server (on `port`, by default the previous one or a free one)."""
        self._ensure_cluster()
        if self.running():
            self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30", check=False)
        try:
            os.remove(os.path.join(self.data, "postmaster.pid"))
        except OSError:
            pass
        self.port = port or self.port or _free_port()
        self._as_server(["mkdir", "-p", self.run_dir])
        self._pg_ctl("start", "-w", "-t", "60", "-l", self.log, "-o",
                     f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.run_dir} "
                     f"-c max_connections=100")
        deadline = time.monotonic() + 30
        while not self.ready():
            if time.monotonic() > deadline:
                raise PostgresUnavailable("the server started but does not accept connections\n" + self.log_tail())
            time.sleep(0.2)
        self._ensure_role()

    def _psql(self, sql: str) -> str:
        r = self._as_server([os.path.join(self.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.run_dir,
                             "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-tAc", sql], timeout=60)
        if r.returncode != 0:
            raise PostgresUnavailable(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def _ensure_role(self) -> None:
        if self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.ROLE}'") != "1":
            self._psql(f"CREATE ROLE {self.ROLE} LOGIN PASSWORD '{self.PASSWORD}'")
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.DATABASE}'") != "1":
            self._psql(f"CREATE DATABASE {self.DATABASE} OWNER {self.ROLE}")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: `fast` (clients disconnected, clean shutdown) or `immediate` (like a crash)."""
        self._pg_ctl("stop", "-m", mode, "-w", "-t", "60", check=False)

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> None:
        """Stops the server, waits `down_seconds`, starts it again on the same port."""
        self.stop(mode)
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start(self.port)

    def url(self, schema: str) -> str:
        return (f"postgres://{self.ROLE}:{self.PASSWORD}@127.0.0.1:{self.port}/{self.DATABASE}"
                f"?sslmode=disable&schema={schema}")

    def drop_schema(self, schema: str) -> None:
        try:
            r = self._as_server([os.path.join(self.bin, "psql"), "-X", "-q", "-h", self.run_dir, "-p", str(self.port),
                                 "-U", "postgres", "-d", self.DATABASE, "-c", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'],
                                timeout=60)
            del r
        except Exception:
            pass


# --- feedback ---------------------------------------------------------------------------------------


def preference(admin_pb2, seq: int, run: str) -> object:
    """Feedback record number `seq` (1-based) of upload `run`: a preference with a unique key."""
    return admin_pb2.FeedbackRecord(
        sequence=seq,
        idempotency_key=f"{run}-{seq}",
        annotator_id=f"annotator-{seq % 5}",
        metadata={"scenario": "faults", "run": run},
        preference=admin_pb2.Preference(prompt=f"Prompt {seq} of {run}", chosen=f"A helpful answer {seq}",
                                        rejected=f"An unhelpful answer {seq}"))


@dataclass
class StreamOutcome:
    """What one StreamFeedback call saw."""
    last_ack: int = 0                 # highest committed_through received
    acks: int = 0                     # acknowledgements received
    sent_through: int = 0             # highest sequence handed to the transport
    code: Optional[grpc.StatusCode] = None  # None: the stream ended OK
    details: str = ""
    duration_s: float = 0.0
    ack_regressions: int = 0          # acknowledgements that went backwards (must be 0)
    stored: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)
    max_ack_gap_s: float = 0.0        # longest wait between acknowledgements (or from the start)


def stream_feedback(admin_stub, admin_pb2, records: Iterable, metadata=None, timeout: float = 120.0,
                    on_ack: Optional[Callable[[int], None]] = None,
                    pace_s: float = 0.0) -> StreamOutcome:
    """Streams `records` through Admin.StreamFeedback and collects acknowledgements until the stream
    ends (OK or an error, e.g. the server was killed). `on_ack(committed_through)` runs on each ack.
    `pace_s` sleeps between records (a client producing feedback over time)."""
    out = StreamOutcome()
    stop = threading.Event()

    def gen() -> Iterator:
        for r in records:
            if stop.is_set():
                return
            out.sent_through = r.sequence
            yield r
            if pace_s:
                time.sleep(pace_s)

    t0 = time.monotonic()
    last = t0
    call = admin_stub.StreamFeedback(gen(), metadata=metadata, timeout=timeout)
    try:
        for ack in call:
            now = time.monotonic()
            out.max_ack_gap_s = max(out.max_ack_gap_s, now - last)
            last = now
            if ack.committed_through < out.last_ack:
                out.ack_regressions += 1
            out.last_ack = max(out.last_ack, ack.committed_through)
            out.acks += 1
            out.stored, out.duplicates = ack.stored, ack.duplicates
            out.rejected += [(r.sequence, r.reason) for r in ack.rejected]
            if on_ack:
                on_ack(out.last_ack)
    except grpc.RpcError as e:
        out.code = e.code()
        out.details = e.details() or ""
    finally:
        stop.set()
        out.duration_s = time.monotonic() - t0
    return out


def export_keys(admin_stub, admin_pb2, metadata=None, timeout: float = 120.0) -> list[str]:
    """Every stored record's idempotency key, oldest first."""
    return [item.record.idempotency_key
            for item in admin_stub.ExportFeedback(admin_pb2.ExportFeedbackRequest(), metadata=metadata, timeout=timeout)]


def loss_and_duplicates(stored: list[str], acknowledged: set[str]) -> dict:
    """Counts acknowledged keys missing from `stored` and keys stored more than once."""
    seen: dict[str, int] = {}
    for k in stored:
        seen[k] = seen.get(k, 0) + 1
    return {
        "stored": len(stored),
        "acknowledged": len(acknowledged),
        "lost": sorted(k for k in acknowledged if k not in seen),
        "duplicated": sorted(k for k, n in seen.items() if n > 1),
    }


# --- checkpoints ------------------------------------------------------------------------------------


def upload_requests(admin_pb2, common_pb2, data: bytes, name: str, *, declared_size: Optional[int] = None,
                    sha256: Optional[str] = None, send_bytes: Optional[int] = None, chunk: int = 1 << 20,
                    role=None, fmt=None, on_chunk: Optional[Callable[[int], None]] = None,
                    pace_s: float = 0.0) -> Iterator:
    """The UploadCheckpoint request stream for `data` (a GGUF policy by default); the header may lie."""
    role = role if role is not None else common_pb2.MODEL_ROLE_POLICY
    fmt = fmt if fmt is not None else admin_pb2.CHECKPOINT_FORMAT_GGUF
    yield admin_pb2.UploadCheckpointRequest(header=admin_pb2.CheckpointHeader(
        role=role, name=name, format=fmt,
        size_bytes=len(data) if declared_size is None else declared_size,
        sha256=sha256 or hashlib.sha256(data).hexdigest()))
    end = len(data) if send_bytes is None else min(len(data), send_bytes)
    offset = 0
    while offset < end:
        nxt = min(end, offset + chunk)
        yield admin_pb2.UploadCheckpointRequest(chunk=data[offset:nxt])
        offset = nxt
        if on_chunk:
            on_chunk(offset)
        if pace_s:
            time.sleep(pace_s)


def staging_leftovers(data_dir: str, live_lock_prefixes: Iterable[str] = ()) -> list[str]:
    """Files under <data_dir>/checkpoints/staging other than live processes' `<id>.lock` files."""
    staging = os.path.join(data_dir, "checkpoints", "staging")
    if not os.path.isdir(staging):
        return []
    live = tuple(live_lock_prefixes)
    return sorted(n for n in os.listdir(staging) if not (n.endswith(".lock") and n[:-5] in live))


# --- checks -----------------------------------------------------------------------------------------


def _jsonable(v):
    if isinstance(v, grpc.StatusCode):
        return v.name
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def code_of(fn: Callable[[], object]) -> tuple[str, str]:
    """Runs an RPC; returns ("OK", "") or (status name, details)."""
    try:
        fn()
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, (e.details() or "")


def new_schema() -> str:
    return "rel_" + uuid.uuid4().hex[:16]


# --- reflection -------------------------------------------------------------------------------------

_REFLECTION = None


def reflection_pb2(stub_folder: str):
    """grpc.reflection.v1 messages, generated from Schemas/ into `stub_folder` and imported under a
    private module name (the proto's own path starts with "grpc/", which would shadow grpcio)."""
    global _REFLECTION
    if _REFLECTION is not None:
        return _REFLECTION
    import importlib.util  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    schemas = os.path.join(repo, "Schemas")
    out = os.path.join(stub_folder, "reflection-stubs")
    os.makedirs(out, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{schemas}", f"--python_out={out}",
                      os.path.join(schemas, "grpc", "reflection", "v1", "reflection.proto")])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on reflection.proto ({rc})")
    path = os.path.join(out, "grpc", "reflection", "v1", "reflection_pb2.py")
    spec = importlib.util.spec_from_file_location("alignd_rel_reflection_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["alignd_rel_reflection_pb2"] = mod
    spec.loader.exec_module(mod)
    _REFLECTION = mod
    return mod


@dataclass
class RPCMethod:
    service: str
    name: str
    client_streaming: bool
    server_streaming: bool
    input_type: str

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def reflect_methods(channel: grpc.Channel, refl, metadata=None, timeout: float = 10.0) -> tuple[list[str], list[RPCMethod]]:
    """The services the server lists and every method of each, read from the file descriptors the
    server returns (grpc.reflection.v1.ServerReflection/ServerReflectionInfo)."""
    from google.protobuf import descriptor_pb2  # noqa: PLC0415
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=refl.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=refl.ServerReflectionResponse.FromString)
    first = list(call(iter([refl.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=timeout))
    services = [s.name for s in first[0].list_services_response.service]
    requests = [refl.ServerReflectionRequest(file_containing_symbol=s) for s in services]
    responses = list(call(iter(requests), metadata=metadata, timeout=timeout))
    methods: list[RPCMethod] = []
    for service, response in zip(services, responses):
        package, _, short = service.rpartition(".")
        for raw in response.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if fd.package != package:
                continue
            for sd in fd.service:
                if sd.name != short:
                    continue
                for m in sd.method:
                    methods.append(RPCMethod(service, m.name, m.client_streaming, m.server_streaming,
                                             m.input_type.lstrip(".")))
    return services, methods


def call_raw(channel: grpc.Channel, method: RPCMethod, payload: Optional[bytes], metadata=None,
             timeout: float = 15.0, max_responses: int = 1) -> tuple[str, str]:
    """Calls `method` with one raw serialized request message (None: a stream with no message;
    for unary requests None sends an empty message). Returns (status name, details); a response
    stream is read up to `max_responses` messages, then cancelled (status "OK")."""
    ident = lambda b: b  # noqa: E731
    try:
        if method.client_streaming:
            msgs = iter([] if payload is None else [payload])
            if method.server_streaming:
                it = channel.stream_stream(method.path, request_serializer=ident, response_deserializer=ident)(
                    msgs, metadata=metadata, timeout=timeout)
                _drain(it, max_responses)
            else:
                channel.stream_unary(method.path, request_serializer=ident, response_deserializer=ident)(
                    msgs, metadata=metadata, timeout=timeout)
        else:
            body = payload if payload is not None else b""
            if method.server_streaming:
                it = channel.unary_stream(method.path, request_serializer=ident, response_deserializer=ident)(
                    body, metadata=metadata, timeout=timeout)
                _drain(it, max_responses)
            else:
                channel.unary_unary(method.path, request_serializer=ident, response_deserializer=ident)(
                    body, metadata=metadata, timeout=timeout)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, (e.details() or "")


def _drain(it, max_responses: int) -> None:
    for i, _ in enumerate(it):
        if i + 1 >= max_responses:
            it.cancel()
            return


def unknown_field_message(total_size: int, field_number: int = 1000) -> bytes:
    """A serialized protobuf message of exactly `total_size` bytes holding one unknown
    length-delimited field: every request type parses it (unknown fields are kept), so one
    payload exercises the message size limit of every RPC."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    tag = varint((field_number << 3) | 2)
    # Find the content length whose tag + length prefix + content equals total_size.
    for content in range(max(0, total_size - len(tag) - 10), total_size + 1):
        if len(tag) + len(varint(content)) + content == total_size:
            return tag + varint(content) + b"x" * content
    raise ValueError(f"no encoding of exactly {total_size} bytes")


# --- raw HTTP/2 -------------------------------------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PING, H2_GOAWAY, H2_WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
H2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT",
             5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR",
             10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}


def h2_frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + (stream & 0x7FFFFFFF).to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literals(headers: list[tuple[str, str]]) -> bytes:
    """A header block of "literal without indexing, new name" fields (no Huffman, no table)."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v
    return bytes(out)


def grpc_request_headers(path: str, authority: str, metadata: Iterable[tuple[str, str]] = ()) -> bytes:
    return hpack_literals([(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
                           ("content-type", "application/grpc"), ("te", "trailers"), *metadata])


class RawH2:
    """One TCP connection speaking HTTP/2 frame by frame. Reads run in a thread that answers
    SETTINGS and PING and records, per stream, what the server sent (HEADERS, DATA bytes,
    RST_STREAM code), plus GOAWAY and when the connection closed."""

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        # The client preface goes out before the reader starts: the server sends its SETTINGS at
        # once, and an ACK sent before the preface would be a protocol error.
        self.sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0, b""))
        self.lock = threading.Lock()
        self.server_settings: dict[int, int] = {}
        self.streams: dict[int, dict] = {}
        self.goaway: Optional[dict] = None
        self.closed_at: Optional[float] = None
        self.opened_at = time.monotonic()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def handshake(self) -> None:
        """The preface and SETTINGS were sent on connecting; kept for readability at call sites."""

    def _recv_exact(self, n: int) -> Optional[bytes]:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _read_loop(self) -> None:
        while True:
            head = self._recv_exact(9)
            if head is None:
                break
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = self._recv_exact(length) if length else b""
            if payload is None:
                break
            with self.lock:
                if ftype == H2_SETTINGS and not flags & 1:
                    for i in range(0, len(payload), 6):
                        self.server_settings[int.from_bytes(payload[i:i + 2], "big")] = int.from_bytes(payload[i + 2:i + 6], "big")
                    self.send(h2_frame(H2_SETTINGS, 1, 0))
                elif ftype == H2_PING and not flags & 1:
                    self.send(h2_frame(H2_PING, 1, 0, payload))
                elif ftype == H2_GOAWAY:
                    self.goaway = {"last_stream": int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                                   "error": H2_ERRORS.get(int.from_bytes(payload[4:8], "big"), "?"),
                                   "debug": payload[8:].decode("utf-8", "replace")}
                elif stream:
                    st = self.streams.setdefault(stream, {"headers": 0, "data_bytes": 0, "rst": None, "ended": False})
                    if ftype == H2_HEADERS:
                        st["headers"] += 1
                    elif ftype == H2_DATA:
                        st["data_bytes"] += length
                        if length:  # keep the peer's flow-control windows open
                            inc = length.to_bytes(4, "big")
                            self.send(h2_frame(H2_WINDOW_UPDATE, 0, 0, inc) + h2_frame(H2_WINDOW_UPDATE, 0, stream, inc))
                    elif ftype == H2_RST_STREAM:
                        st["rst"] = H2_ERRORS.get(int.from_bytes(payload[:4], "big"), "?")
                    if flags & 1 and ftype in (H2_HEADERS, H2_DATA):
                        st["ended"] = True
        self.closed_at = time.monotonic()

    def wait_closed(self, timeout: float) -> Optional[float]:
        """Seconds from opening until the server closed the connection, None if still open."""
        self._reader.join(timeout)
        return None if self.closed_at is None else self.closed_at - self.opened_at

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def idle_socket(host: str, port: int, first_bytes: bytes = b"") -> tuple[socket.socket, float]:
    """A TCP connection that sends `first_bytes` (maybe nothing) and then stays silent."""
    s = socket.create_connection((host, port), timeout=5)
    if first_bytes:
        s.sendall(first_bytes)
    return s, time.monotonic()


def seconds_until_closed(s: socket.socket, opened: float, timeout: float) -> Optional[float]:
    """Reads (and discards) until the peer closes; seconds since `opened`, None if still open."""
    deadline = opened + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - opened
        if not chunk:
            return time.monotonic() - opened


def fd_count(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# --- servers ----------------------------------------------------------------------------------------


def start_server(ctx, options=(), name: str = "alignd", **kw):
    """An AlignServer (harness: free gRPC and HTTP ports, own data folder), started."""
    srv = ctx.server(list(options), name=name, **kw)
    srv.start()
    return srv


def restart(srv) -> None:
    """Starts a stopped or killed AlignServer again (same options and data folder)."""
    srv.start()


def tcp_open(port: Optional[int], host: str = "127.0.0.1") -> bool:
    if not port:
        return False
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def config_keys(alignd: str) -> set[str]:
    """The configuration keys this alignd binary knows (`alignd config`)."""
    r = subprocess.run([alignd, "config"], capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("ALIGND_")})
    return {line.split(" = ")[0].strip() for line in r.stdout.splitlines() if " = " in line and not line.startswith(" ")}
