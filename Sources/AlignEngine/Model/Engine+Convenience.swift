extension Engine {
  /// Teacher-forced output rows for every position of `tokens` (a temporary cache is used).
  /// - Returns: (tokens.count, outputWidth) row-major; row i is the distribution after token i.
  public func logits(tokens: [Int32]) throws -> [Float] {
    let cache = try makeCache(capacityTokens: max(tokens.count, 1))
    try cache.addSequence(0)
    return try forward([BatchItem(sequence: 0, tokens: tokens, logits: .all)], cache: cache)[0].logits
  }

  /// Teacher-forced output rows streamed one position at a time (no (tokens × vocab) array is built,
  /// so long texts are cheap): `body(i, row)` gets the distribution after token i. `row` is valid
  /// only during the call.
  public func forEachLogitsRow(
    tokens: [Int32], _ body: (_ position: Int, _ row: UnsafeBufferPointer<Float>) throws -> Void
  ) throws {
    let cache = try makeCache(capacityTokens: max(tokens.count, 1))
    try cache.addSequence(0)
    let width = model.hyperparameters.outputWidth
    var start = 0
    let chunk = max(1, min(settings.maxBatchTokens, 64))
    while start < tokens.count {
      let end = min(tokens.count, start + chunk)
      let out = try forward([BatchItem(sequence: 0, tokens: Array(tokens[start..<end]), logits: .all)], cache: cache)
      try out[0].logits.withUnsafeBufferPointer { all in
        for r in 0..<(end - start) {
          try body(start + r, UnsafeBufferPointer(rebasing: all[(r * width)..<((r + 1) * width)]))
        }
      }
      start = end
    }
  }

  /// Greedy continuation of `prompt`: at most `maxTokens` new token ids, stopping after a stop token
  /// (the model's eos ids when `stopTokens` is nil). The stop token is included.
  public func greedy(prompt: [Int32], maxTokens: Int, stopTokens: Set<Int32>? = nil) throws -> [Int32] {
    let stops = stopTokens ?? Set(model.metadata.eosTokenIDs)
    let cache = try makeCache(capacityTokens: prompt.count + maxTokens + 1)
    try cache.addSequence(0)
    var out: [Int32] = []
    var next = prompt
    while out.count < maxTokens {
      let row = try forward([BatchItem(sequence: 0, tokens: next)], cache: cache)[0].logits
      let t = Int32(argmax(row))
      out.append(t)
      if stops.contains(t) { break }
      next = [t]
    }
    return out
  }

  /// Scores each sequence with the classification head (or returns the last-token logits of a causal
  /// LM): one row of `outputWidth` values per sequence, read at its last token.
  public func classify(_ sequences: [[Int32]]) throws -> [[Float]] {
    let total = sequences.reduce(0) { $0 + $1.count }
    let cache = try makeCache(capacityTokens: max(total + 16 * sequences.count, 1))
    var items: [BatchItem] = []
    for (i, s) in sequences.enumerated() {
      try cache.addSequence(SequenceID(i))
      items.append(BatchItem(sequence: SequenceID(i), tokens: s, logits: .last))
    }
    return try forward(items, cache: cache).map(\.logits)
  }
}

/// Index of the largest value (the first one on ties); 0 for an empty array.
public func argmax(_ values: some Collection<Float>) -> Int {
  var best = -Float.infinity
  var bestIndex = 0
  for (i, v) in values.enumerated() where v > best {
    best = v
    bestIndex = i
  }
  return bestIndex
}
