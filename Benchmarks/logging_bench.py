#!/usr/bin/env python3
"""Generation-log benchmark driver for Benchmarks/run-logging-bench.sh: served tokens/s at N
concurrent streams with the generation log off and on.

Subcommands (JSON out; the shell script starts and stops the servers):

  run     drive one alignd (already SERVING) with rounds of N concurrent GenerateStream calls
  report  merge the per-run JSON files into the "Generation log benchmark" section of RESULTS.md

Workload (identical for every run and both sides): round r, stream i uses prompt
load_bench.make_prompt(r * N + i) (distinct raw prompts, 23-26 tokens), seed 1000 + r * N + i,
temperature 0.8, top_k 0, top_p 1, min_p 0, --max-tokens tokens with ignore_eos, so every
completion has the same length and every run asks for exactly the same tokens. One warm-up
round of N streams x 8 tokens (not measured) precedes the rounds.

Metrics per run: tok/s = generated tokens received in a round / round wall time (prefill
included), the run's figure is the median over its rounds; TTFT = request sent -> first chunk
carrying a token, pooled over the run's streams (p50, p99); the machine's load average and CPU
use before and after the run. With the log on, the server's /metrics counters
alignd_generation_log_records_total{outcome} after the rounds and the rows in the store's
generation_log table (sqlite3, read-only) are recorded, which proves the log really wrote.
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import sqlite3
import statistics
import sys
import time
import urllib.request

from bench_common import cpu_busy, load_stubs, write_section
from load_bench import make_prompt, pct

TEMPERATURE = 0.8
SEED_BASE = 1000


async def one_stream(stub, ipb, k: int, max_tokens: int, timeout: float) -> dict:
    import grpc
    req = ipb.GenerateRequest(
        prompt=make_prompt(k),
        sampling=ipb.SamplingParams(max_tokens=max_tokens, temperature=TEMPERATURE, top_k=0, top_p=1.0, min_p=0.0,
                                    seed=SEED_BASE + k, ignore_eos=True),
        client_request_id=f"logging-bench-{k}", return_token_ids=True)
    start = time.perf_counter()
    first = None
    tokens = 0
    status = "OK"
    try:
        async for ev in stub.GenerateStream(req, timeout=timeout):
            if ev.WhichOneof("event") == "chunk" and ev.chunk.token_ids:
                if first is None:
                    first = time.perf_counter()
                tokens += len(ev.chunk.token_ids)
    except grpc.aio.AioRpcError as e:
        status = e.code().name
    return {"k": k, "status": status, "tokens": tokens, "ttft": (first - start) if first else None,
            "duration": time.perf_counter() - start}


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (/proc/<pid>/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def metrics_counters(http_port: int) -> dict:
    """alignd_generation_log_records_total by outcome, from GET /metrics."""
    out = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    except OSError as e:
        return {"error": str(e)}
    for line in text.splitlines():
        if line.startswith("alignd_generation_log_records_total{"):
            label = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


def log_rows(data_dir: str) -> int | None:
    """Rows in the generation_log table of the SQLite store under data_dir (None: no such table)."""
    for path in sorted(glob.glob(os.path.join(data_dir, "**", "*.sqlite*"), recursive=True)
                       + glob.glob(os.path.join(data_dir, "**", "*.db"), recursive=True)):
        if path.endswith(("-wal", "-shm")):
            continue
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                return con.execute("SELECT COUNT(*) FROM generation_log").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            continue
    return None


async def run_main(a) -> None:
    import grpc
    ipb, ipb_grpc = load_stubs(a.stubs, "inference_pb2", "inference_pb2_grpc")
    channel = grpc.aio.insecure_channel(a.target, options=[("grpc.max_concurrent_streams", 1024)])
    stub = ipb_grpc.InferenceStub(channel)
    env_before = {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpu_busy": cpu_busy(1.0)}
    # Warm-up: one round of N short streams (prompt ids outside the measured range).
    warm = await asyncio.gather(*[one_stream(stub, ipb, 900_000 + i, 8, a.timeout) for i in range(a.n)])
    rounds = []
    cpu0 = proc_cpu_s(a.pid) if a.pid else None
    t_begin = time.perf_counter()
    for r in range(a.rounds):
        t0 = time.perf_counter()
        res = await asyncio.gather(*[one_stream(stub, ipb, r * a.n + i, a.max_tokens, a.timeout) for i in range(a.n)])
        wall = time.perf_counter() - t0
        toks = sum(x["tokens"] for x in res)
        rounds.append({"round": r, "wall_s": wall, "tokens": toks, "tok_s": toks / wall, "requests": res})
    elapsed = time.perf_counter() - t_begin
    cpu1 = proc_cpu_s(a.pid) if a.pid else None
    await channel.close()
    env_after = {"loadavg": [round(x, 2) for x in os.getloadavg()]}
    reqs = [q for r in rounds for q in r["requests"]]
    ttfts = [q["ttft"] for q in reqs if q["ttft"] is not None]
    errors: dict[str, int] = {}
    for q in reqs + warm:
        if q["status"] != "OK":
            errors[q["status"]] = errors.get(q["status"], 0) + 1
    out = {
        "side": a.side, "index": a.index, "n": a.n, "max_tokens": a.max_tokens, "rounds": len(rounds),
        "tok_s": statistics.median(r["tok_s"] for r in rounds),
        "tok_s_rounds": [round(r["tok_s"], 1) for r in rounds],
        "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99), "ttfts": ttfts,
        "short": sum(1 for q in reqs if q["status"] == "OK" and q["tokens"] != a.max_tokens),
        "errors": errors, "elapsed_s": elapsed, "env_before": env_before, "env_after": env_after,
        "completions_requested": len(reqs) + len(warm),
        "server_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
        "tokens": sum(r["tokens"] for r in rounds),
    }
    if out["server_cpu_s"] is not None and out["tokens"]:
        out["server_cpu_ms_per_token"] = out["server_cpu_s"] * 1000 / out["tokens"]
    if a.http_port:
        time.sleep(0.5)  # the writer flushes every 200 ms
        out["log_counters"] = metrics_counters(a.http_port)
    if a.data_dir:
        out["log_rows"] = log_rows(a.data_dir)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"[logging-bench] run {a.index} {a.side}: {out['tok_s']:.1f} tok/s rounds={out['tok_s_rounds']} "
          f"TTFT p50 {out['ttft_p50']:.3f} s p99 {out['ttft_p99']:.3f} s errors={errors} short={out['short']} "
          f"load {env_before['loadavg'][0]}->{env_after['loadavg'][0]} log={out.get('log_counters')} "
          f"rows={out.get('log_rows')}", file=sys.stderr)


def f1(x, spec=".1f", scale=1.0) -> str:
    return "—" if x is None else format(x * scale, spec)


def report_main(a) -> None:
    meta = json.load(open(a.meta))
    runs = []
    for path in a.runs:
        if os.path.exists(path):
            runs.append(json.load(open(path)))
    runs.sort(key=lambda r: r["index"])
    side = {s: [r for r in runs if r["side"] == s] for s in ("off", "on")}
    med = {s: statistics.median([r["tok_s"] for r in side[s]]) if side[s] else None for s in side}
    ttft = {s: ([t for r in side[s] for t in r["ttfts"]]) for s in side}
    ratio = (med["on"] / med["off"]) if med["on"] and med["off"] else None
    # Per-run ratios of neighbouring pairs (off_i, on_i), which see the most similar noise.
    pairs = [(o["tok_s"], n["tok_s"]) for o, n in zip(side["off"], side["on"])]
    pair_ratios = [n / o for o, n in pairs if o]
    spread = {s: ((max(r["tok_s"] for r in side[s]) / min(r["tok_s"] for r in side[s]) - 1) if side[s] else None)
              for s in side}
    noisy = [s for s in spread if spread[s] is not None and spread[s] > 0.10]
    cpu = {s: statistics.median([r["server_cpu_ms_per_token"] for r in side[s] if r.get("server_cpu_ms_per_token")])
           if any(r.get("server_cpu_ms_per_token") for r in side[s]) else None for s in side}
    lines = [
        "<!-- logging-bench:start -->",
        "## Generation log benchmark (served tokens/s with the log off and on)",
        "",
        f"Generated by `Benchmarks/run-logging-bench.sh` on {meta['date']} at commit `{meta['commit']}` "
        f"({meta['tree']}). Raw outputs: `{meta['out']}` (not committed).",
        "",
        "### What was run",
        "",
        f"- Machine: {meta['machine']}; SIMD flags (lscpu): {meta['flags']}. The 2 cores are shared with "
        "other engineers' builds: the load average before and after each run is in the per-run table.",
        f"- alignd binary: `{meta['alignd']}` (file mtime {meta['alignd_mtime']}, sha256 {meta['alignd_sha']}). "
        f"One server per run, started fresh on an empty data folder: `{meta['alignd_cmd']}` with "
        "`--generation-log false` (off) or `--generation-log true --generation-log-sample-rate 1` (on); the "
        "store is the default SQLite under the data folder; every other key at its default (engine_threads "
        f"{meta['engine_threads']}, reward_sample_rate 0.1, generation_log_queue_capacity 4096).",
        f"- Runs: {meta['order']} — {meta['runs']} per side, alternating, one server at a time (so both sides see "
        "the same machine noise).",
        f"- Workload per run: one warm-up round ({meta['n']} streams x 8 tokens, not measured), then {meta['rounds']} "
        f"synchronized rounds of **{meta['n']} concurrent `Inference.GenerateStream` calls** on one HTTP/2 "
        f"connection (Python grpcio aio, one client thread, same 2 cores, 127.0.0.1), each **{meta['max_tokens']} "
        "tokens with ignore_eos**, temperature 0.8, seed 1000+k, raw prompt k (Benchmarks/load_bench.py's "
        "distinct prompts, 23–26 tokens); the same prompts and seeds in every run on both sides.",
        "- Metrics: tok/s = tokens received in a round / round wall time (prefill included); a run's tok/s is the "
        "median of its rounds; a side's figure is the median of its runs. TTFT = request sent → first token "
        "chunk, pooled over all streams of a side's runs.",
        f"- Driver: `{meta['driver_cmd']}`.",
        "",
        "### Results",
        "",
        f"| side | tok/s (median of {len(side['off'])}/{len(side['on'])} runs) | per-run tok/s | spread (max/min − 1) "
        "| TTFT p50 (ms) | TTFT p99 (ms) | alignd CPU ms per token (median) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for s in ("off", "on"):
        lines.append(f"| log {s} | {f1(med[s])} | {', '.join(f1(r['tok_s']) for r in side[s])} | "
                     f"{f1(spread[s], '.1%') if spread[s] is not None else '—'} | {f1(pct(ttft[s], 50), '.0f', 1000)} | "
                     f"{f1(pct(ttft[s], 99), '.0f', 1000)} | {f1(cpu[s], '.2f')} |")
    met = ratio is not None and ratio >= 0.95
    lines += [
        "",
        f"**on / off = {f1(ratio, '.3f')}** (medians; {f1(abs(1 - ratio) if ratio else None, '.1%')} "
        f"{'fewer' if ratio is not None and ratio < 1 else 'more'} tokens/s with the log on); per-pair ratios (the "
        f"k-th on run / the k-th off run, run right before it): {', '.join(f1(x, '.3f') for x in pair_ratios)}, median "
        f"{f1(statistics.median(pair_ratios) if pair_ratios else None, '.3f')}. Target on ≥ 95 % of off: "
        f"**{'met' if met else 'not met'}**. alignd's own CPU time per generated token (user + system over the "
        f"rounds, /proc/<pid>/stat; less sensitive to other processes than wall time): on / off = "
        f"{f1(cpu['on'] / cpu['off'] if cpu['on'] and cpu['off'] else None, '.3f')}.",
    ]
    if noisy:
        lines.append(f"**Noise**: runs of one side differ by more than 10 % ({', '.join(f'{s}: {spread[s]:.0%}' for s in noisy)}); "
                     "the ratio is within that noise and should be read with it.")
    lines += ["", "Per run (in the order run):", "",
              "| # | side | tok/s | rounds tok/s | TTFT p50 / p99 (ms) | alignd CPU ms/token | load avg 1/5/15 before | load 1-min after | CPU busy before | errors | short | log entries written (metric) / rows in store |",
              "|---:|---|---:|---|---|---:|---|---:|---:|---|---:|---|"]
    for r in runs:
        lc = r.get("log_counters") or {}
        logcol = "—" if r["side"] == "off" else f"{int(lc.get('written', 0))} / {r.get('log_rows')}" + (
            f" (dropped {int(lc['dropped'])})" if lc.get("dropped") else "") + (
            f" (failed {int(lc['failed'])})" if lc.get("failed") else "")
        if r["side"] == "off" and r.get("log_rows"):
            logcol = f"rows {r['log_rows']} (expected none)"
        lines.append(
            f"| {r['index']} | {r['side']} | {f1(r['tok_s'])} | {', '.join(f1(x) for x in r['tok_s_rounds'])} | "
            f"{f1(r['ttft_p50'], '.0f', 1000)} / {f1(r['ttft_p99'], '.0f', 1000)} | {f1(r.get('server_cpu_ms_per_token'), '.2f')} | "
            f"{' '.join(str(x) for x in r['env_before']['loadavg'])} | {r['env_after']['loadavg'][0]} | "
            f"{r['env_before']['cpu_busy']:.0%} | {r['errors'] or 'none'} | {r['short']} | {logcol} |")
    if meta.get("notes"):
        lines += ["", meta["notes"]]
    lines += ["", "### Commands", "", "```sh",
              "Benchmarks/run-logging-bench.sh   # everything above (RUNS, STREAMS, MAX_TOKENS, ROUNDS tune it)",
              meta["alignd_cmd"] + " --generation-log false   # off",
              meta["alignd_cmd"] + " --generation-log true --generation-log-sample-rate 1   # on",
              meta["driver_cmd"], "```", "<!-- logging-bench:end -->", ""]
    write_section(a.results, "\n".join(lines), "<!-- logging-bench:start -->", "<!-- logging-bench:end -->",
                  after="<!-- toxicity-bench:end -->")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", required=True)
    r.add_argument("--stubs", required=True)
    r.add_argument("--side", choices=["off", "on"], required=True)
    r.add_argument("--index", type=int, required=True)
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--max-tokens", type=int, default=64)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--timeout", type=float, default=300)
    r.add_argument("--http-port", type=int, default=0)
    r.add_argument("--data-dir", default="")
    r.add_argument("--pid", type=int, default=0, help="alignd's pid: its CPU time over the rounds is recorded")
    r.add_argument("--out", required=True)
    q = sub.add_parser("report")
    q.add_argument("--meta", required=True)
    q.add_argument("--runs", nargs="*", default=[])
    q.add_argument("--results", required=True)
    a = p.parse_args()
    if a.cmd == "run":
        asyncio.run(run_main(a))
    else:
        report_main(a)


if __name__ == "__main__":
    main()
