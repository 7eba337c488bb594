#!/usr/bin/env python3
"""Time to first token of chat completions whose ~1,000-token system prompt the prefix cache holds,
against the same requests whose system prompt it cannot hold (a different first line each time,
so no KV block matches), alternated in one run on one server. Standard library only.

    prefix_bench.py run --http-port PORT --runs 7 --out raw.json
    prefix_bench.py report --meta meta.json --raw raw.json --results Benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import sys
import time
import uuid

from bench_common import write_section

SECTION = "prefix-bench"
# About 1,000 tokens for SmolLM2's tokenizer (measured by the script: usage.prompt_tokens).
SYSTEM_BODY = " ".join(
    f"Rule {i}: answer questions about ships, harbours and tides politely, in plain words, "
    f"and say so when you are not sure." for i in range(1, 46))
QUESTIONS = ["When is high tide?", "What is a harbour master?", "Why do ships have bulbs?",
             "How deep is a harbour?", "What is a knot?", "Who steers a ship?", "What is ballast?",
             "How do tides work?", "What is a quay?", "What is a buoy for?"]


def ttft(port: int, system: str, question: str) -> tuple[float, dict]:
    """Seconds from sending the request to the first content chunk of the stream, and the usage."""
    body = json.dumps({"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
                       "max_tokens": 8, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    first = None
    usage = {}
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: {"):
            continue
        event = json.loads(line[6:])
        for choice in event.get("choices", []):
            if first is None and (choice.get("delta") or {}).get("content"):
                first = time.perf_counter() - start
        if event.get("usage"):
            usage = event["usage"]
    connection.close()
    return (first if first is not None else time.perf_counter() - start), usage


def run(args) -> int:
    # Warm up both paths and fill the cache with the shared system prompt.
    ttft(args.http_port, SYSTEM_BODY, "Hello.")
    ttft(args.http_port, f"Session {uuid.uuid4().hex}. " + SYSTEM_BODY, "Hello.")
    rows = []
    for i in range(args.runs):
        question = QUESTIONS[i % len(QUESTIONS)]
        cached, cached_usage = ttft(args.http_port, SYSTEM_BODY, question)
        fresh, fresh_usage = ttft(args.http_port, f"Session {uuid.uuid4().hex}. " + SYSTEM_BODY, question)
        rows.append({"cached_s": cached, "uncached_s": fresh, "cached_usage": cached_usage, "uncached_usage": fresh_usage})
        print(f"run {i + 1}: cached {cached * 1000:.1f} ms, uncached {fresh * 1000:.1f} ms", file=sys.stderr)
    metrics = http.client.HTTPConnection("127.0.0.1", args.http_port, timeout=30)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    hits = sum(float(m) for m in re.findall(r'^alignd_prefix_cache_lookups_total\{[^}]*result="hit"[^}]*\} (\S+)', text, re.M))
    misses = sum(float(m) for m in re.findall(r'^alignd_prefix_cache_lookups_total\{[^}]*result="miss"[^}]*\} (\S+)', text, re.M))
    json.dump({"rows": rows, "hits": hits, "misses": misses}, open(args.out, "w"), indent=1)
    return 0


def report(args) -> int:
    meta = json.load(open(args.meta))
    raw = json.load(open(args.raw))
    rows = raw["rows"]
    cached = statistics.median(r["cached_s"] for r in rows)
    fresh = statistics.median(r["uncached_s"] for r in rows)
    prompt = rows[0]["cached_usage"].get("prompt_tokens", 0)
    hit_tokens = statistics.median((r["cached_usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0) for r in rows)
    miss_tokens = statistics.median((r["uncached_usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0) for r in rows)
    lookups = raw["hits"] + raw["misses"]
    lines = [
        f"<!-- {SECTION}:start -->",
        "## Prefix cache: time to first token with a cached ~1,000-token system prompt",
        "",
        f"Commit `{meta['commit']}` ({meta['tree']}), {meta['date']}. Machine: {meta['machine']}. "
        f"Load average before: {meta['load_before']}.",
        "",
        f"What ran: `{meta['alignd_cmd']}` (default `prefix_cache_tokens` 4096), streamed HTTP chat "
        f"completions (max_tokens 8, temperature 0) with a {prompt}-token prompt: the same system prompt each "
        "time (cached) against a system prompt whose first line differs every time (no KV block matches: "
        f"prefilled whole), alternated, {len(rows)} pairs after one warm-up of each. TTFT = request sent to "
        "first content chunk, client side on loopback.",
        "",
        "| | TTFT median | prompt tokens from the cache (median) |",
        "|---|---:|---:|",
        f"| cached system prompt | {cached * 1000:.1f} ms | {hit_tokens:.0f} of {prompt} |",
        f"| uncached (same length) | {fresh * 1000:.1f} ms | {miss_tokens:.0f} of {prompt} |",
        f"| **ratio uncached / cached** | **{fresh / cached:.1f}×** (target ≥ 5×) | |",
        "",
        f"Hit rate over the run (alignd_prefix_cache_lookups_total): {raw['hits']:.0f} hits of {lookups:.0f} lookups "
        f"({100 * raw['hits'] / max(lookups, 1):.0f}%; every uncached request is a miss by design).",
        f"<!-- {SECTION}:end -->",
    ]
    section = "\n".join(lines)
    write_section(args.results, section + "\n", f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->")
    print(section)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--http-port", type=int, required=True)
    r.add_argument("--runs", type=int, default=7)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--meta", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--results", required=True)
    args = parser.parse_args()
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
