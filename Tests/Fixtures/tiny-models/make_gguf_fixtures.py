#!/usr/bin/env python3
"""A small GGUF holding every metadata value type, a non-default alignment and tensors of several
types, written with gguf-py's GGUFWriter, plus a JSON dump of it made by gguf-py's GGUFReader.
    /var/cache/alignd/venv-ref/bin/python Tests/Fixtures/tiny-models/make_gguf_fixtures.py
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import quants

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf")
os.makedirs(HERE, exist_ok=True)
path = os.path.join(HERE, "all-types.gguf")
rng = np.random.default_rng(7)

w = gguf.GGUFWriter(path, "llama")
w.add_custom_alignment(64)
w.add_uint8("t.u8", 200)
w.add_int8("t.i8", -100)
w.add_uint16("t.u16", 60000)
w.add_int16("t.i16", -30000)
w.add_uint32("t.u32", 4000000000)
w.add_int32("t.i32", -2000000000)
w.add_float32("t.f32", 3.25)
w.add_uint64("t.u64", 18000000000000000000)
w.add_int64("t.i64", -9000000000000000000)
w.add_float64("t.f64", -1.0e-300)
w.add_bool("t.bool", True)
w.add_string("t.str", "héllo ☃ <|im_start|>")
w.add_string("t.empty", "")
w.add_array("t.arr_str", ["a", "", "ünï", "Ġthe"])
w.add_array("t.arr_i32", [1, -2, 3, 2147483647])
w.add_array("t.arr_f32", [0.5, -1.5, 1e10])
w.add_key_value("t.arr_nested", [[1, 2], [3]], VT.ARRAY, sub_type=VT.ARRAY)
w.add_key_value("t.arr_bool", [True, False], VT.ARRAY, sub_type=VT.BOOL)
a = rng.standard_normal((3, 32)).astype(np.float32)
w.add_tensor("a.f32", a)
w.add_tensor("b.f16", rng.standard_normal((2, 8)).astype(np.float16))
q = quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), QT.Q8_0)
w.add_tensor("c.q8_0", q, raw_dtype=QT.Q8_0)
w.add_tensor("d.vec", rng.standard_normal(5).astype(np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

r = gguf.GGUFReader(path)
def value(field):
    t = field.types
    if t[0] == VT.ARRAY:
        if len(t) > 1 and t[1] == VT.ARRAY:
            return None  # nested arrays: gguf-py's reader does not decode them; checked structurally
        return [field.contents(i) for i in range(len(field.data))]
    return field.contents()
meta = {}
for name, f in r.fields.items():
    if name.startswith("GGUF."):
        continue
    meta[name] = {"types": [int(x) for x in f.types], "value": value(f)}
tensors = []
for t in r.tensors:
    tensors.append({"name": t.name, "shape": [int(x) for x in t.shape], "type": int(t.tensor_type),
                    "offset": int(t.data_offset), "bytes": int(t.n_bytes),
                    "values": [float(x) for x in quants.dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)]})
with open(os.path.join(HERE, "all-types.json"), "w") as f:
    json.dump({"alignment": 64, "metadata": meta, "tensors": tensors}, f, indent=1)
print("wrote", path)
