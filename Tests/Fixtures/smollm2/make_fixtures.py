#!/usr/bin/env python3
"""Generate the SmolLM2-135M-Instruct Q4_1 reference fixtures from llama.cpp.

Reference tool: llama.cpp itself, through its C API. We compile the small C driver
`llama_ref.c` (beside this script) with gcc against the libllama.so built by
`Benchmarks/build-llama-cpp.sh` (llama.cpp vendored in the llama-cpp-python 0.3.36 sdist).
Choice: a C driver instead of the llama-cpp-python ctypes bindings, because it needs no
second (sdist) build and no ctypes struct layouts that could drift from the library; it calls
exactly llama_tokenize / llama_decode / llama_get_logits_ith as llama.cpp's own examples do.

Chat prompts are rendered here in Python with jinja2 from the GGUF's own
`tokenizer.chat_template` (read back through llama.cpp's `llama_model_chat_template`), with
the environment transformers' `apply_chat_template` uses (sandboxed, trim_blocks,
lstrip_blocks) and add_generation_prompt=True; the rendered string is tokenized by llama.cpp
with parse_special=true, so `<|im_start|>`/`<|im_end|>` become single special tokens.

Outputs (beside this script): teacher_forced.json, greedy.json. Schema in README.md.

Usage (from anywhere):
    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/smollm2/make_fixtures.py
Environment: LLAMA_CPP_DIR (default /var/cache/alignd/llama.cpp), ALIGND_MODEL (default
models/SmolLM2-135M-Instruct.Q4_1.gguf in the repo). Threads: 2. n_ctx: 4096.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR", "/var/cache/alignd/llama.cpp"))
BIN_DIR = LLAMA_CPP_DIR / "build" / "bin"
MODEL = Path(os.environ.get("ALIGND_MODEL", REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
THREADS = 2
N_CTX = 4096
GEN_TOKENS = 32

RAW_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "import numpy as np\n\n# Compute the mean of a list of numbers\n",
    "Water boils at 100 degrees Celsius. At high altitude, water boils at",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the ocean."}],
    [{"role": "user", "content": "Explain in one sentence what a CPU does."}],
    [
        {"role": "system", "content": "You are a concise assistant. Answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "Hi! Can you help me with Python?"},
        {"role": "assistant", "content": "Of course! What do you need help with?"},
        {"role": "user", "content": "How do I reverse a list?"},
    ],
    [{"role": "user", "content": "List three fruits that are red."}],
    [{"role": "user", "content": "Translate to French: Good morning, how are you?"}],
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_driver(workdir: Path) -> Path:
    lib = BIN_DIR / "libllama.so"
    include = LLAMA_CPP_DIR / "include"
    if not lib.exists() or not (include / "llama.h").exists():
        sys.exit(f"llama.cpp not built: run Benchmarks/build-llama-cpp.sh (looked in {LLAMA_CPP_DIR})")
    exe = workdir / "llama_ref"
    subprocess.run(
        ["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-o", str(exe), str(HERE / "llama_ref.c"),
         f"-I{include}", f"-L{BIN_DIR}", "-lllama", f"-Wl,-rpath,{BIN_DIR}", "-lm"],
        check=True,
    )
    return exe


class Driver:
    def __init__(self, exe: Path, workdir: Path):
        self.exe = exe
        self.workdir = workdir
        self.env = dict(os.environ, LLAMA_REF_THREADS=str(THREADS), LLAMA_REF_CTX=str(N_CTX))

    def run(self, mode: str, payload: bytes | None = None, *extra: str) -> dict:
        args = [str(self.exe), str(MODEL), mode]
        if payload is not None:
            infile = self.workdir / "input.bin"
            infile.write_bytes(payload)
            args.append(str(infile))
        args.extend(extra)
        out = subprocess.run(args, check=True, capture_output=True, env=self.env)
        return json.loads(out.stdout)

    def tokenize(self, text: str) -> list[int]:
        return self.run("tokenize", text.encode("utf-8"))["tokens"]

    @staticmethod
    def ids_payload(ids: list[int]) -> bytes:
        return " ".join(map(str, ids)).encode()


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    # Same jinja2 environment settings as transformers' apply_chat_template.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )


def r6(x: float) -> float:
    return round(x, 6)


def main() -> None:
    if not MODEL.exists():
        sys.exit(f"model not found: {MODEL} (run scripts/fetch-models.sh)")
    provenance_file = LLAMA_CPP_DIR / "PROVENANCE.txt"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        drv = Driver(build_driver(workdir), workdir)
        info = drv.run("info")
        generator = {
            "tool": "llama.cpp C API via Tests/Fixtures/smollm2/llama_ref.c",
            "llama_cpp_source": "vendor/llama.cpp of the PyPI sdist llama-cpp-python==0.3.36",
            "llama_cpp_provenance": provenance_file.read_text().strip().splitlines()
            if provenance_file.exists() else [],
            "model_file": MODEL.name,
            "model_sha256": sha256(MODEL),
            "threads": THREADS,
            "n_ctx": N_CTX,
            "tokenize": "llama_tokenize(add_special=true, parse_special=true)",
            "vocab_add_bos": info["add_bos"],
            "bos_id": info["bos"],
            "eos_id": info["eos"],
            "n_vocab": info["n_vocab"],
        }

        # 1. Teacher-forced top-1 over text.txt.
        text = (HERE / "text.txt").read_text(encoding="utf-8")
        tokens = drv.tokenize(text)
        tf = drv.run("teacher", drv.ids_payload(tokens))
        assert tf["n"] == len(tokens)
        gap = [r6(a - b) for a, b in zip(tf["top1_logit"], tf["top2_logit"])]
        # The same text through llama.cpp one token per llama_decode (its decode kernels instead of its
        # batched prefill kernels): how well llama.cpp agrees with itself = the noise floor a test
        # must allow for.
        inc = drv.run("teacher1", drv.ids_payload(tokens))
        inc_agree = sum(1 for a, b in zip(inc["top1"], tf["top1"]) if a == b)
        teacher = {
            "schema": "alignd.smollm2.teacher_forced.v1",
            "generator": generator,
            "text_file": "text.txt",
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "bos_added": bool(tokens) and tokens[0] == info["bos"] and info["add_bos"],
            "n_tokens": len(tokens),
            "tokens": tokens,
            "top1": tf["top1"],
            "top2": tf["top2"],
            "gap": gap,
            "top1_logit": [r6(x) for x in tf["top1_logit"]],
            "top1_logprob": [r6(x) for x in tf["top1_logprob"]],
            "target_logprob": [None if x is None else r6(x) for x in tf["target_logprob"]],
            "incremental_top1": inc["top1"],
            "incremental_top1_logit": [r6(x) for x in inc["top1_logit"]],
            "incremental_agreement": round(inc_agree / len(tokens), 6),
        }
        agree_self = sum(1 for i in range(len(tokens) - 1) if tf["top1"][i] == tokens[i + 1])
        print(f"teacher_forced: {len(tokens)} tokens; llama.cpp top-1 equals the next text token "
              f"at {agree_self}/{len(tokens) - 1} positions; gaps < 0.05: "
              f"{sum(1 for g in gap if g < 0.05)}; llama.cpp batched vs one-token-at-a-time top-1 agreement "
              f"{inc_agree}/{len(tokens)}", file=sys.stderr)
        write_json(HERE / "teacher_forced.json", teacher)

        # 2. Greedy continuations.
        template = info["chat_template"]
        cases = []
        for i, prompt in enumerate(RAW_PROMPTS):
            cases.append({"name": f"raw-{i + 1:02d}", "kind": "raw", "messages": None, "prompt": prompt})
        for i, messages in enumerate(CHATS):
            prompt = render_chat(template, messages, add_generation_prompt=True)
            cases.append({"name": f"chat-{i + 1:02d}", "kind": "chat", "messages": messages, "prompt": prompt})
        for case in cases:
            ids = drv.tokenize(case["prompt"])
            g = drv.run("greedy", drv.ids_payload(ids), str(GEN_TOKENS))
            raw = b"".join(bytes.fromhex(h) for h in g["pieces_hex"])
            case.update({
                "prompt_ids": ids,
                "max_tokens": GEN_TOKENS,
                "ids": g["ids"],
                "text": raw.decode("utf-8", errors="replace"),
                "stop": g["stop"],
                "runner_up": g["runner_up"],
                "gap": [r6(a - b) for a, b in zip(g["chosen_logit"], g["runner_up_logit"])],
            })
            case["min_gap"] = min(case["gap"])
            print(f"{case['name']}: {len(ids)} prompt tokens -> {len(g['ids'])} ({g['stop']}), "
                  f"min gap {case['min_gap']:.4f}: {case['text'][:60]!r}", file=sys.stderr)
        greedy = {
            "schema": "alignd.smollm2.greedy.v1",
            "generator": generator,
            "chat_template": template,
            "chat_render": "jinja2 ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), "
                           "add_generation_prompt=True (as transformers apply_chat_template)",
            "cases": cases,
        }
        write_json(HERE / "greedy.json", greedy)


def write_json(path: Path, obj: dict) -> None:
    # Compact arrays, one top-level key per line: small files and readable diffs.
    lines = ["{"]
    items = list(obj.items())
    for k, (key, value) in enumerate(items):
        sep = "," if k + 1 < len(items) else ""
        if key == "cases":
            lines.append(f"  {json.dumps(key)}: [")
            for j, case in enumerate(value):
                csep = "," if j + 1 < len(value) else ""
                lines.append("    " + json.dumps(case, ensure_ascii=False, separators=(",", ":")) + csep)
            lines.append("  ]" + sep)
        else:
            lines.append(f"  {json.dumps(key)}: "
                         + json.dumps(value, ensure_ascii=False, separators=(",", ":")) + sep)
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))  # round-trip check
    print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
