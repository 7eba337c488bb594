#!/usr/bin/env python3
"""Convert the two ported safety classifiers from their PyPI wheels into plain files Swift reads.

Run inside the venv scripts/fetch-safety-ports.sh creates (numpy, h5py, onnx, onnxruntime; no
TensorFlow, no Keras, no scikit-learn). It reads the model files straight out of the wheels:

    python scripts/convert-safety-ports.py toxblock  WHEEL OUT.safetensors OUT.tokenizer.json
    python scripts/convert-safety-ports.py hatesonar WHEEL OUT.json

Every structural fact the Swift ports rely on is checked here, and the script refuses a model
that differs (another layer, activation, op or attribute), so a changed wheel cannot be
converted into something the ports would compute wrongly.

tox-block (Keras BiLSTM) -> two files
-------------------------------------
`tox_block.prediction.make_predictions(texts)` (rescale=True, the default) is, end to end:

    ids   = TokenSequencer.transform(texts)    # the pickled encoder: Keras Tokenizer
                                               # texts_to_sequences, then pad_sequences(maxlen=100)
    p     = model.predict(ids)                 # float32 (n, 6), labels in config.LIST_CLASSES order
    score = abs((p - lo) / (hi - lo))          # per label, lo/hi from config.RESCALE_PROBA, float32

(it refuses an empty list and empty strings; nothing else touches the text: the package's
stop-word/URL remover is not part of prediction, nor was it used in training).

OUT.safetensors holds the float32 weights (names below); its `__metadata__` says what the
layers compute. Shapes, with Keras' gate order i, f, c, o along the 4*units axis:

    embedding                       (20000, 50)   row 0 is the padding id, not masked
    lstm_forward.kernel             (50, 200)     x . kernel
    lstm_forward.recurrent_kernel   (50, 200)     h . recurrent_kernel
    lstm_forward.bias               (200)
    lstm_backward.*                 the same, run over the reversed sequence
    dense.kernel (100, 50), dense.bias (50)       relu, over [max_t h_fwd, max_t h_bwd]
    output.kernel (50, 6), output.bias (6)        sigmoid

    z = x.W + h.U + b;  i, f, o = hard_sigmoid(z_i, z_f, z_o);  g = tanh(z_c)
    c' = f*c + i*g;  h' = o*tanh(c');  hard_sigmoid(x) = clip(0.2*x + 0.5, 0, 1)   (Keras 2)

OUT.tokenizer.json (format "alignd.toxblock-tokenizer", version 1):

    {"format", "format_version", "version": "tox-block-0.1.2",
     "source": {package, package_version, keras_version, python, unicode_version},
     "tokenizer": {"lower", "filters", "split", "num_words", "oov_token", "char_level"},
     "sequence": {"maxlen": 100, "padding": "pre", "truncating": "pre", "value": 0},
     "words": [word of id 1, word of id 2, ..., word of id num_words - 1],
     "labels": [...6], "rescale": [[lo, hi], ...6 in label order],
     "text": {"lower_map", "sigma_cased", "sigma_case_ignorable"}}   # Python str.lower()

Keras' `text_to_word_sequence`: str.lower(), every character of `filters` -> `split`,
str.split(split), drop empty strings; ids >= num_words are dropped (there is no oov token);
the last `maxlen` ids are kept and zeros are put in front.

hatesonar (ONNX TF-IDF + logistic regression) -> one JSON file
---------------------------------------------------------------
`Sonar.ping(text)` feeds the raw string to the ONNX graph (no Python preprocessing):

    StringNormalizer(LOWER)      onnxruntime: towlower_l() per code point in en_US.UTF-8
    Tokenizer(tokenexp)          RE2 matches of [a-zA-Z0-9_]+ (ASCII), mincharnum 1, no marks
    TfIdfVectorizer(TF)          counts of the 28k pool strings (1-grams)
    Mul(idf) ; Normalizer(L2)    a zero row stays zero
    LinearClassifier(SOFTMAX)    scores = x . coef[c] + intercept[c]; softmax; then L1 (no-op)

The lowercase table is taken from onnxruntime itself (every code point through the same
StringNormalizer), so it is what the graph does, not what Python's str.lower() does (they
differ at U+0130). Layout (format "alignd.hatesonar", version 1):

    {"format", "format_version", "version": "hatesonar-0.1.0",
     "source": {package, package_version, onnx_producer, onnxruntime, locale},
     "lower_map": [[cp, lowered cp], ...],        # where towlower is not the identity
     "token_pattern": "[a-zA-Z0-9_]+", "min_chars": 1,
     "terms": [term of column 0, ...], "idf": [...], "norm": "L2",
     "classes": ["hate_speech", "offensive_language", "neither"],
     "coefficients": [[per column] per class], "intercepts": [per class],
     "post_transform": "SOFTMAX"}

Floats are the models' float32 values written as Python's shortest repr of that value.
"""

import ast
import importlib.util
import io
import json
import pickle
import platform
import struct
import sys
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOXBLOCK_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
HATESONAR_CLASSES = ["hate_speech", "offensive_language", "neither"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def wheel_member(wheel: zipfile.ZipFile, name: str) -> bytes:
    try:
        return wheel.read(name)
    except KeyError:
        fail(f"{wheel.filename} has no {name}")
        raise  # unreachable


def wheel_version(wheel: zipfile.ZipFile, distribution: str) -> str:
    for name in wheel.namelist():
        if name.endswith(".dist-info/METADATA"):
            for line in wheel.read(name).decode("utf-8").splitlines():
                if line.startswith("Version: "):
                    return line[len("Version: "):].strip()
    fail(f"{wheel.filename}: no Version in the METADATA of {distribution}")
    return ""


def python_lower_tables() -> dict:
    """str.lower() tables (mapping and Final_Sigma context) of this Python, in the layout of
    scripts/convert-profanity-model.py, which computes them."""
    spec = importlib.util.spec_from_file_location(
        "convert_profanity_model", ROOT / "scripts" / "convert-profanity-model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tables = module.text_tables()
    del tables["word_ranges"]
    return tables


def floats(array) -> list:
    """float32 values as Python floats (exact: every float32 is a float64)."""
    return [float(x) for x in np.asarray(array, dtype=np.float32).ravel()]


# MARK: - tox-block

class _Attributes:
    """Stands in for a pickled class: keeps the instance dictionary, runs no code."""

    def __setstate__(self, state):
        self.__dict__.update(state)


class _EncoderUnpickler(pickle.Unpickler):
    """Unpickles tox-block's encoder without Keras or tox_block: the two classes become plain
    attribute holders, and any other global is refused."""

    STUBS = {
        ("tox_block.data_processing.preprocessors", "TokenSequencer"),
        ("keras_preprocessing.text", "Tokenizer"),
    }
    ALLOWED = {("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "int")}

    def find_class(self, module, name):
        if (module, name) in self.STUBS:
            return type(name, (_Attributes,), {})
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the encoder pickle")


def keras_layer(config: dict, name: str) -> dict:
    layers = [layer for layer in config["config"]["layers"] if layer["name"] == name]
    expect(len(layers) == 1, f"the Keras model has no single layer named {name}")
    return layers[0]


def check_toxblock_graph(model_config: dict) -> None:
    layers = model_config["config"]["layers"]
    expect(model_config["class_name"] in ("Model", "Functional"), "the .h5 is not a functional model")
    expect([layer["class_name"] for layer in layers] == [
        "InputLayer", "Embedding", "Bidirectional", "GlobalMaxPooling1D", "Dense", "Dropout", "Dense",
    ], f"unexpected layer sequence {[layer['class_name'] for layer in layers]}")
    for previous, layer in zip(layers, layers[1:]):
        expect(layer["inbound_nodes"] == [[[previous["name"], 0, 0, {}]]],
               f"layer {layer['name']} is not fed by {previous['name']} alone")
    expect(layers[0]["config"]["batch_input_shape"] == [None, 100], "input is not (batch, 100)")
    embedding = layers[1]["config"]
    expect(embedding["input_dim"] == 20000 and embedding["output_dim"] == 50, "embedding is not 20000 x 50")
    expect(embedding["mask_zero"] is False, "embedding masks padding (the port assumes no mask)")
    bidirectional = layers[2]["config"]
    expect(bidirectional["merge_mode"] == "concat", "Bidirectional merge_mode is not concat")
    expect("backward_layer" not in bidirectional, "Bidirectional has a separate backward layer config")
    lstm = bidirectional["layer"]
    expect(lstm["class_name"] == "LSTM", "the recurrent layer is not an LSTM")
    c = lstm["config"]
    for key, value in [("units", 50), ("activation", "tanh"), ("recurrent_activation", "hard_sigmoid"),
                       ("use_bias", True), ("return_sequences", True), ("go_backwards", False),
                       ("stateful", False), ("time_major", False)]:
        expect(c.get(key) == value, f"LSTM {key} is {c.get(key)!r}, expected {value!r}")
    expect(layers[3]["config"]["data_format"] == "channels_last", "max pooling is not channels_last")
    dense, output = layers[4]["config"], layers[6]["config"]
    expect(dense["units"] == 50 and dense["activation"] == "relu" and dense["use_bias"], "dense is not relu(50)")
    expect(output["units"] == 6 and output["activation"] == "sigmoid" and output["use_bias"],
           "output is not sigmoid(6)")


def toxblock_weights(h5, model_config: dict) -> list:
    """(name, float32 array) in file order, read by layer and weight name from the .h5."""
    weights = h5["model_weights"]

    def read(layer: str, path: str, shape: tuple) -> np.ndarray:
        group = weights[layer]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        expect(path in names, f"layer {layer} has no weight {path} (has {names})")
        array = np.asarray(group[path], dtype=np.float32)
        expect(array.shape == shape, f"{layer}/{path} has shape {array.shape}, expected {shape}")
        expect(bool(np.isfinite(array).all()), f"{layer}/{path} holds a non-finite value")
        return np.ascontiguousarray(array)

    bidirectional = keras_layer(model_config, "bidirectional")["name"]
    out = [("embedding", read("embedding", "embedding/embeddings:0", (20000, 50)))]
    for direction in ("forward", "backward"):
        prefix = f"{bidirectional}/{direction}_lstm"
        out += [
            (f"lstm_{direction}.kernel", read(bidirectional, f"{prefix}/kernel:0", (50, 200))),
            (f"lstm_{direction}.recurrent_kernel", read(bidirectional, f"{prefix}/recurrent_kernel:0", (50, 200))),
            (f"lstm_{direction}.bias", read(bidirectional, f"{prefix}/bias:0", (200,))),
        ]
    out += [
        ("dense.kernel", read("dense", "dense/kernel:0", (100, 50))),
        ("dense.bias", read("dense", "dense/bias:0", (50,))),
        ("output.kernel", read("dense_1", "dense_1/kernel:0", (50, 6))),
        ("output.bias", read("dense_1", "dense_1/bias:0", (6,))),
    ]
    return out


def write_safetensors(path: str, tensors: list, metadata: dict) -> None:
    """A safetensors file (little-endian F32), tensors in the given order, header padded with
    spaces to a multiple of 8 bytes."""
    header = {"__metadata__": metadata}
    offset = 0
    for name, array in tensors:
        size = array.size * 4
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for _, array in tensors:
            f.write(array.astype("<f4", copy=False).tobytes(order="C"))


def package_config(source: str) -> dict:
    """The literal constants of tox_block/config/config.py, without running it."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def convert_toxblock(wheel_path: str, weights_out: str, tokenizer_out: str) -> None:
    import h5py

    wheel = zipfile.ZipFile(wheel_path)
    version = wheel_version(wheel, "tox-block")
    expect(wheel_member(wheel, "tox_block/VERSION").decode().strip() == version, "VERSION differs from METADATA")
    config = package_config(wheel_member(wheel, "tox_block/config/config.py").decode("utf-8"))
    expect(config.get("LIST_CLASSES") == TOXBLOCK_LABELS, f"LIST_CLASSES is {config.get('LIST_CLASSES')}")
    expect(config.get("MAX_SEQUENCE_LENGTH") == 100 and config.get("MAX_FEATURES") == 20000,
           "MAX_SEQUENCE_LENGTH / MAX_FEATURES changed")
    rescale = config.get("RESCALE_PROBA")
    expect(isinstance(rescale, dict) and sorted(rescale) == sorted(TOXBLOCK_LABELS), "RESCALE_PROBA changed shape")
    # prediction.py must still be encode -> predict -> rescale with abs((p - min) / (max - min)).
    prediction = wheel_member(wheel, "tox_block/prediction.py").decode("utf-8")
    for needle in ["encoded_texts = _encoder.transform(texts)", "_model.predict(encoded_texts)",
                   "np.abs((p - min) / (max - min))", "rescale: bool = True"]:
        expect(needle in prediction, f"tox_block/prediction.py no longer contains {needle!r}")
    preprocessors = wheel_member(wheel, "tox_block/data_processing/preprocessors.py").decode("utf-8")
    expect("sequence.pad_sequences(sequences, maxlen=self.max_sequence_length)" in " ".join(preprocessors.split()),
           "TokenSequencer.transform no longer pads with the Keras defaults")

    encoder = _EncoderUnpickler(io.BytesIO(wheel_member(wheel, f"tox_block/trained_models/encoder_{version}.pkl"))).load()
    expect(type(encoder).__name__ == "TokenSequencer", "the encoder is not a TokenSequencer")
    expect(encoder.max_sequence_length == 100 and encoder.max_features == 20000, "encoder settings changed")
    tokenizer = encoder.tokenizer.__dict__
    expect(tokenizer["char_level"] is False and tokenizer["oov_token"] is None, "char_level or oov_token is set")
    expect(tokenizer["lower"] is True and tokenizer["split"] == " ", "lower/split changed")
    num_words = tokenizer["num_words"]
    expect(num_words == 20000, f"num_words is {num_words}")
    word_index = tokenizer["word_index"]
    by_id = {}
    for word, i in word_index.items():
        if 1 <= i < num_words:
            expect(i not in by_id, f"two words share id {i}")
            by_id[i] = word
    expect(sorted(by_id) == list(range(1, num_words)), "ids 1..<num_words are not all used")
    words = [by_id[i] for i in range(1, num_words)]
    expect(all(w and w.split(" ") == [w] for w in words), "a vocabulary word is empty or holds the split character")

    with h5py.File(io.BytesIO(wheel_member(wheel, f"tox_block/trained_models/lstm_model_{version}.h5")), "r") as h5:
        keras_version = h5.attrs["keras_version"]
        keras_version = keras_version.decode() if isinstance(keras_version, bytes) else str(keras_version)
        model_config = json.loads(h5.attrs["model_config"])
        check_toxblock_graph(model_config)
        tensors = toxblock_weights(h5, model_config)

    metadata = {
        "format": "alignd.toxblock",
        "format_version": "1",
        "version": f"tox-block-{version}",
        "source": f"tox-block=={version} tox_block/trained_models/lstm_model_{version}.h5 (Keras {keras_version})",
        "architecture": "embedding -> bidirectional LSTM(50, return_sequences, concat) -> global max pool "
                        "-> dense(50, relu) -> dense(6, sigmoid)",
        "lstm": "gates i,f,c,o; recurrent activation hard_sigmoid = clip(0.2x+0.5, 0, 1); activation tanh",
        "labels": ",".join(TOXBLOCK_LABELS),
    }
    write_safetensors(weights_out, tensors, metadata)

    document = {
        "format": "alignd.toxblock-tokenizer",
        "format_version": 1,
        "version": f"tox-block-{version}",
        "source": {
            "package": "tox-block",
            "package_version": version,
            "keras_version": keras_version,
            "python": platform.python_version(),
            "unicode_version": unicodedata.unidata_version,
        },
        "tokenizer": {
            "lower": True,
            "filters": tokenizer["filters"],
            "split": tokenizer["split"],
            "num_words": num_words,
            "oov_token": None,
            "char_level": False,
        },
        "sequence": {"maxlen": encoder.max_sequence_length, "padding": "pre", "truncating": "pre", "value": 0},
        "words": words,
        "labels": TOXBLOCK_LABELS,
        "rescale": [[float(rescale[label][0]), float(rescale[label][1])] for label in TOXBLOCK_LABELS],
        "text": python_lower_tables(),
    }
    with open(tokenizer_out, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {weights_out} and {tokenizer_out}: tox-block {version}, {len(words)} words, "
          f"{sum(a.size for _, a in tensors)} parameters", file=sys.stderr)


# MARK: - hatesonar

def onnx_attributes(node) -> dict:
    import onnx

    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode("utf-8") if isinstance(value, bytes) else value
    return values


def onnxruntime_lower_map() -> list:
    """[code point, towlower] wherever onnxruntime's StringNormalizer(LOWER) changes a scalar,
    found by running every code point (but surrogates) through that op."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER", is_case_sensitive=0)
    graph = helper.make_graph([node], "lower", [helper.make_tensor_value_info("x", TensorProto.STRING, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    lowered = session.run(None, {"x": np.array([chr(cp) for cp in points], dtype=object)})[0]
    out = []
    for cp, low in zip(points, lowered):
        expect(len(low) == 1, f"StringNormalizer maps U+{cp:04X} to {len(low)} code points")
        if ord(low) != cp:
            out.append([cp, ord(low)])
    return out


def convert_hatesonar(wheel_path: str, out_path: str) -> None:
    import onnx
    import onnxruntime as ort

    wheel = zipfile.ZipFile(wheel_path)
    version = wheel_version(wheel, "hatesonar")
    api = wheel_member(wheel, "hatesonar/api.py").decode("utf-8")
    for needle in ['test_inputs = np.array([text], dtype=object)', 'self.sess.run(None, {"text": test_inputs})',
                   'self.mapping = {0: "hate_speech", 1: "offensive_language", 2: "neither"}']:
        expect(needle in api, f"hatesonar/api.py no longer contains {needle!r}")
    model_bytes = wheel_member(wheel, "hatesonar/model/model.onnx")
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    ops = [(node.domain, node.op_type) for node in graph.node]
    expect(ops == [("", "Reshape"), ("", "StringNormalizer"), ("com.microsoft", "Tokenizer"), ("", "Flatten"),
                   ("", "TfIdfVectorizer"), ("", "Mul"), ("ai.onnx.ml", "Normalizer"),
                   ("ai.onnx.ml", "LinearClassifier"), ("", "Cast"), ("ai.onnx.ml", "Normalizer"),
                   ("ai.onnx.ml", "ZipMap")], f"unexpected graph {ops}")
    for previous, node in zip(graph.node[:8], graph.node[1:8]):
        expect(node.input[0] == previous.output[0], f"{node.op_type} is not fed by {previous.op_type}")
    expect(graph.node[9].input[0] == graph.node[7].output[1], "the L1 normalizer does not read the probabilities")
    expect(graph.node[10].input[0] == graph.node[9].output[0], "ZipMap does not read the L1-normalized probabilities")
    nodes = dict(zip(["Reshape", "StringNormalizer", "Tokenizer", "Flatten", "TfIdfVectorizer", "Mul", "Normalizer",
                      "LinearClassifier", "Cast", "Normalizer/L1", "ZipMap"], graph.node))
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer}
    expect(list(initializers.get(nodes["Reshape"].input[1], [])) == [-1], "the input is not reshaped to (-1)")
    expect(onnx_attributes(nodes["Flatten"]) == {}, "Flatten has attributes")

    normalizer = onnx_attributes(nodes["StringNormalizer"])
    expect(normalizer == {"case_change_action": "LOWER", "is_case_sensitive": 0},
           f"StringNormalizer attributes {normalizer}")
    tokenizer = onnx_attributes(nodes["Tokenizer"])
    expect(tokenizer == {"mark": 0, "mincharnum": 1, "pad_value": "#", "tokenexp": "[a-zA-Z0-9_]+"},
           f"Tokenizer attributes {tokenizer}")
    tfidf = onnx_attributes(nodes["TfIdfVectorizer"])
    expect(tfidf["mode"] == "TF" and tfidf["min_gram_length"] == 1 and tfidf["max_gram_length"] == 1
           and tfidf["max_skip_count"] == 0 and list(tfidf["ngram_counts"]) == [0], f"TfIdfVectorizer {tfidf}")
    pool = [s.decode("utf-8") if isinstance(s, bytes) else s for s in tfidf["pool_strings"]]
    n = len(pool)
    expect(len(set(pool)) == n and "#" not in pool, "pool strings repeat or contain the pad value")
    expect(sorted(tfidf["ngram_indexes"]) == list(range(n)), "ngram_indexes is not a permutation")
    expect(set(tfidf.get("weights", [1.0])) == {1.0}, "TF weights are not all 1")
    terms = [None] * n
    for term, column in zip(pool, tfidf["ngram_indexes"]):
        terms[column] = term
    idf_name = list(nodes["Mul"].input)[1]
    idf = initializers.get(idf_name)
    expect(idf is not None and idf.shape == (n,) and idf.dtype == np.float32, "idf is not float32 (n)")
    expect(onnx_attributes(nodes["Normalizer"]) == {"norm": "L2"}, "the tf-idf normalizer is not L2")
    expect(onnx_attributes(nodes["Normalizer/L1"]) == {"norm": "L1"}, "the probability normalizer is not L1")
    classifier = onnx_attributes(nodes["LinearClassifier"])
    expect(list(classifier["classlabels_ints"]) == [0, 1, 2] and classifier["multi_class"] == 1
           and classifier["post_transform"] == "SOFTMAX", f"LinearClassifier {classifier['post_transform']}")
    coefficients = np.asarray(classifier["coefficients"], dtype=np.float32)
    expect(coefficients.size == 3 * n, "coefficients are not 3 x n")
    intercepts = np.asarray(classifier["intercepts"], dtype=np.float32)
    expect(intercepts.shape == (3,), "intercepts are not 3")

    document = {
        "format": "alignd.hatesonar",
        "format_version": 1,
        "version": f"hatesonar-{version}",
        "source": {
            "package": "hatesonar",
            "package_version": version,
            "onnx_producer": f"{model.producer_name} {model.producer_version}",
            "onnxruntime": ort.__version__,
            "locale": "en_US.UTF-8",
        },
        "lower_map": onnxruntime_lower_map(),
        "token_pattern": tokenizer["tokenexp"],
        "min_chars": 1,
        "terms": terms,
        "idf": floats(idf),
        "norm": "L2",
        "classes": HATESONAR_CLASSES,
        "coefficients": [floats(row) for row in coefficients.reshape(3, n)],
        "intercepts": floats(intercepts),
        "post_transform": "SOFTMAX",
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    self_check(model_bytes, out_path)
    print(f"wrote {out_path}: hatesonar {version}, {n} terms, "
          f"{int((coefficients != 0).sum())} non-zero coefficients", file=sys.stderr)


def self_check(model_bytes: bytes, converted: str) -> None:
    """The numpy reference (Training/ports/hatesonar.py) on the converted file against
    onnxruntime on the original graph, on a few texts."""
    import onnxruntime as ort

    spec = importlib.util.spec_from_file_location("hatesonar_port", ROOT / "Training" / "ports" / "hatesonar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts = ["", "!!!", "Have a nice day", "you stupid bitch", "KILL ALL OF THEM \u212a\u0130", "fück ｆｕｃｋ 😡"]
    ours = module.HateSonar(path=converted).predict(texts)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    for text, row in zip(texts, ours):
        _, probabilities = session.run(None, {"text": np.array([text], dtype=object)})
        theirs = [probabilities[0][k] for k in range(3)]
        expect(max(abs(a - b) for a, b in zip(row, theirs)) <= 1e-5,
               f"converted hatesonar differs from onnxruntime on {text!r}: {list(row)} vs {theirs}")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "toxblock":
        convert_toxblock(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "hatesonar":
        convert_hatesonar(*sys.argv[2:])
    else:
        fail("usage: convert-safety-ports.py toxblock WHEEL OUT.safetensors OUT.tokenizer.json\n"
             "       convert-safety-ports.py hatesonar WHEEL OUT.json")


if __name__ == "__main__":
    main()
