#!/usr/bin/env python3
"""Hot swaps under load: policy and reward swaps while clients stream and score.

Checkpoints (made here, in the scratch folder):
- policy A = the default GGUF uploaded under another name (same weights and SHA-256), policy B =
  a variant whose final-norm weights are scaled element-wise (harness.make_policy_variant, the
  same patch as CheckpointEndToEndTests), so A and B generate different greedy text;
- reward heads HA and HB: reward-head folders with seeded random weights on the default GGUF
  (harness.make_reward_head; untrained, valid and distinct — a swap test needs two different
  heads, not good ones). A head names its base model by SHA-256, so reward swaps run while
  policy A (the default's weights) serves. The server starts on the trained default reward model
  (alignd-reward-minilm), which the first activation replaces; its eval gate would rightly refuse
  untrained heads against it, so this scenario, about swaps and not quality, runs the gate on a few
  pairs with a margin any head passes (--reward-gate-pairs 8 --reward-gate-margin 1). For the same
  reason the policy quality gate is off (--policy-gate-prompts 0): policy B is a distorted copy that
  the gate refuses (more flags on its prompts), and after a head swap the judging reward model is an
  untrained head. CanaryEndToEndTests checks that gate.
All four are uploaded with `alignctl checkpoint upload`; HA is activated before the load starts.

Load: C concurrent clients (32, quick 8), three of four calling GenerateStream (chat prompt from a
fixed set of 4, greedy, T tokens with ignore_eos) and one of four Score (two items from a fixed
set), back to back, every call with a deadline, until the swaps are done.

Swaps (Admin.ActivateCheckpoint with an operation id): P->B, P->A, R->HB, R->HA, repeated: 10
policy and 10 reward swaps (quick 2 + 2). After each flip one new request must be stamped with
the new version; the next flip waits until C/2 calls have completed since, one of them served by
the new version (at most 60 s).

Checks: zero failed calls (a request sent after a flip answered by the old version counts as one);
every response's stamp names a version that was active at some time between its send and its
admission (a stream's first token, a Score's answer; timeline of activation sent/answered times); every streamed text equals what its
stamped policy generates alone (the server is batch-invariant: greedy text does not depend on the
batch) and every Score equals what its stamped head gives alone (|diff| <= 1e-4): no call mixed
two versions; every version served calls; peak RSS at most two policy snapshots (weights file +
KV cache each: the replaced one drains while the new one serves) + --rss-allowance-mb; the server
exits 0 on SIGTERM.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PROMPTS = ["Tell me a story about a cat.", "Explain rain to a child.", "List three fruits.", "Why is the sky blue?"]
ITEMS = [("What is 2 + 2?", "2 + 2 = 4."), ("What is 2 + 2?", "No idea, go away."),
         ("Name a colour.", "Blue is a colour."), ("How do I boil an egg?", "Put it in boiling water for eight minutes.")]
SCORE_TOL = 1e-4


def upload(ctx: harness.Scenario, server: harness.AlignServer, path: str, role: str, name: str) -> str:
    code, out, err = harness.alignctl(ctx.args.alignctl, ["checkpoint", "upload", path, "--role", role, "--name", name,
                                                         "--server", server.target, "--json"], timeout=300)
    if code != 0:
        raise RuntimeError(f"alignctl checkpoint upload {name}: exit {code}: {err.strip()[-400:]}")
    info = json.loads(out)
    return info["version"]


class Record:
    __slots__ = ("kind", "key", "sent", "first", "end", "status", "detail", "version", "text", "rewards")

    def __init__(self, kind: str, key: int):
        self.kind, self.key = kind, key
        self.sent = self.first = self.end = 0.0
        self.status = self.detail = self.version = self.text = ""
        self.rewards: list[float] = []


def body(ctx: harness.Scenario) -> None:
    import grpc  # noqa: PLC0415
    a = ctx.args
    st = ctx.stubs
    pb, apb, cpb = st.inference_pb2, st.admin_pb2, st.common_pb2
    n_swaps = a.swaps if a.swaps is not None else (2 if a.quick else 10)
    clients = a.clients or (8 if a.quick else 32)
    tokens = a.tokens
    model = os.path.join(harness.MODELS_DIR, harness.DEFAULT_POLICY)
    variant = harness.make_policy_variant(model, os.path.join(ctx.workdir, "policy-b.gguf"))
    head_a = harness.make_reward_head(os.path.join(ctx.workdir, "head-a"), model, seed=1)
    head_b = harness.make_reward_head(os.path.join(ctx.workdir, "head-b"), model, seed=2)

    server = ctx.server(["--batch-invariant", "true", "--max-running-sequences", str(max(32, clients)),
                         "--reward-gate-pairs", "8", "--reward-gate-margin", "1", "--policy-gate-prompts", "0"])
    ctx.config = {"command": " ".join(server.command()).replace(harness.REPO + "/", ""), "clients": clients,
                  "policy_swaps": n_swaps, "reward_swaps": n_swaps, "tokens": tokens,
                  "score_clients": clients // 4, "stream_clients": clients - clients // 4}
    server.start()
    server.wait_serving(st)
    rss = harness.RssSampler(server.pid, 0.2).start()
    t_up = time.monotonic()
    A = upload(ctx, server, model, "policy", "policy-a")
    B = upload(ctx, server, variant, "policy", "policy-b")
    HA = upload(ctx, server, head_a, "reward", "head-a")
    HB = upload(ctx, server, head_b, "reward", "head-b")
    ctx.figures["upload_seconds"] = round(time.monotonic() - t_up, 2)
    harness.log(f"uploaded {A} {B} {HA} {HB}")

    def gen_request(k: int):
        return pb.GenerateRequest(
            chat=cpb.Conversation(messages=[cpb.ChatMessage(role="user", content=PROMPTS[k % len(PROMPTS)])]),
            sampling=pb.SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True))

    def score_request(k: int):
        i = k % len(ITEMS)
        pair = [ITEMS[i], ITEMS[(i + 1) % len(ITEMS)]]
        return pb.ScoreRequest(items=[pb.ScoreItem(prompt=p, response=r) for p, r in pair])

    timeline: list[dict] = []   # activations: role, version, sent, answered
    records: list[Record] = []
    failures: list[str] = []
    stamp_after_flip: list[str] = []

    async def run() -> None:
        channel = grpc.aio.insecure_channel(server.target, options=[("grpc.max_concurrent_streams", 1024)])
        inf = st.inference_pb2_grpc.InferenceStub(channel)
        admin = st.admin_pb2_grpc.AdminStub(channel)

        async def activate(role: str, version: str, op: str) -> None:
            r = apb.ActivateCheckpointRequest(role=cpb.ModelRole.Value(f"MODEL_ROLE_{role.upper()}"),
                                              version=version, operation_id=op)
            sent = time.monotonic()
            state = await admin.ActivateCheckpoint(r, timeout=300)
            answered = time.monotonic()
            timeline.append({"role": role, "version": version, "sent": sent, "answered": answered,
                             "seconds": round(answered - sent, 2)})
            if state.active_version != version or not all(g.passed for g in state.gates):
                raise RuntimeError(f"activation of {version}: active {state.active_version}, gates {state.gates}")

        async def one(kind: str, k: int) -> Record:
            rec = Record(kind, k)
            rec.sent = time.monotonic()
            try:
                if kind == "gen":
                    async for ev in inf.GenerateStream(gen_request(k), timeout=a.request_timeout):
                        which = ev.WhichOneof("event")
                        if which == "chunk":
                            rec.text += ev.chunk.text
                            if not rec.first:
                                rec.first = time.monotonic()
                        elif which == "end":
                            rec.version = ev.end.versions.policy
                            fin = ev.end.completions[0].finish_reason if ev.end.completions else 0
                            if ev.end.usage.completion_tokens != tokens or fin != pb.FINISH_REASON_LENGTH:
                                rec.status = "INCOMPLETE"
                                rec.detail = f"{ev.end.usage.completion_tokens} tokens, finish {fin}"
                else:
                    resp = await inf.Score(score_request(k), timeout=a.request_timeout)
                    rec.version = resp.versions.reward
                    rec.rewards = list(resp.rewards)
                rec.status = rec.status or "OK"
            except grpc.aio.AioRpcError as e:
                rec.status, rec.detail = e.code().name, (e.details() or "")[:200]
            except Exception as e:  # noqa: BLE001
                rec.status, rec.detail = type(e).__name__, str(e)[:200]
            rec.end = time.monotonic()
            return rec

        # Initial reward: head A (the judge is slow and not what is being swapped).
        await activate("reward", HA, "init-reward")
        initial_policy = (await inf.Generate(gen_request(0), timeout=a.request_timeout)).versions.policy
        ctx.figures["initial_policy"] = initial_policy
        timeline.insert(0, {"role": "policy", "version": initial_policy, "sent": 0.0, "answered": 0.0, "seconds": 0})

        swapping = True

        async def client(j: int) -> None:
            kind = "score" if j % 4 == 3 else "gen"
            k = j
            while swapping:
                rec = await one(kind, k)
                records.append(rec)
                if rec.status != "OK":
                    failures.append(f"{kind} {rec.status}: {rec.detail}")
                k += clients

        async def swapper() -> None:
            nonlocal swapping
            try:
                await asyncio.sleep(1.0)
                plan: list[tuple[str, str]] = []
                for _ in range((n_swaps + 1) // 2):
                    plan += [("policy", B), ("policy", A), ("reward", HB), ("reward", HA)]
                pol = [p for p in plan if p[0] == "policy"][:n_swaps]
                rew = [p for p in plan if p[0] == "reward"][:n_swaps]
                order: list[tuple[str, str]] = []
                while pol or rew:  # two policy swaps (ending on A), then two reward swaps
                    order += pol[:2] + rew[:2]
                    pol, rew = pol[2:], rew[2:]
                for i, (role, version) in enumerate(order):
                    seen = len(records)
                    await activate(role, version, f"swap-{i}")
                    probe = await one("gen" if role == "policy" else "score", 10_000 + i)
                    stamp_after_flip.append(f"{role} {version} -> {probe.status} {probe.version}")
                    if probe.status != "OK" or probe.version != version:
                        failures.append(f"after the flip to {version}: {probe.status} stamped {probe.version}")
                    # The next flip waits for C/2 completed calls, one of them served by the new
                    # version (with few clients the calls of the other role could fill the count).
                    deadline = time.monotonic() + 60
                    while (len(records) < seen + max(4, clients // 2)
                           or not any(r.version == version for r in records[seen:])) \
                            and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                    harness.log(f"swap {i}: {role} -> {version} in {timeline[-1]['seconds']} s; "
                                f"{len(records)} calls, {len(failures)} failures")
            finally:
                swapping = False

        t0 = time.monotonic()
        await asyncio.gather(swapper(), *(client(j) for j in range(clients)))
        ctx.figures["load_seconds"] = round(time.monotonic() - t0, 1)

        # References: each version alone, after the load (batch-invariant greedy / head scores).
        # The swaps end on A and HA: those are measured as they are; HB needs policy A (its base),
        # so HB is activated before B.
        refs_text: dict[str, dict[int, str]] = {}
        refs_score: dict[str, dict[int, list[float]]] = {}

        async def ref_texts(v: str) -> None:
            refs_text[v] = {p: (await one("gen", p)).text for p in range(len(PROMPTS))}

        async def ref_scores(v: str) -> None:
            refs_score[v] = {i: (await one("score", i)).rewards for i in range(len(ITEMS))}

        await ref_texts(A)
        await ref_scores(HA)
        await activate("reward", HB, "ref-reward")
        await ref_scores(HB)
        await activate("policy", B, "ref-policy")
        await ref_texts(B)
        refs_text[initial_policy] = refs_text[A]  # the same weights under the default name
        # Memory once idle: retired snapshots are freed after their last request.
        await asyncio.sleep(3.0)
        status = await admin.GetStatus(apb.GetStatusRequest(), timeout=30)
        ctx.figures["after_swaps"] = {
            "rss_mb_idle": round((harness.proc_status_kb(server.pid, "VmRSS") or 0) / 1024, 1),
            "loaded_model_bytes": status.loaded_model_bytes,
            "active": {cpb.ModelRole.Name(r.role): r.active_version for r in status.roles}}
        await channel.close()

        # Checks.
        ctx.checks.check("zero failed calls during the swaps", not failures, len(failures), 0, "; ".join(failures[:5]))
        ctx.checks.check("the variant policy generates differently (the text check means something)",
                         refs_text[A] != refs_text[B], None, None)
        ctx.checks.check("the two heads score differently", refs_score[HA] != refs_score[HB], None, None)

        def active_during(role: str, version: str, s: float, e: float) -> bool:
            acts = [t for t in timeline if t["role"] == role]
            for i, t in enumerate(acts):
                until = acts[i + 1]["answered"] if i + 1 < len(acts) else float("inf")
                if t["version"] == version and t["sent"] <= e and s <= until:
                    return True
            return False

        load_records = [r for r in records if r.status == "OK"]
        # A stream is admitted (and takes its snapshot) before its first token, so its stamp must
        # have been active between sending and the first token; a Score between sending and answer.
        bad_stamp = [r for r in load_records if not active_during("policy" if r.kind == "gen" else "reward",
                                                                  r.version, r.sent, r.first or r.end)]
        ctx.checks.check("every response stamped with a version active between its send and its admission "
                         "(first token; a Score's answer)", not bad_stamp, len(bad_stamp), 0,
                         "; ".join(f"{r.kind} {r.version} sent {r.sent - t0:.1f}s first {(r.first or r.end) - t0:.1f}s"
                                   for r in bad_stamp[:5]))
        ctx.figures["activation_timeline"] = [{**t, "sent": round(t["sent"] - t0, 2) if t["sent"] else 0.0,
                                               "answered": round(t["answered"] - t0, 2) if t["answered"] else 0.0}
                                              for t in timeline]
        text_mismatch = [r for r in load_records if r.kind == "gen"
                         and refs_text.get(r.version, {}).get(r.key % len(PROMPTS)) != r.text]
        ctx.checks.check("every stream's text is its stamped policy's (no stream mixed versions)",
                         not text_mismatch, len(text_mismatch), 0,
                         "; ".join(f"{r.version} prompt {r.key % len(PROMPTS)}" for r in text_mismatch[:5]))

        def score_ok(r: Record) -> bool:
            i = r.key % len(ITEMS)
            ref = [refs_score.get(r.version, {}).get(i, [None])[0],
                   refs_score.get(r.version, {}).get((i + 1) % len(ITEMS), [None])[0]]
            return None not in ref and len(r.rewards) == 2 and all(abs(x - y) <= SCORE_TOL for x, y in zip(r.rewards, ref))

        score_mismatch = [r for r in load_records if r.kind == "score" and not score_ok(r)]
        ctx.checks.check("every Score equals its stamped head's scores", not score_mismatch, len(score_mismatch), 0,
                         "; ".join(f"{r.version} {r.rewards}" for r in score_mismatch[:3]))
        served: dict[str, int] = {}
        for r in load_records:
            served[r.version] = served.get(r.version, 0) + 1
        ctx.figures["calls_per_version"] = served
        ctx.checks.check("every swapped-to version served calls",
                         all(served.get(v, 0) > 0 for v in (A, B, HA, HB)), served, "each of A, B, HA, HB > 0")
        pswaps = sum(1 for t in timeline if t["role"] == "policy" and t["sent"] > 0) - 1  # minus the reference run
        rswaps = sum(1 for t in timeline if t["role"] == "reward") - 2  # minus init and the reference run
        ctx.figures.update({
            "policy_swaps": pswaps, "reward_swaps": rswaps,
            "activation_seconds": {"policy": harness.summary(t["seconds"] for t in timeline if t["role"] == "policy" and t["sent"] > 0),
                                   "reward": harness.summary(t["seconds"] for t in timeline if t["role"] == "reward")},
            "calls": {"generate_stream": sum(1 for r in records if r.kind == "gen"),
                      "score": sum(1 for r in records if r.kind == "score"), "failed": len(failures)},
            "stream_seconds": harness.summary(r.end - r.sent for r in records if r.kind == "gen"),
            "score_seconds": harness.summary(r.end - r.sent for r in records if r.kind == "score"),
            "stamp_after_flip": stamp_after_flip,
            "versions": {"policy_a": A, "policy_b": B, "head_a": HA, "head_b": HB},
        })
        ctx.checks.check("all planned swaps ran", pswaps == n_swaps and rswaps == n_swaps, (pswaps, rswaps),
                         (n_swaps, n_swaps))

    asyncio.run(run())
    rss.stop()
    # During a swap the old snapshot drains while the new one serves: at most two policy-sized
    # snapshots (weights + KV cache each) at once, plus overload's allowance for the rest. Replaced
    # snapshots kept alive longer (3.9 GB peak before session 4's fixes) cross it.
    weights_mb, kv_mb, _ = harness.snapshot_memory_mb(model, server.kv_cache_tokens)
    bound = round(2 * (weights_mb + kv_mb) + a.rss_allowance_mb)
    ctx.figures["memory"] = {**rss.figures(), "bound_mb": bound}
    peak = max(rss.peak_kb, rss.hwm_kb) / 1024
    ctx.checks.check("peak RSS below two snapshots (weights + KV cache) + allowance", peak <= bound, round(peak, 1),
                     bound, f"2 x ({weights_mb:.0f} MB weights + {kv_mb:.0f} MB KV) + {a.rss_allowance_mb} MB")
    code = server.stop(timeout=60)
    ctx.checks.check("server exits 0 on SIGTERM afterwards", code == 0, code, 0)
    c = ctx.figures.get("calls", {})
    ctx.headline = {"swaps policy/reward": f"{ctx.figures.get('policy_swaps')}/{ctx.figures.get('reward_swaps')}",
                    "clients": clients, "calls stream/score": f"{c.get('generate_stream')}/{c.get('score')}",
                    "failed": c.get("failed"), "peak RSS MB": ctx.figures["memory"]["peak_rss_mb"]}


def main() -> int:
    p = harness.parser("swaps", __doc__)
    p.add_argument("--swaps", type=int, default=None, help="policy swaps and reward swaps each (default 10, quick 2)")
    p.add_argument("--clients", type=int, default=None, help="concurrent clients (default 32, quick 8)")
    p.add_argument("--tokens", type=int, default=16, help="tokens per stream (greedy, ignore_eos)")
    p.add_argument("--request-timeout", type=float, default=180.0)
    p.add_argument("--rss-allowance-mb", type=int, default=320, help="peak RSS allowance beyond two snapshots")
    a = harness.parse(p)
    if a.swaps is not None and (a.swaps < 2 or a.swaps % 2):
        p.error("--swaps must be even and >= 2 (the swaps end on policy A and head A)")
    return harness.Scenario(a, default_time_limit=300 if a.quick else 1500).run(body)


if __name__ == "__main__":
    sys.exit(main())
