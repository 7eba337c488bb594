"""Tiny alignd.embedding-head checkpoints and their numpy outputs, for AlignEngine's EmbeddingHead tests.

    /var/cache/alignd/venv-train/bin/python Tests/Fixtures/embedding-head/make_heads.py

Writes, beside this script:
  reward-tiny/   kind reward: features p, r, p*r, |p-r|, cos over 8-wide "embeddings"; 2 layers (relu)
  safety-tiny/   kind safety: features t, toxblock, hatesonar, lexical; a gate head and a category
                 head (tanh), scores sigmoid(x) and sigmoid(gate) * sigmoid(x); thresholds
  expected.json  inputs and the scores Training/common/head_format.forward computes for them
Random weights from a fixed seed; the numbers mean nothing, they pin the arithmetic.
"""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "Training" / "common"))
import head_format as hf  # noqa: E402

D = 8
rng = np.random.default_rng(7)


def unit(n):
    v = rng.standard_normal((n, D)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main():
    encoder = {"name": "tiny", "max_seq_length": 16, "pooling": "mean", "normalize": True}
    reward_blocks = ["p", "r", "p*r", "|p-r|", "cos"]
    width = 4 * D + 1
    rt = {"l0.weight": rng.standard_normal((5, width)) * 0.5, "l0.bias": rng.standard_normal(5) * 0.1,
          "l1.weight": rng.standard_normal((1, 5)), "l1.bias": np.array([0.25])}
    rm = {"kind": "reward", "name": "reward-tiny", "version": "1", "encoder": encoder, "features": reward_blocks,
          "heads": [{"name": "reward", "layers": [{"weight": "l0.weight", "bias": "l0.bias", "activation": "relu"},
                                                  {"weight": "l1.weight", "bias": "l1.bias", "activation": "none"}],
                     "outputs": ["reward"]}],
          "scores": {"reward": ["reward"]}}
    hf.save(str(HERE / "reward-tiny"), rm, rt)

    safety_blocks = ["t", "toxblock", "hatesonar", "lexical"]
    sw = D + 6 + 3 + 1
    st = {"g.weight": rng.standard_normal((1, sw)), "g.bias": np.array([-0.5]),
          "c0.weight": rng.standard_normal((4, sw)) * 0.7, "c0.bias": rng.standard_normal(4) * 0.1,
          "c1.weight": rng.standard_normal((3, 4)), "c1.bias": rng.standard_normal(3) * 0.1}
    sm = {"kind": "safety", "name": "safety-tiny", "version": "2", "encoder": encoder, "features": safety_blocks,
          "heads": [{"name": "gate", "layers": [{"weight": "g.weight", "bias": "g.bias", "activation": "none"}],
                     "outputs": ["harmful"]},
                    {"name": "categories", "layers": [{"weight": "c0.weight", "bias": "c0.bias", "activation": "tanh"},
                                                      {"weight": "c1.weight", "bias": "c1.bias", "activation": "none"}],
                     "outputs": ["hate_logit", "violence_logit", "sexual_logit"]}],
          "scores": {"harmful": ["harmful"], "hate": ["harmful", "hate_logit"],
                     "violence": ["harmful", "violence_logit"], "sexual": ["harmful", "sexual_logit"]},
          "thresholds": {"harmful": 0.5, "hate": 0.4, "violence": 0.3, "sexual": 0.35}}
    hf.save(str(HERE / "safety-tiny"), sm, st)

    # Round-trip through the files, as the Swift side reads them.
    rm, rt = hf.load(str(HERE / "reward-tiny"))
    sm, st = hf.load(str(HERE / "safety-tiny"))
    p, r = unit(6), unit(6)
    rewards = hf.forward(rm, rt, hf.features(reward_blocks, p=p, r=r))["reward"]
    t = unit(5)
    tox = rng.random((5, 6)).astype(np.float32)
    sonar = rng.random((5, 3)).astype(np.float32)
    lex = rng.random((5, 1)).astype(np.float32)
    scores = hf.forward(sm, st, hf.features(safety_blocks, t=t, toxblock=tox, hatesonar=sonar, lexical=lex))
    doc = {
        "generator": "Tests/Fixtures/embedding-head/make_heads.py", "dimension": D,
        "reward": [{"p": a.tolist(), "r": b.tolist(), "reward": float(x)} for a, b, x in zip(p, r, rewards)],
        "safety": [{"t": t[i].tolist(), "toxblock": tox[i].tolist(), "hatesonar": sonar[i].tolist(),
                    "lexical": lex[i].tolist(), "scores": {k: float(v[i]) for k, v in scores.items()}}
                   for i in range(len(t))],
    }
    (HERE / "expected.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
