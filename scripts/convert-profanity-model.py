#!/usr/bin/env python3
"""Convert alt-profanity-check's scikit-learn model into one plain JSON file Swift reads.

Run inside a venv that has the pinned `alt-profanity-check` and `scikit-learn` installed
(scripts/fetch-safety-model.sh creates it and calls this script):

    python scripts/convert-profanity-model.py OUTPUT.json

The package's `predict_prob(texts)` is

    model.predict_proba(vectorizer.transform(texts))[:, 1]

with `vectorizer` a fitted `TfidfVectorizer` and `model` a fitted `CalibratedClassifierCV`
(sigmoid method, one calibrated `LinearSVC` per cross-validation fold, probabilities averaged).
The output holds everything needed to reproduce that bit for bit (up to the order of float
additions), and nothing else. Its layout (format "alignd.lexical-classifier", version 1):

    {
      "format": "alignd.lexical-classifier", "format_version": 1,
      "version": "alt-profanity-check-1.9.1",        # stamped on answers
      "source": {package, package_version, scikit_learn, python, unicode_version},
      "vectorizer": {                                 # TfidfVectorizer settings used at inference
        "analyzer": "word", "lowercase": true, "strip_accents": null,
        "token_pattern": "(?u)\\b\\w\\w+\\b", "ngram_range": [1, 1],
        "stop_words": [sorted terms], "binary": false,
        "sublinear_tf": false, "use_idf": true, "smooth_idf": true, "norm": "l2"},
      "text": {                                       # Python str semantics, from this Python
        "word_ranges": [[lo, hi], ...],               # code points matching re `\\w` (inclusive)
        "lower_map": [[cp, [cp, ...]], ...],          # str.lower() where it is not the identity
        "sigma_cased": [[lo, hi], ...],               # Final_Sigma context: cased, not ignorable
        "sigma_case_ignorable": [[lo, hi], ...]},     # Final_Sigma context: case-ignorable
      "terms": [term of column 0, term of column 1, ...],
      "idf": [idf of column 0, ...],                  # absent when use_idf is false
      "classes": [0, 1],
      "model": {"kind": "calibrated_linear_svc", "method": "sigmoid",
        "folds": [{"coef": [per column], "intercept": b, "sigmoid_a": a, "sigmoid_b": c}, ...]}
    }

P(class 1) for one fold is expit(-(a * (x . coef + intercept) + c)); the answer is the mean
over folds, in fold order. Floats are written with Python's shortest round-trip repr.
"""

import json
import platform
import re
import sys
import unicodedata
from importlib import metadata

import numpy as np


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def ranges(predicate) -> list:
    """Inclusive [lo, hi] code point ranges where predicate(chr(cp)) holds."""
    out = []
    start = None
    for cp in range(0x110000):
        hit = predicate(chr(cp))
        if hit and start is None:
            start = cp
        elif not hit and start is not None:
            out.append([start, cp - 1])
            start = None
    if start is not None:
        out.append([start, 0x10FFFF])
    return out


def text_tables() -> dict:
    word = re.compile(r"\w")
    lower_map = []
    for cp in range(0x110000):
        ch = chr(cp)
        low = ch.lower()
        if low != ch:
            lower_map.append([cp, [ord(c) for c in low]])
    # CPython lowercases U+03A3 to U+03C2 in the Final_Sigma context, using its own Cased and
    # Case_Ignorable tables (not exposed to Python code). Probe them through str.lower itself:
    #   (c + "Σ") ends in "ς"       <=> c is cased and not case-ignorable
    #   ("A" + c + "Σ") ends in "ς" <=> c is case-ignorable, or cased and not case-ignorable
    cased = lambda c: (c + "\u03a3").lower()[-1] == "\u03c2"
    ignorable = lambda c: not cased(c) and ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
    return {
        "word_ranges": ranges(lambda c: word.match(c) is not None),
        "lower_map": lower_map,
        "sigma_cased": ranges(cased),
        "sigma_case_ignorable": ranges(ignorable),
    }


def floats(array) -> list:
    return [float(x) for x in np.asarray(array, dtype=np.float64).ravel()]


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: convert-profanity-model.py OUTPUT.json")
    output = sys.argv[1]

    import sklearn
    from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC
    from profanity_check import profanity_check as pc

    vectorizer, model = pc.vectorizer, pc.model
    package_version = metadata.version("alt-profanity-check")

    # --- the vectorizer: refuse anything the Swift side does not implement ---
    if type(vectorizer) is not TfidfVectorizer:
        fail(f"unexpected vectorizer type {type(vectorizer)}")
    p = vectorizer.get_params()
    if p["analyzer"] != "word" or p["tokenizer"] is not None or p["preprocessor"] is not None:
        fail("only the word analyzer with the default tokenizer and preprocessor is supported")
    if p["token_pattern"] != r"(?u)\b\w\w+\b":
        fail(f"unsupported token_pattern {p['token_pattern']!r}")
    if p["strip_accents"] is not None:
        fail(f"unsupported strip_accents {p['strip_accents']!r}")
    if p["norm"] not in ("l1", "l2", None):
        fail(f"unsupported norm {p['norm']!r}")
    if p["input"] != "content" or p["dtype"] is not np.float64:
        fail("unsupported input or dtype")
    min_n, max_n = p["ngram_range"]
    stop_words = vectorizer.get_stop_words()  # the frozenset _word_ngrams uses, or None

    vocabulary = vectorizer.vocabulary_
    n_features = len(vocabulary)
    terms = [None] * n_features
    for term, column in vocabulary.items():
        if not (0 <= column < n_features) or terms[column] is not None:
            fail("vocabulary columns are not a permutation of 0..<n")
        terms[column] = term

    # --- the classifier ---
    if type(model) is not CalibratedClassifierCV or model.method != "sigmoid":
        fail(f"unexpected model {model!r}")
    classes = [int(c) for c in model.classes_]
    if classes != [0, 1]:
        fail(f"unexpected classes {classes}")
    folds = []
    for calibrated in model.calibrated_classifiers_:
        estimator = calibrated.estimator
        if type(estimator) is not LinearSVC or len(calibrated.calibrators) != 1:
            fail(f"unexpected calibrated classifier {calibrated!r}")
        calibrator = calibrated.calibrators[0]
        if type(calibrator) is not _SigmoidCalibration:
            fail(f"unexpected calibrator {calibrator!r}")
        if [int(c) for c in estimator.classes_] != [0, 1] or estimator.coef_.shape != (1, n_features):
            fail("unexpected estimator classes or coef shape")
        folds.append({
            "coef": floats(estimator.coef_[0]),
            "intercept": float(estimator.intercept_[0]),
            "sigmoid_a": float(calibrator.a_),
            "sigmoid_b": float(calibrator.b_),
        })

    document = {
        "format": "alignd.lexical-classifier",
        "format_version": 1,
        "version": f"alt-profanity-check-{package_version}",
        "source": {
            "package": "alt-profanity-check",
            "package_version": package_version,
            "scikit_learn": sklearn.__version__,
            "python": platform.python_version(),
            "unicode_version": unicodedata.unidata_version,
        },
        "vectorizer": {
            "analyzer": "word",
            "lowercase": bool(p["lowercase"]),
            "strip_accents": None,
            "token_pattern": p["token_pattern"],
            "ngram_range": [int(min_n), int(max_n)],
            "stop_words": sorted(stop_words) if stop_words is not None else None,
            "binary": bool(p["binary"]),
            "sublinear_tf": bool(p["sublinear_tf"]),
            "use_idf": bool(p["use_idf"]),
            "smooth_idf": bool(p["smooth_idf"]),
            "norm": p["norm"],
        },
        "text": text_tables(),
        "terms": terms,
        "classes": classes,
        "model": {"kind": "calibrated_linear_svc", "method": "sigmoid", "folds": folds},
    }
    if p["use_idf"]:
        document["idf"] = floats(vectorizer.idf_)

    with open(output, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(
        f"wrote {output}: {n_features} terms, {len(folds)} folds, "
        f"alt-profanity-check {package_version}, scikit-learn {sklearn.__version__}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
