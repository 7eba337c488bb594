#!/usr/bin/env python3
"""Per-category table on the held-out TEST split for every safety classifier alignd can use.

    nice -n 10 /var/cache/alignd/venv-train/bin/python Training/safety/evaluate.py --split test --markdown FILE [--write-fixtures]

Classifiers (columns) and where their numbers come from:
  lexical     alt-profanity-check==1.9.1 `predict_prob` (the PyPI package, run in
              $ALIGND_CACHE_DIR/venv-safety), reported as `harassment` as alignd serves it.
  tox-block   Training/ports/toxblock.py (numpy reference of tox-block 0.1.2, package rescaling);
              as the `toxblock` backend maps it: insult -> harassment, threat ->
              harassment/threatening and violence, identity_hate -> hate, min(identity_hate, threat)
              -> hate/threatening (toxic, severe_toxic and obscene are not mapped).
  hatesonar   Training/ports/hatesonar.py (numpy reference of hatesonar 0.1.0);
              hate_speech -> hate, offensive_language -> harassment.
  default     Models/safety/alignd-safety-minilm via head_format.forward (numpy) on embed.py's
              sentence-transformers embeddings (+ the stacked blocks it reads), at the manifest's
              thresholds: what the default policy (Config/safety-policy.json, backends classifier,
              rules, guard) runs on these texts -- `rules` only matches PII patterns and term lists
              (none of the default policy's moderation categories) and `guard` is absent unless a
              guard model is configured.
  --with-lexical-backend adds a column for a policy that also enables the `lexical` backend:
              harassment = max(classifier, lexical), flagged at the classifier's thresholds (not the
              default; it doubles benign false positives).
Ports whose converted model is missing are skipped with a note. For each: n positives, precision,
recall and AUC at the classifier's threshold (0.5 for the others), "any" = the share of the
category's texts flagged in any category (the service's `flagged`), benign false-positive rates
(all benign texts, benign texts with a trigger word, by topic), and the default policy's
thresholds and actions.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from common import L  # noqa: E402

import head_format as HF  # noqa: E402

MODEL = C.REPO / "Models" / "safety" / "alignd-safety-minilm"
FIXTURES = C.REPO / "Tests" / "Fixtures" / "safety"
GATE_FILE = C.REPO / "Models" / "eval" / "safety-validation.jsonl"
POLICY = C.REPO / "Config" / "safety-policy.json"
# The category mappings of the Swift backends (`toxblock`, `hatesonar`; Docs/SAFETY.md): a tuple
# of outputs means their minimum (a fuzzy "and").
PORT_MAP = {
    "tox-block": ("toxblock", {"harassment": "insult", "harassment/threatening": "threat", "violence": "threat",
                               "hate": "identity_hate", "hate/threatening": ("identity_hate", "threat")},
                  ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]),
    "hatesonar": ("hatesonar", {"hate": "hate_speech", "harassment": "offensive_language"},
                  ["hate_speech", "offensive_language", "neither"]),
}


def trained_scores(rows, model=MODEL):
    manifest, tensors = HF.load(str(model))
    texts = [r["text"] for r in rows]
    extra = {b: C.block_scores(b, texts) for b in manifest["features"] if b != "t"}
    X = HF.features(manifest["features"], t=C.embed(texts), **extra)
    return manifest, tensors, X, HF.forward(manifest, tensors, X)


def table(name, S, th, rows, Y):
    """S: category -> scores; th: category -> threshold."""
    benign = ~Y.any(1)
    flagged = np.zeros(len(rows), bool)
    for c in S:
        flagged |= S[c] >= th[c]
    out = {"name": name, "categories": {}}
    for c in L.CATEGORIES:
        pos = Y[:, L.CATEGORIES.index(c)].astype(bool)
        e = {"n": int(pos.sum()), "any": round(float(flagged[pos].mean()), 4) if pos.any() else None}
        if c in S:
            pred = S[c] >= th[c]
            tp = int((pred & pos).sum())
            e.update(precision=round(tp / max(int(pred.sum()), 1), 4), recall=round(tp / max(int(pos.sum()), 1), 4),
                     auc=round(C.auc(pos, S[c]), 4), threshold=th[c])
        out["categories"][c] = e
    trig = np.array([L.has_trigger(r["text"]) for r in rows])
    out["benign"] = [int(benign.sum()), round(float(flagged[benign].mean()), 4)]
    out["benign_trigger"] = [int((benign & trig).sum()), round(float(flagged[benign & trig].mean()), 4)]
    by = collections.defaultdict(list)
    for i, r in enumerate(rows):
        if benign[i] and trig[i]:
            by[r["topic"]].append(flagged[i])
    out["benign_trigger_by_topic"] = {k: [len(v), round(float(np.mean(v)), 4)] for k, v in sorted(by.items())}
    by_all = collections.defaultdict(list)
    for i, r in enumerate(rows):
        if benign[i]:
            by_all[r["topic"]].append(flagged[i])
    out["benign_by_topic"] = {k: [len(v), round(float(np.mean(v)), 4)] for k, v in sorted(by_all.items())}
    out["harmful_any"] = round(float(flagged[~benign].mean()), 4)
    out["harmful_n"] = int((~benign).sum())
    target = {"idioms", "software", "sport", "cooking", "history", "medicine", "identity"}
    sel = np.array([benign[i] and trig[i] and r["topic"] in target for i, r in enumerate(rows)])
    out["benign_trigger_brief_topics"] = [int(sel.sum()), round(float(flagged[sel].mean()), 4) if sel.any() else None]
    return out


def fmt(x, pct=False):
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    return f"{x:.2f}" if not pct else f"{100 * x:.1f}%"


def markdown(results, split_name, policy=None):
    """The tables of Docs/SAFETY.md. results: table() outputs, the default policy's classifier last
    (or second to last with --with-lexical-backend); policy: (name@version, backends, default
    profile rules, classifier thresholds)."""
    lines = [f"Held-out **{split_name}** split. P / R = precision / recall of the category's own score at the threshold; "
             "AUC over all texts of the split; any = share of the category's texts flagged in any category "
             "(what the service reports as `flagged`).", ""]
    names = [r["name"] for r in results]
    lines.append("| category | n | " + " | ".join(f"{n}: P / R / AUC / any" for n in names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for c in L.CATEGORIES:
        n = results[0]["categories"][c]["n"]
        cells = []
        for r in results:
            e = r["categories"][c]
            if "recall" in e:
                cells.append(f"{fmt(e['precision'])} / {fmt(e['recall'])} / {fmt(e['auc'])} / {fmt(e['any'])}")
            else:
                cells.append(f"— / — / — / {fmt(e['any'])}")
        lines.append(f"| `{c}` | {n} | " + " | ".join(cells) + " |")
    lines.append(f"| **all harmful**: flagged in any category | {results[0]['harmful_n']} | " +
                 " | ".join(fmt(r["harmful_any"]) for r in results) + " |")
    lines.append(f"| **benign false positives** (n={results[0]['benign'][0]}) | | " +
                 " | ".join(fmt(r["benign"][1], True) for r in results) + " |")
    lines.append(f"| **benign with trigger words** (n={results[0]['benign_trigger'][0]}) | | " +
                 " | ".join(fmt(r["benign_trigger"][1], True) for r in results) + " |")
    lines.append(f"| **benign with trigger words, topics of the brief** (idioms, software, sport, cooking, history, medicine, identity; "
                 f"n={results[0]['benign_trigger_brief_topics'][0]}) | | " +
                 " | ".join(fmt(r["benign_trigger_brief_topics"][1], True) for r in results) + " |")

    lines += ["", "Flagged in any category, by the category a text is labelled with (= the \"any\" figures above, "
              "for the six main categories; own R = the default's own-category recall):", "",
              "| category | n | " + " | ".join(names) + " | own R (default) |", "|---|---|" + "---|" * (len(names) + 1)]
    default = next(r for r in results if r.get("default"))
    for c in L.TOP:
        e = default["categories"][c]
        lines.append(f"| `{c}` | {e['n']} | " + " | ".join(fmt(r["categories"][c]["any"]) for r in results) +
                     f" | {fmt(e.get('recall'))} |")
    lines.append(f"| all harmful | {results[0]['harmful_n']} | " + " | ".join(fmt(r["harmful_any"]) for r in results) + " | |")

    lines += ["", "Benign false-positive rate by topic (share flagged in any category): all benign texts of the topic / "
              "those with a trigger word (`labels.has_trigger`):", "",
              "| topic | n / with trigger words | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for t, (n, _) in results[0]["benign_by_topic"].items():
        nt = results[0]["benign_trigger_by_topic"].get(t, [0, None])[0]
        cells = []
        for r in results:
            a = r["benign_by_topic"][t][1]
            b = r["benign_trigger_by_topic"].get(t, [0, None])[1]
            cells.append(f"{fmt(a, True)} / {fmt(b, True)}")
        lines.append(f"| {t} | {n} / {nt} | " + " | ".join(cells) + " |")
    lines.append(f"| **all** | {results[0]['benign'][0]} / {results[0]['benign_trigger'][0]} | " +
                 " | ".join(f"{fmt(r['benign'][1], True)} / {fmt(r['benign_trigger'][1], True)}" for r in results) + " |")

    if policy is not None:
        label, backends, rules, th = policy
        lines += ["", f"Default policy `{label}` (backends {', '.join(f'`{b}`' for b in backends)}), profile `default`, "
                  "moderation categories: the policy's threshold and action, and the threshold chosen on validation "
                  "(classifier manifest):", "",
                  "| category | policy threshold | action | validation-chosen (manifest) | scored by (built-in backends) |",
                  "|---|---|---|---|---|"]
        for c in L.CATEGORIES:
            rule = rules.get(c)
            m = th.get(c)
            by = "classifier" if m is not None else "guard only (no classifier head)"
            lines.append(f"| `{c}` | {rule['threshold'] if rule else '—'} | {rule['action'] if rule else '—'} | "
                         f"{m if m is not None else '—'} | {by} |")
        differ = [c for c in th if c not in rules or abs(rules[c]["threshold"] - th[c]) > 1e-9]
        lines += ["", ("The policy's thresholds equal the manifest's for every classifier category." if not differ else
                       "**The policy's thresholds differ from the manifest's for: " + ", ".join(f"`{c}`" for c in differ) + ".**")]
    return "\n".join(lines) + "\n"


def load_policy(manifest):
    """(name@version, backends, default profile's category rules, classifier thresholds)."""
    doc = json.loads(POLICY.read_text())
    profile = doc["profiles"][doc["default_profile"]]
    return f"{doc['name']}@{doc['version']}", doc["backends"], profile.get("categories", {}), manifest["thresholds"]


def write_labelled(rows, path):
    """The JSONL the Swift side reads (LabelledText): text, labels, source; for benign texts their
    topic and whether they hold a trigger word (labels.has_trigger)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            d = {"text": r["text"], "labels": r["labels"], "source": r["source"]}
            if not r["labels"]:
                d["topic"] = r["topic"]
                d["trigger"] = bool(L.has_trigger(r["text"]))
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def write_fixtures(rows, manifest, tensors, X, S):
    FIXTURES.mkdir(parents=True, exist_ok=True)
    write_labelled(rows, FIXTURES / "heldout-test.jsonl")
    # The safety gate's held-out set, installed beside the default classifier (never the test split).
    write_labelled(C.load_split("validation"), GATE_FILE)
    ref = {"model": f"{manifest['name']}@{manifest['version']}", "features": manifest["features"],
           "note": "scores of the first 64 texts of heldout-test.jsonl by head_format.forward on embed.py's embeddings "
                   "(sentence-transformers, float32); 'embedding_head' = the first 8 values of the text's embedding; "
                   "'blocks' = the other feature blocks the heads read (lexical = alt-profanity-check 1.9.1 predict_prob)",
           "thresholds": manifest["thresholds"], "cases": []}
    widths = {"t": 384, **HF.EXTRA_BLOCKS}
    for i in range(min(64, len(rows))):
        case = {"text": rows[i]["text"], "embedding_head": [round(float(v), 6) for v in X[i, :8]]}
        off = 0
        for b in manifest["features"]:
            if b != "t":  # the other classifiers' scores that the heads read (e.g. lexical P(offensive))
                case.setdefault("blocks", {})[b] = [round(float(v), 6) for v in X[i, off:off + widths[b]]]
            off += widths[b]
        case["scores"] = {k: round(float(v[i]), 6) for k, v in S.items()}
        ref["cases"].append(case)
    (FIXTURES / "heldout-reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")


def examples_table(model):
    """Scores of the issue's example texts (in no split) by the trained heads, and what they flag."""
    import build_v2
    rows = [{"text": t} for t in build_v2.ISSUE_EXAMPLES]
    manifest, _, _, S = trained_scores(rows, model)
    th = manifest["thresholds"]
    lines = ["Issue 15's example texts (in no split): trained scores; **bold** = at or above the threshold.", "",
             "| text | " + " | ".join(f"`{c}`" for c in S) + " |", "|---|" + "---|" * len(S)]
    out = []
    for i, r in enumerate(rows):
        sc = {c: float(S[c][i]) for c in S}
        out.append({"text": r["text"], "scores": {c: round(v, 4) for c, v in sc.items()},
                    "flagged": [c for c, v in sc.items() if v >= th[c]]})
        lines.append(f"| {r['text']} | " + " | ".join(f"**{v:.2f}**" if v >= th[c] else f"{v:.2f}" for c, v in sc.items()) + " |")
    return "\n".join(lines) + "\n", out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--markdown", help="write the table to this file")
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument("--with-lexical-backend", "--default-lexical", dest="lexical_backend", action="store_true",
                    help="add a column for a policy that also enables the lexical backend: harassment = max(classifier, "
                         "lexical) (not the default policy)")
    ap.add_argument("--write-fixtures", action="store_true")
    ap.add_argument("--model", default=str(MODEL))
    args = ap.parse_args()
    rows = C.load_split(args.split)
    Y = C.label_matrix(rows)
    texts = [r["text"] for r in rows]
    results = []
    lex = C.block_scores("lexical", texts)[:, 0]
    results.append(table("lexical (alt-profanity-check)", {"harassment": lex}, {"harassment": 0.5}, rows, Y))
    for name, (block, cmap, cols) in PORT_MAP.items():
        try:
            P = C.block_scores(block, texts)
        except Exception as e:  # the converted port model is not there
            print(f"# {name} skipped: {e.__class__.__name__}: {e}", file=sys.stderr)
            continue
        S = {c: np.min(P[:, [cols.index(x) for x in (col if isinstance(col, tuple) else (col,))]], axis=1)
             for c, col in cmap.items()}
        results.append(table(name, S, {c: 0.5 for c in S}, rows, Y))
    manifest, tensors, X, S = trained_scores(rows, Path(args.model))
    th = manifest["thresholds"]
    default = table(f"default: classifier {manifest['name']}@{manifest['version']} (+ rules)", S, th, rows, Y)
    default["default"] = True
    results.append(default)
    if args.lexical_backend:
        D = dict(S)
        D["harassment"] = np.maximum(S["harassment"], lex)
        results.append(table("classifier + lexical backend (max; not the default)", D, th, rows, Y))
    md = markdown(results, args.split, load_policy(manifest))
    ex_md, ex = examples_table(Path(args.model))
    md += "\n" + ex_md
    results.append({"name": "issue examples", "examples": ex})
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.write_fixtures:
        write_fixtures(rows, manifest, tensors, X, S)


if __name__ == "__main__":
    main()
