/// What `Engine.decode` produced and how many forward passes it took.
public struct DecodeResult: Sendable, Equatable {
  /// Generated token ids (a stop token that ended the completion included).
  public var tokens: [Int32]
  /// Forward passes run after the prompt's prefill (one per token without drafting).
  public var decodePasses: Int
  /// Tokens proposed by prompt lookup.
  public var draftedTokens: Int
  /// Proposed tokens that were kept (each equal to what the sampler drew at its row).
  public var acceptedTokens: Int
  /// Wall time of the prompt's prefill and first token, and of everything after it.
  public var prefillSeconds: Double
  public var decodeSeconds: Double
}

extension Engine {
  /// Decodes one sequence: prefill `prompt`, then sample up to `maxTokens` tokens with `sampling`
  /// (temperature 0 is greedy), stopping after a stop token (the model's eos ids when `stopTokens`
  /// is nil). With `lookup`, each pass verifies the tokens prompt lookup proposes together with the
  /// last token (`LogitsRequest.each`); on a model with packed weights (`decodesRowwise`, every
  /// GGUF Q4_0/Q4_1/Q8_0 model) the tokens are the same as without it, bit for bit, for greedy and
  /// seeded sampling alike — only `decodePasses` falls.
  public func decode(
    prompt: [Int32], maxTokens: Int, sampling: SamplingParameters = SamplingParameters(temperature: 0),
    lookup: PromptLookup? = nil, stopTokens: Set<Int32>? = nil, kvCachePrecision: KVCachePrecision = .float32
  ) throws -> DecodeResult {
    guard !prompt.isEmpty else { throw EngineError.invalidArgument("empty prompt") }
    let stops = stopTokens ?? Set(model.metadata.eosTokenIDs)
    let draftLimit = lookup?.maxDraftTokens ?? 0
    let cache = try makeCache(capacityTokens: prompt.count + maxTokens + draftLimit + 1, precision: kvCachePrecision)
    let sequence: SequenceID = 0
    try cache.addSequence(sequence)
    var sampler = try Sampler(parameters: sampling, promptTokens: prompt)
    var result = DecodeResult(
      tokens: [], decodePasses: 0, draftedTokens: 0, acceptedTokens: 0, prefillSeconds: 0, decodeSeconds: 0)
    guard maxTokens > 0 else { return result }
    let clock = ContinuousClock()
    let start = clock.now
    var decodeStart: ContinuousClock.Instant? = nil
    var history = prompt
    var outputs = try forward([BatchItem(sequence: sequence, tokens: prompt)], cache: cache)
    var draft: [Int32] = []
    var gate = DraftGate()
    var shadow: Int32? = nil  // a closed gate's proposed next token, checked against the one drawn
    while true {
      // Walk the rows in order: keep drafted tokens while each equals the sampled one.
      var accepted = 0
      var ended = false
      for row in 0..<outputs[0].rows {
        let token = try sampler.sample(outputs[0].row(row)).token
        result.tokens.append(token)
        history.append(token)
        if stops.contains(token) || result.tokens.count >= maxTokens {
          ended = true
          break
        }
        guard row < draft.count, token == draft[row] else { break }
        accepted += 1
      }
      result.acceptedTokens += accepted
      if let shadow {
        gate.record(proposed: 1, kept: result.tokens.last == shadow ? 1 : 0)
      } else if !draft.isEmpty {
        gate.record(proposed: draft.count, kept: accepted)
      }
      if ended { break }
      if accepted < draft.count {
        // The cache holds the fed token and every drafted one; keep those that were accepted.
        try cache.truncate(sequence, to: cache.length(of: sequence)! - (draft.count - accepted))
      }
      if decodeStart == nil { decodeStart = clock.now }
      draft = lookup?.draft(history, limit: maxTokens - result.tokens.count - 1) ?? []
      shadow = nil
      if !gate.isOpen, let first = draft.first {
        shadow = first
        draft = []
      }
      result.draftedTokens += draft.count
      result.decodePasses += 1
      outputs = try forward(
        [BatchItem(sequence: sequence, tokens: [history.last!] + draft, logits: draft.isEmpty ? .last : .each)],
        cache: cache)
    }
    let end = clock.now
    result.prefillSeconds = Self.seconds((decodeStart ?? end) - start)
    result.decodeSeconds = Self.seconds(end - (decodeStart ?? end))
    return result
  }

  static func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
  }
}
