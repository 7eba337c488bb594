#!/usr/bin/env python3
"""Judging-benchmark driver for Benchmarks/run-judging-bench.sh (Score and CheckSafety over gRPC).

Subcommands (each writes a JSON file; the shell script starts the servers and orchestrates):

  score   Inference.Score on the server's active reward model (by default the trained
          alignd-reward-minilm; with --reward-model judge the generative judge): the same PAIRS
          (prompt, chosen, rejected) scored three ways per run,
            sequential  one pair per RPC, one RPC at a time;
            concurrent  one pair per RPC, all RPCs in flight at once (the server's dynamic
                        batcher may group inputs of different RPCs into one forward pass);
            per-rpc     --per-rpc pairs per RPC (32 = the 64-response limit), RPCs one at a time;
          and, with --reference-cmd, the reference implementation of the same model
          (Benchmarks/judge_reference.py --serve, a child process in its own venv, loaded once)
          on the same pairs in the same run: one pair per call and --per-rpc pairs per call, each
          measured right beside the alignd mode it is compared with. Rewards of both are kept,
          so the JSON says how far server and reference agree. pairs/s = pairs / wall time of
          the mode (whole passes over the pairs until --min-seconds). Admin.GetStatus is read
          before and after each alignd mode; the deltas of the "reward:" queue's batches and items
          show how inputs were grouped.
  safety  Inference.CheckSafety on TEXTS against one or more servers (--target NAME=HOST:PORT,
          repeatable; e.g. the default policy and a lexical-only policy): one text per RPC
          sequentially, one text per RPC all concurrent, and all texts in one RPC; each mode runs
          on every server back to back and repeats whole passes over the texts until it has run
          --min-seconds; texts/s = texts checked / wall time.
  report  merge meta + score (+ judge score) + safety JSON into the "Judging benchmark" section
          of RESULTS.md.

Each run starts after the machine is quiet (CPU use < --quiet-max over 3 s, waiting at most
--quiet-timeout s; the state is recorded either way); the modes of one run follow each other, in
an order rotated by run, so drift of the shared machine hits all modes of a run alike. Medians are
over runs; ratios are medians of per-run ratios (both sides measured in the same run).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import subprocess
import sys
import time

from bench_common import load_stubs, optional_json, wait_quiet, write_section

# --- workload ---------------------------------------------------------------------------------------

_CAPITALS = [
    ("France", "Paris", "Lyon"), ("Japan", "Tokyo", "Osaka"), ("Canada", "Ottawa", "Toronto"),
    ("Australia", "Canberra", "Sydney"), ("Brazil", "Brasília", "Rio de Janeiro"),
    ("Turkey", "Ankara", "Istanbul"), ("Switzerland", "Bern", "Zurich"), ("Egypt", "Cairo", "Alexandria"),
    ("Spain", "Madrid", "Barcelona"), ("Kenya", "Nairobi", "Mombasa"), ("India", "New Delhi", "Mumbai"),
    ("Germany", "Berlin", "Munich"), ("Argentina", "Buenos Aires", "Córdoba"), ("Norway", "Oslo", "Bergen"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City"), ("Morocco", "Rabat", "Casablanca"),
]
_ARITHMETIC = [(12, 7), (25, 4), (9, 8), (144, 12), (38, 45), (7, 13), (100, 250), (64, 3),
               (81, 9), (15, 15), (300, 45), (6, 7), (1000, 8), (27, 3), (56, 44), (11, 11)]
_FACTS = [
    ("At what temperature does water boil at sea level?",
     "Water boils at 100 °C (212 °F) at sea level.", "Water boils at 50 °C at sea level."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have six legs, like all insects."),
    ("What gas do plants absorb from the air for photosynthesis?",
     "Plants absorb carbon dioxide and release oxygen.", "Plants absorb oxygen and release nitrogen."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun.", "Jupiter is closest to the Sun."),
    ("How many days are in a leap year?", "A leap year has 366 days.", "Every year has exactly 365 days."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au.", "Gold's symbol is Gd."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet.", "Charles Dickens wrote it in 1950."),
    ("How many continents are there?", "There are seven continents.", "There are three continents."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest.", "The Arctic Ocean is the largest ocean."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 °F.", "Water freezes at 0 °F."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour.", "An hour has 100 minutes."),
    ("What is the main ingredient of guacamole?", "Guacamole is made mainly from avocado.", "It is mostly made of potatoes."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body.", "The liver pumps the blood."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 8."),
    ("How many sides does a hexagon have?", "A hexagon has six sides.", "A hexagon has eight sides."),
    ("What language is mainly spoken in Brazil?", "Portuguese is the main language of Brazil.", "Brazilians mainly speak Spanish."),
]
_HOWTO = [
    ("How can I fall asleep faster?",
     "Keep a regular bedtime, avoid screens and caffeine in the evening, and keep your room dark and cool.",
     "Just stop complaining and close your eyes."),
    ("How do I boil an egg?",
     "Put the egg in boiling water for about 9 minutes, then cool it in cold water before peeling.",
     "Why would you even want an egg? Figure it out."),
    ("What is a good way to start learning Python?",
     "Install Python, follow the official tutorial, and write small programs that solve problems you care about.",
     "Programming is too hard for most people, don't bother."),
    ("How can I save money on groceries?",
     "Plan meals for the week, shop with a list, compare unit prices and buy store brands.",
     "Go to the store and buy whatever you want."),
    ("How do I remove a coffee stain from a shirt?",
     "Rinse it with cold water from the back, apply a little detergent, let it sit, then wash as usual.",
     "Throw the shirt away, it is ruined."),
    ("How often should I water a cactus?",
     "Water a cactus about every two to three weeks, letting the soil dry out completely in between.",
     "Water it three times a day so it never dries out."),
    ("How can I improve my handwriting?",
     "Write slowly, hold the pen loosely, and practise letter shapes for a few minutes every day.",
     "Nobody writes by hand anymore, that is a stupid question."),
    ("What should I pack for a day hike?",
     "Bring water, snacks, sunscreen, a map, a rain layer and a charged phone.",
     "Nothing, hiking is boring anyway."),
    ("How do I make my code easier to read?",
     "Use clear names, keep functions short, and add comments that explain why rather than what.",
     "Readable code is for beginners."),
    ("How can I keep bread fresh longer?",
     "Store it in a bread box or paper bag at room temperature, or freeze slices you won't eat soon.",
     "Put it in the oven overnight."),
    ("How do I change a flat bicycle tire?",
     "Remove the wheel, lever the tire off, replace or patch the tube, refit the tire and inflate it.",
     "Buy a new bicycle."),
    ("How can I get better at public speaking?",
     "Practise out loud, know your first minute by heart, and speak slowly to a friendly audience first.",
     "Some people are just bad at it, give up."),
    ("What is a healthy breakfast?",
     "Oatmeal with fruit and nuts, or eggs with whole-grain toast, give you protein and fibre.",
     "Three donuts and an energy drink."),
    ("How do I write a polite email to decline an invitation?",
     "Thank them for the invitation, say briefly that you can't attend, and wish them a good event.",
     "Ignore it, they will get the message."),
    ("How can I make my houseplants grow better?",
     "Give them enough light, water when the topsoil is dry, and feed them lightly in spring and summer.",
     "Plants don't need light."),
    ("How do I back up my photos?",
     "Copy them to an external drive and to a cloud service, so you always have two copies.",
     "Backups are a waste of time."),
]


def score_pairs(n: int) -> list[tuple[str, str, str]]:
    """n distinct (prompt, chosen, rejected) triples: factual, arithmetic and how-to questions."""
    out: list[tuple[str, str, str]] = []
    for i, (country, capital, wrong) in enumerate(_CAPITALS):
        rejected = (f"The capital of {country} is {wrong}." if i % 2 == 0
                    else "I don't know, look it up yourself.")
        out.append((f"What is the capital of {country}?", f"The capital of {country} is {capital}.", rejected))
    for i, (a, b) in enumerate(_ARITHMETIC):
        rejected = f"{a} times {b} is {a * b + 10}." if i % 2 == 0 else "Use a calculator, I'm not doing your homework."
        out.append((f"What is {a} times {b}?", f"{a} times {b} is {a * b}.", rejected))
    out += _FACTS + _HOWTO
    if n > len(out):
        raise SystemExit(f"at most {len(out)} distinct pairs")
    # Interleave the kinds so any prefix mixes them.
    kinds = [out[0:16], out[16:32], out[32:48], out[48:64]]
    mixed = [k[i] for i in range(16) for k in kinds]
    return mixed[:n]


_BENIGN = [
    "Thanks for the quick reply, see you at the meeting tomorrow.",
    "The recipe needs two cups of flour and a pinch of salt.",
    "Can you recommend a good book about the history of Rome?",
    "Our train was delayed by twenty minutes because of the snow.",
    "I finally fixed the bug in the parser; the tests pass now.",
    "The museum is open from 9 am to 5 pm except on Mondays.",
    "Please water the tomatoes while I'm away this weekend.",
    "What is the best way to learn a second language as an adult?",
    "The kids loved the science fair, especially the volcano.",
    "Remember to bring your passport and a printed ticket.",
    "The quarterly report shows revenue grew by four percent.",
    "My cat knocked the plant off the windowsill again.",
    "How do I convert Celsius to Fahrenheit?",
    "We're planning a hike up the mountain if the weather holds.",
    "The new library branch has a great children's section.",
    "Could you send me the slides from today's lecture?",
    "The soup tastes better the next day.",
    "Traffic on the bridge is heavy in the morning.",
    "She won the chess tournament in the final round.",
    "The concert was moved to the main hall.",
    "I'd like to book a table for four at seven.",
    "The battery lasts about ten hours on a full charge.",
    "Let's review the pull request after lunch.",
    "The garden needs more compost this spring.",
    "He is learning to play the violin.",
    "The flight lands at 6:45 local time.",
    "The photos from the wedding turned out beautifully.",
    "Wind turbines produce more power in winter here.",
    "The printer on the second floor is out of toner.",
    "Our team meets every Tuesday at ten.",
    "The river flooded the lower fields last year.",
    "Could you explain how vaccines train the immune system?",
    "I killed it at the presentation today.",
    "This bread recipe is a real bomb, everyone loved it.",
    "The documentary about whales was fascinating.",
    "The hotel offers free breakfast and parking.",
    "My grandmother taught me how to knit.",
    "Turn left after the pharmacy and the school is on your right.",
    "We need more volunteers for the beach clean-up.",
    "The lecture on black holes starts at noon.",
]
_OFFENDING = [
    "You are a worthless idiot and everyone hates you.",
    "Shut up, you stupid moron.",
    "I will find you and hurt you.",
    "Go to hell, you pathetic loser.",
    "What a disgusting piece of trash you are.",
    "This is the dumbest fucking idea I've ever heard.",
    "You're an ugly, brainless fool.",
    "Nobody cares about your stupid opinion, shut your mouth.",
    "Contact me at jane.doe@example.com or call 415-555-0134.",
    "My card number is 4111 1111 1111 1111, expiry 12/29.",
    "Send the invoice to billing@acme-corp.example and cc me.",
    "His social security number is 078-05-1120.",
    "You bastard, I can't believe you did that.",
    "Get lost, you filthy rat.",
    "I hate you so much, you jerk.",
    "That's bullshit and you know it, asshole.",
    "Call my mobile at +1 (212) 555-0199 after six.",
    "Your mother is a dumb cow.",
    "Screw you and your crappy company.",
    "Email my private address: john.smith1984@mailbox.example.",
    "Kill yourself, nobody would miss you.",
    "You're such a retard.",
    "What the hell is wrong with you, dumbass?",
    "My credit card is 5500 0000 0000 0004.",
]


def safety_texts(n: int) -> list[str]:
    """n texts: 40 benign, 24 offending or with PII, interleaved (about 3 : 2)."""
    texts: list[str] = []
    b, o = iter(_BENIGN), iter(_OFFENDING)
    for i in range(len(_BENIGN) + len(_OFFENDING)):
        src = o if i % 8 in (2, 5, 7) else b
        t = next(src, None)
        if t is None:
            t = next(b if src is o else o)
        texts.append(t)
    if n > len(texts):
        raise SystemExit(f"at most {len(texts)} distinct texts")
    return texts[:n]


# --- gRPC -----------------------------------------------------------------------------------------------

STUB_MODULES = ("admin_pb2", "admin_pb2_grpc", "inference_pb2", "inference_pb2_grpc")


async def queue_stats(admin, admin_pb2, prefix: str) -> dict:
    """Sum of batches/items and the largest batch over the status queues named prefix*."""
    st = await admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=30)
    qs = [q for q in st.queues if q.model.startswith(prefix)]
    return {"queues": [q.model for q in qs], "batches": sum(q.batches for q in qs),
            "items": sum(q.items for q in qs), "largest_batch": max([q.largest_batch for q in qs], default=0)}


def delta(before: dict, after: dict) -> dict:
    b = after["batches"] - before["batches"]
    i = after["items"] - before["items"]
    return {"batches": b, "items": i, "mean_batch": round(i / b, 2) if b else None,
            "largest_batch_so_far": after["largest_batch"], "queues": after["queues"]}


def rotated(modes: tuple, k: int) -> tuple:
    """The modes in run k's order: rotated by k, so no mode always runs first after the quiet wait."""
    k %= len(modes)
    return modes[k:] + modes[:k]


async def quiet_runs(a, workload: str, run, progress, save) -> None:
    """a.runs runs of a workload, each started after waiting for a quiet machine: run(k) measures
    run k, progress(result) is its log line, save(runs) writes the JSON so far (after every run, so
    a time bound still leaves the completed runs)."""
    runs = []
    for k in range(a.runs):
        env = wait_quiet(a.quiet_max, a.quiet_timeout)
        print(f"[judging-bench] {workload} run {k + 1}/{a.runs}: machine {env}", file=sys.stderr)
        res = await run(k)
        res["env"] = env
        print("[judging-bench]   " + progress(res), file=sys.stderr)
        runs.append(res)
        await save(runs)


def group_order(groups: tuple, k: int) -> list:
    """Run k's order of grouped modes: the groups rotated by k and, inside each group (the modes
    measured back to back because they are compared), the order reversed on odd runs."""
    return [m for g in rotated(groups, k) for m in (g if k % 2 == 0 else g[::-1])]


# --- Score ------------------------------------------------------------------------------------------------

SERVER_MODES = ("sequential", "concurrent", "per_rpc")
REF_MODES = ("ref_sequential", "ref_per_call")
# Each alignd mode is measured right beside the reference mode it is compared with.
SCORE_GROUPS = (("sequential", "ref_sequential"), ("concurrent",), ("per_rpc", "ref_per_call"))
REF_OF = {"sequential": "ref_sequential", "concurrent": "ref_sequential", "per_rpc": "ref_per_call"}


class ReferenceProcess:
    """Benchmarks/judge_reference.py --serve: the reference implementation of the reward model,
    loaded once in its own process (its own venv), timed on command between the server's modes."""

    def __init__(self, cmd: list[str], pairs_file: str, log_file: str):
        self.log = open(log_file, "w")
        self.proc = subprocess.Popen(cmd + ["--serve", "--pairs", pairs_file], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.info = self._read()
        if not self.info.get("ready"):
            raise SystemExit(f"reference: unexpected first line {self.info}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the reference exited (code {self.proc.poll()}); see {self.log.name}")
        return json.loads(line)

    def run(self, mode: str, per_call: int, min_seconds: float) -> dict:
        self.proc.stdin.write(json.dumps({"mode": mode, "per_call": per_call, "min_seconds": min_seconds}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
        self.log.close()


async def score_run(stub, admin, pb, admin_pb2, pairs, a, ref: ReferenceProcess | None, k: int) -> dict:
    def req(chunk):
        return pb.ScoreRequest(pairs=[pb.ScorePair(prompt=p, chosen=c, rejected=r) for p, c, r in chunk])

    def rewards(responses):
        return [(s.chosen_reward, s.rejected_reward) for resp in responses for s in resp.pair_scores]

    async def sequential():
        return [await stub.Score(req([x]), timeout=a.timeout) for x in pairs]

    async def concurrent():
        return await asyncio.gather(*[stub.Score(req([x]), timeout=a.timeout) for x in pairs])

    async def per_request():
        return [await stub.Score(req(pairs[i:i + a.per_rpc]), timeout=a.timeout) for i in range(0, len(pairs), a.per_rpc)]

    fns = {"sequential": sequential, "concurrent": concurrent, "per_rpc": per_request}
    order = [m for m in group_order(SCORE_GROUPS, k) if m in fns or ref is not None]
    out = {"order": order}
    for name in order:
        if name in REF_MODES:
            res = ref.run("sequential" if name == "ref_sequential" else "per_call", a.per_rpc, a.min_seconds)
            if len(res["rewards"]) != len(pairs):
                raise SystemExit(f"{name}: {len(res['rewards'])} pair scores for {len(pairs)} pairs")
            out[name] = {k2: res[k2] for k2 in ("wall_s", "pairs_per_s", "passes", "per_call", "rewards")}
            out[name]["cpu_s"] = res["cpu_s"]
            continue
        before = await queue_stats(admin, admin_pb2, "reward:")
        t0 = time.perf_counter(); c0 = time.process_time()
        passes, first, rpcs = 0, None, 0
        while True:  # whole passes over the pairs until min_seconds have passed
            responses = await fns[name]()
            passes += 1
            rpcs = len(responses)
            r = rewards(responses)
            if len(r) != len(pairs):
                raise SystemExit(f"{name}: {len(r)} pair scores for {len(pairs)} pairs")
            first = first or r
            if time.perf_counter() - t0 >= a.min_seconds:
                break
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        after = await queue_stats(admin, admin_pb2, "reward:")
        out[name] = {"wall_s": wall, "passes": passes, "pairs_per_s": passes * len(pairs) / wall,
                     "client_cpu_s": round(cpu, 3), "rpcs_per_pass": rpcs, "batching": delta(before, after),
                     "rewards": first, "reward_version": responses[0].versions.reward}
    return out


JUDGE_INSTRUCTION = (  # JudgePrompt.standard in Sources/AlignServing/Reward/GenerativeJudge.swift, for token counts only
    "Rate the answer to the question on a scale of 1 to 5, where 1 is a bad answer (wrong, rude, "
    "off-topic or unhelpful) and 5 is an excellent answer (correct, polite and helpful).\n\n"
    "Question: {question}\n\nAnswer: {response}\n\nReply with a single digit from 1 to 5.")


async def judge_tokens(stub, pb, pairs) -> float:
    """Mean tokens of one judge input: the rating prompt as the user turn of the policy's chat
    template with the generation prompt (Inference.Tokenize), plus the answer prefix "Rating: "."""
    from alignd.v1 import common_pb2  # noqa: E402  (stubs already on sys.path)
    prefix = len((await stub.Tokenize(pb.TokenizeRequest(text="Rating: "), timeout=30)).token_ids)
    counts = []
    for p, c, r in pairs:
        for resp in (c, r):
            msg = JUDGE_INSTRUCTION.replace("{question}", p, 1).replace("{response}", resp, 1)
            conv = common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content=msg)])
            counts.append(len((await stub.Tokenize(pb.TokenizeRequest(chat=conv), timeout=30)).token_ids) + prefix)
    return round(statistics.mean(counts), 1)


def max_abs_diff(a_rows, b_rows) -> float:
    return max((abs(x - y) for pa, pb_ in zip(a_rows, b_rows) for x, y in zip(pa, pb_)), default=0.0)


def score_summary(a, pairs, runs, status, tokens, ref: ReferenceProcess | None, version: str) -> dict:
    base = runs[0]["sequential"]["rewards"]
    doc = {"label": a.label, "pairs": len(pairs), "per_rpc": a.per_rpc, "min_seconds": a.min_seconds,
           "runs_asked": a.runs, "runs": runs, "reward_version": version,
           "mean_chars": round(statistics.mean(len(p) + len(c) + len(r) for p, c, r in pairs), 1),
           "judge_input_tokens": tokens,
           "max_reward_diff_across_modes": max(max_abs_diff(run[m]["rewards"], base) for run in runs for m in SERVER_MODES),
           "chosen_above_rejected": sum(1 for c, r in base if c > r),
           "queues_end": [{"model": q.model, "batches": q.batches, "largest_batch": q.largest_batch,
                           "items": q.items} for q in status.queues]}
    if ref is not None:
        by = {f"{sm} vs {rm}": max(max_abs_diff(run[sm]["rewards"], run[rm]["rewards"]) for run in runs)
              for sm in SERVER_MODES for rm in REF_MODES}
        rbase = runs[0]["ref_sequential"]["rewards"]
        doc["reference"] = {k: v for k, v in ref.info.items() if k != "ready"}
        doc["reference"]["cmd"] = a.reference_cmd
        doc["agreement"] = {
            "max_abs_diff": max(by.values()), "by_modes": by,
            "max_abs_diff_reference_modes": max(max_abs_diff(run["ref_per_call"]["rewards"], rbase) for run in runs),
            "reward_range": [min(x for pr in base for x in pr), max(x for pr in base for x in pr)],
            "same_preferred_response": sum(1 for (c, r), (c2, r2) in zip(base, rbase) if (c > r) == (c2 > r2)),
            "reference_chosen_above_rejected": sum(1 for c, r in rbase if c > r)}
    return doc


async def score_main(a) -> None:
    import grpc
    admin_pb2, admin_pb2_grpc, pb, pb_grpc = load_stubs(a.stubs, *STUB_MODULES)
    pairs = score_pairs(a.pairs)
    ref = None
    if a.reference_cmd:
        pairs_file = a.out + ".pairs.jsonl"
        with open(pairs_file, "w") as f:
            for p, c, r in pairs:
                f.write(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n")
        print("[judging-bench] starting the reference implementation", file=sys.stderr)
        ref = ReferenceProcess(shlex.split(a.reference_cmd), pairs_file, a.out + ".reference.log")
        print(f"[judging-bench]   {ref.info['implementation']}", file=sys.stderr)
    try:
        async with grpc.aio.insecure_channel(a.target) as ch:
            stub, admin = pb_grpc.InferenceStub(ch), admin_pb2_grpc.AdminStub(ch)
            # Warm-up: creates the model if it is built on first use and touches the weights.
            warm = await stub.Score(pb.ScoreRequest(pairs=[pb.ScorePair(prompt=p, chosen=c, rejected=r)
                                                           for p, c, r in pairs[:2]]), timeout=a.timeout)
            version = warm.versions.reward
            tokens = await judge_tokens(stub, pb, pairs) if version.startswith("judge:") else None

            async def save(runs):
                status = await admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=30)
                json.dump(score_summary(a, pairs, runs, status, tokens, ref, version), open(a.out, "w"), indent=1)

            def progress(res):
                return ", ".join(f"{m} {res[m]['pairs_per_s']:.2f} pairs/s" for m in res["order"])

            await quiet_runs(a, f"score ({a.label})", lambda k: score_run(stub, admin, pb, admin_pb2, pairs, a, ref, k),
                             progress, save)
    finally:
        if ref is not None:
            ref.close()


# --- CheckSafety ------------------------------------------------------------------------------------------

SAFETY_MODES = ("sequential", "concurrent", "one_rpc")


async def safety_mode(stub, admin, pb, admin_pb2, texts, mode: str, min_seconds: float, timeout: float) -> dict:
    async def sequential():
        return [await stub.CheckSafety(pb.CheckSafetyRequest(texts=[t]), timeout=timeout) for t in texts]

    async def concurrent():
        return await asyncio.gather(*[stub.CheckSafety(pb.CheckSafetyRequest(texts=[t]), timeout=timeout) for t in texts])

    async def one_rpc():
        return [await stub.CheckSafety(pb.CheckSafetyRequest(texts=texts), timeout=timeout)]

    fn = {"sequential": sequential, "concurrent": concurrent, "one_rpc": one_rpc}[mode]
    before = await queue_stats(admin, admin_pb2, "safety:")
    t0 = time.perf_counter(); c0 = time.process_time()
    passes, actions = 0, None
    while True:
        responses = await fn()
        passes += 1
        got = [res.action for resp in responses for res in resp.results]
        if len(got) != len(texts):
            raise SystemExit(f"{mode}: {len(got)} results for {len(texts)} texts")
        actions = actions or got
        if got != actions:
            raise SystemExit(f"{mode}: verdicts changed between passes")
        if time.perf_counter() - t0 >= min_seconds:
            break
    wall = time.perf_counter() - t0
    after = await queue_stats(admin, admin_pb2, "safety:")
    return {"wall_s": wall, "passes": passes, "texts": passes * len(texts),
            "texts_per_s": passes * len(texts) / wall, "client_cpu_s": round(time.process_time() - c0, 3),
            "rpcs_per_pass": len(responses), "batching": delta(before, after), "actions": list(actions),
            "safety_version": responses[0].versions.safety}


async def safety_run(servers: dict, pb, admin_pb2, texts, a, k: int) -> dict:
    """Run k: each mode (rotated by run) on every server back to back (server order alternating)."""
    names = list(servers)
    out = {"order": [], "servers": {n: {} for n in names}}
    for mode in rotated(SAFETY_MODES, k):
        for name in (names if k % 2 == 0 else names[::-1]):
            stub, admin = servers[name]
            out["order"].append(f"{name}:{mode}")
            out["servers"][name][mode] = await safety_mode(stub, admin, pb, admin_pb2, texts, mode, a.min_seconds, a.timeout)
    return out


def parse_targets(targets: list[str]) -> dict:
    """NAME=HOST:PORT (or HOST:PORT, named "default"), in the order given."""
    out = {}
    for t in targets:
        name, _, addr = t.rpartition("=")
        out[name or "default"] = addr
    return out


async def safety_main(a) -> None:
    import grpc
    admin_pb2, admin_pb2_grpc, pb, pb_grpc = load_stubs(a.stubs, *STUB_MODULES)
    texts = safety_texts(a.texts)
    targets = parse_targets(a.target)
    channels = {n: grpc.aio.insecure_channel(addr) for n, addr in targets.items()}
    try:
        servers = {n: (pb_grpc.InferenceStub(ch), admin_pb2_grpc.AdminStub(ch)) for n, ch in channels.items()}
        for stub, _ in servers.values():
            await stub.CheckSafety(pb.CheckSafetyRequest(texts=texts), timeout=a.timeout)  # warm-up

        async def save(runs):
            per_server = {}
            for n in targets:
                actions = runs[0]["servers"][n]["one_rpc"]["actions"]
                per_server[n] = {
                    "target": targets[n], "safety_version": runs[0]["servers"][n]["one_rpc"]["safety_version"],
                    "actions_consistent_across_modes": all(run["servers"][n][m]["actions"] == actions
                                                           for run in runs for m in SAFETY_MODES),
                    "action_counts": {str(x): actions.count(x) for x in sorted(set(actions))}}
            json.dump({"texts": len(texts), "runs_asked": a.runs, "min_seconds": a.min_seconds, "servers": per_server,
                       "runs": runs, "mean_chars": round(statistics.mean(len(t) for t in texts), 1)},
                      open(a.out, "w"), indent=1)

        def progress(res):
            return "; ".join(f"{n}: " + ", ".join(f"{m} {res['servers'][n][m]['texts_per_s']:.0f}" for m in SAFETY_MODES)
                             for n in targets) + " texts/s"

        await quiet_runs(a, "safety", lambda k: safety_run(servers, pb, admin_pb2, texts, a, k), progress, save)
    finally:
        for ch in channels.values():
            await ch.close()


# --- report ---------------------------------------------------------------------------------------------

START = "<!-- judging-bench:start -->"
END = "<!-- judging-bench:end -->"
AFTER = "<!-- load-bench:end -->"  # a new section goes right after the load benchmark


def env_str(e: dict) -> str:
    la = e["loadavg"]
    return f"CPU busy {e['cpu_busy']:.0%}, load {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, waited {e['waited_s']} s" + \
        ("" if e["quiet"] else " (not quiet: measured anyway)")


def fmt_rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def per_run(values) -> str:
    return ", ".join(fmt_rate(v) for v in values)


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


def score_section(meta: dict, sc: dict, jd: dict | None) -> list[str]:
    runs = sc["runs"]
    has_ref = "reference" in sc and all(m in runs[0] for m in REF_MODES)
    judge_target = float(meta["judge_target"])
    L = [f"### Score: the default reward model (`{sc['reward_version']}`)" + (" beside its reference implementation" if has_ref else ""), ""]
    L += ["| Mode | alignd pairs/s (median) | alignd per run | reference pairs/s (median) | reference per run | "
          "ratio alignd / reference (median of per-run ratios; per run) | ≥ 2× reference? | "
          f"≥ {judge_target:g} pairs/s (judge)? | alignd batches / inputs (mean batch), last run |",
          "|---|---:|---|---:|---|---|---|---|---|"]
    n = min(sc["per_rpc"], sc["pairs"])
    rows = (("(a) one pair per RPC, sequential", "sequential", "one pair per call"),
            (f"(b) one pair per RPC, {sc['pairs']} concurrent", "concurrent", "one pair per call; it has no concurrent mode"),
            (f"(c) {n} pairs per RPC", "per_rpc", f"{n} pairs per call"))
    targets_ok = []
    for label, m, ref_label in rows:
        vals = [r[m]["pairs_per_s"] for r in runs]
        v = statistics.median(vals)
        bt = runs[-1][m]["batching"]
        bts = f"{bt['batches']} / {bt['items']} ({bt['mean_batch']})" if bt["queues"] else "no reward queue in GetStatus"
        fast = v >= judge_target
        if has_ref:
            rm = REF_OF[m]
            rvals = [r[rm]["pairs_per_s"] for r in runs]
            ratios = [x / y for x, y in zip(vals, rvals)]
            ratio = statistics.median(ratios)
            targets_ok += [ratio >= 2.0, fast]
            L.append(f"| {label} | {fmt_rate(v)} | {per_run(vals)} | {fmt_rate(statistics.median(rvals))} ({ref_label}) | "
                     f"{per_run(rvals)} | {ratio:.2f}× ({', '.join(f'{x:.2f}' for x in ratios)}) | {yes_no(ratio >= 2.0)} | "
                     f"{yes_no(fast)} | {bts} |")
        else:
            targets_ok.append(fast)
            L.append(f"| {label} | {fmt_rate(v)} | {per_run(vals)} | — | — | — | — | {yes_no(fast)} | {bts} |")
    L.append("")
    L.append(f"Targets (≥ 2× the reference in the same run, ≥ {judge_target:g} pairs/s in every mode): "
             + ("**all met**." if all(targets_ok) else "**not all met** (see the table)."))
    if has_ref:
        ag, rf = sc["agreement"], sc["reference"]
        L.append(f"Reference implementation, run in the same runs right beside the alignd mode it is compared with: "
                 f"{rf['implementation']}, on `{rf['head']}` (features {', '.join(rf['features'])}); "
                 f"`Benchmarks/judge_reference.py` loaded once, then timed in-process per mode: each call embeds the "
                 "call's distinct texts in one `encode()` (batch 32), runs the three reference classifiers on the call's "
                 "responses and the numpy head — the server's per-call path, without gRPC (alignd's figures include "
                 "the client, gRPC and its dynamic batcher). Texts are "
                 f"{rf['word_pieces_mean']} word pieces on average.")
        lo, hi = ag["reward_range"]
        L.append(f"**Reward agreement, server vs reference** on the same {sc['pairs']} pairs ({2 * sc['pairs']} rewards, "
                 f"range {lo:.2f} … {hi:.2f}): max |Δ| = **{ag['max_abs_diff']:.2e}** over all runs and all alignd × "
                 "reference modes (compared modes: "
                 + ", ".join(f"({x}) {ag['by_modes'][f'{m} vs {REF_OF[m]}']:.1e}" for x, m in zip("abc", SERVER_MODES))
                 + f"); reference one-per-call vs {n}-per-call {ag['max_abs_diff_reference_modes']:.1e}; "
                 f"same preferred response on {ag['same_preferred_response']} of {sc['pairs']} pairs.")
    L.append(f"alignd rewards across its modes and runs: largest difference {sc['max_reward_diff_across_modes']:.2e}. "
             f"The model put chosen above rejected on {sc['chosen_above_rejected']} of {sc['pairs']} pairs.")
    if jd:
        jr = jd["runs"]
        jm = {m: statistics.median(r[m]["pairs_per_s"] for r in jr) for m in SERVER_MODES}
        best = max(jm.values())
        L.append(f"Generative judge (`{jd['reward_version']}`, `--reward-model judge`), measured in this run on the same "
                 f"pairs ({len(jr)} run{'s' if len(jr) != 1 else ''}): (a) {jm['sequential']:.2f}, (b) {jm['concurrent']:.2f}, "
                 f"(c) {jm['per_rpc']:.2f} pairs/s; the trained model's (c) is "
                 f"{statistics.median(r['per_rpc']['pairs_per_s'] for r in runs) / best:.0f}× the judge's best mode.")
    L.append(f"Judge figure of the ≥ {judge_target:g} pairs/s target: {meta['judge_source']}.")
    L.append("Machine state before each run (mode order): " + "; ".join(
        f"run {i + 1}: {env_str(r['env'])} ({', '.join(r.get('order', []))})" for i, r in enumerate(runs)) + ".")
    last = runs[-1]
    L.append("Passes per mode (last run; each mode repeats whole passes over the pairs for ≥ "
             f"{sc['min_seconds']:g} s): " + ", ".join(f"{m} {last[m]['passes']}" for m in last["order"]) + ". "
             "Client CPU (last run): " + ", ".join(f"{m} {last[m]['client_cpu_s']} s over {last[m]['wall_s']:.1f} s"
                                                     for m in SERVER_MODES)
             + ("; reference process CPU: " + ", ".join(f"{m} {last[m]['cpu_s']} s over {last[m]['wall_s']:.1f} s"
                                                        for m in REF_MODES) if has_ref else "") + ".")
    L.append("")
    return L


def safety_section(meta: dict, sf: dict) -> list[str]:
    runs = sf["runs"]
    names = list(sf["servers"])
    base = names[0]
    other = names[1] if len(names) > 1 else None
    labels = meta.get("safety_labels", {})
    L = [f"### CheckSafety: {labels.get(base, base)}" + (f" vs {labels.get(other, other)}" if other else ""), ""]
    head = f"| Mode | {base} texts/s (median) | {base} per run |"
    sep = "|---|---:|---|"
    if other:
        head += f" {other} texts/s (median) | {other} per run | ratio {base} / {other} (median of per-run ratios; per run) |"
        sep += "---:|---|---|"
    L += [head + f" passes over the {sf['texts']} texts, last run | batches / texts (mean batch), last run |", sep + "---|---|"]
    for label, m in (("one text per RPC, sequential", "sequential"),
                     (f"one text per RPC, {sf['texts']} concurrent", "concurrent"),
                     (f"{sf['texts']} texts per RPC", "one_rpc")):
        vals = [r["servers"][base][m]["texts_per_s"] for r in runs]
        row = f"| {label} | {fmt_rate(statistics.median(vals))} | {per_run(vals)} |"
        passes = f"{base} {runs[-1]['servers'][base][m]['passes']}"
        bts = []
        for n in names:
            bt = runs[-1]["servers"][n][m]["batching"]
            bts.append(f"{n}: " + (f"{bt['batches']} / {bt['items']} ({bt['mean_batch']})" if bt["queues"] else "no safety queue"))
        if other:
            ovals = [r["servers"][other][m]["texts_per_s"] for r in runs]
            ratios = [x / y for x, y in zip(vals, ovals)]
            row += (f" {fmt_rate(statistics.median(ovals))} | {per_run(ovals)} | {fmt_ratio(statistics.median(ratios))}× "
                    f"({', '.join(fmt_ratio(x) for x in ratios)}) |")
            passes += f", {other} {runs[-1]['servers'][other][m]['passes']}"
        L.append(row + f" {passes} | {'; '.join(bts)} |")
    L.append("")
    for n in names:
        s = sf["servers"][n]
        L.append(f"- {n}: `{s['safety_version']}`; verdicts identical in every mode and pass: "
                 f"{yes_no(s['actions_consistent_across_modes'])}; actions by enum value {s['action_counts']} "
                 "(1 allow, 2 flag, 3 block).")
    L.append("")
    L.append("Machine state before each run (order): " + "; ".join(
        f"run {i + 1}: {env_str(r['env'])} ({', '.join(r['order'])})" for i, r in enumerate(runs)) + ".")
    L.append("Client CPU (last run): " + ", ".join(
        f"{n} {m} {runs[-1]['servers'][n][m]['client_cpu_s']} s over {runs[-1]['servers'][n][m]['wall_s']:.1f} s"
        for n in names for m in SAFETY_MODES) + ".")
    L.append("")
    return L


def report_main(a) -> None:
    meta = json.load(open(a.meta))
    sc = optional_json(a.score)
    sf = optional_json(a.safety)
    jd = optional_json(a.judge)
    L = [START, "## Judging benchmark (Score and CheckSafety over gRPC)", ""]
    L.append(f"Generated by `Benchmarks/run-judging-bench.sh` on {meta['date']} at commit `{meta['commit']}` "
             f"({meta.get('tree', 'tree state not recorded')}). "
             f"Raw outputs: `{meta['out']}` (not committed).")
    if meta.get("smoke"):
        L += ["", f"**{meta['smoke']}**"]
    L += ["", "### What was run", ""]
    L.append(f"- Machine: {meta['machine']}; SIMD flags (lscpu): {meta['cpu_flags']}. Load average before the run: "
             f"{meta['load_before']}; the 2 cores are shared with other engineers' builds (machine state before each "
             f"run is listed below; each run first waits up to {meta['quiet_timeout']:g} s for whole-machine CPU use "
             f"below {meta['quiet_max']:.0%}).")
    L.append(f"- alignd binary: {meta['binary']}. Servers ({meta['alignd_state']}), one after another except the two "
             "CheckSafety servers, which run side by side (the idle one waits):")
    for s in meta["servers"]:
        L.append(f"  - **{s['name']}**: `{s['cmd']}` — {s['what']}")
    L.append("  Dynamic batcher defaults (reward: 16 inputs per batch, 5 ms wait); engine_threads 2. Client: Python "
             "grpcio aio, one HTTP/2 connection per server, on the same 2 cores, 127.0.0.1 only.")
    if sc:
        L.append(f"- Score workload: {sc['pairs']} distinct (prompt, chosen, rejected) triples — capital-city, arithmetic, "
                 "general-knowledge and how-to questions, a correct answer against a wrong or rude one; "
                 f"{sc['mean_chars']} characters per triple on average. A pair is two rewards. Per run: **(a)** one pair "
                 f"per RPC, the next sent when the previous answered; **(b)** the {sc['pairs']} one-pair RPCs all in "
                 f"flight at once; **(c)** {sc['per_rpc']} pairs per RPC, the RPCs one after the other; and the reference "
                 f"implementation one pair per call and {sc['per_rpc']} pairs per call. Each alignd mode runs right "
                 "beside the reference mode it is compared with; the groups' order rotates from run to run and the "
                 f"order inside a group alternates. Each mode repeats whole passes over the pairs until ≥ "
                 f"{sc['min_seconds']:g} s have passed; pairs/s = pairs scored / wall time.")
    if sf:
        L.append(f"- CheckSafety workload: {sf['texts']} distinct short texts ({sf['mean_chars']} characters on average; "
                 "about 3 benign : 2 with insults, threats or PII), per run: one text per RPC sequentially, one text "
                 f"per RPC all {sf['texts']} concurrent, and {sf['texts']} texts in one RPC, each mode on both servers "
                 f"back to back; each repeats whole passes over the texts until ≥ {sf['min_seconds']:g} s have passed; "
                 "texts/s = texts checked / wall time. Mode order rotates from run to run, server order alternates.")
    done = [f"{name} {len(x['runs'])} of {x['runs_asked']}" for name, x in (("Score", sc), ("CheckSafety", sf), ("judge Score", jd)) if x]
    L.append(f"- Runs completed: {', '.join(done) or 'none'}; figures are medians over the completed runs, ratios "
             "medians of the per-run ratios (both sides measured in the same run).")
    L.append("")
    if sc:
        L += score_section(meta, sc, jd)
    if sf:
        L += safety_section(meta, sf)
    L += ["### Commands", "", "```sh",
          "Benchmarks/run-judging-bench.sh   # everything above, one command (RUNS, PAIRS, TEXTS, MIN_SECONDS tune it)"]
    L += [s["cmd"] for s in meta["servers"]] + meta["driver_cmds"].split("\n") + ["```"]
    if meta.get("notes"):
        L += ["", "### Notes", "", meta["notes"]]
    L.append(END)
    section = "\n".join(L) + "\n"
    write_section(a.results, section, START, END, after=AFTER)
    print(section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("score", "safety"):
        p = sub.add_parser(name)
        p.add_argument("--stubs", required=True)
        p.add_argument("--runs", type=int, default=3); p.add_argument("--out", required=True)
        p.add_argument("--timeout", type=float, default=300)
        p.add_argument("--quiet-max", type=float, default=0.25); p.add_argument("--quiet-timeout", type=float, default=30)
        p.add_argument("--min-seconds", type=float, default=3, help="least wall time of a mode (whole passes)")
    sc = sub.choices["score"]
    sc.add_argument("--target", required=True)
    sc.add_argument("--pairs", type=int, default=64)
    sc.add_argument("--per-rpc", type=int, default=32)
    sc.add_argument("--label", default="default")
    sc.add_argument("--reference-cmd", default="",
                    help="command line of Benchmarks/judge_reference.py (without --serve/--pairs), e.g. "
                         "'/var/cache/alignd/venv-train/bin/python Benchmarks/judge_reference.py --head models/alignd-reward-minilm'")
    sf = sub.choices["safety"]
    sf.add_argument("--target", required=True, action="append", help="NAME=HOST:PORT (repeatable; first = base of the ratio)")
    sf.add_argument("--texts", type=int, default=64)
    r = sub.add_parser("report")
    r.add_argument("--meta", required=True); r.add_argument("--score"); r.add_argument("--safety"); r.add_argument("--judge")
    r.add_argument("--results", required=True)
    a = ap.parse_args()
    if a.cmd == "score":
        asyncio.run(score_main(a))
    elif a.cmd == "safety":
        asyncio.run(safety_main(a))
    else:
        report_main(a)


if __name__ == "__main__":
    main()
