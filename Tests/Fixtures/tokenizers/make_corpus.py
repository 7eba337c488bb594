#!/usr/bin/env python3
"""Builds corpus.json: the input strings of the tokenizer tests (inputs only, no expected output).

Hand-picked seed strings cover the hard cases of the pre-tokenizers (contractions, runs of
whitespace, digits, punctuation, CJK, emoji and ZWJ sequences, code, special tokens inside text);
seeded random mixtures of them add volume. Deterministic: rerunning writes the same file.

    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/tokenizers/make_corpus.py
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

SEEDS = [
    # ASCII prose and contractions
    "Hello world", "Hello, world!", "hello world", " Hello world", "  Hello world", "Hello world ",
    "The quick brown fox jumps over the lazy dog.", "I'm sure you're right, they've gone.",
    "It's, don't, won't, can't, I'd, we'll, she's", "IT'S DON'T WE'LL I'D YOU'RE THEY'VE I'M",
    "It'S dOn'T We'Ll", "'s 't 're 've 'm 'll 'd", "''s '''t", "rock'n'roll", "O'Neil's dog",
    "’s curly apostrophe’s", "'ſ long s", "'sup 'tis 'twas", "don't\n'll", "x'S'T'RE", "x'ſa", "He'LL they'RE we'VE", "'Ss'sS",
    # whitespace
    "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a \t b", "a\nb", "a\n\nb", "a\n\n\nb", "a\r\nb",
    "a \n b", "a\n \nb", "   ", " ", "\n", "\n\n", "\t", "\t\t\t", " \n ", "\r\n\r\n", "x \n\n  y",
    "trailing spaces   ", "   leading spaces", "    indented code", "\n\nleading newlines",
    "tabs\tand\tspaces  mixed \t\n", "a\u00a0b non-breaking", "a\u3000b ideographic space",
    "a\u2028b line sep", "a\u2009b thin space", "a \u00a0 b", "end\n", "end \n", "end\n ",
    "word\u000bvt\u000cff", "\u0085nel", "a\u200bb zero width space",
    # digits
    "1", "12", "123", "1234", "12345", "1234567890", "3.14159265358979", "1,000,000",
    "-42", "+7", "1e10", "0x1F", "2024-01-15", "12:30:45", "$19.99", "100%", "v1.2.3",
    "phone: 555-123-4567", "99 bottles", "a1b2c3", "abc123def", "x²+y²=z²", "⅔ cup, ¾ inch, ½",
    "①②③", "٣٤٥ arabic digits", "१२३ devanagari digits", "Ⅻ roman numeral", "3rd 21st 2nd",
    "0000000000000000000000", "31415926535897932384626433832795028841971",
    # punctuation
    "Hello!!! What??? ...", "¿Qué? ¡Sí!", "«quotes» “double” ‘single’", "—em dash– en dash",
    "...", "!!!", "???", "()[]{}<>", "@#$%^&*", "a.b.c", "e.g. i.e. etc.", "hello...world",
    "#hashtag @mention", "http://example.com/path?q=1&r=2#frag", "user@example.com",
    "C:\\Users\\name\\file.txt", "~/.bashrc", "-- --- ----", "***bold*** __under__",
    # accents and Latin
    "café", "naïve résumé", "Crème brûlée", "Ångström", "Zürich Straße", "façade", "São Paulo",
    "ÉCOLE ÉLÉMENTAIRE", "ñandú", "Łódź", "İstanbul ı", "ǅ titlecase", "ﬁ ligature",
    "cafe\u0301 decomposed", "e\u0301\u0301 two accents", "A\u030a", "Ω ohm Ω omega",
    # other scripts
    "Привет, мир!", "Γειά σου Κόσμε", "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया",
    "สวัสดีชาวโลก", "Xin chào thế giới", "გამარჯობა", "Բարեւ", "ሰላም", "ᚠᚢᚦᚨᚱᚲ",
    # CJK
    "你好，世界！", "我喜欢吃苹果。", "日本語のテキストです。", "カタカナ ひらがな 漢字",
    "안녕하세요 세계", "中文English混合text", "東京2024年", "「引用」『二重』", "一二三四五",
    "𠀀𠀁 extension B", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    # emoji
    "😀", "😀😃😄", "Hello 👋 world 🌍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵", "❤️", "#️⃣",
    "👩🏾‍💻 coding", "🤷‍♂️", "emoji😀inline", "😀 😀  😀", "🦀🐍🦊", "✅ ❌ ⚠️",
    # code
    "def foo(x):\n    return x + 1\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "let x: [Int] = [1, 2, 3]", "if x == 1 && y != 2 || !z { print(\"ok\") }",
    "SELECT * FROM users WHERE id = 42;", "<div class=\"a\">text</div>", "{\"key\": [1, 2.5, null]}",
    "#include <stdio.h>\nint main(void) { return 0; }", "x += 1  # comment", "a->b->c", "a::b::c",
    "lambda x: x**2", "print(f'{name!r:>10}')", "$ ls -la | grep foo > out.txt 2>&1",
    "    if True:\n        pass\n\n\n", "```python\nprint('hi')\n```", "// TODO: fix\n/* block */",
    "camelCaseVariable snake_case_variable SCREAMING_CASE", "__init__ __main__",
    # special tokens inside text
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHello<|im_end|>\n",
    "before<|im_start|>after", "x <|im_end|> y", "<|im_start|><|im_end|>", "<|im_start|",
    "<|im_start |>", "<|IM_START|>", "<|begin_of_text|>Hi", "<|start_header_id|>user<|end_header_id|>\n\n",
    "<|eot_id|><|eot_id|>", "<s>[INST] hi [/INST]</s>", "<s>", "</s>", "<unk>", "a<s>b</s>c",
    "<repo_name>foo<file_sep>", "<|endoftext|>text<|endoftext|>", "text <|endoftext|>",
    "<<|im_start|>>", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    # odd and invalid-looking text
    "\ufffd replacement", "\u200d lone zwj", "\ufe0f lone vs16", "a\u0300", "\u0300 lone combining",
    "\U0010ffff plane 16", "\ue000 private use", "\u00ad soft hyphen", "\u202e rtl override",
    "\u0000 nul", "\u001b[31mred\u001b[0m", "\x7f del", "ÿþ bom-ish", "\ufeffBOM start",
    "Ã©Ã¨ mojibake", "&amp; &lt; &#39;", "%E2%9C%93 percent", "\\u00e9 escaped", "ĠĊ ġ byte-level chars",
    "▁ metaspace ▁▁", "<0x41> byte token text", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abcabcabcabcabcabcabcabcabcabc", "the the the the the the", "zzzzqqqxxx", "",
]

MIX_PARTS = [
    "Hello", "world", "it's", "DON'T", "café", "你好", "😀", "👨‍👩‍👧", "123", "4567", "3.14", " ",
    "  ", "\n", "\n\n", "\t", "!", "?", "...", "(x)", "{y}", "<|im_start|>", "<|im_end|>", "naïve",
    "Привет", "ありがとう", "#", "_", "-", "—", "ﬁ", "x²", "½", "\u00a0", "def", "return", "'ll",
    "'S", "e\u0301", "🇫🇷", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ß", "İ", "  \n", " \t ",
]


def main() -> None:
    rng = random.Random(20240611)
    corpus = list(SEEDS)
    while len(corpus) < 360:
        n = rng.randint(2, 9)
        corpus.append("".join(rng.choice(MIX_PARTS) for _ in range(n)))
    # A few longer paragraphs mixing everything.
    for _ in range(8):
        corpus.append("".join(rng.choice(SEEDS[:200] + MIX_PARTS) + rng.choice([" ", "", "\n"]) for _ in range(30)))
    seen, unique = set(), []
    for s in corpus:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    (HERE / "corpus.json").write_text(json.dumps(unique, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(unique)} strings")


if __name__ == "__main__":
    main()
