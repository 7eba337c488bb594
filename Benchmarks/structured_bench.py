#!/usr/bin/env python3
"""Constrained-decoding benchmark driver: decode throughput of chat completions constrained by a
JSON schema (response_format json_schema) against the same requests unconstrained, at 1 and at
32 concurrent streams, against one alignd's HTTP gateway. Standard library only.

Workloads (alternated within each run so machine noise hits both alike):
  schema   chat completion, temperature 0.8, max_tokens T, with a json_schema (nested object,
           enum, integer, array of bounded strings); it ends when the document does
  free     the same prompt and seed unconstrained, ignore_eos, max_tokens = the length the schema
           request of that seed had in an untimed calibration pass: both workloads generate the
           same number of tokens per request, so per-request costs (HTTP, prefill) weigh alike
Metric: completion tokens / wall seconds over N requests at concurrency C; the ratio
schema / free is the constrained-decoding cost (target ≥ 0.90).

  run     --http-port H --runs R --requests N --tokens T --concurrency 1,32 --out raw.json
  report  --meta meta.json --raw raw.json --results RESULTS.md  (writes the section)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import time
import urllib.request

from bench_common import cpu_busy, write_section

START = "<!-- structured-bench:start -->"
END = "<!-- structured-bench:end -->"
AFTER = "<!-- http-bench:end -->"

PROMPT = "Describe a fictional person as JSON: name, age, job and hobbies."
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["name", "age", "job", "hobbies"],
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "job": {"enum": ["teacher", "doctor", "engineer", "artist", "farmer"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 8},
    },
}


def body(kind: str, tokens: int, seed: int) -> bytes:
    """A request; for `free`, `tokens` is the exact length to generate."""
    request = {"model": "alignd", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
               "temperature": 0.8, "seed": seed}
    if kind == "schema":
        request["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    else:
        request["ignore_eos"] = True
    return json.dumps(request).encode()


def one(port: int, kind: str, tokens: int, seed: int) -> int:
    """Sends one request and returns its completion tokens."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=body(kind, tokens, seed),
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.load(response)
    if kind == "schema" and answer["choices"][0]["finish_reason"] == "stop":
        json.loads(answer["choices"][0]["message"]["content"])  # must parse
    return answer["usage"]["completion_tokens"]


def measure(port: int, kind: str, requests: int, tokens: int, concurrency: int, seed: int,
            lengths: dict[int, int]) -> dict:
    """`lengths`: seed → the schema request's length, which the free request of that seed matches."""
    def length(i: int) -> int:
        return tokens if kind == "schema" else lengths.get(seed + i, tokens)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        counts = list(pool.map(lambda i: one(port, kind, length(i), seed + i), range(requests)))
    seconds = time.monotonic() - started
    return {"kind": kind, "concurrency": concurrency, "requests": requests, "tokens": sum(counts),
            "seconds": round(seconds, 3), "tokens_per_second": round(sum(counts) / seconds, 2)}


def calibrate(port: int, seeds: list[int], tokens: int) -> dict[int, int]:
    """Untimed: each seed's schema completion length (the warm-up too: compiles the schema)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return dict(zip(seeds, pool.map(lambda seed: one(port, "schema", tokens, seed), seeds)))


def run(args: argparse.Namespace) -> None:
    rows = []
    levels = [int(c) for c in args.concurrency.split(",")]
    seeds = sorted({1000 * r + i for r in range(args.runs) for c in levels for i in range(max(args.requests, c * 2))})
    lengths = calibrate(args.http_port, seeds, args.tokens)
    print(json.dumps({"calibrated": len(lengths), "mean_length": round(statistics.mean(lengths.values()), 1)}), flush=True)
    for concurrency in levels:
        requests = max(args.requests, concurrency * 2)
        for kind in ["free", "schema"]:  # warm-up at this concurrency
            measure(args.http_port, kind, concurrency, args.tokens, concurrency, 7, lengths)
        for r in range(args.runs):
            for kind in (["free", "schema"] if r % 2 == 0 else ["schema", "free"]):
                row = measure(args.http_port, kind, requests, args.tokens, concurrency, 1000 * r, lengths)
                row.update(run=r, cpu_busy_after=cpu_busy(1.0))
                print(json.dumps(row), flush=True)
                rows.append(row)
    json.dump(rows, open(args.out, "w"), indent=1)


def report(args: argparse.Namespace) -> None:
    meta = json.load(open(args.meta))
    rows = json.load(open(args.raw))
    lines = [START, "## Constrained decoding benchmark", "",
             f"{meta['date']} · {meta['machine']} · load before {meta['load_before']} · policy {meta['policy']} · "
             f"commit {meta['commit']}", "",
             f"`{meta['alignd_cmd']}`; Benchmarks/run-structured-bench.sh, {meta['runs']} runs, "
             "chat completions over HTTP/1.1, temperature 0.8; schema = response_format json_schema, free = "
             "the same prompt and seed unconstrained with ignore_eos, as many tokens as the schema request of "
             "that seed took (like for like; Benchmarks/structured_bench.py).", "",
             "| streams | free tok/s (median) | schema tok/s (median) | schema / free | tokens per request (free / schema) |",
             "|---|---|---|---|---|"]
    for concurrency in sorted({row["concurrency"] for row in rows}):
        free = statistics.median(r["tokens_per_second"] for r in rows if r["concurrency"] == concurrency and r["kind"] == "free")
        schema = statistics.median(r["tokens_per_second"] for r in rows if r["concurrency"] == concurrency and r["kind"] == "schema")
        per = {kind: sum(r["tokens"] for r in rows if r["concurrency"] == concurrency and r["kind"] == kind)
               / sum(r["requests"] for r in rows if r["concurrency"] == concurrency and r["kind"] == kind)
               for kind in ["free", "schema"]}
        lines.append(f"| {concurrency} | {free:.1f} | {schema:.1f} | {schema / free:.2f} | "
                     f"{per['free']:.1f} / {per['schema']:.1f} |")
    if meta.get("mask"):
        lines += ["", f"Mask computation (alignd_constraint_mask_seconds over the run): {meta['mask']}."]
    if meta.get("notes"):
        lines += ["", meta["notes"]]
    lines += ["", END]
    write_section(args.results, "\n".join(lines) + "\n", START, END, AFTER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--http-port", type=int, required=True)
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--requests", type=int, default=8)
    r.add_argument("--tokens", type=int, default=64)
    r.add_argument("--concurrency", default="1,32")
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--meta", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--results", required=True)
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
