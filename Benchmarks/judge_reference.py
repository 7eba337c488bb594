#!/usr/bin/env python3
"""The reference implementation of alignd's default reward model, timed on the same pairs as the
server: sentence-transformers (all-MiniLM-L6-v2, torch, float32) for the embeddings, the Python
reference classifiers for the classifier-score blocks and numpy for the head
(Training/common/head_format.features/forward) -- the code the model was trained and checked with.

It computes exactly the feature blocks the head's manifest lists ("features"):
  p, r, p*r, |p-r|, cos   embeddings of the prompt and the response (encode(normalize_embeddings=True),
                          mean pooling, 256 word pieces at most), as Training/common/embed.py;
  j                       the embedding of head_format.joint_text(prompt, response);
  toxblock(x), hatesonar(x), lexical(x)   the ported classifiers' scores of the response (x = r) or
                          the prompt (x = p), computed by the references the manifest's "input"
                          section names (as Training/reward/train_reward.py classifier_scores does):
                          Training/ports/toxblock.py ToxBlock().predict (rescaled, not clamped),
                          Training/ports/hatesonar.py HateSonar().predict,
                          Training/reward/lexical_port.py Lexical().predict.

One call = the server's per-call path (Sources/AlignServing/Reward/EmbeddingRewardModel.swift):
every distinct text of the call (prompts, responses, joint texts) embedded in one encode() (a
pair's prompt once; sentence-transformers sorts by length and encodes 32 at a time), then each
classifier block over the call's 2 x pairs inputs (not deduplicated, as the server does), then the
head on all rows. Models and classifier tables are loaded once, before timing. torch, numpy and
the BLAS run with --threads threads (default 2, the server's engine_threads).

Two ways to run it:

  standalone   judge_reference.py --pairs PAIRS.jsonl --head models/alignd-reward-minilm \
                   --runs 3 --per-call 32 [--min-seconds 3] --out ref.json
               modes per run, order alternating: sequential (one pair per call) and per_call
               (--per-call pairs per call); pairs/s = pairs / wall time; rewards written too.
  --serve      loaded once, then driven by Benchmarks/judging_bench.py over stdin/stdout (one JSON
               object per line) so that its modes run interleaved with the server's, in the same
               runs: it first prints {"ready": ...}; then for each {"mode": "sequential"|"per_call",
               "per_call": N, "min_seconds": S} it repeats whole passes over the pairs until S
               seconds have passed and prints {"wall_s", "passes", "pairs_per_s", "cpu_s",
               "rewards"} (rewards of the first pass); {"quit": true} or end of input ends it.

PAIRS.jsonl: one {"prompt", "chosen", "rejected"} object per line.
Run it with the training venv (/var/cache/alignd/venv-train: torch, sentence-transformers,
safetensors; the classifier references need numpy only).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for sub in ("Training/common", "Training/ports", "Training/reward"):
    sys.path.insert(0, str(REPO / sub))


class Reference:
    """The loaded model: encoder, head and the classifiers its blocks read."""

    def __init__(self, head: str, encoder: str, models: str, threads: int):
        import numpy as np
        import torch
        import sentence_transformers
        from sentence_transformers import SentenceTransformer

        import head_format as hf

        self.np, self.hf = np, hf
        torch.set_num_threads(threads)
        self.manifest, self.tensors = hf.load(head)
        self.blocks = self.manifest["features"]
        enc = self.manifest.get("encoder", {})
        self.model = SentenceTransformer(encoder, device="cpu")
        self.model.max_seq_length = int(enc.get("max_seq_length", 256))
        if enc.get("pooling", "mean") != "mean" or not enc.get("normalize", True):
            raise SystemExit(f"{head}: encoder settings this reference does not implement: {enc}")
        self.joint = "j" in self.blocks
        os.environ["ALIGND_MODELS_DIR"] = str(models)
        self.classifiers = {}
        for b in self.blocks:
            if b in hf.EXTRA_BLOCKS and "(" in b:
                kind = b[:-3]
                if kind in self.classifiers:
                    continue
                if kind == "toxblock":
                    from toxblock import ToxBlock
                    clf = ToxBlock()
                    self.classifiers[kind] = clf.predict                        # (n, 6) float32, rescaled, unclamped
                elif kind == "hatesonar":
                    from hatesonar import HateSonar
                    self.classifiers[kind] = HateSonar().predict                # (n, 3) float64
                elif kind == "lexical":
                    from lexical_port import Lexical
                    lex = Lexical()
                    self.classifiers[kind] = lambda texts, lex=lex: lex.predict(texts)[:, None]  # (n, 1)
                else:
                    raise SystemExit(f"no reference for the classifier block {b!r}")
            elif b not in ("p", "r", "p*r", "|p-r|", "cos", "j"):
                raise SystemExit(f"{head}: feature block {b!r} has no reference here")
        try:
            capability = torch.backends.cpu.get_cpu_capability()
        except Exception:  # older torch
            capability = "unknown"
        self.implementation = (
            f"sentence-transformers {sentence_transformers.__version__} + torch {torch.__version__} "
            f"(float32, CPU capability {capability}, {threads} threads) + numpy {np.__version__} "
            f"(classifier references {', '.join(self.classifiers) or 'none'}; head forward)")
        self.head = f"{self.manifest['name']}@{self.manifest['version']}"

    def word_pieces(self, texts: list[str]) -> float:
        tok = self.model.tokenizer
        limit = self.model.max_seq_length
        return statistics.mean(min(len(tok(t)["input_ids"]), limit) for t in texts)

    def score_call(self, pairs: list[dict]):
        """Rewards (len(pairs), 2) of one call: chosen, rejected."""
        np, hf = self.np, self.hf
        texts: list[str] = []
        index: dict[str, int] = {}

        def slot(t: str) -> int:
            if t not in index:
                index[t] = len(texts)
                texts.append(t)
            return index[t]

        inputs = [(p["prompt"], resp) for p in pairs for resp in (p["chosen"], p["rejected"])]
        ip = [slot(q) for q, _ in inputs]
        ir = [slot(r) for _, r in inputs]
        ij = [slot(hf.joint_text(q, r)) for q, r in inputs] if self.joint else None
        emb = self.model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
        extra = {}
        for b in self.blocks:
            if b in hf.EXTRA_BLOCKS and "(" in b:
                side = [q for q, _ in inputs] if b[-2] == "p" else [r for _, r in inputs]
                extra[b] = self.classifiers[b[:-3]](side)
        x = hf.features(self.blocks, p=emb[ip], r=emb[ir], j=emb[ij] if self.joint else None, **extra)
        rewards = hf.forward(self.manifest, self.tensors, x)["reward"]
        return rewards.reshape(-1, 2)

    def run_mode(self, pairs: list[dict], mode: str, per_call: int, min_seconds: float) -> dict:
        """Whole passes over the pairs until min_seconds have passed (at least one)."""
        t0, c0 = time.perf_counter(), time.process_time()
        passes, first = 0, None
        while True:
            if mode == "sequential":
                out = [self.score_call([p])[0] for p in pairs]
            elif mode == "per_call":
                out = []
                for i in range(0, len(pairs), per_call):
                    out.extend(self.score_call(pairs[i:i + per_call]))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
            passes += 1
            if first is None:
                first = [[float(x) for x in r] for r in out]
            if time.perf_counter() - t0 >= min_seconds:
                break
        wall = time.perf_counter() - t0
        return {"mode": mode, "per_call": 1 if mode == "sequential" else per_call, "passes": passes,
                "pairs": passes * len(pairs), "wall_s": wall, "pairs_per_s": passes * len(pairs) / wall,
                "cpu_s": round(time.process_time() - c0, 3), "rewards": first}


def read_pairs(path: str, limit: int | None) -> list[dict]:
    pairs = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return pairs[:limit] if limit else pairs


def serve(ref: Reference, pairs: list[dict], out) -> None:
    texts = sorted({t for p in pairs for t in (p["prompt"], p["chosen"], p["rejected"])})

    def send(doc):
        out.write(json.dumps(doc) + "\n")
        out.flush()

    send({"ready": True, "implementation": ref.implementation, "head": ref.head, "features": ref.blocks,
          "pairs": len(pairs), "word_pieces_mean": round(ref.word_pieces(texts), 1)})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        send(ref.run_mode(pairs, cmd["mode"], int(cmd.get("per_call", 32)), float(cmd.get("min_seconds", 0))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--head", default=str(REPO / "models" / "alignd-reward-minilm"))
    ap.add_argument("--encoder", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--models", default=os.environ.get("ALIGND_MODELS_DIR", str(REPO / "models")),
                    help="folder of the classifier files (default $ALIGND_MODELS_DIR or <repo>/models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N pairs only (0 = all)")
    ap.add_argument("--serve", action="store_true", help="driven over stdin/stdout by judging_bench.py")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--per-call", type=int, default=32)
    ap.add_argument("--min-seconds", type=float, default=0)
    ap.add_argument("--quiet-max", type=float, default=0.25)
    ap.add_argument("--quiet-timeout", type=float, default=60)
    ap.add_argument("--out")
    a = ap.parse_args()

    # Thread pools are sized when numpy / torch load: set them first.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Only the protocol goes to stdout; anything the libraries print goes to stderr.
    out, sys.stdout = sys.stdout, sys.stderr

    ref = Reference(a.head, a.encoder, a.models, a.threads)
    pairs = read_pairs(a.pairs, a.limit)
    ref.score_call(pairs[:2])  # warm-up
    ref.score_call(pairs[:1])
    if a.serve:
        serve(ref, pairs, out)
        return
    if not a.out:
        ap.error("--out is required without --serve")
    from bench_common import wait_quiet

    runs, rewards = [], {}
    for run in range(a.runs):
        result = {"machine": wait_quiet(a.quiet_max, a.quiet_timeout)}
        order = ["sequential", "per_call"] if run % 2 == 0 else ["per_call", "sequential"]
        result["order"] = order
        for mode in order:
            res = ref.run_mode(pairs, mode, a.per_call, a.min_seconds)
            rewards[mode] = res.pop("rewards")
            result[mode] = res
        runs.append(result)
    doc = {
        "implementation": ref.implementation,
        "head": ref.head,
        "features": ref.blocks,
        "runs": runs,
        "median": {m: statistics.median(r[m]["pairs_per_s"] for r in runs) for m in ("sequential", "per_call")},
        "rewards": rewards,
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    out.write(json.dumps(doc["median"]) + "\n")


if __name__ == "__main__":
    main()
