"""tox-block 0.1.2 (MIT) in numpy: the six Jigsaw toxicity scores for many texts.

Reads the converted model that scripts/fetch-safety-ports.sh writes into the models folder
(`${ALIGND_MODELS_DIR:-<repo>/models}/tox-block-0.1.2.safetensors` and
`tox-block-0.1.2.tokenizer.json`); needs only numpy and Python 3.10+. Any venv with numpy
works, e.g. the one the fetch script creates:

    ${ALIGND_CACHE_DIR:-<repo>/.build-cache}/venv-safety-ports/bin/python -c '
    import sys; sys.path.insert(0, "Training/ports")
    from toxblock import ToxBlock
    print(ToxBlock().predict(["have a nice day", "I will kill you"]))'

`predict(texts)` equals `tox_block.prediction.make_predictions(texts)` (rescale=True, the
package default) and `predict(texts, rescale=False)` the model's raw sigmoid outputs, within
1e-5 (Tests/Fixtures/safety/port_cases.json holds the package's own values):

    Keras Tokenizer: str.lower(), each of !"#$%&()*+,-./:;<=>?@[\\]^_`{|}~<tab><newline> -> space,
    split on " ", keep ids < 20000 (unknown words are dropped) -> keep the last 100 ids, zeros in
    front -> embedding (20000, 50) -> bidirectional LSTM(50) over all 100 steps, padding
    included (Keras 2's hard_sigmoid = clip(0.2x + 0.5, 0, 1) on the i, f, o gates) -> max over
    time of [forward, backward] -> dense(50, relu) -> dense(6, sigmoid)
    -> rescaled: abs((p - lo) / (hi - lo)) per label, in float32 as the package does.

Rescaled scores can exceed 1 (p above hi: "I will kill you" has threat 1.02) and fold back
below lo (abs). Unlike the package, an empty text is accepted (all padding; the package raises
ValueError). Columns: toxic, severe_toxic, obscene, threat, insult, identity_hate. Python's
str.lower() is this interpreter's (the converted tables record the Unicode version the
original used; they differ only for characters new in later Unicode versions). About 1,000
texts/s with numpy in batches of 64 (larger batches were slower here: OpenBLAS threads on
small matrices).
"""

import json
import os
import struct
from pathlib import Path

import numpy as np

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
WEIGHTS_FILE = "tox-block-0.1.2.safetensors"
TOKENIZER_FILE = "tox-block-0.1.2.tokenizer.json"


def models_dir() -> Path:
    """ALIGND_MODELS_DIR, else the repository's models folder."""
    default = Path(__file__).resolve().parent.parent.parent / "models"
    return Path(os.environ.get("ALIGND_MODELS_DIR", default))


def read_safetensors(path) -> dict:
    """name -> float32 array, for a little-endian F32 safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    start = 8 + length
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4,
                                  offset=start + begin).reshape(info["shape"])
    return out


class ToxBlock:
    """The converted tox-block model; `predict(texts)` gives an (n, 6) float32 array."""

    labels = LABELS

    def __init__(self, weights=None, tokenizer=None):
        folder = models_dir()
        weights = Path(weights) if weights is not None else folder / WEIGHTS_FILE
        tokenizer = Path(tokenizer) if tokenizer is not None else folder / TOKENIZER_FILE
        with open(tokenizer, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("format") != "alignd.toxblock-tokenizer" or doc.get("format_version") != 1:
            raise ValueError(f"{tokenizer}: not an alignd.toxblock-tokenizer version 1 file")
        t, s = doc["tokenizer"], doc["sequence"]
        if not t["lower"] or t["char_level"] or t["oov_token"] is not None \
                or (s["padding"], s["truncating"], s["value"]) != ("pre", "pre", 0) or doc["labels"] != LABELS:
            raise ValueError(f"{tokenizer}: settings this reference does not implement")
        self.version = doc["version"]
        self.maxlen = s["maxlen"]
        self._split = t["split"]
        self._translate = str.maketrans({c: t["split"] for c in t["filters"]})
        self._ids = {word: i + 1 for i, word in enumerate(doc["words"])}  # ids 1..<num_words
        rescale = np.asarray(doc["rescale"], dtype=np.float64)
        self._lo = rescale[:, 0].astype(np.float32)
        self._span = (rescale[:, 1] - rescale[:, 0]).astype(np.float32)

        w = read_safetensors(weights)
        self._embedding = w["embedding"]  # (vocab, 50)
        self._kernel = {d: w[f"lstm_{d}.kernel"] for d in ("forward", "backward")}  # (50, 200)
        self._recurrent = {d: w[f"lstm_{d}.recurrent_kernel"] for d in ("forward", "backward")}  # (50, 200)
        self._bias = {d: w[f"lstm_{d}.bias"] for d in ("forward", "backward")}  # (200)
        self._dense = (w["dense.kernel"], w["dense.bias"])  # (100, 50), (50)
        self._output = (w["output.kernel"], w["output.bias"])  # (50, 6), (6)

    def encode(self, texts) -> np.ndarray:
        """Token ids as the package's encoder gives them, shape (n, maxlen) int32."""
        out = np.zeros((len(texts), self.maxlen), dtype=np.int32)
        for row, text in enumerate(texts):
            words = text.lower().translate(self._translate).split(self._split)
            ids = [i for i in (self._ids.get(word) for word in words if word) if i is not None]
            ids = ids[-self.maxlen:]
            if ids:
                out[row, self.maxlen - len(ids):] = ids
        return out

    def _lstm_max(self, x: np.ndarray, direction: str) -> np.ndarray:
        """max over time of the hidden states, x of shape (n, steps, 50) in processing order."""
        n, steps, _ = x.shape
        units = self._recurrent[direction].shape[0]
        gates_x = x @ self._kernel[direction] + self._bias[direction]  # (n, steps, 4*units)
        h = np.zeros((n, units), dtype=np.float32)
        c = np.zeros((n, units), dtype=np.float32)
        best = np.full((n, units), -np.inf, dtype=np.float32)
        u = self._recurrent[direction]
        for t in range(steps):
            z = gates_x[:, t] + h @ u
            i = np.clip(np.float32(0.2) * z[:, :units] + np.float32(0.5), 0, 1)
            f = np.clip(np.float32(0.2) * z[:, units:2 * units] + np.float32(0.5), 0, 1)
            g = np.tanh(z[:, 2 * units:3 * units])
            o = np.clip(np.float32(0.2) * z[:, 3 * units:] + np.float32(0.5), 0, 1)
            c = f * c + i * g
            h = o * np.tanh(c)
            np.maximum(best, h, out=best)
        return best

    def predict(self, texts, rescale: bool = True, batch_size: int = 64) -> np.ndarray:
        """Scores per text, shape (len(texts), 6) float32, columns in `LABELS` order."""
        ids = self.encode(texts)
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            x = self._embedding[ids[start:start + batch_size]]  # (n, steps, 50)
            pooled = np.concatenate([self._lstm_max(x, "forward"), self._lstm_max(x[:, ::-1], "backward")], axis=1)
            hidden = np.maximum(pooled @ self._dense[0] + self._dense[1], 0)
            logits = hidden @ self._output[0] + self._output[1]
            out[start:start + len(x)] = 1 / (1 + np.exp(-logits))
        if rescale:
            out = np.abs((out - self._lo) / self._span)
        return out
