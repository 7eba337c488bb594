"""hatesonar 0.1.0 (MIT) in numpy: P(hate_speech, offensive_language, neither) for many texts.

Reads the converted model that scripts/fetch-safety-ports.sh writes into the models folder
(`${ALIGND_MODELS_DIR:-<repo>/models}/hatesonar-0.1.0.json`); needs only numpy and Python 3.10+.
Any venv with numpy works, e.g. the one the fetch script creates:

    ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/venv-safety-ports/bin/python -c '
    import sys; sys.path.insert(0, "Training/ports")
    from hatesonar import HateSonar
    print(HateSonar().predict(["have a nice day", "you stupid ..."]))'

It computes what `hatesonar.Sonar().ping(text)` computes (the package's ONNX graph under
onnxruntime; Tests/Fixtures/safety/port_cases.json holds both, within 1e-6):

    lower-case every code point with onnxruntime's table (glibc towlower in en_US.UTF-8; not
    Python's str.lower, which differs at U+0130) -> tokens: runs of ASCII [a-zA-Z0-9_] ->
    term counts over the 28,302-word vocabulary -> times idf -> L2-normalised (a zero row stays
    zero) -> softmax(coef . x + intercept)

Rows are (hate_speech, offensive_language, neither) and sum to 1. ~25k texts/s on one core.
"""

import json
import os
import re
from pathlib import Path

import numpy as np

CLASSES = ["hate_speech", "offensive_language", "neither"]
FILE_NAME = "hatesonar-0.1.0.json"


def models_dir() -> Path:
    """ALIGND_MODELS_DIR, else the repository's models folder."""
    default = Path(__file__).resolve().parent.parent.parent / "models"
    return Path(os.environ.get("ALIGND_MODELS_DIR", default))


class HateSonar:
    """The converted hatesonar model; `predict(texts)` gives an (n, 3) float64 array."""

    classes = CLASSES

    def __init__(self, path=None):
        path = Path(path) if path is not None else models_dir() / FILE_NAME
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("format") != "alignd.hatesonar" or doc.get("format_version") != 1:
            raise ValueError(f"{path}: not an alignd.hatesonar version 1 file")
        if doc["token_pattern"] != "[a-zA-Z0-9_]+" or doc["min_chars"] != 1 or doc["norm"] != "L2" \
                or doc["post_transform"] != "SOFTMAX" or doc["classes"] != CLASSES:
            raise ValueError(f"{path}: settings this reference does not implement")
        self.version = doc["version"]
        self._lower = {cp: low for cp, low in doc["lower_map"]}
        self._token = re.compile(r"[a-zA-Z0-9_]+")
        self._column = {term: j for j, term in enumerate(doc["terms"])}
        self._idf = np.asarray(doc["idf"], dtype=np.float64)
        self._coef = np.asarray(doc["coefficients"], dtype=np.float64).T.copy()  # (terms, 3)
        self._intercepts = np.asarray(doc["intercepts"], dtype=np.float64)

    def predict(self, texts) -> np.ndarray:
        """P(class) per text, shape (len(texts), 3), classes in `CLASSES` order."""
        out = np.empty((len(texts), 3), dtype=np.float64)
        for row, text in enumerate(texts):
            counts = {}
            for token in self._token.findall(text.translate(self._lower)):
                j = self._column.get(token)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            scores = self._intercepts.copy()
            if counts:
                columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
                x = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[columns]
                x /= np.sqrt(np.dot(x, x))
                scores += x @ self._coef[columns]
            scores = np.exp(scores - scores.max())
            out[row] = scores / scores.sum()
        return out
