import Foundation

/// Where a model came from.
public enum ModelFormat: String, Sendable, Equatable {
  case gguf
  case huggingFace
}

/// Facts about a loaded model besides its shape: origin and special tokens.
public struct ModelMetadata: Sendable, Equatable {
  /// GGUF file or Hugging Face folder.
  public var format: ModelFormat
  /// The GGUF file or Hugging Face folder.
  public var path: String
  /// `general.name` or the config's `_name_or_path`, when present.
  public var name: String?
  /// Beginning-of-sequence token id, if declared.
  public var bosTokenID: Int32?
  /// Token ids that end generation (eos, eot, generation_config's eos list).
  public var eosTokenIDs: [Int32]
  /// Padding token id, if declared.
  public var padTokenID: Int32?
  /// Label names of a classification head (`id2label`), in label order.
  public var labels: [String]
}

/// Supplies the tensors of a checkpoint by name, whatever the container format.
protocol TensorSource {
  var path: String { get }
  func has(_ name: String) -> Bool
  /// Shape as (rows, cols) for a 2-D tensor with `cols` contiguous; 1-D as (1, n).
  func matrixShape(_ name: String) -> (rows: Int, cols: Int)?
  func weight(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix
}

extension TensorSource {
  /// A 1-D tensor (norm weights, biases) as floats, whatever its stored type.
  func vector(_ name: String, count: Int) throws -> [Float] {
    let w = try weight(name, rows: 1, cols: count)
    var out = [Float](repeating: 0, count: count)
    out.withUnsafeMutableBufferPointer { w.dequantize(row: 0, into: $0.baseAddress!) }
    return out
  }

  func checkedWeight(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
    guard has(name) else { throw EngineError.missingTensor(path: path, name: name) }
    return try weight(name, rows: rows, cols: cols)
  }
}

struct GGUFTensorSource: TensorSource {
  let gguf: GGUFFile
  var path: String { gguf.path }

  func has(_ name: String) -> Bool { gguf.tensor(named: name) != nil }

  func matrixShape(_ name: String) -> (rows: Int, cols: Int)? {
    guard let t = gguf.tensor(named: name) else { return nil }
    return (t.elementCount / max(t.shape[0], 1), t.shape[0])
  }

  func weight(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
    guard let t = gguf.tensor(named: name) else { throw EngineError.missingTensor(path: path, name: name) }
    guard let type = t.type, type.isSupportedWeight else {
      throw EngineError.unsupported(path: path, reason: "tensor \(name) has type \(t.type?.description ?? "id \(t.typeID)")")
    }
    let found = t.shape.count == 1 ? [t.shape[0]] : t.shape
    guard t.shape[0] == cols, t.elementCount == rows * cols, t.shape.count <= 2 else {
      throw EngineError.shapeMismatch(path: path, name: name, expected: [cols, rows], found: found)
    }
    let p = try gguf.data(of: t)
    return WeightMatrix(name: name, type: type, rows: rows, cols: cols, data: p, rowBytes: type.rowBytes(elements: cols)!)
  }
}

struct SafeTensorSource: TensorSource {
  let checkpoint: SafeTensorsCheckpoint
  var path: String { checkpoint.directory }

  func has(_ name: String) -> Bool { checkpoint.tensor(named: name) != nil }

  func matrixShape(_ name: String) -> (rows: Int, cols: Int)? {
    guard let (_, t) = checkpoint.tensor(named: name) else { return nil }
    if t.shape.count == 1 { return (1, t.shape[0]) }
    guard t.shape.count == 2 else { return nil }
    return (t.shape[0], t.shape[1])
  }

  func weight(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
    guard let (file, t) = checkpoint.tensor(named: name) else {
      throw EngineError.missingTensor(path: path, name: name)
    }
    guard let type = t.elementType else {
      throw EngineError.unsupported(path: file.path, reason: "tensor \(name) has dtype \(t.dtype)")
    }
    let ok = (t.shape == [rows, cols]) || (rows == 1 && t.shape == [cols])
    guard ok else { throw EngineError.shapeMismatch(path: file.path, name: name, expected: [rows, cols], found: t.shape) }
    let p = try file.data(of: t)
    return WeightMatrix(name: name, type: type, rows: rows, cols: cols, data: p, rowBytes: type.rowBytes(elements: cols)!)
  }
}

// MARK: Hyperparameters from files

enum HyperparameterReader {
  static func fromGGUF(_ g: GGUFFile) throws -> (ModelHyperparameters, ModelMetadata) {
    let path = g.path
    guard let archName = g.architecture else {
      throw EngineError.malformedFile(path: path, reason: "no general.architecture")
    }
    guard let arch = ModelArchitecture(rawValue: archName) else {
      throw EngineError.unsupported(path: path, reason: "architecture \(archName) (supported: llama, qwen2, qwen3)")
    }
    func req(_ key: String) throws -> Int {
      guard let v = g.int("\(archName).\(key)") else {
        throw EngineError.malformedFile(path: path, reason: "missing \(archName).\(key)")
      }
      return v
    }
    let dim = try req("embedding_length")
    let heads = try req("attention.head_count")
    let kvHeads = g.int("\(archName).attention.head_count_kv") ?? heads
    let headDim = g.int("\(archName).attention.key_length") ?? (heads > 0 ? dim / heads : 0)
    var vocab = g.int("\(archName).vocab_size") ?? g.metadata["tokenizer.ggml.tokens"]?.arrayValue?.count ?? 0
    if vocab == 0, let t = g.tensor(named: "token_embd.weight"), t.shape.count == 2 { vocab = t.shape[1] }
    var scaling = RopeScaling.none
    if let type = g.string("\(archName).rope.scaling.type"), type == "linear",
      let f = g.float("\(archName).rope.scaling.factor"), f > 0, f != 1
    {
      scaling = .linear(factor: f)
    }
    let tied = g.tensor(named: "output.weight") == nil
    var hp = ModelHyperparameters(
      architecture: arch, vocabSize: vocab, hiddenSize: dim,
      intermediateSize: try req("feed_forward_length"), layerCount: try req("block_count"),
      headCount: heads, kvHeadCount: kvHeads, headDim: headDim,
      ropeDimension: g.int("\(archName).rope.dimension_count") ?? headDim,
      rmsNormEps: g.float("\(archName).attention.layer_norm_rms_epsilon") ?? 1e-5,
      ropeTheta: g.float("\(archName).rope.freq_base") ?? 10_000,
      ropeScaling: scaling,
      ropeStyle: arch == .llama ? .interleaved : .halves,
      contextLength: g.int("\(archName).context_length") ?? 2048,
      tiedEmbeddings: tied,
      attentionBias: g.tensor(named: "blk.0.attn_q.bias") != nil,
      qkNorm: g.tensor(named: "blk.0.attn_q_norm.weight") != nil,
      head: .causalLM)
    if arch == .qwen3 { hp.qkNorm = true }
    try hp.validate(path: path)
    var eos: [Int32] = []
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
      if let v = g.int(key), let i = Int32(exactly: v), !eos.contains(i) { eos.append(i) }
    }
    let meta = ModelMetadata(
      format: .gguf, path: path, name: g.string("general.name"),
      bosTokenID: g.int("tokenizer.ggml.bos_token_id").flatMap { Int32(exactly: $0) },
      eosTokenIDs: eos,
      padTokenID: g.int("tokenizer.ggml.padding_token_id").flatMap { Int32(exactly: $0) },
      labels: [])
    return (hp, meta)
  }

  static func readJSON(_ path: String) throws -> [String: Any]? {
    guard FileManager.default.fileExists(atPath: path) else { return nil }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw EngineError.cannotOpen(path: path, reason: "unreadable")
    }
    guard let obj = try? JSONSerialization.jsonObject(with: data), let dict = obj as? [String: Any] else {
      throw EngineError.malformedFile(path: path, reason: "not a JSON object")
    }
    return dict
  }

  static func tokenIDs(_ v: Any?) -> [Int32] {
    if let i = v as? Int, let x = Int32(exactly: i) { return [x] }
    if let a = v as? [Any] { return a.compactMap { ($0 as? Int).flatMap { Int32(exactly: $0) } } }
    return []
  }

  static func fromHF(directory: String) throws -> (ModelHyperparameters, ModelMetadata) {
    let path = directory + "/config.json"
    guard let c = try readJSON(path) else { throw EngineError.cannotOpen(path: path, reason: "no config.json") }
    func bad(_ r: String) -> EngineError { .malformedFile(path: path, reason: r) }
    func int(_ k: String) -> Int? { c[k] as? Int }
    func num(_ k: String, in d: [String: Any]? = nil) -> Double? {
      let v = (d ?? c)[k]
      if let x = v as? Double { return x }
      if let x = v as? Int { return Double(x) }
      return nil
    }
    func req(_ k: String) throws -> Int {
      guard let v = int(k) else { throw bad("missing integer \(k)") }
      return v
    }
    let modelType = c["model_type"] as? String ?? ""
    let archs = c["architectures"] as? [String] ?? []
    let arch: ModelArchitecture
    switch modelType {
    case "llama", "mistral": arch = .llama
    case "qwen2": arch = .qwen2
    case "qwen3": arch = .qwen3
    default:
      throw EngineError.unsupported(path: path, reason: "model_type \(modelType) (supported: llama, mistral, qwen2, qwen3)")
    }
    if modelType == "mistral", let w = c["sliding_window"] as? Int, w < (int("max_position_embeddings") ?? 0) {
      throw EngineError.unsupported(path: path, reason: "sliding-window attention (\(w))")
    }
    var head = ModelHead.causalLM
    var labels: [String] = []
    if archs.contains(where: { $0.hasSuffix("ForSequenceClassification") }) {
      var n = int("num_labels") ?? 0
      if let id2label = c["id2label"] as? [String: Any] {
        n = max(n, id2label.count)
        labels = (0..<id2label.count).map { (id2label[String($0)] as? String) ?? "LABEL_\($0)" }
      }
      if n == 0 { n = 2 }
      head = .sequenceClassification(labels: n)
      if labels.count != n { labels = (0..<n).map { "LABEL_\($0)" } }
    } else if let a = archs.first, !a.hasSuffix("ForCausalLM") {
      throw EngineError.unsupported(path: path, reason: "architecture \(a) (supported: *ForCausalLM, *ForSequenceClassification)")
    }
    let dim = try req("hidden_size")
    let heads = try req("num_attention_heads")
    // transformers 5 moves rope settings into `rope_parameters`; 4.x uses rope_theta / rope_scaling.
    let ropeParams = (c["rope_parameters"] as? [String: Any]) ?? (c["rope_scaling"] as? [String: Any])
    let theta = num("rope_theta") ?? ropeParams.flatMap { num("rope_theta", in: $0) } ?? 10_000
    var scaling = RopeScaling.none
    if let rp = ropeParams {
      let type = (rp["rope_type"] as? String) ?? (rp["type"] as? String) ?? "default"
      switch type {
      case "default": break
      case "linear":
        guard let f = num("factor", in: rp), f > 0 else { throw bad("linear rope scaling without factor") }
        scaling = .linear(factor: Float(f))
      case "llama3":
        guard let f = num("factor", in: rp), let lo = num("low_freq_factor", in: rp),
          let hi = num("high_freq_factor", in: rp), let orig = rp["original_max_position_embeddings"] as? Int,
          f > 0, hi > lo
        else { throw bad("incomplete llama3 rope scaling") }
        scaling = .llama3(factor: Float(f), lowFreqFactor: Float(lo), highFreqFactor: Float(hi), originalContextLength: orig)
      default:
        throw EngineError.unsupported(path: path, reason: "rope scaling type \(type)")
      }
    }
    let headDim = int("head_dim") ?? (heads > 0 ? dim / heads : 0)
    var hp = ModelHyperparameters(
      architecture: arch, vocabSize: try req("vocab_size"), hiddenSize: dim,
      intermediateSize: try req("intermediate_size"), layerCount: try req("num_hidden_layers"),
      headCount: heads, kvHeadCount: int("num_key_value_heads") ?? heads, headDim: headDim,
      ropeDimension: headDim,
      rmsNormEps: Float(num("rms_norm_eps") ?? 1e-6), ropeTheta: Float(theta), ropeScaling: scaling,
      ropeStyle: .halves, contextLength: int("max_position_embeddings") ?? 2048,
      tiedEmbeddings: (c["tie_word_embeddings"] as? Bool) ?? (arch == .llama ? false : false),
      attentionBias: arch == .qwen2 ? true : ((c["attention_bias"] as? Bool) ?? false),
      qkNorm: arch == .qwen3, head: head)
    if let f = num("partial_rotary_factor"), f > 0, f < 1 {
      hp.ropeDimension = Int(Double(headDim) * f) / 2 * 2
    }
    try hp.validate(path: path)
    var eos = tokenIDs(c["eos_token_id"])
    var bos = tokenIDs(c["bos_token_id"]).first
    var pad = tokenIDs(c["pad_token_id"]).first
    if let g = try readJSON(directory + "/generation_config.json") {
      for e in tokenIDs(g["eos_token_id"]) where !eos.contains(e) { eos.append(e) }
      bos = bos ?? tokenIDs(g["bos_token_id"]).first
      pad = pad ?? tokenIDs(g["pad_token_id"]).first
    }
    let meta = ModelMetadata(
      format: .huggingFace, path: directory, name: c["_name_or_path"] as? String,
      bosTokenID: bos, eosTokenIDs: eos, padTokenID: pad, labels: labels)
    return (hp, meta)
  }
}
