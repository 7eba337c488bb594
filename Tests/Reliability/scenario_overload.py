#!/usr/bin/env python3
"""Overload: GenerateStream at 4x the measured capacity; the excess is refused cleanly.

Phases, all against one alignd started with admission limits that make refusals visible
(--max-running-sequences M, default 4; --queue-capacity Q, default 0 = no waiting room: a request
starts at the next step or is refused; both recorded in the result):

0. Q = 0 support: an idle server with --queue-capacity 0 (a value the configuration accepts) must
   serve a request. If it refuses it, that is recorded as a failed check and the run falls back
   to Q = 1, the smallest waiting room the server then supports.
1. Unloaded TTFT: sequential requests (one at a time) of the workload below, each cancelled after
   its first token; their p99 time to first token is the reference.
2. Capacity: closed loop at concurrency M (every running slot busy): completed requests per
   second between the M-th and the last completion (6M completions, quick 2M, or a time bound).
3. Overload: an open-loop arrival schedule (fixed spacing: 1 / (4 x capacity) s, independent of
   answers) for the set duration. Every call carries a deadline. Checks:
   - refused calls get RESOURCE_EXHAUSTED (with a retry-after-ms hint) and nothing else; no call
     ends with any other status (a DEADLINE_EXCEEDED would be a hang);
   - admitted calls complete (64 tokens, finish reason LENGTH);
   - p99 TTFT of the admitted calls <= 2 x the unloaded p99 TTFT;
   - peak RSS of the server (sampled VmRSS and the kernel's VmHWM) below a bound derived from the
     model: weights file + KV cache ((kv_cache_tokens + context length) x bytes per token, the
     engine allocates it at load) + a fixed 320 MB allowance for the runtime, tokenizers, the safety
     classifier, gRPC buffers and the per-request state of every admitted request;
4. Afterwards: health SERVING and one Generate succeeds; SIGTERM exits 0.

--quick (10 s of overload, about 20 calls) records the TTFT ratio and the Q = 0 check without
failing on them: a p99 of 20 samples is their maximum, and the Q = 0 refusal is a known server
defect (Docs/RELIABILITY.md) that the full run reports. Every other check is enforced.

Workload: raw prompts from a fixed set of 16 (20-30 tokens), temperature 0.8, seed per request
(sampled, never greedy), 64 tokens with ignore_eos, so every admitted request costs the same.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MAX_TOKENS = 64
TOPICS = ["a lighthouse keeper", "the history of tea", "volcanoes", "honey bees", "an old violin",
          "desert caravans", "the northern lights", "coral reefs", "medieval bridges", "a chess match",
          "migrating whales", "a bakery at dawn", "paper airplanes", "the compass", "glass blowing",
          "thunderstorms"]


def prompt(k: int) -> str:
    return f"Write a short story about {TOPICS[k % len(TOPICS)]}. Use vivid details and keep going for several paragraphs."


class Call:
    """One GenerateStream call's outcome."""
    __slots__ = ("k", "sent", "first", "end", "status", "tokens", "finish", "retry_after_ms", "detail")

    def __init__(self, k: int):
        self.k = k
        self.sent = self.first = self.end = 0.0
        self.status = ""
        self.tokens = 0
        self.finish = ""
        self.retry_after_ms: str | None = None
        self.detail = ""

    @property
    def ttft(self) -> float | None:
        return self.first - self.sent if self.first else None


class Driver:
    def __init__(self, stubs, target: str, timeout: float):
        import grpc  # noqa: PLC0415
        self.grpc = grpc
        self.pb = stubs.inference_pb2
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.max_concurrent_streams", 1024)])
        self.stub = stubs.inference_pb2_grpc.InferenceStub(self.channel)
        self.timeout = timeout

    def request(self, k: int):
        pb = self.pb
        return pb.GenerateRequest(
            prompt=prompt(k), client_request_id=f"overload-{k}",
            sampling=pb.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.8, top_k=0, top_p=1.0, min_p=0.0,
                                       seed=10_000 + k, ignore_eos=True))

    async def one(self, k: int, first_only: bool = False) -> Call:
        """One call; `first_only` cancels it after the first token (TTFT probes)."""
        c = Call(k)
        c.sent = time.perf_counter()
        call = self.stub.GenerateStream(self.request(k), timeout=self.timeout)
        try:
            async for ev in call:
                which = ev.WhichOneof("event")
                if which == "chunk" and ev.chunk.text and not c.first:
                    c.first = time.perf_counter()
                    if first_only:
                        call.cancel()
                        c.status = "OK"
                        c.end = c.first
                        return c
                if which == "end":
                    c.tokens = ev.end.usage.completion_tokens
                    if ev.end.completions:
                        c.finish = self.pb.FinishReason.Name(ev.end.completions[0].finish_reason)
            c.status = "OK"
        except self.grpc.aio.AioRpcError as e:
            c.status = e.code().name
            c.detail = (e.details() or "")[:200]
            for key, value in (e.trailing_metadata() or ()):
                if key == "retry-after-ms":
                    c.retry_after_ms = value
        except Exception as e:  # noqa: BLE001
            c.status = type(e).__name__
            c.detail = str(e)[:200]
        c.end = time.perf_counter()
        return c

    async def close(self) -> None:
        await self.channel.close()


async def sequential(d: Driver, n: int, k0: int, first_only: bool = False) -> list[Call]:
    return [await d.one(k0 + i, first_only) for i in range(n)]


async def closed_loop(d: Driver, concurrency: int, completions: int, max_seconds: float,
                      k0: int) -> tuple[list[Call], float]:
    """`concurrency` workers issue requests back to back until `completions` requests completed
    or `max_seconds` passed (no new request starts after either). A refused request backs off
    for its retry-after-ms hint (20..500 ms) so a worker never spins. Returns calls and t0."""
    calls: list[Call] = []
    t0 = time.perf_counter()
    counter = iter(range(k0, k0 + 1_000_000))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while time.perf_counter() - t0 < max_seconds and ok < completions:
            c = await d.one(next(counter))
            calls.append(c)
            if c.status == "OK":
                ok += 1
            elif c.status == "RESOURCE_EXHAUSTED":
                hint = float(c.retry_after_ms) if (c.retry_after_ms or "").isdigit() else 50.0
                await asyncio.sleep(min(0.5, max(0.02, hint / 1000)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls, t0


async def open_loop(d: Driver, rate: float, seconds: float, k0: int) -> tuple[list[Call], float, float]:
    """Arrivals every 1/rate s for `seconds`, regardless of answers; waits for every call."""
    tasks = []
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(d.one(k0 + i)))
    t_last = time.perf_counter()
    calls = await asyncio.gather(*tasks)
    return list(calls), t0, t_last


def queue_zero_admits(ctx: harness.Scenario) -> tuple[bool, str]:
    """Whether `--queue-capacity 0` means "start now or be refused": an idle server with it must
    serve one request. (Before the fix proposed in Docs/RELIABILITY.md it refuses every request.)"""
    import grpc  # noqa: PLC0415
    probe = ctx.server(["--queue-capacity", "0"], name="queue0-probe")
    probe.start()
    try:
        probe.wait_serving(ctx.stubs)
        pb = ctx.stubs.inference_pb2
        with grpc.insecure_channel(probe.target) as ch:
            try:
                ctx.stubs.inference_pb2_grpc.InferenceStub(ch).Generate(
                    pb.GenerateRequest(prompt=prompt(0), sampling=pb.SamplingParams(max_tokens=2, seed=1)), timeout=60)
                return True, "an idle server with --queue-capacity 0 served a request"
            except grpc.RpcError as e:
                return False, f"an idle server with --queue-capacity 0 answered {e.code().name}: {e.details()}"
    finally:
        probe.stop()


def body(ctx: harness.Scenario) -> None:
    a = ctx.args
    M, Q = a.max_running_sequences, a.queue_capacity
    if Q == 0:
        ok, why = queue_zero_admits(ctx)
        ctx.figures["queue_capacity_0"] = {"admits": ok, "detail": why}
        harness.log(why)
        ctx.checks.check("--queue-capacity 0 (accepted by the configuration) serves a request on an idle server",
                         ok, why, "served", enforced=not a.quick)
        if not ok:
            Q = 1
            ctx.notes.append(f"--queue-capacity 0 requested, but {why}; ran with --queue-capacity 1 "
                             "(the smallest waiting room this server accepts)")
    unloaded_n = a.unloaded_requests or (8 if a.quick else 30)
    cap_seconds = a.capacity_seconds or (30.0 if a.quick else 90.0)
    cap_completions = a.capacity_completions or (2 * M if a.quick else 6 * M)
    over_seconds = a.overload_seconds or (10.0 if a.quick else 60.0)
    options = ["--max-running-sequences", str(M), "--queue-capacity", str(Q),
               "--kv-cache-tokens", str(a.kv_cache_tokens), *a.server_option]
    server = ctx.server(options, kv_cache_tokens=None)
    ctx.config = {"command": " ".join(server.command()).replace(harness.REPO + "/", ""),
                  "max_running_sequences": M, "queue_capacity": Q, "queue_capacity_requested": a.queue_capacity, "kv_cache_tokens": a.kv_cache_tokens,
                  "max_tokens": MAX_TOKENS, "temperature": 0.8, "overload_factor": a.factor,
                  "overload_seconds": over_seconds, "capacity_max_seconds": cap_seconds,
                  "capacity_completions": cap_completions,
                  "unloaded_requests": unloaded_n, "request_timeout_s": a.request_timeout}
    server.start()
    rss = harness.RssSampler(server.pid, 0.1).start()
    ctx.figures["load_seconds"] = round(server.wait_serving(ctx.stubs), 2)
    ctx.figures["cpu_busy_before"] = harness.cpu_busy(1.0)
    idle_rss_mb = harness.proc_status_kb(server.pid, "VmRSS") / 1024

    async def run() -> None:
        d = Driver(ctx.stubs, server.target, a.request_timeout)
        warm = await sequential(d, 2, 900_000)
        harness.log(f"warm-up: {[c.status for c in warm]}")

        # 1. Unloaded TTFT.
        un = await sequential(d, unloaded_n, 0, first_only=True)
        bad = [c for c in un if c.status != "OK"]
        ctx.checks.check("unloaded requests all succeed", not bad, len(un) - len(bad), len(un),
                         "; ".join(f"{c.status} {c.detail}" for c in bad[:3]))
        un_ttft = [c.ttft for c in un if c.ttft is not None]
        ctx.figures["unloaded"] = {"ttft_s": harness.summary(un_ttft)}
        harness.log(f"unloaded TTFT {ctx.figures['unloaded']['ttft_s']}")

        # 2. Capacity: closed loop at concurrency M (every running slot busy). Throughput is
        # measured between the M-th and the last completion (steady state: the start-up burst of
        # M simultaneous prefills is excluded).
        calls, t0 = await closed_loop(d, M, cap_completions, cap_seconds, 1000)
        ends = sorted(c.end for c in calls if c.status == "OK")
        if len(ends) > M:
            window = ends[-1] - ends[M - 1]
            capacity = (len(ends) - M) / window
        else:
            window, capacity = 0.0, 0.0
        cap_errors: dict[str, int] = {}
        for c in calls:
            if c.status != "OK":
                cap_errors[c.status] = cap_errors.get(c.status, 0) + 1
        ctx.figures["capacity"] = {"concurrency": M, "requests": len(calls), "completed": len(ends),
                                   "window_s": round(window, 2), "requests_per_s": round(capacity, 3),
                                   "tokens_per_s": round(capacity * MAX_TOKENS, 1), "errors": cap_errors,
                                   "ttft_s": harness.summary(c.ttft for c in calls if c.ttft is not None)}
        harness.log(f"capacity {capacity:.2f} req/s at concurrency {M} over {window:.1f}s (errors {cap_errors})")
        ctx.checks.check("capacity measured (> 0 requests/s)", capacity > 0, round(capacity, 3), "> 0")
        if capacity <= 0:
            return

        # 3. Overload: open loop at factor x capacity.
        rate = a.factor * capacity
        await asyncio.sleep(1.0)  # let the capacity phase's last streams end
        over, t0, t_last = await open_loop(d, rate, over_seconds, 100_000)
        by_status: dict[str, int] = {}
        for c in over:
            by_status[c.status] = by_status.get(c.status, 0) + 1
        admitted = [c for c in over if c.status == "OK"]
        refused = [c for c in over if c.status == "RESOURCE_EXHAUSTED"]
        others = [c for c in over if c.status not in ("OK", "RESOURCE_EXHAUSTED")]
        incomplete = [c for c in admitted if c.tokens != MAX_TOKENS or c.finish != "FINISH_REASON_LENGTH"]
        adm_ttft = [c.ttft for c in admitted if c.ttft is not None]
        served_window = max(c.end for c in admitted) - t0 if admitted else over_seconds
        ctx.figures["overload"] = {
            "offered_rate_per_s": round(rate, 3), "arrivals": len(over), "arrival_window_s": round(t_last - t0, 2),
            "by_status": by_status, "admitted": len(admitted), "refused": len(refused),
            "admitted_fraction": round(len(admitted) / max(1, len(over)), 3),
            "goodput_requests_per_s": round(len(admitted) / max(1e-6, served_window), 3),
            "admitted_ttft_s": harness.summary(adm_ttft),
            "admitted_duration_s": harness.summary(c.end - c.sent for c in admitted),
            "refusal_latency_s": harness.summary(c.end - c.sent for c in refused),
            "retry_after_ms_present": sum(1 for c in refused if c.retry_after_ms is not None),
            "retry_after_ms_values": harness.summary(float(c.retry_after_ms) for c in refused
                                                     if c.retry_after_ms and c.retry_after_ms.isdigit()),
            "other_errors": [f"{c.status}: {c.detail}" for c in others[:10]],
            "incomplete_admitted": len(incomplete),
            # Every call: [sent offset s, status, TTFT s, duration s] (for investigating TTFT tails).
            "calls": [[round(c.sent - t0, 3), c.status, round(c.ttft, 3) if c.ttft else None,
                       round(c.end - c.sent, 3)] for c in over],
        }
        harness.log(f"overload: {by_status}, admitted TTFT {ctx.figures['overload']['admitted_ttft_s']}")
        ctx.checks.check("excess refused only with RESOURCE_EXHAUSTED (no other status, no hang)",
                         not others, by_status, "only OK and RESOURCE_EXHAUSTED")
        ctx.checks.check("overload really refused some requests", len(refused) > 0, len(refused), "> 0")
        hinted = sum(1 for c in refused if (c.retry_after_ms or "").isdigit())
        ctx.checks.check("every refusal carries a retry-after-ms hint", hinted == len(refused),
                         f"{hinted}/{len(refused)}", "all")
        ctx.checks.check("admitted requests complete (64 tokens, LENGTH)", not incomplete and len(admitted) > 0,
                         f"{len(admitted) - len(incomplete)}/{len(admitted)}", "all")
        un_p99 = harness.pct(un_ttft, 99)
        adm_p99 = harness.pct(adm_ttft, 99)
        ctx.figures["ttft_ratio_p99"] = round(adm_p99 / un_p99, 2) if adm_p99 and un_p99 else None
        ctx.checks.check("admitted p99 TTFT <= 2 x unloaded p99 TTFT",
                         adm_p99 is not None and un_p99 is not None and adm_p99 <= 2 * un_p99,
                         round(adm_p99, 4) if adm_p99 else None, round(2 * un_p99, 4) if un_p99 else None,
                         f"ratio {ctx.figures['ttft_ratio_p99']}", enforced=not a.quick)
        await d.close()

    asyncio.run(run())

    # 4. Healthy afterwards.
    health = server.health(ctx.stubs)
    ctx.checks.check("health SERVING after the overload", health == "SERVING", health, "SERVING")
    import grpc  # noqa: PLC0415
    with grpc.insecure_channel(server.target) as ch:
        pb = ctx.stubs.inference_pb2
        try:
            r = ctx.stubs.inference_pb2_grpc.InferenceStub(ch).Generate(pb.GenerateRequest(
                prompt=prompt(0), sampling=pb.SamplingParams(max_tokens=8, temperature=0.8, seed=1)), timeout=30)
            ok, detail = bool(r.completions and r.usage.completion_tokens > 0), r.versions.policy
        except grpc.RpcError as e:
            ok, detail = False, f"{e.code().name}: {e.details()}"
    ctx.checks.check("one Generate succeeds after the overload", ok, detail)

    rss.stop()
    model = os.path.join(harness.MODELS_DIR, harness.DEFAULT_POLICY)
    weights_mb, kv_mb, ctx_len = harness.snapshot_memory_mb(model, a.kv_cache_tokens)
    bound = round(weights_mb + kv_mb + a.rss_allowance_mb)
    peak = max(rss.peak_kb, rss.hwm_kb) / 1024
    ctx.figures["memory"] = {**rss.figures(), "idle_rss_after_load_mb": round(idle_rss_mb, 1),
                             "bound_mb": bound, "weights_file_mb": round(weights_mb, 1),
                             "kv_cache_mb": round(kv_mb, 1), "allowance_mb": a.rss_allowance_mb,
                             "growth_over_idle_mb": round(peak - idle_rss_mb, 1)}
    ctx.checks.check("peak RSS below weights + KV cache + allowance", peak <= bound, round(peak, 1), bound,
                     f"{weights_mb:.0f} MB weights + {kv_mb:.0f} MB KV ({a.kv_cache_tokens}+{ctx_len} tokens) "
                     f"+ {a.rss_allowance_mb} MB allowance")
    code = server.stop(timeout=60)
    ctx.checks.check("server exits 0 on SIGTERM afterwards", code == 0, code, 0)

    o = ctx.figures.get("overload", {})
    ctx.headline = {
        "M/Q": f"{M}/{Q}", "capacity req/s": ctx.figures.get("capacity", {}).get("requests_per_s"),
        "offered req/s": o.get("offered_rate_per_s"), "admitted/refused/other":
            f"{o.get('admitted')}/{o.get('refused')}/{len(o.get('other_errors', []))}",
        "p99 TTFT unloaded→admitted s": f"{ctx.figures.get('unloaded', {}).get('ttft_s', {}).get('p99')}"
                                        f"→{o.get('admitted_ttft_s', {}).get('p99')} ({ctx.figures.get('ttft_ratio_p99')}×)",
        "peak RSS MB (bound)": f"{round(peak)} ({bound})",
    }


def main() -> int:
    p = harness.parser("overload", __doc__)
    p.add_argument("--max-running-sequences", type=int, default=4,
                   help="server's running-sequence bound (default 4: a step with 4 decodes plus a prompt "
                        "stays well under twice a lone prompt's step on 2 cores)")
    p.add_argument("--queue-capacity", type=int, default=0,
                   help="server's queue bound (default 0 = start now or be refused; falls back to 1 when "
                        "the server refuses everything with 0)")
    p.add_argument("--kv-cache-tokens", type=int, default=4096)
    p.add_argument("--factor", type=float, default=4.0, help="offered load / capacity (default 4)")
    p.add_argument("--overload-seconds", type=float, default=None, help="default 60 (quick 10)")
    p.add_argument("--capacity-seconds", type=float, default=None, help="bound of the capacity phase (default 90, quick 30)")
    p.add_argument("--capacity-completions", type=int, default=None, help="completions that end it (default 6M, quick 2M)")
    p.add_argument("--unloaded-requests", type=int, default=None, help="default 30 (quick 8)")
    p.add_argument("--request-timeout", type=float, default=60.0, help="deadline of every call (s)")
    p.add_argument("--rss-allowance-mb", type=int, default=320)
    p.add_argument("--server-option", action="append", default=[],
                   help="extra alignd serve flag (repeat; e.g. --server-option=--batch-invariant --server-option=false)")
    a = harness.parse(p)
    return harness.Scenario(a, default_time_limit=200 if a.quick else 600).run(body)


if __name__ == "__main__":
    sys.exit(main())
