#!/usr/bin/env python3
"""HTTP gateway benchmark driver: the same requests as gRPC, as HTTP/2 JSON (h2c) and as HTTP/1.1
JSON, all sent by one client program (nghttp2's h2load) to one alignd, so the ratios measure what
the gateway's transcoding costs against calling the gRPC service directly.

Workloads (each one request type, as a gRPC unary call and as its OpenAI-shaped HTTP route):
  moderation  one benign text: gRPC Inference/CheckSafety vs POST /v1/moderations. Cheap on the
              server (lexical classifier + rules), so protocol and transcoding costs show.
  generation  a greedy 32-token completion with ignore_eos: gRPC Inference/Generate vs
              POST /v1/completions. Engine-bound: the protocol should not matter.
Concurrency: gRPC and h2c use one connection with C streams in flight (h2load -c 1 -m C);
HTTP/1.1 uses C connections with one request each (-c C). Metrics per run: requests/s and mean
time per request from h2load; every request must succeed (2xx), and the gRPC bodies are checked
once with nghttp for grpc-status 0 (h2load does not read trailers).

  run     --grpc-port P --http-port H --runs R --out raw.json   (moderation and generation rounds)
  report  --meta meta.json --raw raw.json --results RESULTS.md  (writes the section)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from bench_common import write_section

START = "<!-- http-bench:start -->"
END = "<!-- http-bench:end -->"
AFTER = "<!-- judging-bench:end -->"  # a new section goes right after the judging benchmark

TEXT = "The weather is lovely today; let's go for a walk in the park."
PROMPT = "Write one sentence about the sea."
TOKENS = 32


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire) + payload


def length_delimited(number: int, data: bytes) -> bytes:
    return field(number, 2, varint(len(data)) + data)


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def bodies(folder: str) -> dict:
    """Request bodies per workload and protocol (protobuf encoded by hand: the fields are few)."""
    # CheckSafetyRequest { texts: [TEXT] }
    safety = length_delimited(1, TEXT.encode())
    # GenerateRequest { prompt, sampling { max_tokens, temperature: 0, ignore_eos } }
    sampling = field(1, 0, varint(TOKENS)) + field(2, 5, struct.pack("<f", 0.0)) + field(15, 0, varint(1))
    generate = length_delimited(1, PROMPT.encode()) + length_delimited(3, sampling)
    files = {
        "moderation.grpc": grpc_frame(safety),
        "moderation.json": json.dumps({"input": TEXT}).encode(),
        "generation.grpc": grpc_frame(generate),
        "generation.json": json.dumps(
            {"prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}).encode(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


def targets(grpc_port: int, http_port: int, paths: dict, conc: dict) -> list[dict]:
    grpc_headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    json_headers = ["-H", "content-type: application/json"]
    out = []
    for workload, method, route in (("moderation", "CheckSafety", "/v1/moderations"),
                                     ("generation", "Generate", "/v1/completions")):
        c = conc[workload]
        out += [
            {"workload": workload, "protocol": "gRPC (h2c)", "key": "grpc",
             "args": ["-c", "1", "-m", str(c), "-d", paths[f"{workload}.grpc"], *grpc_headers,
                      f"http://127.0.0.1:{grpc_port}/alignd.v1.Inference/{method}"]},
            {"workload": workload, "protocol": "HTTP/2 JSON (h2c)", "key": "h2",
             "args": ["-c", "1", "-m", str(c), "-d", paths[f"{workload}.json"], *json_headers,
                      f"http://127.0.0.1:{http_port}{route}"]},
            {"workload": workload, "protocol": "HTTP/1.1 JSON", "key": "h1",
             "args": ["--h1", "-c", str(c), "-m", "1", "-d", paths[f"{workload}.json"], *json_headers,
                      f"http://127.0.0.1:{http_port}{route}"]},
        ]
    return out


def parse_h2load(text: str) -> dict:
    finished = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    requests = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                         r"(\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    per_request = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if not (finished and requests and codes and per_request):
        raise ValueError(f"unexpected h2load output:\n{text}")

    def seconds(value: str) -> float:
        for suffix, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
            if value.endswith(suffix):
                return float(value[: -len(suffix)]) * scale
        raise ValueError(value)

    wall = float(finished.group(1)) * (1e-3 if finished.group(2) == "ms" else 1)
    return {"wall_s": wall, "rps": float(finished.group(3)), "total": int(requests.group(1)),
            "succeeded": int(requests.group(3)), "failed": int(requests.group(4)),
            "errored": int(requests.group(5)), "timeout": int(requests.group(6)),
            "status_2xx": int(codes.group(1)), "mean_s": seconds(per_request.group(3))}


def grpc_status(url: str, body: str) -> str:
    """grpc-status of one call, read from nghttp's verbose frame log (h2load ignores trailers)."""
    result = subprocess.run(["nghttp", "-v", "-d", body, "-H", "content-type: application/grpc",
                             "-H", "te: trailers", url], capture_output=True, timeout=120)
    found = re.search(rb"grpc-status: (\d+)", result.stdout)
    return found.group(1).decode() if found else "missing"


def run_main(a) -> None:
    folder = tempfile.mkdtemp(prefix="http-bench.")
    paths = bodies(folder)
    conc = {"moderation": a.moderation_concurrency, "generation": a.generation_concurrency}
    counts = {"moderation": a.moderation_requests, "generation": a.generation_requests}
    plan = targets(a.grpc_port, a.http_port, paths, conc)
    checks = {}
    for workload, method in (("moderation", "CheckSafety"), ("generation", "Generate")):
        checks[workload] = grpc_status(
            f"http://127.0.0.1:{a.grpc_port}/alignd.v1.Inference/{method}", paths[f"{workload}.grpc"])
        if checks[workload] != "0":
            sys.exit(f"gRPC {method} answered grpc-status {checks[workload]}: the request body is wrong")
    raw = {"checks": {"grpc_status": checks}, "concurrency": conc, "requests": counts, "runs": []}
    # Warm-up: a few requests of each kind (connections, caches, the engine's first steps).
    for t in plan:
        subprocess.run(["h2load", "-n", str(2 * conc[t["workload"]]), *t["args"]], capture_output=True, timeout=600)
    for run in range(a.runs):
        # Interleaved: each run measures every protocol once, so drift hits all of them alike, and
        # the protocols' order within a workload rotates from run to run (no protocol always first).
        ordered = []
        for workload in ("moderation", "generation"):
            group = [t for t in plan if t["workload"] == workload]
            shift = run % len(group)
            ordered += group[shift:] + group[:shift]
        for t in ordered:
            command = ["h2load", "-n", str(counts[t["workload"]]), *t["args"]]
            result = subprocess.run(command, capture_output=True, text=True, timeout=a.timeout)
            entry = {"run": run, "workload": t["workload"], "protocol": t["protocol"], "key": t["key"],
                     "command": shlex.join(command).replace(folder + "/", "")}
            entry.update(parse_h2load(result.stdout))
            raw["runs"].append(entry)
            print(f"run {run} {t['workload']:10} {t['protocol']:18} {entry['rps']:9.1f} req/s "
                  f"mean {entry['mean_s'] * 1000:8.2f} ms ok {entry['succeeded']}/{entry['total']}", file=sys.stderr)
            time.sleep(a.pause)
    with open(a.out, "w") as f:
        json.dump(raw, f, indent=1)


def report_main(a) -> None:
    meta = json.load(open(a.meta))
    raw = json.load(open(a.raw))
    lines = [START, "## HTTP gateway benchmark (gRPC vs HTTP/2 and HTTP/1.1 JSON)", "",
             f"Generated by `Benchmarks/run-http-bench.sh` on {meta['date']}; do not edit by hand "
             "(rerun the script).", "",
             "### What was run", "",
             f"- Machine: {meta['machine']}; load average before: {meta['load_before']}.",
             f"- Server: `{meta['alignd_cmd']}` with the default models (policy `{meta['policy']}`, "
             f"safety `{meta['safety']}`); one alignd serves all three protocols.",
             "- Client: nghttp2's `h2load` for every protocol (one program, loopback, the same 2 cores as the "
             "server). gRPC and HTTP/2 JSON: one connection with C streams in flight; HTTP/1.1: C connections. "
             "gRPC bodies were checked once for `grpc-status: 0` "
             f"({', '.join(f'{k}: {v}' for k, v in raw['checks']['grpc_status'].items())}).",
             f"- moderation: one benign text ({raw['requests']['moderation']} requests per run, "
             f"C = {raw['concurrency']['moderation']}): `Inference/CheckSafety` vs `POST /v1/moderations`.",
             f"- generation: greedy {TOKENS}-token completion with `ignore_eos` ({raw['requests']['generation']} "
             f"requests per run, C = {raw['concurrency']['generation']}): `Inference/Generate` vs "
             "`POST /v1/completions` (HTTP/1.1 generation responses close their connection: the gateway watches "
             "it for a disconnect, Docs/HTTP.md).",
             f"- {meta['runs']} interleaved runs after a warm-up (the protocols' order rotates from run to run); "
             "medians below, every run in the raw JSON "
             f"({meta['out']}).", "",
             "### Results (medians)", "",
             "| workload | protocol | requests/s | mean time per request | vs gRPC (requests/s) | failed |",
             "|---|---|---|---|---|---|"]
    by = {}
    for entry in raw["runs"]:
        by.setdefault((entry["workload"], entry["key"]), []).append(entry)
    for workload in ("moderation", "generation"):
        base = statistics.median(e["rps"] for e in by.get((workload, "grpc"), [{"rps": float("nan")}]))
        for key in ("grpc", "h2", "h1"):
            entries = by.get((workload, key), [])
            if not entries:
                continue
            rps = statistics.median(e["rps"] for e in entries)
            mean = statistics.median(e["mean_s"] for e in entries)
            failed = sum(e["total"] - e["status_2xx"] for e in entries)
            ratio = "1.00×" if key == "grpc" else f"{rps / base:.2f}×"
            unit = f"{mean * 1000:.2f} ms" if mean < 1 else f"{mean:.2f} s"
            lines.append(f"| {workload} | {entries[0]['protocol']} | {rps:,.1f} | {unit} | {ratio} | {failed} |")
    lines += ["", "### Commands", "", "```sh", "Benchmarks/run-http-bench.sh   # RUNS, MOD_REQUESTS, GEN_REQUESTS, "
              "MOD_CONC, GEN_CONC to change the sizes", "# h2load calls of the first run:"]
    lines += [e["command"] for e in raw["runs"] if e["run"] == 0]
    lines += ["```"]
    if meta.get("notes"):
        lines += ["", meta["notes"]]
    lines.append(END)
    section = "\n".join(lines) + "\n"
    write_section(a.results, section, START, END, after=AFTER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--grpc-port", type=int, required=True)
    run.add_argument("--http-port", type=int, required=True)
    run.add_argument("--runs", type=int, default=3)
    run.add_argument("--moderation-requests", type=int, default=20000)
    run.add_argument("--moderation-concurrency", type=int, default=16)
    run.add_argument("--generation-requests", type=int, default=64)
    run.add_argument("--generation-concurrency", type=int, default=8)
    run.add_argument("--pause", type=float, default=1.0)
    run.add_argument("--timeout", type=float, default=600)
    run.add_argument("--out", required=True)
    report = sub.add_parser("report")
    report.add_argument("--meta", required=True)
    report.add_argument("--raw", required=True)
    report.add_argument("--results", required=True)
    a = parser.parse_args()
    run_main(a) if a.command == "run" else report_main(a)


if __name__ == "__main__":
    main()
