#!/usr/bin/env python3
"""Builds the tokenizer fixtures and their expected ids with Hugging Face `tokenizers`.

    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/tokenizers/make_tokenizers.py

Writes, beside this script:
- expected-smollm2.json: ids for corpus.json from SmolLM2's tokenizer, rebuilt faithfully from the
  vocab/merges/token types of models/SmolLM2-135M-Instruct.Q4_1.gguf (BPE; pre-tokenizer
  Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]; ByteLevel
  decoder; the control tokens as special added tokens), as in SmolLM2's own tokenizer.json. The rebuilt
  tokenizer.json itself is large and is not committed: the Swift test reads the GGUF file.
- llama3-style/ and qwen2-style/: small byte-level BPE tokenizers trained here (on the corpus plus
  pseudo-text sampled from SmolLM2's vocabulary) with the real pre-tokenizer regexes and special tokens of
  Llama 3 and Qwen2 (Qwen2 also has its NFC normalizer), each with gguf-fields.json: the tokenizer.ggml.*
  fields llama.cpp's converter would write for it;
- llama2-style/: a small SentencePiece BPE model with byte fallback trained with `sentencepiece`
  (Llama 2's trainer settings), converted the way transformers converts Llama 2 (legacy normalizer
  Prepend("▁") + Replace(" ", "▁"), merges derived from piece scores, decoder Replace/ByteFallback/Fuse/Strip),
  plus gguf-fields.json: the fields llama.cpp's converter writes to GGUF for it (tokens, scores, token types);
- llama2-metaspace/: the same SentencePiece model converted with legacy=False (no normalizer; Metaspace
  pre-tokenizer with prepend_scheme "first", split false), as Mistral and recent conversions ship it;
- expected-pretokenize.json: the piece lengths each pre-tokenizer (gpt2, llama3, qwen2, smollm) cuts
  every corpus string into;
- expected-<name>.json for each: per corpus string, the ids without and (for the first 40 strings) with
  the post-processor's special tokens, and decode(ids, skip_special_tokens=False).
"""
import json
import random
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GGUF_PATH = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# The pre-tokenizer regexes as published in the models' tokenizer.json files.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

WITH_SPECIALS = 40  # how many corpus strings also get ids with the post-processor's special tokens


def read_gguf_tokenizer():
    from gguf import GGUFReader

    reader = GGUFReader(str(GGUF_PATH))
    f = reader.fields
    return {
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "merges": f["tokenizer.ggml.merges"].contents(),
        "bos": f["tokenizer.ggml.bos_token_id"].contents(),
        "eos": f["tokenizer.ggml.eos_token_id"].contents(),
        "template": f["tokenizer.chat_template"].contents(),
    }


def smollm2_tokenizer(meta):
    vocab = {tok: i for i, tok in enumerate(meta["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [meta["tokens"][i] for i, t in enumerate(meta["types"]) if t == 3]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def training_text(corpus, meta):
    """Corpus strings plus pseudo-text sampled from SmolLM2's vocabulary (real English, code and
    multilingual subwords), so merges resemble a real tokenizer's."""
    rng = random.Random(7)
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}
    words = []
    for tok in meta["tokens"][17:]:
        try:
            words.append(bytes(byte_decoder[c] for c in tok).decode("utf-8"))
        except (KeyError, UnicodeDecodeError):
            pass
    lines = list(corpus) * 3
    for _ in range(4000):
        lines.append("".join(rng.choice(words) for _ in range(rng.randint(3, 20))))
    return lines


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def byte_level_tokenizer(regex, lines, vocab_size, specials, nfc, ignore_merges, bos):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(lines, trainer)
    # Like the real files: special tokens come after the trained vocabulary.
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
                ),
            ]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def llama2_tokenizer(lines, out_dir, legacy=True):
    """A SentencePiece BPE model with Llama 2's trainer settings, converted like transformers does."""
    import sentencepiece as spm
    from transformers.utils import sentencepiece_model_pb2_new as model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        text_path = Path(tmp) / "train.txt"
        text_path.write_text("\n".join(l.replace("\n", " ") for l in lines if l.strip()), encoding="utf-8")
        prefix = str(Path(tmp) / "sp")
        spm.SentencePieceTrainer.train(
            input=str(text_path), model_prefix=prefix, model_type="bpe", vocab_size=1200,
            character_coverage=0.99, byte_fallback=True, split_digits=True, add_dummy_prefix=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
            split_by_unicode_script=True, split_by_whitespace=True, max_sentence_length=100000,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1,
        )
        proto = model_pb2.ModelProto()
        proto.ParseFromString(Path(prefix + ".model").read_bytes())

    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    # transformers' SpmConverter: merges between normal pieces, ranked by the merged piece's score.
    normal = {p: (s, i) for i, (p, s, t) in enumerate(pieces) if t == 1}
    ranked = []
    for token, (score, idx) in normal.items():
        for split in range(1, len(token)):
            left, right = token[:split], token[split:]
            if left in normal and right in normal:
                ranked.append((-score, idx, left, right))
    merges = [(l, r) for _, _, l, r in sorted(ranked)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        # transformers' LlamaConverter with legacy=False (Mistral, recent Llama 2 conversions).
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    # What llama.cpp's convert_hf_to_gguf.py writes for a SentencePiece model (tokenizer.ggml.*).
    gguf_type = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}
    fields = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": [p for p, _, _ in pieces],
        "tokenizer.ggml.scores": [s for _, s, _ in pieces],
        "tokenizer.ggml.token_type": [gguf_type[t] for _, _, t in pieces],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,
    }
    if legacy:
        (out_dir / "gguf-fields.json").write_text(json.dumps(fields, ensure_ascii=False) + "\n", encoding="utf-8")
    return tok


def write_gguf_fields(tok, out_dir, pre, bos, eos, add_bos):
    """The tokenizer.ggml.* fields llama.cpp's convert_hf_to_gguf.py writes for a byte-level BPE
    tokenizer.json: tokens by id, token types (3 = control for special added tokens, 4 = user-defined for
    other added tokens, 1 = normal), merges as "a b", the pre-tokenizer name, BOS/EOS ids."""
    data = json.loads(tok.to_str())
    vocab = dict(data["model"]["vocab"])
    types = {}
    for added in data["added_tokens"]:
        vocab[added["content"]] = added["id"]
        types[added["id"]] = 3 if added["special"] else 4
    tokens = [None] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    fields = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [types.get(i, 1) for i in range(len(tokens))],
        "tokenizer.ggml.merges": [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]],
        "tokenizer.ggml.bos_token_id": vocab[bos] if bos else vocab.get("<|endoftext|>", vocab[eos]),
        "tokenizer.ggml.eos_token_id": vocab[eos],
        "tokenizer.ggml.add_bos_token": add_bos,
    }
    (out_dir / "gguf-fields.json").write_text(json.dumps(fields, ensure_ascii=False) + "\n", encoding="utf-8")


def write_config(out_dir, bos, eos, template_file, extra=None):
    config = {"bos_token": bos, "eos_token": eos, "chat_template": (HERE.parent / "chat-templates" / template_file).read_text(encoding="utf-8")}
    config.update(extra or {})
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def expected(tok, corpus, name):
    cases = []
    for i, text in enumerate(corpus):
        ids = tok.encode(text, add_special_tokens=False).ids
        case = {"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)}
        if i < WITH_SPECIALS:
            case["idsWithSpecials"] = tok.encode(text, add_special_tokens=True).ids
        cases.append(case)
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    (HERE / f"expected-{name}.json").write_text('{"cases": [\n' + lines + "\n]}\n", encoding="utf-8")
    print(name, sum(len(c["ids"]) for c in cases), "tokens")


def pretokenize_lengths(corpus):
    """Per corpus string and pre-tokenizer, the lengths (in Unicode scalars) of the pieces Hugging Face's
    pre-tokenizers cut: a sharper check of the regex scanners than final ids from a small vocabulary."""
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}

    def raw(piece):  # a ByteLevel piece back to text
        return bytes(byte_decoder[c] for c in piece).decode("utf-8")

    kinds = {
        "gpt2": (pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), True),
        "llama3": (pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False), False),
        "qwen2": (pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False), False),
        "smollm": (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]), True),
    }
    out = {}
    for name, (pre, byte_level) in kinds.items():
        rows = []
        for text in corpus:
            pieces = [p for p, _ in pre.pre_tokenize_str(text)]
            rows.append([len(raw(p) if byte_level else p) for p in pieces])
        out[name] = rows
    lines = ",\n".join(f"{json.dumps(k)}: " + json.dumps(v, separators=(",", ":")) for k, v in out.items())
    (HERE / "expected-pretokenize.json").write_text("{\n" + lines + "\n}\n", encoding="utf-8")


def main():
    corpus = json.loads((HERE / "corpus.json").read_text(encoding="utf-8"))
    pretokenize_lengths(corpus)
    meta = read_gguf_tokenizer()
    expected(smollm2_tokenizer(meta), corpus, "smollm2")

    lines = training_text(corpus, meta)
    llama3_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                       "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                       "<|reserved_special_token_2|>", "<|eot_id|>"]
    for name, regex, specials, nfc, ignore, bos, eos, template, pre in [
        ("llama3-style", LLAMA3_REGEX, llama3_specials, False, True, "<|begin_of_text|>", "<|eot_id|>", "llama3-instruct.jinja", "llama-bpe"),
        ("qwen2-style", QWEN2_REGEX, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], True, False, None, "<|im_end|>", "qwen2-instruct.jinja", "qwen2"),
    ]:
        out_dir = HERE / name
        out_dir.mkdir(exist_ok=True)
        tok = byte_level_tokenizer(regex, lines, 2000, specials, nfc, ignore, bos)
        tok.save(str(out_dir / "tokenizer.json"))
        write_config(out_dir, bos, eos, template)
        write_gguf_fields(tok, out_dir, pre, bos, eos, add_bos=bos is not None)
        expected(tok, corpus, name)

    out_dir = HERE / "llama2-style"
    out_dir.mkdir(exist_ok=True)
    tok = llama2_tokenizer(lines, out_dir)
    tok.save(str(out_dir / "tokenizer.json"))
    write_config(out_dir, "<s>", "</s>", "llama2-chat.jinja", {"unk_token": "<unk>", "add_bos_token": True})
    expected(tok, corpus, "llama2-style")

    out_dir = HERE / "llama2-metaspace"
    out_dir.mkdir(exist_ok=True)
    tok = llama2_tokenizer(lines, out_dir, legacy=False)
    tok.save(str(out_dir / "tokenizer.json"))
    write_config(out_dir, "<s>", "</s>", "llama2-chat.jinja", {"unk_token": "<unk>", "add_bos_token": True})
    expected(tok, corpus, "llama2-metaspace")


if __name__ == "__main__":
    main()
