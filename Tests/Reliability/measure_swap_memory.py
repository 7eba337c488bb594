#!/usr/bin/env python3
"""Memory across policy (and reward) swaps: is a replaced snapshot's memory given back?

Starts the real alignd (as the reliability scenarios do: loopback, its own data folder,
--kv-cache-tokens 4096), uploads policy A (the default GGUF under another name) and policy B (a
variant with scaled final-norm weights, harness.make_policy_variant), then records, one step at
a time and with no concurrent load:

- idle after start, and after a few Generate calls;
- after each of N policy swaps (Admin.ActivateCheckpoint, alternating B, A, ...), each followed by
  a few Generate calls on the new version and a short idle wait;
- optionally (--reward-swaps M) M reward-head swaps (heads HA/HB on policy A, harness.make_reward_head)
  with Score calls in between;
- idle at the end, after --settle seconds.

At every step: VmRSS, RssAnon, RssFile (/proc/PID/status), the number of threads (all, and by
name where the engine named them: `alignd-engine-*` pool workers exit only when their Engine is
freed), the large anonymous mappings (>= --big-mapping-mb; each policy snapshot's KV cache is
one or two such mappings, freed with the snapshot's engine loop) and GetStatus's
loaded_model_bytes.

Checks (so the script can gate a fix): the large mappings' total after the policy swaps no more
than right after the second swap (one policy serves, nothing drains), and at the end no more than
after the first reward swap (whose head brings its own engine), each within --mapping-slack-mb; no
more threads at the end than after the second swap (retired snapshots were freed); idle RSS at the
end within --rss-slack-mb of idle RSS after the first calls, before any swap (replaced snapshots'
memory went back to the system; with reward swaps the active head's engine and base model count
in it too).

Run: ALIGND_BIN_DIR=<build>/release <venv python> Tests/Reliability/measure_swap_memory.py
     [--swaps 10] [--reward-swaps 4] [--calls 3] [--out results/measure_swap_memory.json]
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def upload(ctx: harness.Scenario, server: harness.AlignServer, path: str, role: str, name: str) -> str:
    code, out, err = harness.alignctl(ctx.args.alignctl, ["checkpoint", "upload", path, "--role", role, "--name", name,
                                                         "--server", server.target, "--json"], timeout=300)
    if code != 0:
        raise RuntimeError(f"alignctl checkpoint upload {name}: exit {code}: {err.strip()[-400:]}")
    return json.loads(out)["version"]


def threads(pid: int) -> dict[str, int]:
    """Live threads of `pid` grouped by name (`alignd-engine-3` counts as `alignd-engine-*`)."""
    counts: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("alignd-engine-"):
            name = "alignd-engine-*"
        counts[name] += 1
    return dict(counts)


def big_mappings(pid: int, min_mb: float) -> list[float]:
    """Sizes (MB) of the anonymous read-write mappings of at least `min_mb` (large buffers that
    glibc maps on their own: KV caches; adjacent ones may show as one)."""
    sizes = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 5 or not fields[1].startswith("rw"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start >= min_mb * 2**20:
                sizes.append(round((end - start) / 2**20, 1))
    return sizes


def body(ctx: harness.Scenario) -> None:
    import grpc  # noqa: PLC0415
    a = ctx.args
    st = ctx.stubs
    pb, apb, cpb = st.inference_pb2, st.admin_pb2, st.common_pb2
    model = os.path.join(harness.MODELS_DIR, harness.DEFAULT_POLICY)
    variant = harness.make_policy_variant(model, os.path.join(ctx.workdir, "policy-b.gguf"))
    # Policy B is a distorted copy the policy quality gate refuses; this measures memory, not quality.
    server = ctx.server(["--policy-gate-prompts", "0"] + (a.server_option or []))
    ctx.config = {"command": " ".join(server.command()).replace(harness.REPO + "/", ""), "swaps": a.swaps,
                  "reward_swaps": a.reward_swaps, "calls_per_step": a.calls, "settle_s": a.settle}
    server.start()
    server.wait_serving(st)
    A = upload(ctx, server, model, "policy", "policy-a")
    B = upload(ctx, server, variant, "policy", "policy-b")
    heads = []
    if a.reward_swaps:
        heads = [upload(ctx, server, harness.make_reward_head(os.path.join(ctx.workdir, f"head-{s}"), model, seed=s),
                        "reward", f"head-{s}") for s in (1, 2)]
    channel = grpc.insecure_channel(server.target)
    inf = st.inference_pb2_grpc.InferenceStub(channel)
    admin = st.admin_pb2_grpc.AdminStub(channel)
    steps: list[dict] = []

    def record(label: str) -> dict:
        time.sleep(a.settle_step)
        status = admin.GetStatus(apb.GetStatusRequest(), timeout=30)
        row = {"step": label,
               "rss_mb": round((harness.proc_status_kb(server.pid, "VmRSS") or 0) / 1024, 1),
               "anon_mb": round((harness.proc_status_kb(server.pid, "RssAnon") or 0) / 1024, 1),
               "file_mb": round((harness.proc_status_kb(server.pid, "RssFile") or 0) / 1024, 1),
               "threads": threads(server.pid), "big_mappings_mb": big_mappings(server.pid, a.big_mapping_mb),
               "loaded_model_mb": round(status.loaded_model_bytes / 2**20, 1)}
        steps.append(row)
        t = row["threads"]
        row["threads_total"] = sum(t.values())
        harness.log(f"{label:<24} rss {row['rss_mb']:7.1f} MB  anon {row['anon_mb']:7.1f}  file {row['file_mb']:6.1f}  "
                    f"threads {row['threads_total']:3d} (engine {t.get('alignd-engine-*', 0)}, "
                    f"loops {t.get('alignd-gen-loop', 0)})  big mappings {row['big_mappings_mb']}  "
                    f"loaded {row['loaded_model_mb']} MB")
        return row

    def generate(k: int) -> str:
        r = inf.Generate(pb.GenerateRequest(
            chat=cpb.Conversation(messages=[cpb.ChatMessage(role="user", content=f"Tell me fact number {k}.")]),
            sampling=pb.SamplingParams(max_tokens=a.tokens, temperature=0.0)), timeout=120)
        return r.versions.policy

    def score(k: int) -> str:
        r = inf.Score(pb.ScoreRequest(items=[pb.ScoreItem(prompt=f"Question {k}?", response="An answer.")]), timeout=120)
        return r.versions.reward

    def activate(role: str, version: str, op: str) -> None:
        state = admin.ActivateCheckpoint(apb.ActivateCheckpointRequest(
            role=cpb.ModelRole.Value(f"MODEL_ROLE_{role.upper()}"), version=version, operation_id=op), timeout=300)
        if state.active_version != version:
            raise RuntimeError(f"activation of {version}: active {state.active_version}")

    record("start (idle)")
    for k in range(a.calls):
        generate(k)
    record("after calls")
    def swap(i, role, version, key, call, what):
        """Activates `version` for `role` (swap number i), then checks a few calls are served by it."""
        activate(role, version, key)
        for k in range(a.calls):
            served = call(100 * i + k)
            if served != version:
                raise RuntimeError(f"{what}: a call after the flip was served by {served}, not {version}")

    for i in range(a.swaps):
        version = B if i % 2 == 0 else A
        swap(i, "policy", version, f"measure-policy-{i}", generate, f"swap {i}")
        record(f"policy swap {i + 1} ({'B' if version == B else 'A'})")
    if a.swaps % 2:
        activate("policy", A, "measure-policy-back-to-a")  # heads need policy A (their base)
        record("policy back to A")
    for i in range(a.reward_swaps):
        swap(i, "reward", heads[i % 2], f"measure-reward-{i}", score, f"reward swap {i}")
        record(f"reward swap {i + 1}")
    time.sleep(a.settle)
    end = record(f"end (idle {a.settle:.0f} s)")
    channel.close()

    ctx.figures["steps"] = steps
    # References: right after the second policy swap one policy serves and nothing drains
    # (sequential calls); after the first reward swap the active head's own engine on its base
    # model is loaded too (by design). Later rows must hold no more large mappings than their
    # reference: retired snapshots' caches were freed, not kept by a reference.
    first = next((s for s in steps if s["step"].startswith("policy swap 2")), steps[1])
    # Sizes, not counts: the kernel merges adjacent mappings, so two caches may show as one.
    last_policy = [s for s in steps if s["step"].startswith("policy swap")][-1:] or [first]
    reward_ref = next((s for s in steps if s["step"].startswith("reward swap 1")), first)
    for label, row, ref in (("after the policy swaps", last_policy[0], first), ("at the end", end, reward_ref)):
        total, bound = sum(row["big_mappings_mb"]), sum(ref["big_mappings_mb"]) + a.mapping_slack_mb
        ctx.checks.check(f"large mappings (KV caches) {label}: retired snapshots' caches were freed",
                         total <= bound, row["big_mappings_mb"], f"total <= {bound} MB ({ref['step']} + slack)")
    ctx.checks.check("threads at the end: retired snapshots' engine threads exited",
                     end["threads_total"] <= first["threads_total"] + a.thread_slack,
                     end["threads_total"], f"<= {first['threads_total']} + {a.thread_slack}")
    warm = steps[1]  # idle after the first calls, before any swap
    growth = round(end["rss_mb"] - warm["rss_mb"], 1)
    ctx.figures["idle_rss_growth_mb"] = growth
    ctx.checks.check("idle RSS after the swaps stays near idle RSS before them (replaced snapshots' memory "
                     "went back to the system)", growth <= a.rss_slack_mb, growth, f"<= {a.rss_slack_mb} MB")
    if a.pause_at_end:
        harness.log(f"pausing {a.pause_at_end:.0f} s: alignd pid {server.pid}")
        time.sleep(a.pause_at_end)
    code = server.stop(timeout=60)
    ctx.checks.check("server exits 0 on SIGTERM", code == 0, code, 0)
    ctx.headline = {"swaps policy/reward": f"{a.swaps}/{a.reward_swaps}",
                    "idle RSS MB start/after 2 swaps/end": f"{steps[0]['rss_mb']}/{first['rss_mb']}/{end['rss_mb']}",
                    "threads after 2 swaps/end": f"{first['threads_total']}/{end['threads_total']}"}


def main() -> int:
    p = harness.parser("measure_swap_memory", __doc__)
    p.add_argument("--swaps", type=int, default=10, help="policy swaps (alternating B, A, ...)")
    p.add_argument("--reward-swaps", type=int, default=0, help="reward-head swaps after the policy swaps")
    p.add_argument("--calls", type=int, default=3, help="Generate (or Score) calls after each swap")
    p.add_argument("--tokens", type=int, default=16, help="max tokens per Generate call")
    p.add_argument("--settle", type=float, default=5.0, help="idle seconds before the last measurement")
    p.add_argument("--settle-step", type=float, default=1.0, help="idle seconds before each measurement")
    p.add_argument("--rss-slack-mb", type=float, default=150.0,
                   help="allowed idle RSS growth from before the first swap to the end")
    p.add_argument("--thread-slack", type=int, default=None,
                   help="threads the end may have beyond the second swap's count (default: the engine "
                        "threads of one reward head's engine when --reward-swaps, plus 4 for dispatch workers)")
    p.add_argument("--big-mapping-mb", type=float, default=100.0, help="smallest mapping counted as large")
    p.add_argument("--mapping-slack-mb", type=float, default=64.0,
                   help="allowed growth of the large mappings' total over its reference row")
    p.add_argument("--pause-at-end", type=float, default=0.0, help="keep the server up this long at the end")
    p.add_argument("--server-option", action="append", help="extra alignd serve option (repeat; e.g. --server-option=--engine-threads)")
    a = harness.parse(p)
    if a.thread_slack is None:
        a.thread_slack = 4 + (2 if a.reward_swaps else 0)
    if a.swaps < 2:
        p.error("--swaps must be >= 2")
    return harness.Scenario(a, default_time_limit=1200).run(body)


if __name__ == "__main__":
    sys.exit(main())
