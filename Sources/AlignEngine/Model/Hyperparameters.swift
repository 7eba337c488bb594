import Foundation

/// Transformer families the engine runs.
public enum ModelArchitecture: String, Sendable, Equatable {
  /// Llama 2/3, SmolLM2, TinyLlama, Mistral (no sliding window).
  case llama
  /// Qwen2: biases on the q/k/v projections.
  case qwen2
  /// Qwen3: RMSNorm on each query and key head.
  case qwen3
}

/// How rotary position embedding pairs up the dimensions of a head.
public enum RopeStyle: String, Sendable, Equatable {
  /// Pairs `(2i, 2i+1)`: llama.cpp's "normal" RoPE, used for llama-architecture GGUF files whose
  /// converter permuted the Q/K rows.
  case interleaved
  /// Pairs `(i, i + d/2)`: Hugging Face's `rotate_half` (and llama.cpp's NeoX style).
  case halves
}

/// RoPE frequency scaling.
public enum RopeScaling: Sendable, Equatable {
  case none
  /// Positions divided by `factor`.
  case linear(factor: Float)
  /// Llama 3.1 frequency-dependent scaling.
  case llama3(factor: Float, lowFreqFactor: Float, highFreqFactor: Float, originalContextLength: Int)
}

/// What the model computes from the final hidden state.
public enum ModelHead: Sendable, Equatable {
  /// Next-token logits over the vocabulary.
  case causalLM
  /// `score` head: one scalar per label, read at the last token (reward models).
  case sequenceClassification(labels: Int)
}

/// What the checkpoint says about the network's shape. Runtime choices (threads, batch size,
/// cache capacity) live in `EngineSettings`.
public struct ModelHyperparameters: Sendable, Equatable {
  /// The transformer family.
  public var architecture: ModelArchitecture
  /// Number of token ids (rows of the embedding).
  public var vocabSize: Int
  /// Width of the residual stream.
  public var hiddenSize: Int
  /// Width of the feed-forward (SwiGLU) layer.
  public var intermediateSize: Int
  /// Number of transformer blocks.
  public var layerCount: Int
  /// Number of query heads.
  public var headCount: Int
  /// Number of key/value heads (GQA when fewer than query heads).
  public var kvHeadCount: Int
  /// Width of one attention head.
  public var headDim: Int
  /// Number of dimensions of each head that RoPE rotates (usually `headDim`).
  public var ropeDimension: Int
  /// Epsilon of every RMSNorm.
  public var rmsNormEps: Float
  /// RoPE base frequency.
  public var ropeTheta: Float
  /// RoPE frequency scaling.
  public var ropeScaling: RopeScaling
  /// How RoPE pairs dimensions (depends on the file format's Q/K row order).
  public var ropeStyle: RopeStyle
  /// Training context length (from the checkpoint; the runtime may use less).
  public var contextLength: Int
  /// Whether the output projection reuses the token embedding.
  public var tiedEmbeddings: Bool
  /// Biases on q/k/v projections (Qwen2, or `attention_bias` in a Llama config).
  public var attentionBias: Bool
  /// RMSNorm on each query/key head before RoPE (Qwen3).
  public var qkNorm: Bool
  /// Causal LM or sequence-classification head.
  public var head: ModelHead

  /// Width of the concatenated query heads.
  public var qDim: Int { headCount * headDim }
  /// Width of the concatenated key (or value) heads.
  public var kvDim: Int { kvHeadCount * headDim }
  /// Width of the model's output row (vocabulary or labels).
  public var outputWidth: Int {
    switch head {
    case .causalLM: return vocabSize
    case .sequenceClassification(let n): return n
    }
  }

  func validate(path: String) throws {
    func bad(_ r: String) -> EngineError { .malformedFile(path: path, reason: r) }
    guard vocabSize > 0, vocabSize <= 10_000_000 else { throw bad("vocab size \(vocabSize)") }
    guard hiddenSize > 0, hiddenSize <= 65_536 else { throw bad("hidden size \(hiddenSize)") }
    guard intermediateSize > 0, intermediateSize <= 262_144 else { throw bad("intermediate size \(intermediateSize)") }
    guard layerCount > 0, layerCount <= 1024 else { throw bad("layer count \(layerCount)") }
    // Bounded so qDim / kvDim (heads × head dim) cannot overflow.
    guard headCount <= 65_536 else { throw bad("head count \(headCount)") }
    guard headCount > 0, kvHeadCount > 0, headCount % kvHeadCount == 0 else {
      throw bad("head count \(headCount) is not a multiple of KV head count \(kvHeadCount)")
    }
    guard headDim > 0, headDim % 2 == 0, headDim <= 1024 else { throw bad("head dim \(headDim)") }
    guard ropeDimension > 0, ropeDimension % 2 == 0, ropeDimension <= headDim else {
      throw bad("rope dimension \(ropeDimension) (head dim \(headDim))")
    }
    guard rmsNormEps > 0, rmsNormEps.isFinite else { throw bad("rms_norm_eps \(rmsNormEps)") }
    guard ropeTheta > 0, ropeTheta.isFinite else { throw bad("rope theta \(ropeTheta)") }
    guard contextLength > 0 else { throw bad("context length \(contextLength)") }
    if case .sequenceClassification(let n) = head, n <= 0 || n > 100_000 { throw bad("label count \(n)") }
  }

  /// Inverse RoPE frequencies (`ropeDimension / 2` of them), computed in Float as transformers does,
  /// then adjusted by the rope scaling or per-frequency factors (GGUF `rope_freqs`).
  func inverseFrequencies(freqFactors: [Float]?) -> [Float] {
    let half = ropeDimension / 2
    var inv = [Float](repeating: 0, count: half)
    for i in 0..<half {
      let exponent = Float(2 * i) / Float(ropeDimension)
      inv[i] = 1 / powf(ropeTheta, exponent)
    }
    if let f = freqFactors {
      for i in 0..<half { inv[i] /= f[i] }
      return inv
    }
    switch ropeScaling {
    case .none: break
    case .linear(let factor):
      for i in 0..<half { inv[i] /= factor }
    case .llama3(let factor, let low, let high, let original):
      let lowWavelen = Float(original) / low
      let highWavelen = Float(original) / high
      for i in 0..<half {
        let wavelen = 2 * Float.pi / inv[i]
        if wavelen < highWavelen { continue }
        if wavelen > lowWavelen {
          inv[i] /= factor
        } else {
          let smooth = (Float(original) / wavelen - low) / (high - low)
          inv[i] = (1 - smooth) * inv[i] / factor + smooth * inv[i]
        }
      }
    }
    return inv
  }
}

