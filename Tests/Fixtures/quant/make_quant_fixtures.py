#!/usr/bin/env python3
"""Golden dequantization fixtures from gguf-py (gguf.quants).

For each weight type: a few blocks of random bytes (with the f16 scale fields set to small finite
values, so no inf/NaN), and the floats gguf-py's reference dequantizer produces for them. Also, for
the types gguf-py can quantize, random floats quantized by gguf-py (checks our reader of real
quantizer output). Run with the reference venv:
    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/quant/make_quant_fixtures.py
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)

# (type, offsets of f16 scale fields within a block, block bytes)
TYPES = {
    "Q4_0": (T.Q4_0, [0], 18),
    "Q4_1": (T.Q4_1, [0, 2], 20),
    "Q8_0": (T.Q8_0, [0], 34),
    "Q4_K": (T.Q4_K, [0, 2], 144),
    "Q6_K": (T.Q6_K, [208], 210),
    "F16": (T.F16, None, 2),
    "BF16": (T.BF16, None, 2),
}

out = {}
for name, (qt, scale_offsets, block_bytes) in TYPES.items():
    if scale_offsets is None:
        vals = rng.standard_normal(64).astype(np.float32) * 3
        if qt == T.F16:
            raw = vals.astype(np.float16).view(np.uint8)
        else:
            raw = quants.quantize(vals, qt).view(np.uint8).reshape(-1)
    else:
        nblocks = 3
        raw = rng.integers(0, 256, size=(nblocks, block_bytes), dtype=np.uint8)
        for b in range(nblocks):
            for off in scale_offsets:
                s = np.float16(rng.uniform(-0.5, 0.5))
                raw[b, off:off + 2] = np.frombuffer(s.tobytes(), dtype=np.uint8)
        raw = raw.reshape(-1)
    deq = quants.dequantize(raw, qt).astype(np.float32).reshape(-1)
    entry = {"random_bytes": raw.tolist(), "random_expected": [float(x) for x in deq]}
    if qt in (T.Q4_0, T.Q4_1, T.Q8_0):
        vals = rng.standard_normal(64).astype(np.float32)
        q = quants.quantize(vals, qt).view(np.uint8).reshape(-1)
        entry["quantized_bytes"] = q.tolist()
        entry["quantized_expected"] = [float(x) for x in quants.dequantize(q, qt).astype(np.float32).reshape(-1)]
    out[name] = entry

with open(os.path.join(HERE, "dequant.json"), "w") as f:
    json.dump(out, f)
print("wrote dequant.json")
