import Foundation

/// How to pick the next token. Defaults leave the distribution unchanged (plain sampling at T=1).
public struct SamplingParameters: Sendable, Equatable {
  /// 0 means greedy (argmax after penalties).
  public var temperature: Float = 1
  /// Keep only the k most likely tokens (0 = off).
  public var topK: Int = 0
  /// Keep the smallest set of most likely tokens whose probability reaches `topP` (1 = off).
  public var topP: Float = 1
  /// Drop tokens whose probability is below `minP` × the top token's probability (0 = off).
  public var minP: Float = 0
  /// Hugging Face style: logits of tokens seen in the prompt or output are divided by this when
  /// positive, multiplied when negative (1 = off).
  public var repetitionPenalty: Float = 1
  /// OpenAI style: subtract `frequencyPenalty × count` for each generated token (0 = off).
  public var frequencyPenalty: Float = 0
  /// OpenAI style: subtract `presencePenalty` once for each token generated at least once (0 = off).
  public var presencePenalty: Float = 0
  /// Seed of the sampler's own random generator.
  public var seed: UInt64 = 0
  /// How many most likely alternatives to report with each sampled token (0 = none).
  public var topLogprobs: Int = 0
  /// OpenAI style: added to a token's logit after the penalties (−100...100; −100 in effect bans it).
  public var logitBias: [Int32: Float] = [:]

  /// Creates a value from its fields.
  public init(
    temperature: Float = 1, topK: Int = 0, topP: Float = 1, minP: Float = 0, repetitionPenalty: Float = 1,
    frequencyPenalty: Float = 0, presencePenalty: Float = 0, seed: UInt64 = 0, topLogprobs: Int = 0,
    logitBias: [Int32: Float] = [:]
  ) {
    self.logitBias = logitBias
    self.temperature = temperature
    self.topK = topK
    self.topP = topP
    self.minP = minP
    self.repetitionPenalty = repetitionPenalty
    self.frequencyPenalty = frequencyPenalty
    self.presencePenalty = presencePenalty
    self.seed = seed
    self.topLogprobs = topLogprobs
  }

  /// Checks ranges.
  /// - Throws: `EngineError.invalidArgument` naming the bad field.
  public func validate() throws {
    func bad(_ s: String) -> EngineError { .invalidArgument(s) }
    guard temperature >= 0, temperature.isFinite else { throw bad("temperature \(temperature) must be ≥ 0") }
    guard topK >= 0 else { throw bad("top_k \(topK) must be ≥ 0") }
    guard topP > 0, topP <= 1 else { throw bad("top_p \(topP) must be in (0, 1]") }
    guard minP >= 0, minP <= 1 else { throw bad("min_p \(minP) must be in [0, 1]") }
    guard repetitionPenalty > 0, repetitionPenalty.isFinite else { throw bad("repetition_penalty must be > 0") }
    guard frequencyPenalty.isFinite, presencePenalty.isFinite else { throw bad("penalties must be finite") }
    guard topLogprobs >= 0, topLogprobs <= 100 else { throw bad("top_logprobs \(topLogprobs) must be in 0...100") }
    for (token, bias) in logitBias.sorted(by: { $0.key < $1.key }) {
      guard token >= 0 else { throw bad("logit_bias: \(token) is not a token id") }
      guard bias >= -100, bias <= 100 else { throw bad("logit_bias for token \(token) is \(bias); it must be in -100...100") }
    }
  }
}

/// A token id with its log-probability.
public struct TokenLogprob: Sendable, Equatable {
  /// Token id.
  public var token: Int32
  /// Natural-log probability.
  public var logprob: Float
  /// Creates a value from its fields.
  public init(token: Int32, logprob: Float) {
    self.token = token
    self.logprob = logprob
  }
}

/// The outcome of one sampling step.
public struct SampledToken: Sendable, Equatable {
  /// Token id.
  public var token: Int32
  /// Log-probability of `token` under the model's raw distribution (log-softmax of the logits,
  /// before temperature, penalties and truncation).
  public var logprob: Float
  /// The `topLogprobs` most likely tokens of the raw distribution, most likely first.
  public var topLogprobs: [TokenLogprob]
}

/// Picks tokens for one sequence. Owns its random generator and the sequence's token counts, so the
/// result depends only on the seed, the logits and the sequence's own history, never on which other
/// sequences share the batch.
public struct Sampler: Sendable {
  /// The parameters this sampler was made with.
  public let parameters: SamplingParameters
  private var rng: Xoshiro256
  private var promptTokens: Set<Int32>
  private var counts: [Int32: Int] = [:]
  private var work: [Float] = []
  private var scratch: [Float] = []
  private var candidates: [Int32] = []

  /// - Parameters:
  ///   - parameters: validated sampling parameters.
  ///   - promptTokens: tokens the repetition penalty also applies to (the prompt).
  /// - Throws: `EngineError.invalidArgument` for bad parameters.
  public init(parameters: SamplingParameters, promptTokens: [Int32] = []) throws {
    try parameters.validate()
    self.parameters = parameters
    rng = Xoshiro256(seed: parameters.seed)
    self.promptTokens = Set(promptTokens)
  }

  /// Tokens generated so far with their counts.
  public var generatedCounts: [Int32: Int] { counts }

  /// Picks the next token from one row of logits and records it in the sequence's history.
  /// - Parameters:
  ///   - logits: the row (vocab).
  ///   - mask: when given, only these tokens can be chosen (constrained decoding). It applies after
  ///     the penalties and the logit bias and before temperature and truncation, so the draw is
  ///     the same renormalized distribution over the allowed tokens; reported log-probabilities
  ///     stay those of the raw distribution.
  /// - Throws: `EngineError.invalidArgument` for an empty or non-finite row, or a mask that allows
  ///   no token of it.
  public mutating func sample(_ logits: some Collection<Float>, mask: TokenMask? = nil) throws -> SampledToken {
    let n = logits.count
    guard n > 0 else { throw EngineError.invalidArgument("empty logits") }
    work.removeAll(keepingCapacity: true)
    work.append(contentsOf: logits)
    guard let rawMax = work.max(), rawMax.isFinite else {
      throw EngineError.invalidArgument("logits are not finite")
    }
    // Raw log-softmax normalizer for reporting (vectorized exp into a scratch copy).
    scratch.removeAll(keepingCapacity: true)
    scratch.append(contentsOf: work)
    let rawSum = scratch.withUnsafeMutableBufferPointer { expShiftedInPlace($0.baseAddress!, n, shift: rawMax) }
    let rawLogZ = rawMax + Float(log(Double(rawSum)))
    let top = parameters.topLogprobs > 0 ? topK(work, parameters.topLogprobs) : []
    let topReport = top.map { TokenLogprob(token: $0, logprob: work[Int($0)] - rawLogZ) }
    let rawCopyOfChosen: (Int) -> Float = { [work] i in work[i] - rawLogZ }

    applyPenalties()
    if let mask { try applyMask(mask) }
    let chosen: Int
    if parameters.temperature == 0 || parameters.topK == 1 {
      chosen = argmax(work)
    } else {
      chosen = draw(mask: mask)
    }
    counts[Int32(chosen), default: 0] += 1
    return SampledToken(token: Int32(chosen), logprob: rawCopyOfChosen(chosen), topLogprobs: topReport)
  }

  /// Disallowed tokens get −∞ (so argmax and the candidate sort never see them).
  private mutating func applyMask(_ mask: TokenMask) throws {
    var any = false
    work.withUnsafeMutableBufferPointer { buf in
      for i in buf.indices {
        if mask.allows(i) { any = true } else { buf[i] = -.infinity }
      }
    }
    guard any, work.contains(where: { $0.isFinite }) else {
      throw EngineError.invalidArgument("the output constraint allows no token here")
    }
  }

  private mutating func applyPenalties() {
    let p = parameters
    if p.repetitionPenalty != 1 {
      var seen = promptTokens
      for t in counts.keys { seen.insert(t) }
      for t in seen where Int(t) < work.count && t >= 0 {
        let v = work[Int(t)]
        work[Int(t)] = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty
      }
    }
    if p.frequencyPenalty != 0 || p.presencePenalty != 0 {
      for (t, c) in counts where Int(t) < work.count && t >= 0 {
        work[Int(t)] -= p.frequencyPenalty * Float(c) + p.presencePenalty
      }
    }
    for (t, bias) in p.logitBias where Int(t) < work.count && t >= 0 { work[Int(t)] += bias }
  }

  /// Temperature, then top-k / top-p / min-p truncation, then one draw from what is left.
  private mutating func draw(mask: TokenMask?) -> Int {
    let p = parameters
    let invT = 1 / p.temperature
    let maxLogit = work.max() ?? 0
    // Unnormalized probabilities in place (the top token gets exactly 1).
    let total = Double(work.withUnsafeMutableBufferPointer { buf -> Float in
      let b = buf.baseAddress!
      for i in 0..<buf.count { b[i] *= invT }
      var sum = expShiftedInPlace(b, buf.count, shift: maxLogit * invT)
      if let mask {
        // The vectorized exp clamps −∞ to a tiny positive value: masked tokens must weigh exactly 0.
        sum = 0
        for i in 0..<buf.count {
          if mask.allows(i) { sum += b[i] } else { b[i] = 0 }
        }
      }
      return sum
    })
    let truncating = p.topK > 0 || p.topP < 1 || p.minP > 0
    if !truncating {
      let u = rng.nextUnit() * total
      var acc: Double = 0
      for i in work.indices {
        acc += Double(work[i])
        if acc > u { return i }
      }
      return lastPositive()
    }
    // Candidates: the top-k (or, for top-p/min-p alone, every token above a threshold that provably
    // contains the nucleus), sorted by probability then id.
    candidates.removeAll(keepingCapacity: true)
    if p.topK > 0 {
      candidates = topK(work, p.topK)
    } else {
      // `work` is scaled so the top token is 1. The min-p set is exactly {work ≥ minP}; the top-p
      // nucleus is a prefix of the sorted order, so any threshold set holding ≥ topP of the mass
      // contains it (and if the min-p set holds less, the intersection is the min-p set itself).
      var threshold: Float = p.minP > 0 ? p.minP : 1e-4
      while true {
        candidates.removeAll(keepingCapacity: true)
        var mass: Double = 0
        for i in work.indices where work[i] >= threshold {
          candidates.append(Int32(i))
          mass += Double(work[i])
        }
        if p.minP > 0 || mass >= Double(p.topP) * total || threshold == 0 { break }
        threshold = threshold > 1e-30 ? threshold / 100 : 0
      }
      let w = work
      candidates.sort { w[Int($0)] != w[Int($1)] ? w[Int($0)] > w[Int($1)] : $0 < $1 }
    }
    if mask != nil {
      // Masked tokens weigh 0; keep them out of the candidates (the top token is always allowed).
      let w = work
      candidates.removeAll { w[Int($0)] == 0 }
    }
    var kept = candidates.count
    if p.minP > 0, let first = candidates.first {
      let floor = work[Int(first)] * p.minP
      kept = candidates.prefix(kept).firstIndex { work[Int($0)] < floor } ?? kept
    }
    if p.topP < 1 {
      // Probability relative to the full distribution (after top-k if any).
      var mass: Double = 0
      for c in candidates.prefix(kept) { mass += Double(work[Int(c)]) }
      let target = Double(p.topP) * (p.topK > 0 ? mass : total)
      var acc: Double = 0
      for (j, c) in candidates.prefix(kept).enumerated() {
        acc += Double(work[Int(c)])
        if acc >= target {
          kept = j + 1
          break
        }
      }
    }
    kept = max(kept, 1)
    var mass: Double = 0
    for c in candidates.prefix(kept) { mass += Double(work[Int(c)]) }
    let u = rng.nextUnit() * mass
    var acc: Double = 0
    for c in candidates.prefix(kept) {
      acc += Double(work[Int(c)])
      if acc > u { return Int(c) }
    }
    return Int(candidates[kept - 1])
  }

  private func lastPositive() -> Int {
    for i in work.indices.reversed() where work[i] > 0 { return i }
    return 0
  }
}

/// Ids of the `k` largest values, largest first (ties: smaller id first).
func topK(_ values: [Float], _ k: Int) -> [Int32] {
  let k = min(k, values.count)
  if k <= 0 { return [] }
  var heap: [Int32] = []  // sorted descending, at most k
  heap.reserveCapacity(k + 1)
  for i in values.indices {
    let v = values[i]
    if heap.count == k, let last = heap.last, !(v > values[Int(last)]) { continue }
    var lo = 0
    var hi = heap.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if values[Int(heap[mid])] >= v { lo = mid + 1 } else { hi = mid }
    }
    heap.insert(Int32(i), at: lo)
    if heap.count > k { heap.removeLast() }
  }
  return heap
}

/// Log-softmax of one row of logits (computed in Double for the normalizer).
public func logSoftmax(_ logits: some Collection<Float>) -> [Float] {
  guard let m = logits.max() else { return [] }
  var s: Double = 0
  for v in logits { s += Double(exp(v - m)) }
  let logZ = m + Float(log(s))
  return logits.map { $0 - logZ }
}

/// Log-probability of `token` under one row of logits.
public func logprob(of token: Int32, in logits: some Collection<Float>) -> Float {
  let arr = Array(logits)
  guard token >= 0, Int(token) < arr.count, let m = arr.max() else { return -.infinity }
  var s: Double = 0
  for v in arr { s += Double(exp(v - m)) }
  return arr[Int(token)] - m - Float(log(s))
}

/// The `n` most likely tokens of one row of logits with their log-probabilities, most likely first.
public func topLogprobs(_ logits: some Collection<Float>, n: Int) -> [TokenLogprob] {
  let arr = Array(logits)
  guard let m = arr.max() else { return [] }
  var s: Double = 0
  for v in arr { s += Double(exp(v - m)) }
  let logZ = m + Float(log(s))
  return topK(arr, n).map { TokenLogprob(token: $0, logprob: arr[Int($0)] - logZ) }
}

/// Prompt log-probabilities: for a sequence and its teacher-forced output rows ((count, vocab), row i
/// predicting token i+1), the log-probability of each token after the first.
public func promptLogprobs(tokens: [Int32], logits: [Float], vocabSize: Int) -> [Float] {
  guard tokens.count > 1, logits.count >= (tokens.count - 1) * vocabSize else { return [] }
  return (1..<tokens.count).map { i in
    logprob(of: tokens[i], in: logits[((i - 1) * vocabSize)..<(i * vocabSize)])
  }
}
