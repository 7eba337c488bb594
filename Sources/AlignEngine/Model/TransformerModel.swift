import Foundation

/// How to prepare weights when loading (runtime memory/speed trade-offs, not model facts).
public struct ModelLoadOptions: Sendable, Equatable {
  /// Keep a dequantized float copy of every matrix when all copies together take at most this many
  /// bytes, so batched forwards (prefill, many sequences) run plain sgemm instead of dequantizing
  /// tiles on every call. SmolLM2-135M needs ~540 MB and gains only ~5% (prefill, 32-sequence
  /// decode: sgemm dominates), so the default (0) makes no copies.
  public var denseCopyLimitBytes: Int = 0

  /// Creates a value from its fields.
  public init(denseCopyLimitBytes: Int = 0) {
    self.denseCopyLimitBytes = denseCopyLimitBytes
  }
}

/// Weights of one transformer block.
struct LayerWeights: Sendable {
  var attnNorm: [Float]  // (hidden)
  var wq: WeightMatrix  // (qDim, hidden)
  var wk: WeightMatrix  // (kvDim, hidden)
  var wv: WeightMatrix  // (kvDim, hidden)
  var wo: WeightMatrix  // (hidden, qDim)
  var bq: [Float]?  // (qDim)
  var bk: [Float]?  // (kvDim)
  var bv: [Float]?  // (kvDim)
  var qNorm: [Float]?  // (headDim)
  var kNorm: [Float]?  // (headDim)
  var ffnNorm: [Float]  // (hidden)
  var wGate: WeightMatrix  // (ffn, hidden)
  var wUp: WeightMatrix  // (ffn, hidden)
  var wDown: WeightMatrix  // (hidden, ffn)
}

/// An immutable, fully loaded transformer: hyperparameters, metadata and weights.
///
/// Weights stay memory-mapped from the checkpoint. A model is safe to share between threads; running
/// it needs an `Engine` (activation buffers) and a `KVCache`.
public final class TransformerModel: Sendable {
  /// The network's shape as stored in the checkpoint.
  public let hyperparameters: ModelHyperparameters
  /// Origin and special tokens.
  public let metadata: ModelMetadata
  /// The GGUF file (for `tokenizer.*` and other metadata), when loaded from GGUF.
  public let gguf: GGUFFile?
  /// The safetensors checkpoint, when loaded from a Hugging Face folder.
  public let safetensors: SafeTensorsCheckpoint?

  let tokenEmbedding: WeightMatrix  // (vocab, hidden)
  let layers: [LayerWeights]
  let outputNorm: [Float]  // (hidden)
  let output: WeightMatrix  // (outputWidth, hidden): lm_head, tied embedding, or score
  let inverseFrequencies: [Float]  // (ropeDimension / 2)

  /// Loads a model from a GGUF file or a Hugging Face folder (config.json + safetensors).
  /// - Throws: `EngineError` naming the file and the problem.
  public convenience init(path: String, options: ModelLoadOptions = ModelLoadOptions()) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
      throw EngineError.cannotOpen(path: path, reason: "no such file or directory")
    }
    if isDir.boolValue {
      try self.init(huggingFaceDirectory: path, options: options)
    } else {
      try self.init(ggufPath: path, options: options)
    }
  }

  /// Loads a GGUF file.
  public init(ggufPath: String, options: ModelLoadOptions = ModelLoadOptions()) throws {
    let g = try GGUFFile(path: ggufPath)
    let (hp, meta) = try HyperparameterReader.fromGGUF(g)
    let src = GGUFTensorSource(gguf: g)
    gguf = g
    safetensors = nil
    hyperparameters = hp
    metadata = meta
    let names = TensorNames(
      embedding: "token_embd.weight", outputNorm: "output_norm.weight", output: "output.weight",
      layer: { i, part in
        switch part {
        case .attnNorm: return "blk.\(i).attn_norm.weight"
        case .q: return "blk.\(i).attn_q.weight"
        case .k: return "blk.\(i).attn_k.weight"
        case .v: return "blk.\(i).attn_v.weight"
        case .o: return "blk.\(i).attn_output.weight"
        case .qBias: return "blk.\(i).attn_q.bias"
        case .kBias: return "blk.\(i).attn_k.bias"
        case .vBias: return "blk.\(i).attn_v.bias"
        case .qNorm: return "blk.\(i).attn_q_norm.weight"
        case .kNorm: return "blk.\(i).attn_k_norm.weight"
        case .ffnNorm: return "blk.\(i).ffn_norm.weight"
        case .gate: return "blk.\(i).ffn_gate.weight"
        case .up: return "blk.\(i).ffn_up.weight"
        case .down: return "blk.\(i).ffn_down.weight"
        }
      })
    let loaded = try Self.loadWeights(src, hp, names, options)
    tokenEmbedding = loaded.embedding
    layers = loaded.layers
    outputNorm = loaded.outputNorm
    output = loaded.output
    var freqFactors: [Float]?
    if src.has("rope_freqs.weight") {
      freqFactors = try src.vector("rope_freqs.weight", count: hp.ropeDimension / 2)
    }
    inverseFrequencies = hp.inverseFrequencies(freqFactors: freqFactors)
  }

  /// Loads a Hugging Face folder: config.json, generation_config.json, model.safetensors or a sharded index.
  public init(huggingFaceDirectory dir: String, options: ModelLoadOptions = ModelLoadOptions()) throws {
    let (hp, meta) = try HyperparameterReader.fromHF(directory: dir)
    let ckpt = try SafeTensorsCheckpoint(directory: dir)
    let src = SafeTensorSource(checkpoint: ckpt)
    gguf = nil
    safetensors = ckpt
    hyperparameters = hp
    metadata = meta
    let outputName: String
    switch hp.head {
    case .causalLM: outputName = "lm_head.weight"
    case .sequenceClassification: outputName = "score.weight"
    }
    let names = TensorNames(
      embedding: "model.embed_tokens.weight", outputNorm: "model.norm.weight", output: outputName,
      layer: { i, part in
        let p = "model.layers.\(i)."
        switch part {
        case .attnNorm: return p + "input_layernorm.weight"
        case .q: return p + "self_attn.q_proj.weight"
        case .k: return p + "self_attn.k_proj.weight"
        case .v: return p + "self_attn.v_proj.weight"
        case .o: return p + "self_attn.o_proj.weight"
        case .qBias: return p + "self_attn.q_proj.bias"
        case .kBias: return p + "self_attn.k_proj.bias"
        case .vBias: return p + "self_attn.v_proj.bias"
        case .qNorm: return p + "self_attn.q_norm.weight"
        case .kNorm: return p + "self_attn.k_norm.weight"
        case .ffnNorm: return p + "post_attention_layernorm.weight"
        case .gate: return p + "mlp.gate_proj.weight"
        case .up: return p + "mlp.up_proj.weight"
        case .down: return p + "mlp.down_proj.weight"
        }
      })
    let loaded = try Self.loadWeights(src, hp, names, options)
    tokenEmbedding = loaded.embedding
    layers = loaded.layers
    outputNorm = loaded.outputNorm
    output = loaded.output
    inverseFrequencies = hp.inverseFrequencies(freqFactors: nil)
  }

  enum LayerPart { case attnNorm, q, k, v, o, qBias, kBias, vBias, qNorm, kNorm, ffnNorm, gate, up, down }

  struct TensorNames {
    let embedding: String
    let outputNorm: String
    let output: String
    let layer: (Int, LayerPart) -> String
  }

  private static func loadWeights(
    _ src: some TensorSource, _ hp: ModelHyperparameters, _ n: TensorNames, _ options: ModelLoadOptions
  ) throws -> (
    embedding: WeightMatrix, layers: [LayerWeights], outputNorm: [Float], output: WeightMatrix
  ) {
    let d = hp.hiddenSize
    func vec(_ name: String, _ count: Int) throws -> [Float] {
      guard src.has(name) else { throw EngineError.missingTensor(path: src.path, name: name) }
      let v = try src.vector(name, count: count)
      return v
    }
    func optVec(_ name: String, _ count: Int) throws -> [Float]? {
      src.has(name) ? try src.vector(name, count: count) : nil
    }
    let embedding = try src.checkedWeight(n.embedding, rows: hp.vocabSize, cols: d)
    var layers: [LayerWeights] = []
    for i in 0..<hp.layerCount {
      let l = { (p: LayerPart) in n.layer(i, p) }
      var lw = LayerWeights(
        attnNorm: try vec(l(.attnNorm), d),
        wq: try src.checkedWeight(l(.q), rows: hp.qDim, cols: d),
        wk: try src.checkedWeight(l(.k), rows: hp.kvDim, cols: d),
        wv: try src.checkedWeight(l(.v), rows: hp.kvDim, cols: d),
        wo: try src.checkedWeight(l(.o), rows: d, cols: hp.qDim),
        bq: try optVec(l(.qBias), hp.qDim), bk: try optVec(l(.kBias), hp.kvDim), bv: try optVec(l(.vBias), hp.kvDim),
        qNorm: nil, kNorm: nil,
        ffnNorm: try vec(l(.ffnNorm), d),
        wGate: try src.checkedWeight(l(.gate), rows: hp.intermediateSize, cols: d),
        wUp: try src.checkedWeight(l(.up), rows: hp.intermediateSize, cols: d),
        wDown: try src.checkedWeight(l(.down), rows: d, cols: hp.intermediateSize))
      if hp.attentionBias, lw.bq == nil || lw.bk == nil || lw.bv == nil {
        throw EngineError.missingTensor(path: src.path, name: l(.qBias))
      }
      if hp.qkNorm {
        lw.qNorm = try vec(l(.qNorm), hp.headDim)
        lw.kNorm = try vec(l(.kNorm), hp.headDim)
      }
      layers.append(lw)
    }
    let outputNorm = try vec(n.outputNorm, d)
    let output: WeightMatrix
    switch hp.head {
    case .causalLM:
      if src.has(n.output) {
        output = try src.weight(n.output, rows: hp.vocabSize, cols: d)
      } else {
        output = embedding
      }
    case .sequenceClassification(let labels):
      output = try src.checkedWeight(n.output, rows: labels, cols: d)
    }
    // Matrices used in products get the packed layout (the embedding is only read row by row), and
    // float copies for batched sgemm when they fit the budget.
    var denseBytes = output.rows * output.cols * 4
    for l in layers {
      for w in [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown] { denseBytes += w.rows * w.cols * 4 }
    }
    let dense = denseBytes <= options.denseCopyLimitBytes
    func prepare(_ w: WeightMatrix) -> WeightMatrix {
      let p = w.withPackedLayout()
      return dense ? p.withDenseCopy() : p
    }
    for i in layers.indices {
      layers[i].wq = prepare(layers[i].wq)
      layers[i].wk = prepare(layers[i].wk)
      layers[i].wv = prepare(layers[i].wv)
      layers[i].wo = prepare(layers[i].wo)
      layers[i].wGate = prepare(layers[i].wGate)
      layers[i].wUp = prepare(layers[i].wUp)
      layers[i].wDown = prepare(layers[i].wDown)
    }
    return (embedding, layers, outputNorm, prepare(output))
  }

  /// Every matrix a forward token multiplies by: each layer's seven and the output head.
  private var matrices: [WeightMatrix] {
    [output] + layers.flatMap { [$0.wq, $0.wk, $0.wv, $0.wo, $0.wGate, $0.wUp, $0.wDown] }
  }

  /// Every matrix has a packed (Q4_0/Q4_1/Q8_0) layout, so decode rows take the integer row-wise
  /// products and are bitwise the same whatever else shares the forward pass (float weights go
  /// through sgemm, whose rounding may depend on the batch): what batch-invariant decoding and
  /// exact speculative verification rest on.
  public var decodesRowwise: Bool { matrices.allSatisfy { $0.packed != nil } }

  /// Bytes of weight data the model reads per forward token (all matrices; the one embedding row
  /// is left out).
  public var weightBytes: Int { matrices.reduce(0) { $0 + $1.rows * $1.rowBytes } }

  /// Weights of all matrices (the output head included): the multiply-adds one token costs in the
  /// matrix products, the compute side of the roofs (``MachineRoofs``).
  public var matrixParameters: Int { matrices.reduce(0) { $0 + $1.rows * $1.cols } }
}
