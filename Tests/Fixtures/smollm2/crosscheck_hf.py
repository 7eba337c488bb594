#!/usr/bin/env python3
"""Diagnostic (writes no fixture): how close can an independent, exact-arithmetic implementation get
to the llama.cpp fixtures in this folder?

Runs Hugging Face transformers on the same GGUF (weights dequantized to f32 by transformers' GGUF
loader, activations in f32, 2 threads), teacher-forces text.txt and greedily continues every prompt
of greedy.json, and prints:
  - top-1 agreement with llama.cpp overall and at positions where llama.cpp's top-1/top-2 logit gap
    is at least g, for several g;
  - for each greedy case, whether the 32-token continuation is equal and, if not, llama.cpp's gap
    at the first differing step.
It also prints the same agreement table for llama.cpp against itself (the teacher_forced.json
`incremental_top1` field: one token per llama_decode instead of one batched decode).

Needs the venv at /var/cache/alignd/venv-ref with transformers, torch, gguf and accelerate.
Usage: /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/smollm2/crosscheck_hf.py
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
GAPS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


def table(name: str, top1: list[int], ref: list[int], gap: list[float]) -> None:
    cells = []
    for g in GAPS:
        idx = [i for i in range(len(ref)) if gap[i] >= g]
        agree = sum(top1[i] == ref[i] for i in idx)
        cells.append(f"gap>={g}: {agree}/{len(idx)} = {agree / max(len(idx), 1):.4f}")
    print(f"{name}: " + "; ".join(cells))


def main() -> None:
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(
        REPO / "models", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32)
    model.eval()
    tf = json.loads((HERE / "teacher_forced.json").read_text())
    with torch.no_grad():
        logits = model(torch.tensor([tf["tokens"]])).logits[0]  # (n_tokens, n_vocab)
    top1 = logits.argmax(-1).tolist()
    d = (logits.max(-1).values - torch.tensor(tf["top1_logit"])).abs()
    print(f"teacher-forced, {len(top1)} positions; |top-1 logit difference| mean {d.mean():.4f}, "
          f"max {d.max():.4f}")
    table("transformers f32 vs llama.cpp", top1, tf["top1"], tf["gap"])
    if "incremental_top1" in tf:
        table("llama.cpp one-token-at-a-time vs llama.cpp batched", tf["incremental_top1"], tf["top1"], tf["gap"])

    greedy = json.loads((HERE / "greedy.json").read_text())
    for case in greedy["cases"]:
        ids = torch.tensor([case["prompt_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=case["max_tokens"], do_sample=False,
                                 eos_token_id=greedy["generator"]["eos_id"], pad_token_id=2)
        gen = out[0, ids.shape[1]:].tolist()
        k = next((i for i, (a, b) in enumerate(zip(gen, case["ids"])) if a != b), None)
        if k is None and len(gen) == len(case["ids"]):
            print(f"{case['name']}: equal")
        else:
            k = k if k is not None else min(len(gen), len(case["ids"]))
            g = case["gap"][k] if k < len(case["gap"]) else None
            print(f"{case['name']}: differs at step {k}, llama.cpp gap there {g}")


if __name__ == "__main__":
    main()
