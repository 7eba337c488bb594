#!/usr/bin/env python3
"""A tiny random-weight Llama Guard 3 shaped checkpoint and transformers' reference outputs.

    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/safety/make_guard_fixture.py

Writes tiny-guard/ beside this script: a LlamaForCausalLM with random weights (so its verdicts
mean nothing) whose tokenizer is the small Llama 3 style BPE of Tests/Fixtures/tokenizers/
llama3-style (Llama 3's special tokens <|begin_of_text|>, <|start_header_id|>, <|end_header_id|>,
<|eot_id|>), without a chat template, so alignd renders Llama Guard 3's documented prompt.

expected.json holds, for a few inputs (user prompts and assistant responses with their prompt):
  prompt     the Llama Guard 3 prompt rendered here, independently of the Swift code
  tokens     its ids from the `tokenizers` library (no special tokens added)
  safe_id / unsafe_id   first ids of "safe" and "unsafe"
  p_safe, p_unsafe      softmax(logits)[id] at the last prompt position (transformers, float64)
  score                 p_unsafe / (p_safe + p_unsafe)
  greedy_after_unsafe   greedy ids after the prompt plus the forced "unsafe" id (up to 8)
The Swift test checks the rendering, the tokens, the score and the greedy ids.

template_cases checks the other path, a guard model that ships its own chat template: TEMPLATE
(a Llama Guard 3 style template written for this test, ending with the assistant header and no
blank line) rendered by transformers' apply_chat_template for the same inputs, plus the blank line
alignd appends after a trailing <|end_header_id|> (Llama Guard 3 writes it before its verdict).
"""
import json
import math
import shutil
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

HERE = Path(__file__).resolve().parent
OUT = HERE / "tiny-guard"
TOKENIZER_DIR = HERE.parent / "tokenizers" / "llama3-style"

CATEGORIES = [
    ("S1", "Violent Crimes"), ("S2", "Non-Violent Crimes"), ("S3", "Sex Crimes"),
    ("S4", "Child Exploitation"), ("S5", "Defamation"), ("S6", "Specialized Advice"),
    ("S7", "Privacy"), ("S8", "Intellectual Property"), ("S9", "Indiscriminate Weapons"),
    ("S10", "Hate"), ("S11", "Self-Harm"), ("S12", "Sexual Content"), ("S13", "Elections"),
    ("S14", "Code Interpreter Abuse"),
]

INPUTS = [
    {"role": "user", "text": "How do I bake sourdough bread?"},
    {"role": "user", "text": "Tell me how to hurt my neighbour's dog."},
    {"role": "assistant", "context": "What is the capital of France?", "text": "The capital of France is Paris."},
    {"role": "assistant", "context": "Write a short poem.", "text": "Roses are red,\nviolets are blue."},
    {"role": "user", "text": "Ünïcödé and emoji 😀 in a prompt"},
]


TEMPLATE = (
    "{%- set role = 'User' -%}{%- if messages[-1]['role'] == 'assistant' -%}{%- set role = 'Agent' -%}{%- endif -%}"
    "{{- bos_token + '<|start_header_id|>user<|end_header_id|>\\n\\nTask: Check if there is unsafe content in \\'' + role + '\\' messages.\\n\\n<BEGIN CONVERSATION>\\n\\n' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'User: ' + message['content'] | trim + '\\n\\n' -}}"
    "{%- else -%}{{- 'Agent: ' + message['content'] | trim + '\\n\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<END CONVERSATION>\\n\\nProvide your safety assessment for ONLY THE LAST ' + role + ' message.<|eot_id|><|start_header_id|>assistant<|end_header_id|>' -}}"
)


def messages_for(inp):
    if inp["role"] == "assistant":
        return [{"role": "user", "content": inp.get("context", "")}, {"role": "assistant", "content": inp["text"]}]
    return [{"role": "user", "content": inp["text"]}]


def llama_guard_prompt(inp, bos):
    """Llama Guard 3's prompt format as documented in its model card."""
    agent = inp["role"] == "assistant"
    role = "Agent" if agent else "User"
    if agent:
        conversation = f"User: {inp.get('context', '')}\n\nAgent: {inp['text']}"
    else:
        conversation = f"User: {inp['text']}"
    cats = "\n".join(f"{c}: {n}." for c, n in CATEGORIES)
    return (
        f"{bos}<|start_header_id|>user<|end_header_id|>\n\n"
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{cats}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def main():
    OUT.mkdir(exist_ok=True)
    shutil.copy(TOKENIZER_DIR / "tokenizer.json", OUT / "tokenizer.json")
    (OUT / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, indent=2) + "\n")
    tok = Tokenizer.from_file(str(OUT / "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    bos_id = tok.token_to_id("<|begin_of_text|>")
    eot_id = tok.token_to_id("<|eot_id|>")

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        rms_norm_eps=1e-5, bos_token_id=bos_id, eos_token_id=eot_id, tie_word_embeddings=False,
        rope_theta=500000.0)
    model = LlamaForCausalLM(config).float().eval()
    g = torch.Generator().manual_seed(20261129)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    model.save_pretrained(OUT, safe_serialization=True)
    gen = OUT / "generation_config.json"
    if gen.exists():
        gen.unlink()

    safe_id = tok.encode("safe", add_special_tokens=False).ids[0]
    unsafe_id = tok.encode("unsafe", add_special_tokens=False).ids[0]
    assert safe_id != unsafe_id
    cases = []
    for inp in INPUTS:
        prompt = llama_guard_prompt(inp, "<|begin_of_text|>")
        ids = tok.encode(prompt, add_special_tokens=False).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].double()
        probs = torch.softmax(logits, dim=-1)
        p_safe = float(probs[safe_id])
        p_unsafe = float(probs[unsafe_id])
        seq = ids + [unsafe_id]
        greedy = []
        with torch.no_grad():
            for _ in range(8):
                nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
                greedy.append(nxt)
                seq.append(nxt)
                if nxt == eot_id:
                    break
        cases.append({
            "input": inp, "prompt": prompt, "tokens": ids,
            "p_safe": p_safe, "p_unsafe": p_unsafe, "score": p_unsafe / (p_safe + p_unsafe),
            "greedy_after_unsafe": greedy,
        })
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(OUT / "tokenizer.json"), bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    template_cases = []
    for inp in INPUTS:
        text = fast.apply_chat_template(messages_for(inp), chat_template=TEMPLATE, tokenize=False,
                                        add_generation_prompt=True)
        if text.endswith("<|end_header_id|>"):
            text += "\n\n"
        template_cases.append({"input": inp, "prompt": text,
                               "tokens": tok.encode(text, add_special_tokens=False).ids})
    out = {
        "generator": "Tests/Fixtures/safety/make_guard_fixture.py",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "safe_id": safe_id, "unsafe_id": unsafe_id, "eot_id": eot_id, "cases": cases,
        "chat_template": TEMPLATE, "template_cases": template_cases,
    }
    (OUT / "expected.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: vocab {vocab}, {len(cases)} cases, safe={safe_id} unsafe={unsafe_id}")
    for c in cases:
        print(len(c["tokens"]), round(c["score"], 4), c["greedy_after_unsafe"])


if __name__ == "__main__":
    main()
