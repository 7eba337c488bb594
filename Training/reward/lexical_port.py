r"""alt-profanity-check 1.9.1 (MIT) in numpy: P(offensive) per text, from the converted file.

Reads `${ALIGND_MODELS_DIR:-<repo>/models}/alt-profanity-check-1.9.1.lexical.json` (format
"alignd.lexical-classifier" version 1, written by scripts/convert-profanity-model.py; Swift's
LexicalClassifier reads the same file) and computes what the package's `predict_prob` computes:

    str.lower() -> tokens: re (?u)\b\w\w+\b -> drop English stop words -> term counts over the
    vocabulary -> times idf -> L2-normalised (a zero row stays zero) -> per fold of the
    calibrated LinearSVC: expit(-(a * (x . coef + intercept) + b)) -> mean over folds.

On the 32,234 distinct texts of the reward pairs it equals `profanity_check.predict_prob` of the
pinned package (alt-profanity-check 1.9.1, scikit-learn 1.9.1) within 5e-16. Python's own
str.lower() and `\w` are used, so this interpreter's Unicode version must be the one the file was
converted with (checked at load). Needs numpy only; used by train_reward.py for the "lexical(r)" block.
"""
import json
import os
import re
import unicodedata
from pathlib import Path

import numpy as np

FILE_NAME = "alt-profanity-check-1.9.1.lexical.json"


def models_dir() -> Path:
    default = Path(__file__).resolve().parent.parent.parent / "models"
    return Path(os.environ.get("ALIGND_MODELS_DIR", default))


class Lexical:
    """The converted alt-profanity-check model; `predict(texts)` gives P(offensive), shape (n,)."""

    def __init__(self, path=None):
        path = Path(path) if path is not None else models_dir() / FILE_NAME
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != "alignd.lexical-classifier" or doc.get("format_version") != 1:
            raise ValueError(f"{path}: not an alignd.lexical-classifier version 1 file")
        v = doc["vectorizer"]
        if (v["analyzer"], v["lowercase"], v["strip_accents"], v["token_pattern"], v["ngram_range"], v["binary"],
                v["sublinear_tf"], v["use_idf"], v["norm"]) != ("word", True, None, r"(?u)\b\w\w+\b", [1, 1], False, False, True, "l2") \
                or doc["model"]["kind"] != "calibrated_linear_svc" or doc["model"]["method"] != "sigmoid" or doc["classes"] != [0, 1]:
            raise ValueError(f"{path}: settings this reference does not implement")
        if doc["source"]["unicode_version"] != unicodedata.unidata_version:
            raise ValueError(f"{path} was converted under Unicode {doc['source']['unicode_version']}, this Python has {unicodedata.unidata_version}")
        self.version = doc["version"]
        self._token = re.compile(v["token_pattern"])
        self._stop = frozenset(v["stop_words"])
        self._column = {t: j for j, t in enumerate(doc["terms"])}
        self._idf = np.asarray(doc["idf"], dtype=np.float64)
        folds = doc["model"]["folds"]
        self._coef = np.asarray([f["coef"] for f in folds], dtype=np.float64).T.copy()  # (terms, folds)
        self._intercept = np.asarray([f["intercept"] for f in folds], dtype=np.float64)
        self._a = np.asarray([f["sigmoid_a"] for f in folds], dtype=np.float64)
        self._b = np.asarray([f["sigmoid_b"] for f in folds], dtype=np.float64)

    def predict(self, texts) -> np.ndarray:
        """P(offensive) per text, shape (len(texts),) float64."""
        out = np.empty(len(texts), dtype=np.float64)
        for row, text in enumerate(texts):
            counts = {}
            for token in self._token.findall(text.lower()):
                if token in self._stop:
                    continue
                j = self._column.get(token)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            dec = self._intercept.copy()
            if counts:
                cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
                x = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[cols]
                x /= np.sqrt(np.dot(x, x))
                dec += x @ self._coef[cols]
            out[row] = np.mean(1.0 / (1.0 + np.exp(self._a * dec + self._b)))
        return out
