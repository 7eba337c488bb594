"""Shared by train_safety.py and evaluate.py: the splits, the embeddings, the scores of the other
classifiers (alt-profanity-check, tox-block, hatesonar) as cached feature blocks, and metrics."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "Training" / "common"))
sys.path.insert(0, str(REPO / "Training" / "ports"))
sys.path.insert(0, str(HERE))

import labels as L  # noqa: E402

CACHE = Path(os.environ.get("ALIGND_CACHE_DIR", "/var/cache/alignd"))
DATA = CACHE / "training" / "safety"
SAFETY_VENV = Path(os.environ.get("ALIGND_SAFETY_VENV", CACHE / "venv-safety"))


def load_split(split: str) -> list[dict]:
    return [json.loads(l) for l in open(DATA / f"{split}.jsonl")]


def label_matrix(rows: list[dict]) -> np.ndarray:
    Y = np.zeros((len(rows), len(L.CATEGORIES)), np.float32)
    for i, r in enumerate(rows):
        for c in r["labels"]:
            Y[i, L.CATEGORIES.index(c)] = 1
    return Y


_embedder = None


def embed(texts: list[str]) -> np.ndarray:
    global _embedder
    if _embedder is None:
        from embed import Embedder
        _embedder = Embedder(threads=2)
    return _embedder.embed(texts)


def _key(t: str) -> str:
    return hashlib.sha256(t.encode("utf-8")).hexdigest()


LEXICAL_SCRIPT = r"""
import json, sys
from profanity_check import predict_prob
texts = json.load(sys.stdin)
print(json.dumps([float(p) for p in predict_prob(texts)] if texts else []))
"""


def _compute(block: str, texts: list[str]) -> np.ndarray:
    if block == "lexical":
        py = SAFETY_VENV / "bin" / "python"
        out = subprocess.run([str(py), "-c", LEXICAL_SCRIPT], input=json.dumps(texts), capture_output=True, text=True, check=True)
        return np.array(json.loads(out.stdout), np.float32).reshape(-1, 1)
    if block == "toxblock":
        from toxblock import ToxBlock
        return np.asarray(ToxBlock().predict(texts), np.float32)
    if block == "hatesonar":
        from hatesonar import HateSonar
        return np.asarray(HateSonar().predict(texts), np.float32)
    raise ValueError(block)


def block_scores(block: str, texts: list[str]) -> np.ndarray:
    """Scores of another classifier for texts, cached in $ALIGND_CACHE_DIR/training/safety/features/<block>.json."""
    path = DATA / "features" / f"{block}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(path.read_text()) if path.exists() else {}
    keys = [_key(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items())
    if missing:
        vals = _compute(block, [t for _, t in missing])
        for (k, _), v in zip(missing, vals):
            cache[k] = [float(x) for x in np.atleast_1d(v)]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    return np.array([cache[k] for k in keys], np.float32)


def auc(y: np.ndarray, s: np.ndarray) -> float:
    y = np.asarray(y).astype(bool)
    if y.all() or (~y).all():
        return float("nan")
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, s))


def pick_threshold(scores: np.ndarray, pos: np.ndarray, recall: float) -> float:
    """The highest threshold at which at least `recall` of the positives score >= it."""
    s = np.sort(scores[pos.astype(bool)])[::-1]
    if len(s) == 0:
        return 0.5
    k = max(int(np.ceil(recall * len(s))) - 1, 0)
    return float(s[k])


def best_f1_threshold(scores: np.ndarray, pos: np.ndarray) -> float:
    pos = pos.astype(bool)
    best, bt = -1.0, 0.5
    for t in np.unique(np.round(scores[pos], 4)):
        pred = scores >= t
        tp = (pred & pos).sum()
        f1 = 2 * tp / (pred.sum() + pos.sum())
        if f1 > best:
            best, bt = f1, float(t)
    return bt
