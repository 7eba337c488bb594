#!/usr/bin/env python3
"""Tiny random-weight checkpoints and their reference outputs, for the engine's numeric tests.

Produces, next to this script (each folder < 2 MB):
  llama-f32/, llama-bf16/      LlamaForCausalLM (GQA 4/2 heads, untied output, llama3 RoPE scaling)
  qwen2-f32/, qwen2-bf16/      Qwen2ForCausalLM (q/k/v bias, tied embeddings)
  qwen3-f32/, qwen3-bf16/      Qwen3ForCausalLM (q/k RMSNorm, head_dim 32 != hidden/heads, untied)
  llama-reward/                LlamaForSequenceClassification, num_labels=1 (pad_token_id=0)
  gguf/llama-{f32,q8_0,q4_1}.gguf, gguf/qwen2-f32.gguf
                               the tiny llama / qwen2 written with gguf-py the way llama.cpp's
                               convert_hf_to_gguf.py lays them out (llama Q/K rows permuted for
                               llama.cpp's interleaved RoPE, llama3 scaling as rope_freqs.weight)
Each folder gets expected.json: fixed token id sequences and transformers' logits at every position
(float32 forward). For BF16 folders the reference is transformers run in float32 on the BF16 weights
loaded from that folder (so the comparison checks our BF16 decoding and f32 compute exactly; a pure
BF16 forward rounds activations to 8 bits of mantissa and would need ~1e-2 tolerances). For quantized
GGUF files the reference is transformers in float32 on weights replaced by gguf-py's
dequantize(quantize(w)), i.e. exactly the values stored in the file.

Run with the reference venv:
    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/tiny-models/make_tiny_models.py
"""
import json
import math
import os
import shutil

import numpy as np
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import quants

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 256
SEQUENCES = [
    [1, 17, 200, 33, 99],
    [5, 250, 3, 3, 77, 128, 64, 12, 9],
    [2, 31, 41, 59, 26, 53, 58, 97, 93, 23, 84, 62, 64, 33, 83, 27],
]

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)


def randomize(model, seed):
    """Re-initialise every parameter with O(1)-scale values so logits are not all ~0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def reference(model):
    out = {"sequences": SEQUENCES, "logits": [], "last_hidden": []}
    model.eval()
    with torch.no_grad():
        for seq in SEQUENCES:
            ids = torch.tensor([seq])
            res = model(input_ids=ids)
            out["logits"].append([float("%.7g" % x) for x in res.logits[0].float().reshape(-1).tolist()])
            base = model.model(input_ids=ids).last_hidden_state[0, -1].float()
            out["last_hidden"].append([float("%.7g" % x) for x in base.tolist()])
    return out


def save(model, folder, dtype, meta):
    path = os.path.join(HERE, folder)
    shutil.rmtree(path, ignore_errors=True)
    model.to(dtype).save_pretrained(path, safe_serialization=True)
    model.to(torch.float32)
    cls = type(model)
    reloaded = cls.from_pretrained(path, dtype=torch.float32)
    ref = reference(reloaded)
    ref.update(meta)
    ref["transformers_version"] = transformers.__version__
    ref["torch_dtype_saved"] = str(dtype)
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(ref, f)
    return reloaded


def permute(w, n_head, n_head_kv):
    # Same row permutation as llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute).
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg):
    rp = cfg.rope_parameters if hasattr(cfg, "rope_parameters") and cfg.rope_parameters else cfg.rope_scaling
    base = rp.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in freqs.tolist():
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32), base


def write_gguf(model, arch, fname, matrix_type, embed_type):
    """Writes `model` as GGUF; returns a float32 copy of the model holding the values the file stores."""
    cfg = model.config
    os.makedirs(os.path.join(HERE, "gguf"), exist_ok=True)
    path = os.path.join(HERE, "gguf", fname)
    w = gguf.GGUFWriter(path, arch)
    w.add_name("tiny-" + arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(VOCAB)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_rope_dimension_count(head_dim)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if arch == "llama":
        factors, base = llama3_rope_factors(cfg)
        w.add_rope_freq_base(base)
        w.add_tensor("rope_freqs.weight", factors)
    else:
        rp = getattr(cfg, "rope_parameters", None) or {}
        w.add_rope_freq_base(rp.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))

    stored = {}  # HF name -> float32 values as stored (HF row order)

    def add(gname, hfname, t, qtype, perm=None):
        a = t.detach().float().numpy()
        if perm is not None:
            a = permute(a, *perm)
        if qtype == QT.F32 or a.ndim == 1:
            w.add_tensor(gname, a.astype(np.float32))
            deq = a.astype(np.float32)
        else:
            q = quants.quantize(a, qtype)
            w.add_tensor(gname, q, raw_dtype=qtype)
            deq = quants.dequantize(q, qtype).reshape(a.shape).astype(np.float32)
        if perm is not None:
            # Undo the permutation: the inverse of swapaxes(1, 2) on the same reshape.
            n_head = perm[1] if perm[1] is not None and perm[0] != perm[1] else perm[0]
            deq = deq.reshape(n_head, deq.shape[0] // n_head // 2, 2, *deq.shape[1:]).swapaxes(1, 2).reshape(deq.shape)
        stored[hfname] = torch.from_numpy(np.ascontiguousarray(deq))

    sd = model.state_dict()
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    add("token_embd.weight", "model.embed_tokens.weight", sd["model.embed_tokens.weight"], embed_type)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight", sd[p + "input_layernorm.weight"], QT.F32)
        qperm = (nh, nh) if arch == "llama" else None
        kperm = (nh, nkv) if arch == "llama" else None
        add(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", sd[p + "self_attn.q_proj.weight"], matrix_type, qperm)
        add(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", sd[p + "self_attn.k_proj.weight"], matrix_type, kperm)
        add(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight", sd[p + "self_attn.v_proj.weight"], matrix_type)
        add(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight", sd[p + "self_attn.o_proj.weight"], matrix_type)
        for b in ("q", "k", "v"):
            key = p + f"self_attn.{b}_proj.bias"
            if key in sd:
                add(f"blk.{i}.attn_{b}.bias", key, sd[key], QT.F32)
        add(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight", sd[p + "post_attention_layernorm.weight"], QT.F32)
        add(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight", sd[p + "mlp.gate_proj.weight"], matrix_type)
        add(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight", sd[p + "mlp.up_proj.weight"], matrix_type)
        add(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight", sd[p + "mlp.down_proj.weight"], matrix_type)
    add("output_norm.weight", "model.norm.weight", sd["model.norm.weight"], QT.F32)
    if not cfg.tie_word_embeddings:
        add("output.weight", "lm_head.weight", sd["lm_head.weight"], embed_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    copy = type(model)(cfg)
    new_sd = copy.state_dict()
    for k in new_sd:
        if k in stored:
            new_sd[k] = stored[k]
        elif k == "lm_head.weight" and cfg.tie_word_embeddings:
            new_sd[k] = stored["model.embed_tokens.weight"]
        else:
            raise KeyError(k)
    copy.load_state_dict(new_sd)
    copy.float()
    ref = reference(copy)
    ref["gguf"] = fname
    with open(os.path.join(HERE, "gguf", fname.replace(".gguf", ".expected.json")), "w") as f:
        json.dump(ref, f)


def main():
    torch.manual_seed(0)
    llama_cfg = LlamaConfig(**COMMON, tie_word_embeddings=False,
                            rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                          "rope_theta": 10000.0},
                            rope_theta=10000.0)
    qwen2_cfg = Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=1000000.0)
    qwen3_cfg = Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=False, rope_theta=1000000.0)
    made = {}
    for name, cls, cfg, seed in [("llama", LlamaForCausalLM, llama_cfg, 1),
                                 ("qwen2", Qwen2ForCausalLM, qwen2_cfg, 2),
                                 ("qwen3", Qwen3ForCausalLM, qwen3_cfg, 3)]:
        cfg._attn_implementation = "eager"
        m = cls(cfg)
        randomize(m, seed)
        made[name] = save(m, f"{name}-f32", torch.float32, {"model": name})
        save(m, f"{name}-bf16", torch.bfloat16, {"model": name})

    rcfg = LlamaConfig(**COMMON, num_labels=1, pad_token_id=0, tie_word_embeddings=False)
    rcfg._attn_implementation = "eager"
    r = LlamaForSequenceClassification(rcfg)
    randomize(r, 4)
    save(r, "llama-reward", torch.float32, {"model": "llama-reward"})

    write_gguf(made["llama"], "llama", "llama-f32.gguf", QT.F32, QT.F32)
    write_gguf(made["llama"], "llama", "llama-q8_0.gguf", QT.Q8_0, QT.Q8_0)
    write_gguf(made["llama"], "llama", "llama-q4_1.gguf", QT.Q4_1, QT.Q8_0)
    write_gguf(made["qwen2"], "qwen2", "qwen2-f32.gguf", QT.F32, QT.F32)
    print("done")


if __name__ == "__main__":
    main()
