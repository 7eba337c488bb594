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
