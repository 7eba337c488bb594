/// Prompt-lookup drafting (n-gram speculation without a draft model): when the last few tokens of a
/// sequence appeared earlier in it (in the prompt or in what was generated), the tokens that
/// followed them then are proposed as the next ones. Editing, summarising and question answering
/// over a given text copy long spans of it, so the proposals are often right.
///
/// The proposal is only a guess: `Engine.forward` with `LogitsRequest.each` computes the rows of
/// the last token and every drafted token in one pass, each bitwise equal to what decoding them one
/// at a time would give, and the sampler walks those rows in order, keeping drafted tokens while
/// each equals what it samples. The output is therefore exactly the output of plain decoding
/// (greedy or seeded sampling alike); only the number of forward passes changes.
public struct PromptLookup: Sendable, Equatable {
  /// Most tokens proposed at once (k). 0 turns drafting off.
  public var maxDraftTokens: Int
  /// Longest suffix matched (tried first).
  public var maxNgram: Int
  /// Shortest suffix matched.
  public var minNgram: Int

  /// Creates a value from its fields (ngram bounds are clamped to 1 ≤ min ≤ max).
  public init(maxDraftTokens: Int = 4, maxNgram: Int = 4, minNgram: Int = 3) {
    self.maxDraftTokens = max(0, maxDraftTokens)
    self.minNgram = max(1, minNgram)
    self.maxNgram = max(self.minNgram, maxNgram)
  }

  /// Proposes up to `min(maxDraftTokens, limit)` tokens to follow `history` (the whole sequence so
  /// far, prompt first): for n from `maxNgram` down to `minNgram`, the most recent earlier place
  /// where the last n tokens occur, and the tokens after it. Empty when nothing matches.
  public func draft(_ history: [Int32], limit: Int = .max) -> [Int32] {
    let k = min(maxDraftTokens, limit)
    let count = history.count
    guard k > 0, count > minNgram else { return [] }
    return history.withUnsafeBufferPointer { h -> [Int32] in
      for n in stride(from: min(maxNgram, count - 1), through: minNgram, by: -1) {
        let suffix = count - n
        // Most recent start i < suffix with h[i..<i+n] == h[suffix..<count].
        var i = suffix - 1
        while i >= 0 {
          if h[i] == h[suffix] {
            var j = 1
            while j < n && h[i + j] == h[suffix + j] { j += 1 }
            if j == n {
              let from = i + n
              let to = min(count, from + k)
              if from < to { return Array(h[from..<to]) }
            }
          }
          i -= 1
        }
      }
      return []
    }
  }
}

/// Turns drafting off for a sequence while its drafts are mostly rejected: a verified row costs a
/// good part of a forward pass on CPUs where one token's matrix products are compute-bound, so
/// drafts must be kept often to pay. `rate` is a moving average of the share of drafted tokens
/// kept; below `threshold` the sequence decodes plainly, but its proposals are still checked
/// against the token actually drawn (for free), so drafting resumes when they start to match.
public struct DraftGate: Sendable, Equatable {
  /// Moving average of the share of proposed tokens that matched (starts optimistic).
  public private(set) var rate: Float = 1
  /// Drafts are fed while `rate` is at least this.
  public var threshold: Float

  /// Creates an open gate.
  public init(threshold: Float = 0.4) {
    self.threshold = threshold
  }

  /// Whether to feed the next drafts.
  public var isOpen: Bool { rate >= threshold }

  /// Records a pass: `kept` of `proposed` tokens matched (for a closed gate: its proposal's first
  /// token against the token drawn, so `proposed` 1).
  public mutating func record(proposed: Int, kept: Int) {
    guard proposed > 0 else { return }
    rate = 0.7 * rate + 0.3 * Float(kept) / Float(proposed)
  }
}
