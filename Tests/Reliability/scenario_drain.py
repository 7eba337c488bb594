#!/usr/bin/env python3
"""Graceful drain: SIGTERM while streams are in flight.

Per trial (5, quick 2), one alignd with --drain-timeout-seconds D:
1. N GenerateStream calls start (N = --streams, at most --max-running-sequences so every one is
   decoding); once each has received its first token, the server gets SIGTERM.
2. From the moment the server logs that it drains (signal handling is asynchronous: an RPC sent
   before that may still be admitted, and is then in flight, not new), a prober sends new RPCs: a Generate on the channel that carries
   the streams (its connection got GOAWAY) and a Generate plus a health Check on a fresh channel
   (a new connection). Each outcome is recorded (status code and the first words of its details,
   e.g. "failed to connect ... Connection refused").
3. Checks: every in-flight stream ends normally (OK status, finish reason LENGTH, all T tokens,
   text as long as the tokens say) within D seconds of the SIGTERM; every probe is refused with
   UNAVAILABLE (connection refused counts as UNAVAILABLE: grpc reports it so) — no probe is
   served, none hangs (each has a 5 s deadline); the process exits 0 within D + 5 s.

Workload: raw prompts, temperature 0.8 with a seed per stream, T tokens (48, quick 24) with
ignore_eos.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rain forms, in simple words.",
           "Describe a market at dawn.", "Write a poem about the northern lights.",
           "Tell me about honey bees.", "Describe an old violin and its owner."]


class Stream:
    def __init__(self, k: int):
        self.k = k
        self.first = threading.Event()
        self.status = ""
        self.detail = ""
        self.text = ""
        self.tokens = 0
        self.finish = ""
        self.end = 0.0


def run_stream(stub, pb, s: Stream, tokens: int, timeout: float) -> None:
    import grpc  # noqa: PLC0415
    req = pb.GenerateRequest(prompt=PROMPTS[s.k % len(PROMPTS)], client_request_id=f"drain-{s.k}",
                             sampling=pb.SamplingParams(max_tokens=tokens, temperature=0.8, seed=500 + s.k,
                                                        ignore_eos=True))
    try:
        for ev in stub.GenerateStream(req, timeout=timeout):
            which = ev.WhichOneof("event")
            if which == "chunk":
                s.text += ev.chunk.text
                if ev.chunk.text:
                    s.first.set()
            elif which == "end":
                s.tokens = ev.end.usage.completion_tokens
                if ev.end.completions:
                    s.finish = pb.FinishReason.Name(ev.end.completions[0].finish_reason)
        s.status = "OK"
    except grpc.RpcError as e:
        s.status = e.code().name
        s.detail = (e.details() or "")[:200]
    finally:
        s.end = time.monotonic()
        s.first.set()


def refusal_kind(code: str, detail: str) -> str:
    """How a probe was turned away, in words."""
    if code == "OK":
        return "served"
    if "Connection refused" in detail:
        return "connection refused (listener closed)"
    if "RST_STREAM" in detail:
        return "stream refused (HTTP/2 RST_STREAM after GOAWAY)"
    if "shutting down" in detail:
        return "server status: alignd is shutting down"
    return f"{code}: {detail[:60]}"


def probe(fn) -> tuple[str, str]:
    """Runs one RPC; (status name, first 160 characters of the details) — OK when served."""
    import grpc  # noqa: PLC0415
    try:
        fn()
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, " ".join((e.details() or "").split())[:160]


def trial(ctx: harness.Scenario, index: int) -> dict:
    import grpc  # noqa: PLC0415
    a = ctx.args
    st = ctx.stubs
    pb = st.inference_pb2
    server = ctx.server(["--drain-timeout-seconds", str(a.drain_timeout), "--max-running-sequences",
                         str(a.max_running_sequences)], name=f"drain-{index}")
    if index == 0:
        ctx.config["command"] = " ".join(server.command()).replace(harness.REPO + "/", "")
    server.start()
    server.wait_serving(st)
    channel = grpc.insecure_channel(server.target)
    stub = st.inference_pb2_grpc.InferenceStub(channel)
    # Warm-up so the first streams do not pay one-time costs.
    stub.Generate(pb.GenerateRequest(prompt="Hi", sampling=pb.SamplingParams(max_tokens=2)), timeout=60)
    streams = [Stream(index * 1000 + i) for i in range(a.streams)]
    threads = [threading.Thread(target=run_stream, args=(stub, pb, s, a.tokens, a.drain_timeout + 60), daemon=True)
               for s in streams]
    for t in threads:
        t.start()
    for s in streams:
        s.first.wait(timeout=120)
    in_flight = sum(1 for s in streams if s.status == "" and s.text)
    sent_sigterm = time.monotonic()
    server.signal(signal.SIGTERM)
    # Signal delivery and handling are asynchronous: an RPC sent before the server logs that it
    # drains may still be admitted (and then is in flight, not new). Probe from that line on.
    while "draining: no new RPCs are admitted" not in server.log_since_start() and server.running() \
            and time.monotonic() - sent_sigterm < 10:
        time.sleep(0.01)
    drain_logged_after = time.monotonic() - sent_sigterm

    # Probe while draining.
    probes: dict[str, dict[str, int]] = {"same_channel_generate": {}, "new_channel_generate": {},
                                         "new_channel_health": {}}
    details: dict[str, set[str]] = {k: set() for k in probes}
    kinds: dict[str, int] = {}
    exit_code = None
    while time.monotonic() - sent_sigterm < a.drain_timeout + 5:
        results = {
            "same_channel_generate": probe(lambda: stub.Generate(
                pb.GenerateRequest(prompt="Hi", sampling=pb.SamplingParams(max_tokens=2)), timeout=5)),
        }
        with grpc.insecure_channel(server.target) as fresh:
            results["new_channel_generate"] = probe(lambda: st.inference_pb2_grpc.InferenceStub(fresh).Generate(
                pb.GenerateRequest(prompt="Hi", sampling=pb.SamplingParams(max_tokens=2)), timeout=5))
            results["new_channel_health"] = probe(lambda: st.health_pb2_grpc.HealthStub(fresh).Check(
                st.health_pb2.HealthCheckRequest(), timeout=5))
        for k, (code, detail) in results.items():
            probes[k][code] = probes[k].get(code, 0) + 1
            details[k].add(f"{code}: {re.sub(r'127.0.0.1:[0-9]+', '127.0.0.1:PORT', detail)}")
            kind = refusal_kind(code, detail)
            kinds[kind] = kinds.get(kind, 0) + 1
        exit_code = server.wait(0.1)
        if exit_code is not None:
            break
    exited_after = time.monotonic() - sent_sigterm if exit_code is not None else None
    if exit_code is None:
        exit_code = server.wait(5)
        exited_after = time.monotonic() - sent_sigterm if exit_code is not None else None
    for t in threads:
        t.join(timeout=30)
    channel.close()
    if exit_code is None:
        server.kill()

    finished = [s for s in streams if s.status == "OK" and s.finish == "FINISH_REASON_LENGTH"
                and s.tokens == a.tokens and len(s.text) > 0]
    last_end = max((s.end for s in streams), default=sent_sigterm) - sent_sigterm
    return {
        "streams": len(streams), "in_flight_at_sigterm": in_flight, "finished_normally": len(finished),
        "stream_outcomes": sorted({f"{s.status} {s.finish} {s.tokens} tokens {s.detail}".strip() for s in streams}),
        "last_stream_end_after_sigterm_s": round(last_end, 2), "exit_code": exit_code,
        "exit_after_sigterm_s": round(exited_after, 2) if exited_after is not None else None,
        "drain_logged_after_sigterm_s": round(drain_logged_after, 3),
        "probes": probes, "refusal_kinds": kinds, "probe_details": {k: sorted(v)[:5] for k, v in details.items()},
        "log_drain_line": "draining: no new RPCs are admitted" in server.log_since_start(),
    }


def body(ctx: harness.Scenario) -> None:
    a = ctx.args
    n = a.trials or (2 if a.quick else 5)
    ctx.config.update({"trials": n, "streams": a.streams, "tokens": a.tokens, "drain_timeout_seconds": a.drain_timeout,
                       "max_running_sequences": a.max_running_sequences})
    trials = []
    for i in range(n):
        r = trial(ctx, i)
        harness.log(f"trial {i}: {r}")
        trials.append(r)
    ctx.figures["trials"] = trials
    D = a.drain_timeout
    ctx.checks.check("every stream was in flight at SIGTERM", all(t["in_flight_at_sigterm"] == t["streams"] for t in trials),
                     [t["in_flight_at_sigterm"] for t in trials], a.streams)
    ctx.checks.check("every in-flight stream finished normally (OK, LENGTH, all tokens)",
                     all(t["finished_normally"] == t["streams"] for t in trials),
                     [t["finished_normally"] for t in trials], a.streams,
                     "; ".join(o for t in trials for o in t["stream_outcomes"])[:400])
    ctx.checks.check("streams ended within the drain timeout",
                     all(t["last_stream_end_after_sigterm_s"] <= D for t in trials),
                     [t["last_stream_end_after_sigterm_s"] for t in trials], D)
    all_codes: dict[str, int] = {}
    for t in trials:
        for k, counts in t["probes"].items():
            for code, c in counts.items():
                all_codes[code] = all_codes.get(code, 0) + c
    ctx.figures["probe_codes"] = all_codes
    ctx.checks.check("new RPCs during the drain refused with UNAVAILABLE only",
                     set(all_codes) == {"UNAVAILABLE"}, all_codes, "UNAVAILABLE")
    ctx.checks.check("process exits 0 within drain timeout + 5 s",
                     all(t["exit_code"] == 0 and t["exit_after_sigterm_s"] is not None
                         and t["exit_after_sigterm_s"] <= D + 5 for t in trials),
                     [(t["exit_code"], t["exit_after_sigterm_s"]) for t in trials], f"0 within {D + 5} s")
    kinds: dict[str, int] = {}
    for t in trials:
        for k, c in t["refusal_kinds"].items():
            kinds[k] = kinds.get(k, 0) + c
    ctx.figures["refusal_kinds"] = kinds
    ctx.headline = {
        "trials": n, "streams finished": f"{sum(t['finished_normally'] for t in trials)}/{sum(t['streams'] for t in trials)}",
        "last stream end / exit after SIGTERM s": "max " + str(max(t["last_stream_end_after_sigterm_s"] for t in trials))
        + " / " + str(max((t["exit_after_sigterm_s"] or 0) for t in trials)) + f" (timeout {D})",
        "probes": all_codes, "refused as": kinds,
    }


def main() -> int:
    p = harness.parser("drain", __doc__)
    p.add_argument("--trials", type=int, default=None, help="default 5 (quick 2)")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--tokens", type=int, default=None, help="tokens per stream (ignore_eos; default 48, quick 24)")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="--drain-timeout-seconds of the server")
    p.add_argument("--max-running-sequences", type=int, default=8)
    a = harness.parse(p)
    a.tokens = a.tokens or (24 if a.quick else 48)
    if a.streams > a.max_running_sequences:
        p.error("--streams must not exceed --max-running-sequences (every stream must be decoding)")
    return harness.Scenario(a, default_time_limit=240 if a.quick else 600).run(body)


if __name__ == "__main__":
    sys.exit(main())
