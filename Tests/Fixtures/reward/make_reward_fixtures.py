#!/usr/bin/env python3
"""Tiny random sequence-classification reward models WITH tokenizers and chat templates, and the
rewards transformers computes for a few (prompt, response) pairs, for the reward backend's tests.

Produces, next to this script:
  llama-chat-reward/   LlamaForSequenceClassification (num_labels=1) with the llama3-style tokenizer
                       from Tests/Fixtures/tokenizers/llama3-style (its tokenizer_config.json carries a
                       Llama-3-like chat template that prints bos_token itself); pad_token_id is
                       <|end_of_text|>, so one raw case that ends with that token checks the
                       "rightmost non-pad token" rule of transformers' pooling.
  qwen3-chat-reward/   Qwen3ForSequenceClassification (num_labels=1, q/k norms, head_dim 32) with the
                       qwen2-style tokenizer (ChatML template with a default system prompt);
                       pad_token_id is <|endoftext|>.
  qwen2-chat-reward/   Qwen2ForSequenceClassification (num_labels=1, q/k/v biases) with the same
                       tokenizer; pad_token_id is <|endoftext|>.
Each folder gets expected.json: per case the input (chat messages or a raw prompt), the response, the
token ids transformers produced and transformers' reward (float32 forward, one sequence at a time, no
padding).

Tokenization follows what a reward-model user does with transformers:
  chat: tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}],
        tokenize=True, return_dict=False)  (renders, then encodes with add_special_tokens=False)
  raw:  tokenizer(prompt + response)["input_ids"]  (the post-processor's BOS, when it has one)
reward = model(input_ids).logits[0, 0].

Run with the reference venv:
    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/reward/make_reward_fixtures.py
"""
import json
import math
import os
import shutil

import torch
import transformers
from transformers import (AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, Qwen2Config,
                          Qwen2ForSequenceClassification, Qwen3Config, Qwen3ForSequenceClassification)

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZERS = os.path.join(HERE, "..", "tokenizers")

CASES = [
    {"mode": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
     "response": "The capital of France is Paris."},
    {"mode": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
     "response": "I don't know, figure it out yourself."},
    {"mode": "chat", "messages": [{"role": "user", "content": "Write a haiku about rain."}],
     "response": "Soft rain on the roof,\nthe garden drinks in silence —\nmorning smells of earth."},
    {"mode": "chat", "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And times three?"}],
     "response": "12"},
    {"mode": "chat", "messages": [{"role": "user", "content": "  Übersetze: «Guten Morgen» 🌅  "}],
     "response": "Good morning! 🌞"},
    {"mode": "raw", "prompt": "Question: how many legs does a spider have?\nAnswer:",
     "response": " Eight."},
    {"mode": "raw", "prompt": "Once upon a time", "response": ", there was a small robot who loved tea."},
]

# Only for the llama fixture: its pad token is <|end_of_text|>; a response ending with it makes
# transformers pool at the token before.
PAD_CASE = {"mode": "raw", "prompt": "The end is near", "response": " and here it is<|end_of_text|>"}

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, num_labels=1)


def randomize(model, seed):
    """Re-initialise every parameter with O(1)-scale values so rewards are not all ~0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def tokens_for(tok, case):
    if case["mode"] == "chat":
        conv = case["messages"] + [{"role": "assistant", "content": case["response"]}]
        ids = tok.apply_chat_template(conv, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tok(case["prompt"] + case["response"])["input_ids"]]


def build(folder, tokenizer_name, cls, cfg_cls, extra_cfg, pad_token, seed, cases):
    path = os.path.join(HERE, folder)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZERS, tokenizer_name, f), os.path.join(path, f))
    tok = AutoTokenizer.from_pretrained(path)
    vocab = len(tok)
    pad_id = tok.convert_tokens_to_ids(pad_token)
    cfg = cfg_cls(**COMMON, **extra_cfg, vocab_size=vocab, pad_token_id=pad_id,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    model = cls(cfg)
    randomize(model, seed)
    model.save_pretrained(path, safe_serialization=True)
    model = cls.from_pretrained(path, dtype=torch.float32)
    model.eval()
    out = {"model": folder, "transformers_version": transformers.__version__, "pad_token_id": pad_id,
           "cases": []}
    with torch.no_grad():
        for case in cases:
            ids = tokens_for(tok, case)
            reward = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
            entry = dict(case)
            entry["tokens"] = ids
            entry["reward"] = float("%.8g" % reward)
            out["cases"].append(entry)
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    torch.manual_seed(0)
    build("llama-chat-reward", "llama3-style", LlamaForSequenceClassification, LlamaConfig,
          dict(rope_theta=500000.0), "<|end_of_text|>", 11, CASES + [PAD_CASE])
    build("qwen3-chat-reward", "qwen2-style", Qwen3ForSequenceClassification, Qwen3Config,
          dict(head_dim=32, rope_theta=1000000.0), "<|endoftext|>", 12, CASES)
    build("qwen2-chat-reward", "qwen2-style", Qwen2ForSequenceClassification, Qwen2Config,
          dict(rope_theta=1000000.0), "<|endoftext|>", 13, CASES)
    print("done")


if __name__ == "__main__":
    main()
