#!/usr/bin/env python3
"""Model-card tables of the default reward model, from `alignctl eval-reward --json` outputs.

    python3 Training/reward/model_card.py --results DIR [--file PAIRS] [--markdown FILE] [--json FILE]

Normally run by `Training/reward/model-card.sh`, which writes into DIR, for each grouping G in
source, group and kind:
  default-G.json   alignctl eval-reward PAIRS --model models/alignd-reward-minilm --json --by G
  judge-G.json     alignctl eval-reward PAIRS --server HOST:PORT --json --by G  (a server started
                   with --reward-model judge); optional: the judge columns are left out without it
This script adds a random baseline on the same pairs -- every response gets a reward drawn from
N(0, 1) by Python's `random.Random(seed)` (seed 0), in file order, chosen then rejected -- and the
spread of that baseline's overall accuracy over seeds 0..999 (mean and 2.5 / 97.5 percentiles),
then prints the markdown tables (and writes them with --markdown). Accuracy counts a tie as wrong
and ECE is alignd's symmetrized ten-bin ECE of sigmoid(r_chosen - r_rejected), exactly as
`RewardEvaluation` computes them, so the three columns are measured the same way.

Standard library only.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAIRS = REPO / "Tests" / "Fixtures" / "reward" / "heldout-test.jsonl"
MANIFEST = REPO / "Models" / "reward" / "alignd-reward-minilm" / "manifest.json"
GROUPINGS = ("group", "source", "kind")
RANDOM_SEEDS = 1000


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def ece(margins: list[float]) -> float:
    """RewardEvaluation.calibrationError: each pair counts as (p, 1) and (1 - p, 0), ten bins."""
    if not margins:
        return 0.0
    count, pred, obs = [0] * 10, [0.0] * 10, [0.0] * 10
    for m in margins:
        p = sigmoid(m)
        for q, o in ((p, 1.0), (1 - p, 0.0)):
            b = min(9, max(0, int(q * 10)))
            count[b] += 1
            pred[b] += q
            obs[b] += o
    total = 2 * len(margins)
    return sum(count[b] / total * abs(obs[b] / count[b] - pred[b] / count[b]) for b in range(10) if count[b])


def figures(margins: list[float]) -> dict:
    n = len(margins)
    correct = sum(1 for m in margins if m > 0)
    return {"pairs": n, "correct": correct, "accuracy": correct / n if n else 0.0,
            "mean_margin": sum(margins) / n if n else 0.0, "ece": ece(margins)}


def random_margins(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chosen = rng.gauss(0.0, 1.0)
        rejected = rng.gauss(0.0, 1.0)
        out.append(chosen - rejected)
    return out


def random_baseline(rows: list[dict]) -> dict:
    margins = random_margins(len(rows), 0)
    result = {"seed": 0, "overall": figures(margins)}
    for g in GROUPINGS:
        groups: dict[str, list[float]] = {}
        for r, m in zip(rows, margins):
            groups.setdefault(str(r.get(g, "unknown")), []).append(m)
        result[g] = {k: figures(v) for k, v in sorted(groups.items())}
    accs = sorted(figures(random_margins(len(rows), s))["accuracy"] for s in range(RANDOM_SEEDS))

    def pct(q: float) -> float:  # linear interpolation, as numpy.percentile
        x = q / 100 * (len(accs) - 1)
        lo = math.floor(x)
        hi = min(lo + 1, len(accs) - 1)
        return accs[lo] + (accs[hi] - accs[lo]) * (x - lo)

    result["seeds"] = {"n": RANDOM_SEEDS, "mean": sum(accs) / len(accs), "p2.5": pct(2.5), "p97.5": pct(97.5)}
    return result


def load(results: Path, who: str, g: str) -> dict | None:
    path = results / f"{who}-{g}.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    if d.get("grouped_by") != g:
        sys.exit(f"model_card.py: {path} is grouped by {d.get('grouped_by')!r}, expected {g!r}")
    return d


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def cell(f: dict | None, margin: bool = True) -> str:
    if f is None:
        return "—"
    parts = [pct(f["accuracy"])]
    if margin:
        parts.append(f"{f['mean_margin']:+.2f}")
    parts.append(f"{f['ece']:.3f}")
    return " / ".join(parts)


def table(title: str, g: str | None, pairs_by: dict, default: dict, judge: dict | None, rnd: dict) -> list[str]:
    head = "| " + (g or "model") + " | pairs | default: acc % / margin / ECE | "
    cols = ["default"]
    if judge is not None:
        head += "judge: acc % / margin / ECE | "
        cols.append("judge")
    head += "random (seed 0): acc % / ECE |"
    lines = [title, "", head, "|---|---|" + "---|" * (len(cols) + 1)]
    for key, n in pairs_by.items():
        d = default["evaluation"]["by_source"].get(key) if g else default["evaluation"]["overall"]
        row = f"| {key if g else 'all'} | {n} | {cell(d)} | "
        if judge is not None:
            j = judge["evaluation"]["by_source"].get(key) if g else judge["evaluation"]["overall"]
            row += f"{cell(j)} | "
        r = rnd[g].get(key) if g else rnd["overall"]
        row += f"{cell(r, margin=False)} |"
        lines.append(row)
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, type=Path, help="folder of default-*.json and judge-*.json")
    ap.add_argument("--file", type=Path, default=PAIRS, help="the preference file that was evaluated")
    ap.add_argument("--markdown", type=Path, help="write the tables to this file too")
    ap.add_argument("--json", type=Path, help="write every figure (with the random baseline) to this file")
    args = ap.parse_args()

    rows = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    default = {g: load(args.results, "default", g) for g in GROUPINGS}
    judge = {g: load(args.results, "judge", g) for g in GROUPINGS}
    missing = [g for g, d in default.items() if d is None]
    if missing:
        sys.exit(f"model_card.py: {args.results} lacks default-{missing[0]}.json (run Training/reward/model-card.sh)")
    n = default["group"]["evaluation"]["overall"]["pairs"]
    if n != len(rows):
        sys.exit(f"model_card.py: the results cover {n} pairs but {args.file} has {len(rows)} "
                 "(run without --limit for the card)")
    rnd = random_baseline(rows)
    have_judge = all(judge[g] is not None for g in GROUPINGS)
    # The three passes of a model score the same pairs: their overall figures must agree (batching
    # may move a reward in the last digits, never a ranking by much).
    for who, runs in (("default", default), ("judge", judge if have_judge else {})):
        overall = {g: d["evaluation"]["overall"] for g, d in runs.items()}
        if len({o["correct"] for o in overall.values()}) > 1:
            print(f"model_card.py: warning: the {who} passes disagree: "
                  + ", ".join(f"{g} {o['correct']}/{o['pairs']}" for g, o in overall.items()), file=sys.stderr)

    d0 = default["group"]
    j0 = judge["group"] if have_judge else None
    lines = [f"Pairs: `{args.file.relative_to(REPO) if args.file.is_relative_to(REPO) else args.file}` "
             f"({len(rows)} pairs). Default = `{d0['reward_version']}`"
             + (f"; judge = `{j0['reward_version']}` (generative judge on the policy, reward = expected rating 1–5)"
                if j0 else "")
             + f"; random = N(0, 1) rewards, seed 0 (over {rnd['seeds']['n']} seeds the overall accuracy is "
             f"{pct(rnd['seeds']['mean'])} %, 95 % of seeds within {pct(rnd['seeds']['p2.5'])}–{pct(rnd['seeds']['p97.5'])} %). "
             "acc = pairs with r(chosen) > r(rejected), a tie counts as wrong; margin = mean r(chosen) − r(rejected) "
             "in the model's own units (not comparable between models); ECE = symmetrized ten-bin ECE of "
             "σ(r(chosen) − r(rejected)).", ""]
    lines += table("**Overall**", None, {"all": n}, d0, j0, rnd)
    for g, title in (("group", "**By group**"), ("source", "**By source**"), ("kind", "**By kind**")):
        counts: dict[str, int] = {}
        for r in rows:
            k = str(r.get(g, "unknown"))
            counts[k] = counts.get(k, 0) + 1
        lines += table(title, g, dict(sorted(counts.items())), default[g], judge[g] if have_judge else None, rnd)
    md = "\n".join(lines)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        out = {"file": str(args.file), "default": default, "judge": judge if have_judge else None, "random": rnd}
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
