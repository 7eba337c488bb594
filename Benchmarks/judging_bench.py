#!/usr/bin/env python3
"""Judging-benchmark driver for Benchmarks/run-judging-bench.sh (Score and CheckSafety over gRPC).

Subcommands (each writes a JSON file; the shell script starts the server and orchestrates):

  score   Inference.Score on the server's active reward model (by default the generative judge on
          the policy): the same PAIRS (prompt, chosen, rejected) scored three ways per run,
            sequential  one pair per RPC, one RPC at a time;
            concurrent  one pair per RPC, all RPCs in flight at once (the server's dynamic
                        batcher may group inputs of different RPCs into one forward pass);
            per-rpc     --per-rpc pairs per RPC (32 = the 64-response limit), RPCs one at a time.
          pairs/s = pairs / wall time of the mode. Admin.GetStatus is read before and after each
          mode; the deltas of the "reward:" queue's batches and items show how inputs were grouped.
  safety  Inference.CheckSafety on TEXTS: one text per RPC sequentially, one text per RPC all
          concurrent, and all texts in one RPC; each mode repeats whole passes until it has run
          --min-seconds, texts/s = texts checked / wall time.
  report  merge meta + score + safety JSON into the "Judging benchmark" section of RESULTS.md.

Each run starts after the machine is quiet (CPU use < --quiet-max over 3 s, waiting at most
--quiet-timeout s; the state is recorded either way); the modes of one run follow each other, in
an order rotated by run, so drift of the shared machine hits all modes of a run alike. Medians are
over runs; ratios are medians of per-run ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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


async def timed(coro_factory):
    t0 = time.perf_counter(); c0 = time.process_time()
    out = await coro_factory()
    return out, time.perf_counter() - t0, time.process_time() - c0


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


async def score_run(stub, admin, pb, admin_pb2, pairs, per_rpc: int, timeout: float, k: int) -> dict:
    def req(chunk):
        return pb.ScoreRequest(pairs=[pb.ScorePair(prompt=p, chosen=c, rejected=r) for p, c, r in chunk])

    def rewards(responses):
        return [(s.chosen_reward, s.rejected_reward) for resp in responses for s in resp.pair_scores]

    async def sequential():
        return [await stub.Score(req([x]), timeout=timeout) for x in pairs]

    async def concurrent():
        return await asyncio.gather(*[stub.Score(req([x]), timeout=timeout) for x in pairs])

    async def per_request():
        return [await stub.Score(req(pairs[i:i + per_rpc]), timeout=timeout) for i in range(0, len(pairs), per_rpc)]

    out = {"order": []}
    for name, fn in rotated((("sequential", sequential), ("concurrent", concurrent), ("per_rpc", per_request)), k):
        out["order"].append(name)
        before = await queue_stats(admin, admin_pb2, "reward:")
        responses, wall, cpu = await timed(fn)
        after = await queue_stats(admin, admin_pb2, "reward:")
        r = rewards(responses)
        if len(r) != len(pairs):
            raise SystemExit(f"{name}: {len(r)} pair scores for {len(pairs)} pairs")
        out[name] = {"wall_s": wall, "pairs_per_s": len(pairs) / wall, "client_cpu_s": round(cpu, 3),
                     "rpcs": len(responses), "batching": delta(before, after), "rewards": r,
                     "reward_version": responses[0].versions.reward}
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


def score_summary(a, pairs, runs, status, tokens) -> dict:
    ref = runs[0]["sequential"]["rewards"]
    max_diff = max(abs(x - y) for run in runs for m in ("sequential", "concurrent", "per_rpc")
                   for pr, pr0 in zip(run[m]["rewards"], ref) for x, y in zip(pr, pr0))
    return {"pairs": len(pairs), "per_rpc": a.per_rpc, "runs_asked": a.runs, "runs": runs,
            "mean_chars": round(statistics.mean(len(p) + len(c) + len(r) for p, c, r in pairs), 1),
            "judge_input_tokens": tokens,
            "max_reward_diff_across_modes": max_diff, "chosen_above_rejected": sum(1 for c, r in ref if c > r),
            "queues_end": [{"model": q.model, "batches": q.batches, "largest_batch": q.largest_batch,
                            "items": q.items} for q in status.queues]}


async def score_main(a) -> None:
    import grpc
    admin_pb2, admin_pb2_grpc, pb, pb_grpc = load_stubs(a.stubs, *STUB_MODULES)
    pairs = score_pairs(a.pairs)
    async with grpc.aio.insecure_channel(a.target) as ch:
        stub, admin = pb_grpc.InferenceStub(ch), admin_pb2_grpc.AdminStub(ch)
        tokens = await judge_tokens(stub, pb, pairs)
        # Warm-up: creates the judge (built on first use) and touches the weights.
        await stub.Score(pb.ScoreRequest(pairs=[pb.ScorePair(prompt=p, chosen=c, rejected=r) for p, c, r in pairs[:2]]),
                         timeout=a.timeout)

        async def save(runs):
            status = await admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=30)
            json.dump(score_summary(a, pairs, runs, status, tokens), open(a.out, "w"), indent=1)

        await quiet_runs(a, "score", lambda k: score_run(stub, admin, pb, admin_pb2, pairs, a.per_rpc, a.timeout, k),
                         lambda res: ", ".join(f"{m} {res[m]['pairs_per_s']:.2f} pairs/s" for m in
                                               ("sequential", "concurrent", "per_rpc")), save)


async def safety_run(stub, admin, pb, admin_pb2, texts, min_seconds: float, timeout: float, k: int) -> dict:
    async def sequential():
        return [await stub.CheckSafety(pb.CheckSafetyRequest(texts=[t]), timeout=timeout) for t in texts]

    async def concurrent():
        return await asyncio.gather(*[stub.CheckSafety(pb.CheckSafetyRequest(texts=[t]), timeout=timeout) for t in texts])

    async def one_rpc():
        return [await stub.CheckSafety(pb.CheckSafetyRequest(texts=texts), timeout=timeout)]

    out = {"order": []}
    for name, fn in rotated((("sequential", sequential), ("concurrent", concurrent), ("one_rpc", one_rpc)), k):
        out["order"].append(name)
        before = await queue_stats(admin, admin_pb2, "safety:")
        t0 = time.perf_counter(); c0 = time.process_time()
        passes, actions = 0, None
        while True:
            responses = await fn()
            passes += 1
            got = [res.action for resp in responses for res in resp.results]
            if len(got) != len(texts):
                raise SystemExit(f"{name}: {len(got)} results for {len(texts)} texts")
            actions = actions or got
            if got != actions:
                raise SystemExit(f"{name}: verdicts changed between passes")
            if time.perf_counter() - t0 >= min_seconds:
                break
        wall = time.perf_counter() - t0
        after = await queue_stats(admin, admin_pb2, "safety:")
        out[name] = {"wall_s": wall, "passes": passes, "texts": passes * len(texts),
                     "texts_per_s": passes * len(texts) / wall, "client_cpu_s": round(time.process_time() - c0, 3),
                     "rpcs_per_pass": len(responses), "batching": delta(before, after), "actions": list(actions),
                     "safety_version": responses[0].versions.safety}
    return out


async def safety_main(a) -> None:
    import grpc
    admin_pb2, admin_pb2_grpc, pb, pb_grpc = load_stubs(a.stubs, *STUB_MODULES)
    texts = safety_texts(a.texts)
    async with grpc.aio.insecure_channel(a.target) as ch:
        stub, admin = pb_grpc.InferenceStub(ch), admin_pb2_grpc.AdminStub(ch)
        await stub.CheckSafety(pb.CheckSafetyRequest(texts=texts), timeout=a.timeout)  # warm-up

        async def save(runs):
            actions = runs[0]["one_rpc"]["actions"]
            consistent = all(run[m]["actions"] == actions for run in runs for m in ("sequential", "concurrent", "one_rpc"))
            json.dump({"texts": len(texts), "runs_asked": a.runs, "runs": runs,
                       "actions_consistent_across_modes": consistent,
                       "action_counts": {str(x): actions.count(x) for x in sorted(set(actions))},
                       "mean_chars": round(statistics.mean(len(t) for t in texts), 1)},
                      open(a.out, "w"), indent=1)

        await quiet_runs(a, "safety", lambda k: safety_run(stub, admin, pb, admin_pb2, texts, a.min_seconds, a.timeout, k),
                         lambda res: ", ".join(f"{m} {res[m]['texts_per_s']:.0f} texts/s" for m in
                                               ("sequential", "concurrent", "one_rpc")), save)


# --- report ---------------------------------------------------------------------------------------------

START = "<!-- judging-bench:start -->"
END = "<!-- judging-bench:end -->"
AFTER = "<!-- load-bench:end -->"  # a new section goes right after the load benchmark


def med(runs, mode, key):
    return statistics.median(r[mode][key] for r in runs)


def env_str(e: dict) -> str:
    la = e["loadavg"]
    return f"CPU busy {e['cpu_busy']:.0%}, load {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, waited {e['waited_s']} s" + \
        ("" if e["quiet"] else " (not quiet: measured anyway)")


def report_main(a) -> None:
    meta = json.load(open(a.meta))
    sc = optional_json(a.score)
    sf = optional_json(a.safety)
    L = [START, "## Judging benchmark (Score and CheckSafety over gRPC)", ""]
    L.append(f"Generated by `Benchmarks/run-judging-bench.sh` on {meta['date']}. Raw outputs: `{meta['out']}` (not committed).")
    L += ["", "### What was run", ""]
    L.append(f"- Machine: {meta['machine']}. Load average before the run: {meta['load_before']}; the 2 cores are "
             "shared with other engineers' builds (machine state before each run is listed below; each run first "
             f"waits up to {meta['quiet_timeout']} s for whole-machine CPU use below {meta['quiet_max']:.0%}).")
    L.append(f"- Server: `{meta['alignd_cmd']}` ({meta['alignd_state']}): default models, so the reward model is "
             f"the generative judge on the policy (`{meta['reward_version']}`) and the safety checker is "
             f"`{meta['safety_version']}` (lexical classifier + rules, no guard model). Dynamic batcher defaults: "
             "16 inputs per batch, 5 ms wait. Client: Python grpcio aio, one HTTP/2 connection, on the same 2 cores, "
             "127.0.0.1 only.")
    if sc:
        L.append(f"- Score workload: {sc['pairs']} distinct (prompt, chosen, rejected) triples — capital-city, arithmetic, "
                 "general-knowledge and how-to questions, a correct answer against a wrong or rude one; "
                 f"{sc['mean_chars']} characters per triple on average (the judge wraps each response in its rating "
                 f"prompt: {sc['judge_input_tokens']} tokens per judge input on average, counted with Inference.Tokenize). A pair is two rewards (two judge inputs). Modes of a run follow each other, their order rotated from run to run "
                 "(run 1: a, b, c; run 2: b, c, a; run 3: c, a, b): **(a) one-at-a-time** = one pair per RPC, the next RPC sent when the previous answered; "
                 f"**(b) concurrent** = the same {sc['pairs']} one-pair RPCs all in flight at once; **(c) many per RPC** "
                 f"= {sc['per_rpc']} pairs per RPC (the 64-response limit), the RPCs one after the other. pairs/s = "
                 "pairs / wall time of the mode.")
    if sf:
        L.append(f"- CheckSafety workload: {sf['texts']} distinct short texts ({sf['mean_chars']} characters on average; "
                 "40 benign, 24 with insults, threats or PII), per run: **one text per RPC** sequentially, one text "
                 f"per RPC all {sf['texts']} concurrent, and **{sf['texts']} texts in one RPC**; each mode repeats whole "
                 f"passes over the texts until it has run ≥ {meta['min_seconds']} s; texts/s = texts checked / wall time.")
    done = [f"{name} {len(x['runs'])} of {x['runs_asked']}" for name, x in (("Score", sc), ("CheckSafety", sf)) if x]
    L.append(f"- Runs completed: {', '.join(done)}; figures are medians over the completed runs. CheckSafety modes "
             "rotate from run to run like Score's.")
    L.append("")
    if sc:
        runs = sc["runs"]
        a_, b_, c_ = (med(runs, m, "pairs_per_s") for m in ("sequential", "concurrent", "per_rpc"))
        L += ["### Score (generative judge)", "",
              "| Mode | pairs/s (median) | per-run pairs/s | ratio to one-at-a-time (median of per-run ratios; per run) | target | met? | batches / inputs (mean batch), last run |",
              "|---|---:|---|---|---:|---|---|"]
        for label, m, v, tgt in (("(a) one pair per RPC, sequential", "sequential", a_, None),
                                 (f"(b) one pair per RPC, {sc['pairs']} concurrent", "concurrent", b_, 5.0),
                                 (f"(c) {sc['per_rpc']} pairs per RPC", "per_rpc", c_, 5.0)):
            per = ", ".join(f"{r[m]['pairs_per_s']:.2f}" for r in runs)
            ratios = [r[m]["pairs_per_s"] / r["sequential"]["pairs_per_s"] for r in runs]
            ratio = statistics.median(ratios)
            bt = runs[-1][m]["batching"]
            met = "—" if tgt is None else ("yes" if ratio >= tgt else "**no**")
            L.append(f"| {label} | {v:.2f} | {per} | {ratio:.2f}× ({', '.join(f'{x:.2f}' for x in ratios)}) | "
                     f"{'≥ 5×' if tgt else '—'} | {met} | {bt['batches']} / {bt['items']} ({bt['mean_batch']}) |")
        L.append("")
        q = [x for x in sc["queues_end"] if x["model"].startswith("reward:")]
        qs = "; ".join(f"`{x['model']}`: batches {x['batches']}, largest_batch {x['largest_batch']}, items {x['items']}"
                       for x in q)
        L.append(f"GetStatus reward queue at the end (warm-up included): {qs}.")
        L.append(f"Rewards equal across modes and runs (batch-invariant engine): largest difference "
                 f"{sc['max_reward_diff_across_modes']:.2e}. The judge put chosen above rejected on "
                 f"{sc['chosen_above_rejected']} of {sc['pairs']} pairs.")
        L.append("Machine state before each run (mode order): " + "; ".join(
            f"run {i + 1}: {env_str(r['env'])} ({', '.join(r.get('order', []))})" for i, r in enumerate(runs)) + ".")
        L.append("Client CPU per mode (last run): " + ", ".join(
            f"{m} {runs[-1][m]['client_cpu_s']} s over {runs[-1][m]['wall_s']:.1f} s" for m in ("sequential", "concurrent", "per_rpc")) + ".")
        L.append("")
    if sf:
        runs = sf["runs"]
        s_, c2, o_ = (med(runs, m, "texts_per_s") for m in ("sequential", "concurrent", "one_rpc"))
        L += ["### CheckSafety (lexical + rules)", "",
              "| Mode | texts/s (median) | per-run texts/s | ratio to one per RPC (median of per-run ratios) | passes × texts (last run) | batches / texts (mean batch), last run |",
              "|---|---:|---|---:|---|---|"]
        for label, m, v in (("one text per RPC, sequential", "sequential", s_),
                            (f"one text per RPC, {sf['texts']} concurrent", "concurrent", c2),
                            (f"{sf['texts']} texts per RPC", "one_rpc", o_)):
            per = ", ".join(f"{r[m]['texts_per_s']:.0f}" for r in runs)
            ratio = statistics.median(r[m]["texts_per_s"] / r["sequential"]["texts_per_s"] for r in runs)
            bt = runs[-1][m]["batching"]
            bts = "no safety queue in GetStatus" if not bt["queues"] else f"{bt['batches']} / {bt['items']} ({bt['mean_batch']})"
            L.append(f"| {label} | {v:.0f} | {per} | {ratio:.2f}× | {runs[-1][m]['passes']} × {sf['texts']} | {bts} |")
        L.append("")
        L.append(f"Verdicts identical in every mode and pass: {'yes' if sf['actions_consistent_across_modes'] else '**no**'} "
                 f"(actions by enum value: {sf['action_counts']}; 1 allow, 2 flag, 3 block).")
        L.append("Machine state before each run: " + "; ".join(f"run {i + 1}: {env_str(r['env'])}" for i, r in enumerate(runs)) + ".")
        L.append("Client CPU per mode (last run): " + ", ".join(
            f"{m} {runs[-1][m]['client_cpu_s']} s over {runs[-1][m]['wall_s']:.1f} s" for m in ("sequential", "concurrent", "one_rpc")) + ".")
        L.append("")
    L += ["### Commands", "", "```sh",
          "Benchmarks/run-judging-bench.sh   # everything above, one command (RUNS, PAIRS, TEXTS, MIN_SECONDS tune it)",
          meta["alignd_cmd"]] + meta["driver_cmds"].split("\n") + ["```"]
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
        p.add_argument("--target", required=True); p.add_argument("--stubs", required=True)
        p.add_argument("--runs", type=int, default=3); p.add_argument("--out", required=True)
        p.add_argument("--timeout", type=float, default=300)
        p.add_argument("--quiet-max", type=float, default=0.25); p.add_argument("--quiet-timeout", type=float, default=30)
    sub.choices["score"].add_argument("--pairs", type=int, default=64)
    sub.choices["score"].add_argument("--per-rpc", type=int, default=32)
    sub.choices["safety"].add_argument("--texts", type=int, default=64)
    sub.choices["safety"].add_argument("--min-seconds", type=float, default=3)
    r = sub.add_parser("report")
    r.add_argument("--meta", required=True); r.add_argument("--score"); r.add_argument("--safety")
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
