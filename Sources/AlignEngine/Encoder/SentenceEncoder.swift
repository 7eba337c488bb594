import CBLAS
import Foundation

/// The shape of a BERT encoder as its `config.json` gives it.
public struct BertHyperparameters: Sendable, Equatable {
  public var vocabularySize: Int
  public var hidden: Int
  public var layers: Int
  public var heads: Int
  public var intermediate: Int
  public var maxPositions: Int
  public var typeVocabularySize: Int
  public var layerNormEpsilon: Float

  var headDim: Int { hidden / heads }
}

/// Weights of one BERT layer (post-norm: attention, add & norm, feed-forward, add & norm).
struct BertLayerWeights: Sendable {
  var qkv: WeightMatrix  // (3 * hidden, hidden): query, key and value rows stacked
  var qkvBias: [Float]  // (3 * hidden)
  var attentionOut: WeightMatrix  // (hidden, hidden)
  var attentionOutBias: [Float]  // (hidden)
  var attentionNormWeight: [Float]  // (hidden)
  var attentionNormBias: [Float]  // (hidden)
  var up: WeightMatrix  // (intermediate, hidden)
  var upBias: [Float]  // (intermediate)
  var down: WeightMatrix  // (hidden, intermediate)
  var downBias: [Float]  // (hidden)
  var outputNormWeight: [Float]  // (hidden)
  var outputNormBias: [Float]  // (hidden)
}

/// A sentence-embedding model: a BERT encoder (Hugging Face `BertModel` weights in
/// `model.safetensors`, the tokenizer in `tokenizer.json`) followed by mean pooling over the tokens
/// and L2 normalization — sentence-transformers' `all-MiniLM-L6-v2` pipeline.
///
/// Immutable and safe to share; running it needs an ``EncoderSession`` (buffers and threads).
public final class SentenceEncoder: Sendable {
  /// The folder the model was loaded from.
  public let directory: String
  public let hyperparameters: BertHyperparameters
  public let tokenizer: WordPieceTokenizer
  /// Texts longer than this many word pieces ([CLS] and [SEP] included) are truncated.
  public let maxSequenceLength: Int
  /// Width of an embedding.
  public var dimension: Int { hyperparameters.hidden }

  let checkpoint: SafeTensorsCheckpoint
  // The weights below point into the memory-mapped safetensors file (or into copies for qkv).
  let wordEmbeddings: WeightMatrix  // (vocab, hidden)
  let positionEmbeddings: WeightMatrix  // (maxPositions, hidden)
  let typeEmbeddings: WeightMatrix  // (typeVocab, hidden)
  let embeddingNormWeight: [Float]  // (hidden)
  let embeddingNormBias: [Float]  // (hidden)
  let layers: [BertLayerWeights]
  /// Owns the stacked q/k/v copies the layers' `qkv` matrices point into.
  private let stackedQKV: [AlignedBuffer]

  /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `directory`.
  /// - Parameter maxSequenceLength: truncation length (sentence-transformers' `max_seq_length`;
  ///   `sentence_bert_config.json` gives it when present, else 256).
  /// - Throws: `EngineError` naming the file and the problem.
  public init(directory: String, maxSequenceLength: Int? = nil) throws {
    self.directory = directory
    let configPath = directory + "/config.json"
    guard let config = try HyperparameterReader.readJSON(configPath) else {
      throw EngineError.cannotOpen(path: configPath, reason: "no config.json")
    }
    func bad(_ r: String) -> EngineError { .malformedFile(path: configPath, reason: r) }
    func int(_ k: String) throws -> Int {
      guard let v = config[k] as? Int, v > 0 else { throw bad("\(k) missing or not a positive integer") }
      return v
    }
    guard (config["model_type"] as? String) == "bert" else { throw bad("model_type is not bert") }
    if let act = config["hidden_act"] as? String, act != "gelu" {
      throw EngineError.unsupported(path: configPath, reason: "hidden_act \(act) (only gelu)")
    }
    if let pos = config["position_embedding_type"] as? String, pos != "absolute" {
      throw EngineError.unsupported(path: configPath, reason: "position_embedding_type \(pos)")
    }
    let hp = BertHyperparameters(
      vocabularySize: try int("vocab_size"), hidden: try int("hidden_size"), layers: try int("num_hidden_layers"),
      heads: try int("num_attention_heads"), intermediate: try int("intermediate_size"),
      maxPositions: try int("max_position_embeddings"), typeVocabularySize: try int("type_vocab_size"),
      layerNormEpsilon: Float((config["layer_norm_eps"] as? Double) ?? 1e-12))
    guard hp.hidden % hp.heads == 0, hp.layers <= 128, hp.hidden <= 65_536, hp.intermediate <= 262_144 else {
      throw bad("inconsistent sizes (hidden \(hp.hidden), heads \(hp.heads), layers \(hp.layers))")
    }
    hyperparameters = hp
    var length = maxSequenceLength ?? 256
    if maxSequenceLength == nil, let st = try HyperparameterReader.readJSON(directory + "/sentence_bert_config.json"),
      let m = st["max_seq_length"] as? Int, m > 0
    {
      length = m
    }
    self.maxSequenceLength = min(max(2, length), hp.maxPositions)
    tokenizer = try WordPieceTokenizer(tokenizerJSON: directory + "/tokenizer.json")
    guard tokenizer.vocabularySize <= hp.vocabularySize else {
      throw bad("tokenizer has \(tokenizer.vocabularySize) ids, the model \(hp.vocabularySize)")
    }

    checkpoint = try SafeTensorsCheckpoint(directory: directory)
    // Some exports prefix every name with "bert."; accept both.
    let prefix = checkpoint.tensor(named: "bert.embeddings.word_embeddings.weight") != nil ? "bert." : ""
    let src = SafeTensorSource(checkpoint: checkpoint)
    func matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> WeightMatrix {
      let w = try src.checkedWeight(prefix + name, rows: rows, cols: cols)
      guard w.type == .f32 else {
        throw EngineError.unsupported(path: directory, reason: "tensor \(name) is \(w.type), only F32 encoders")
      }
      return w
    }
    func vector(_ name: String, _ n: Int) throws -> [Float] {
      guard src.has(prefix + name) else { throw EngineError.missingTensor(path: directory, name: prefix + name) }
      return try src.vector(prefix + name, count: n)
    }
    let h = hp.hidden
    wordEmbeddings = try matrix("embeddings.word_embeddings.weight", hp.vocabularySize, h)
    positionEmbeddings = try matrix("embeddings.position_embeddings.weight", hp.maxPositions, h)
    typeEmbeddings = try matrix("embeddings.token_type_embeddings.weight", hp.typeVocabularySize, h)
    embeddingNormWeight = try vector("embeddings.LayerNorm.weight", h)
    embeddingNormBias = try vector("embeddings.LayerNorm.bias", h)
    var layers: [BertLayerWeights] = []
    var stacked: [AlignedBuffer] = []
    for i in 0..<hp.layers {
      let p = "encoder.layer.\(i)."
      // One (3h, h) matrix for q, k and v: one product instead of three.
      let buffer = AlignedBuffer(floats: 3 * h * h)
      for (j, part) in ["query", "key", "value"].enumerated() {
        let w = try matrix(p + "attention.self.\(part).weight", h, h)
        memcpy(buffer.floats + j * h * h, w.data, 4 * h * h)
      }
      stacked.append(buffer)
      let qkv = WeightMatrix(name: p + "qkv", type: .f32, rows: 3 * h, cols: h, data: UnsafeRawPointer(buffer.floats), rowBytes: 4 * h)
      layers.append(
        BertLayerWeights(
          qkv: qkv,
          qkvBias: try vector(p + "attention.self.query.bias", h) + vector(p + "attention.self.key.bias", h)
            + vector(p + "attention.self.value.bias", h),
          attentionOut: try matrix(p + "attention.output.dense.weight", h, h),
          attentionOutBias: try vector(p + "attention.output.dense.bias", h),
          attentionNormWeight: try vector(p + "attention.output.LayerNorm.weight", h),
          attentionNormBias: try vector(p + "attention.output.LayerNorm.bias", h),
          up: try matrix(p + "intermediate.dense.weight", hp.intermediate, h),
          upBias: try vector(p + "intermediate.dense.bias", hp.intermediate),
          down: try matrix(p + "output.dense.weight", h, hp.intermediate),
          downBias: try vector(p + "output.dense.bias", h),
          outputNormWeight: try vector(p + "output.LayerNorm.weight", h),
          outputNormBias: try vector(p + "output.LayerNorm.bias", h)))
    }
    self.layers = layers
    stackedQKV = stacked
  }

  /// The token ids the encoder reads for `text` (truncated to ``maxSequenceLength``).
  public func tokens(_ text: String) -> [Int32] {
    tokenizer.encode(text, maxLength: maxSequenceLength)
  }
}

/// Runs a ``SentenceEncoder``: activation buffers sized once for `maxBatchTokens`, and worker
/// threads. Calls from several threads are serialized on a lock (one batch at a time); give each
/// judge its own session so they do not wait for each other.
public final class EncoderSession: @unchecked Sendable {
  // Safety: the buffers are used only inside `embed(tokenized:)`, under `lock`.
  private let lock = NSLock()
  public let encoder: SentenceEncoder
  /// Most tokens one forward pass takes; bigger batches run in several passes.
  public let maxBatchTokens: Int

  private let scratch: MatmulScratch
  private let x: AlignedBuffer  // (maxBatchTokens, hidden) residual stream
  private let qkv: AlignedBuffer  // (maxBatchTokens, 3 * hidden)
  private let context: AlignedBuffer  // (maxBatchTokens, hidden) attention output before projection
  private let projected: AlignedBuffer  // (maxBatchTokens, hidden)
  private let ffn: AlignedBuffer  // (maxBatchTokens, intermediate)
  private let scores: AlignedBuffer  // (threads, maxLength, maxLength) attention probabilities

  /// - Parameters:
  ///   - threads: worker threads for the matrix products and attention.
  ///   - maxBatchTokens: at least the encoder's `maxSequenceLength`.
  public init(encoder: SentenceEncoder, threads: Int = 2, maxBatchTokens: Int = 4096) {
    self.encoder = encoder
    let hp = encoder.hyperparameters
    let cap = max(maxBatchTokens, encoder.maxSequenceLength)
    self.maxBatchTokens = cap
    // Float weights only (sgemm): the integer kernels are never used here.
    scratch = MatmulScratch(
      threads: max(1, threads), maxCols: max(hp.hidden, hp.intermediate), maxTokens: 1, kernels: .detected)
    x = AlignedBuffer(floats: cap * hp.hidden)
    qkv = AlignedBuffer(floats: cap * 3 * hp.hidden)
    context = AlignedBuffer(floats: cap * hp.hidden)
    projected = AlignedBuffer(floats: cap * hp.hidden)
    ffn = AlignedBuffer(floats: cap * hp.intermediate)
    let l = encoder.maxSequenceLength
    scores = AlignedBuffer(floats: max(1, threads) * l * l)
  }

  /// L2-normalized mean-pooled embeddings of `texts`, in order.
  public func embed(_ texts: [String]) -> [[Float]] {
    embed(tokenized: texts.map { encoder.tokens($0) })
  }

  /// Embeddings of already tokenized texts (each with [CLS] … [SEP], at most `maxSequenceLength`).
  public func embed(tokenized sequences: [[Int32]]) -> [[Float]] {
    lock.lock()
    defer { lock.unlock() }
    var out = [[Float]](repeating: [], count: sequences.count)
    var i = 0
    while i < sequences.count {
      // Pack whole sequences into one pass up to the token budget.
      var j = i
      var total = 0
      while j < sequences.count, total + sequences[j].count <= maxBatchTokens || j == i {
        total += sequences[j].count
        j += 1
      }
      let batch = Array(sequences[i..<j])
      let vectors = forward(batch)
      for (k, v) in vectors.enumerated() { out[i + k] = v }
      i = j
    }
    return out
  }

  /// One forward pass over `batch` packed end to end (no padding): every token attends to the
  /// tokens of its own sequence only.
  private func forward(_ batch: [[Int32]]) -> [[Float]] {
    let enc = encoder
    let hp = enc.hyperparameters
    let h = hp.hidden
    let tokens = batch.reduce(0) { $0 + $1.count }
    var starts: [Int] = []
    var offset = 0
    for s in batch {
      starts.append(offset)
      offset += s.count
    }
    let xp = x.floats
    // Embeddings: word + position + token type 0, then LayerNorm.
    for (s, seq) in batch.enumerated() {
      for (pos, id) in seq.enumerated() {
        let row = xp + (starts[s] + pos) * h
        let wid = Int(id) < hp.vocabularySize && id >= 0 ? Int(id) : Int(enc.tokenizer.unknownID)
        let w = enc.wordEmbeddings.data.assumingMemoryBound(to: Float.self) + wid * h
        let p = enc.positionEmbeddings.data.assumingMemoryBound(to: Float.self) + min(pos, hp.maxPositions - 1) * h
        let t = enc.typeEmbeddings.data.assumingMemoryBound(to: Float.self)
        for k in 0..<h { row[k] = w[k] + p[k] + t[k] }
      }
    }
    layerNorm(xp, rows: tokens, weight: enc.embeddingNormWeight, bias: enc.embeddingNormBias, eps: hp.layerNormEpsilon)

    for layer in enc.layers {
      // q, k, v for every token.
      matmul(layer.qkv, xp, tokens: tokens, qkv.floats, scratch: scratch, rowwiseTokens: 0)
      addBias(qkv.floats, rows: tokens, bias: layer.qkvBias)
      attention(batch: batch, starts: starts)
      // Projection, residual, LayerNorm.
      matmul(layer.attentionOut, context.floats, tokens: tokens, projected.floats, scratch: scratch, rowwiseTokens: 0)
      addBiasAndResidual(projected.floats, rows: tokens, bias: layer.attentionOutBias, residual: xp, into: xp, width: h)
      layerNorm(xp, rows: tokens, weight: layer.attentionNormWeight, bias: layer.attentionNormBias, eps: hp.layerNormEpsilon)
      // Feed-forward with exact (erf) GELU, residual, LayerNorm.
      matmul(layer.up, xp, tokens: tokens, ffn.floats, scratch: scratch, rowwiseTokens: 0)
      let f = ffn.floats
      let width = hp.intermediate
      let bias = layer.upBias
      parallelFor(tokens, grain: max(1, tokens / (4 * scratch.threads)), pool: scratch.pool) { _, range in
        bias.withUnsafeBufferPointer { b in
          for t in range { geluWithBias(f + t * width, b.baseAddress!, width) }
        }
      }
      matmul(layer.down, f, tokens: tokens, projected.floats, scratch: scratch, rowwiseTokens: 0)
      addBiasAndResidual(projected.floats, rows: tokens, bias: layer.downBias, residual: xp, into: xp, width: h)
      layerNorm(xp, rows: tokens, weight: layer.outputNormWeight, bias: layer.outputNormBias, eps: hp.layerNormEpsilon)
    }

    // Mean over each sequence's tokens, then L2 normalization.
    return batch.indices.map { s in
      var v = [Float](repeating: 0, count: h)
      let n = batch[s].count
      for t in 0..<n {
        let row = xp + (starts[s] + t) * h
        for k in 0..<h { v[k] += row[k] }
      }
      let inv = 1 / Float(max(n, 1))
      var norm: Float = 0
      for k in 0..<h {
        v[k] *= inv
        norm += v[k] * v[k]
      }
      let scale = 1 / max(norm.squareRoot(), 1e-12)
      for k in 0..<h { v[k] *= scale }
      return v
    }
  }

  /// Self-attention of every (sequence, head) on the packed q/k/v rows, into `context`.
  private func attention(batch: [[Int32]], starts: [Int]) {
    let hp = encoder.hyperparameters
    let h = hp.hidden
    let d = hp.headDim
    let heads = hp.heads
    let l = encoder.maxSequenceLength
    let scale = 1 / Float(d).squareRoot()
    let q = qkv.floats
    let out = context.floats
    let probabilities = scores.floats
    let jobs = batch.count * heads
    parallelFor(jobs, grain: 1, pool: scratch.pool) { participant, range in
      let p = probabilities + participant * l * l
      for job in range {
        let s = job / heads
        let head = job % heads
        let n = batch[s].count
        let base = q + starts[s] * 3 * h
        let qh = base + head * d
        let kh = base + h + head * d
        let vh = base + 2 * h + head * d
        // scores (n, n) = Q Kᵀ · scale
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(d), scale,
          qh, Int32(3 * h), kh, Int32(3 * h), 0, p, Int32(n))
        for i in 0..<n {
          let row = p + i * n
          var m = -Float.infinity
          for j in 0..<n { m = max(m, row[j]) }
          var sum: Float = 0
          for j in 0..<n {
            let e = expf(row[j] - m)
            row[j] = e
            sum += e
          }
          let inv = 1 / sum
          for j in 0..<n { row[j] *= inv }
        }
        // context (n, d) = P V
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(d), Int32(n), 1,
          p, Int32(n), vh, Int32(3 * h), 0, out + starts[s] * h + head * d, Int32(h))
      }
    }
  }
}

/// `rows` rows of `bias.count` values: `x += bias`.
private func addBias(_ x: UnsafeMutablePointer<Float>, rows: Int, bias: [Float]) {
  let w = bias.count
  bias.withUnsafeBufferPointer { b in
    for t in 0..<rows {
      let r = x + t * w
      for k in 0..<w { r[k] += b[k] }
    }
  }
}

/// `out = y + bias + residual`, row by row (`out` may be `residual`).
private func addBiasAndResidual(
  _ y: UnsafePointer<Float>, rows: Int, bias: [Float], residual: UnsafePointer<Float>,
  into out: UnsafeMutablePointer<Float>, width: Int
) {
  bias.withUnsafeBufferPointer { b in
    for t in 0..<rows {
      let yr = y + t * width
      let rr = residual + t * width
      let orow = out + t * width
      for k in 0..<width { orow[k] = yr[k] + b[k] + rr[k] }
    }
  }
}

/// LayerNorm of each row in place: `(x - mean) / sqrt(var + eps) * weight + bias`.
private func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, weight: [Float], bias: [Float], eps: Float) {
  let w = weight.count
  weight.withUnsafeBufferPointer { g in
    bias.withUnsafeBufferPointer { b in
      for t in 0..<rows {
        let r = x + t * w
        var mean: Float = 0
        for k in 0..<w { mean += r[k] }
        mean /= Float(w)
        var variance: Float = 0
        for k in 0..<w {
          let c = r[k] - mean
          variance += c * c
        }
        variance /= Float(w)
        let inv = 1 / (variance + eps).squareRoot()
        for k in 0..<w { r[k] = (r[k] - mean) * inv * g[k] + b[k] }
      }
    }
  }
}

/// `x = gelu(x + bias)` with the exact (erf) GELU, 16 lanes at a time.
///
/// erf is Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7) on a vector exp, instead of libm's
/// scalar `erff`, which took ~40% of a short text's forward pass. The result differs from
/// transformers' GELU by at most ~1e-7 · |x|, far below the embeddings' agreement bound.
@inline(__always)
private func geluWithBias(_ x: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ n: Int) {
  var k = 0
  let rx = UnsafeMutableRawPointer(x)
  let rb = UnsafeRawPointer(bias)
  while k + 16 <= n {
    let v = rx.loadUnaligned(fromByteOffset: 4 * k, as: SIMD16<Float>.self)
      + rb.loadUnaligned(fromByteOffset: 4 * k, as: SIMD16<Float>.self)
    rx.storeBytes(of: 0.5 * v * (1 + vectorErf(v * 0.70710678118654752)), toByteOffset: 4 * k, as: SIMD16<Float>.self)
    k += 16
  }
  while k < n {
    let v = x[k] + bias[k]
    x[k] = 0.5 * v * (1 + erff(v * 0.70710678118654752))
    k += 1
  }
}

/// erf(x) = sign(x) · (1 − (a1 t + … + a5 t⁵) e^(−x²)), t = 1 / (1 + p|x|) (Abramowitz & Stegun 7.1.26).
/// Sign and magnitude by bit masks: the generic SIMD helpers (`clamped`, `rounded`, conversions)
/// compile to scalar loops, which made this slower than libm.
@inline(__always)
func vectorErf(_ x: SIMD16<Float>) -> SIMD16<Float> {
  let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
  let sign = bits & 0x8000_0000
  let ax = unsafeBitCast(bits & 0x7FFF_FFFF, to: SIMD16<Float>.self)
  let t = 1 / (1 + 0.3275911 * ax)
  var poly = SIMD16<Float>(repeating: 1.061405429)
  poly = poly * t - 1.453152027
  poly = poly * t + 1.421413741
  poly = poly * t - 0.284496736
  poly = poly * t + 0.254829592
  poly = poly * t
  let y = 1 - poly * vectorExp(-(ax * ax))
  return unsafeBitCast(unsafeBitCast(y, to: SIMD16<UInt32>.self) | sign, to: SIMD16<Float>.self)
}

/// e^x for x ≤ 0 (below −87 it gives e^−87 ≈ 0): 2^n · e^f with n = round(x / ln 2),
/// |f| ≤ ln 2 / 2, e^f by its Taylor series to degree 7 (relative error < 2e-7).
@inline(__always)
func vectorExp(_ x: SIMD16<Float>) -> SIMD16<Float> {
  let c = pointwiseMax(x, SIMD16<Float>(repeating: -87))
  // Adding 1.5 · 2^23 rounds c / ln 2 to the integer n, which then sits in the low mantissa bits.
  let shifted = c * 1.4426950408889634 + 12_582_912
  let n = shifted - 12_582_912
  let f = c - n * 0.6931471805599453
  var p = SIMD16<Float>(repeating: 1.0 / 5040)
  p = p * f + 1.0 / 720
  p = p * f + 1.0 / 120
  p = p * f + 1.0 / 24
  p = p * f + 1.0 / 6
  p = p * f + 0.5
  p = p * f + 1
  p = p * f + 1
  let exponent = (unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
  return p * unsafeBitCast(exponent, to: SIMD16<Float>.self)
}
