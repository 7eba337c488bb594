#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into Fuzz/Corpus/<target>/ (named seed-*), from the
repository's real files: the committed fixtures (tiny GGUF/safetensors models, HF configs,
tokenizer corpus and expected ids, chat templates and conversations), the SmolLM2 GGUF's header
truncated to a few KB (never the model itself), and a few small files written with gguf-py and
safetensors so that some seeds are fully valid. Inputs carry each harness's leading mode byte (see
the harness sources). Run from anywhere:

    /var/cache/alignd/venv-ref/bin/python Fuzz/Seeds/make_seeds.py
"""
import json
import os
import struct
import tempfile
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save as st_save

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "Tests" / "Fixtures"
CORPUS = ROOT / "Fuzz" / "Corpus"
SMOLLM2 = Path(os.environ.get("ALIGND_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def gguf_data_offset(path):
    return gguf.GGUFReader(str(path)).data_offset


def small_model_gguf():
    """A complete tiny llama GGUF: hyperparameters, a byte-level BPE tokenizer, a chat template, tensors."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name("fuzz-seed")
        w.add_context_length(64)
        w.add_embedding_length(8)
        w.add_feed_forward_length(16)
        w.add_block_count(1)
        w.add_head_count(2)
        w.add_head_count_kv(1)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        # Byte-level symbols of printable ASCII, then two merges and two special tokens.
        tokens = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "he", "Ġw", "<|im_start|>", "<|im_end|>"]
        types = [1] * (len(tokens) - 2) + [3, 3]
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(["h e", "Ġ w"])
        w.add_bos_token_id(len(tokens) - 2)
        w.add_eos_token_id(len(tokens) - 1)
        w.add_chat_template(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        rng = np.random.default_rng(1)
        w.add_tensor("token_embd.weight", rng.standard_normal((len(tokens), 8), dtype=np.float32))
        w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
        q8 = gguf.quants.quantize(rng.standard_normal((2, 32), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def seeds_gguf():
    write("gguf", "all-types", (FIX / "tiny-models/gguf/all-types.gguf").read_bytes())
    for name in ["llama-q4_1", "qwen2-f32"]:
        p = FIX / f"tiny-models/gguf/{name}.gguf"
        # Header only (tensor data cut off: exercises the "runs past end of file" checks) ...
        write("gguf", f"{name}-header", p.read_bytes()[: gguf_data_offset(p)])
    # ... and one whole small model.
    write("gguf", "small-model", small_model_gguf())
    if SMOLLM2.exists():
        head = SMOLLM2.read_bytes()[:4096] if SMOLLM2.stat().st_size > 4096 else SMOLLM2.read_bytes()
        write("gguf", "smollm2-first-4k", head)


def safetensors_file(header_json, data):
    h = header_json.encode()
    return struct.pack("<Q", len(h)) + h + data


def seeds_safetensors():
    small = st_save(
        {
            "a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.ones(4, dtype=np.float16),
            "c": np.zeros((2, 2), dtype=np.int8),
            "d": np.array([1, 2], dtype=np.int64),
        },
        metadata={"format": "pt"},
    )
    write("safetensors", "file-small", b"\x00" + small)
    for name in ["llama-bf16", "qwen3-f32"]:
        raw = (FIX / f"tiny-models/{name}/model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        # The real header with the data section truncated to 64 bytes.
        write("safetensors", f"file-{name}-header", b"\x00" + raw[: 8 + n] + raw[8 + n : 8 + n + 64])
    for name in ["llama-bf16", "qwen2-f32", "qwen3-bf16", "llama-reward"]:
        d = FIX / f"tiny-models/{name}"
        data = b"\x01" + (d / "config.json").read_bytes()
        if (d / "generation_config.json").exists():
            data += b"\x00" + (d / "generation_config.json").read_bytes()
        write("safetensors", f"config-{name}", data)
    index = {"metadata": {"total_size": 8}, "weight_map": {"w": "model.safetensors"}}
    write("safetensors", "index", b"\x02" + json.dumps(index).encode())


def seeds_tokenizer():
    # Tokenizer order in the harness: smollm2 (when the model is present), llama3-style, qwen2-style,
    # llama2-style, llama2-metaspace. Byte 0 = tokenizer << 1 | mode.
    count = 5
    texts = json.loads((FIX / "tokenizers/corpus.json").read_text())
    picked = texts[:: max(1, len(texts) // 40)][:40]
    for i, t in enumerate(picked):
        write("tokenizer", f"text-{i:02d}", bytes([(i % count) << 1]) + t.encode())
    cases = json.loads((FIX / "tokenizers/expected-smollm2.json").read_text())["cases"]
    for i, case in enumerate(cases[:: max(1, len(cases) // 10)][:10]):
        ids = case.get("ids") or case.get("ids_no_special") or []
        body = b"".join(struct.pack("<H", (x + 16) & 0xFFFF) for x in ids[:200])
        write("tokenizer", f"ids-{i:02d}", bytes([1, i % 4]) + body)


def seeds_chat_template():
    names = ["smollm2", "llama2-chat", "llama3-instruct", "llama3.2-instruct", "qwen2-instruct", "features"]
    convs = json.loads((FIX / "chat-templates/conversations.json").read_text())
    tools = json.loads((FIX / "chat-templates/tool-conversations.json").read_text())
    for n in names:
        src = (FIX / f"chat-templates/{n}.jinja").read_bytes()
        write("chat-template", f"template-{n}", b"\x80" + src)
    for i, c in enumerate(convs + tools):
        msgs = json.dumps(c["messages"]).encode()
        write("chat-template", f"messages-{i:02d}", bytes([0x81, i % len(names)]) + msgs)
    src = (FIX / "chat-templates/llama3.2-instruct.jinja").read_bytes()
    write("chat-template", "template-and-messages", b"\x82" + src + b"\x00" + json.dumps(tools[0]["messages"]).encode())


if __name__ == "__main__":
    seeds_gguf()
    seeds_safetensors()
    seeds_tokenizer()
    seeds_chat_template()
    for t in sorted(CORPUS.iterdir()):
        files = list(t.iterdir())
        print(f"{t.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
