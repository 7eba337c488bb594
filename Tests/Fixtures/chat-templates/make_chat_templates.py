#!/usr/bin/env python3
"""Renders the committed conversations with each chat template through transformers'
`apply_chat_template(tokenize=False)`, with and without the generation prompt, into expected.json.

    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/chat-templates/make_chat_templates.py

Templates: SmolLM2's, read from models/SmolLM2-135M-Instruct.Q4_1.gguf (`tokenizer.chat_template`, also
written to smollm2.jinja for reference), and the *.jinja files here, which hold the templates as published
in the models' tokenizer_config.json (Qwen2-Instruct, Meta-Llama-3-Instruct, Llama-2-chat), plus
features.jinja, written for these tests to exercise more of Jinja, and Llama 3.2 Instruct's template
(llama3.2-instruct.jinja), also rendered with tool schemas, tool calls and tool results
(tool-conversations.json) and a fixed `date_string`. Each template
is set on a PreTrainedTokenizerFast (one of the small tokenizers in ../tokenizers) whose BOS/EOS are
the model's; a conversation the template rejects (raise_exception) is recorded as an error.
"""
import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TOKENIZERS = HERE.parent / "tokenizers"
DATE = "26 Jul 2024"

# name -> (template file, tokenizer folder, bos, eos)
TEMPLATES = {
    "smollm2": ("smollm2.jinja", "qwen2-style", "<|im_start|>", "<|im_end|>"),
    "qwen2-instruct": ("qwen2-instruct.jinja", "qwen2-style", None, "<|im_end|>"),
    "llama3-instruct": ("llama3-instruct.jinja", "llama3-style", "<|begin_of_text|>", "<|eot_id|>"),
    "llama2-chat": ("llama2-chat.jinja", "llama2-style", "<s>", "</s>"),
    # Llama 3.2 Instruct's (tools, tojson, date_string); the text as listed in llama.cpp's chat-template test data.
    "llama3.2-instruct": ("llama3.2-instruct.jinja", "llama3-style", "<|begin_of_text|>", "<|eot_id|>"),
    # Not a model's template: a stress test of the interpreter (whitespace control, namespace, macro, tojson...).
    "features": ("features.jinja", "llama2-style", "<s>", "</s>"),
}


def smollm2_template():
    from gguf import GGUFReader

    reader = GGUFReader(str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    return reader.fields["tokenizer.chat_template"].contents()


def main():
    (HERE / "smollm2.jinja").write_text(smollm2_template(), encoding="utf-8")
    conversations = json.loads((HERE / "conversations.json").read_text(encoding="utf-8"))
    tool_conversations = json.loads((HERE / "tool-conversations.json").read_text(encoding="utf-8"))
    cases = []
    for name, (file, folder, bos, eos) in TEMPLATES.items():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZERS / folder / "tokenizer.json"), bos_token=bos, eos_token=eos)
        tok.chat_template = (HERE / file).read_text(encoding="utf-8")
        for conv in conversations:
            for gen in (False, True):
                case = {"template": name, "conversation": conv["name"], "addGenerationPrompt": gen,
                        "bosToken": bos or "", "eosToken": eos or ""}
                # A fixed date, so templates that print today's date (Llama 3.2) render reproducibly.
                extra = {"date_string": DATE} if name == "llama3.2-instruct" else {}
                if extra:
                    case["dateString"] = DATE
                try:
                    case["output"] = tok.apply_chat_template(conv["messages"], tokenize=False, add_generation_prompt=gen, **extra)
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                cases.append(case)
        if name == "llama3.2-instruct":
            for conv in tool_conversations:
                for gen in (False, True):
                    case = {"template": name, "conversation": conv["name"], "toolConversation": True,
                            "addGenerationPrompt": gen, "bosToken": bos, "eosToken": eos, "dateString": DATE}
                    try:
                        case["output"] = tok.apply_chat_template(
                            conv["messages"], tools=conv["tools"], tokenize=False, add_generation_prompt=gen,
                            date_string=DATE, **conv.get("variables", {}))
                    except Exception as e:
                        case["error"] = str(e)
                    cases.append(case)
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    (HERE / "expected.json").write_text("[\n" + lines + "\n]\n", encoding="utf-8")
    print(len(cases), "renderings,", sum("error" in c for c in cases), "errors")


if __name__ == "__main__":
    main()
