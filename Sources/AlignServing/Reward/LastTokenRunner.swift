import AlignEngine

/// Runs many token sequences through one engine and returns what each needs at its last token (the
/// output row, the final hidden state, or both): the shared core of every reward backend.
///
/// Sequences go in as few `Engine.forward` calls as the token budget allows; each call gets a KV
/// cache sized for exactly its sequences, freed afterwards, so an idle backend holds no cache.
struct LastTokenRunner: Sendable {
  let engine: Engine
  /// Most tokens in one forward call (bounds the temporary KV cache; a longer single sequence runs
  /// alone).
  let maxTokensPerPass: Int

  init(engine: Engine, maxTokensPerPass: Int = 4096) {
    self.engine = engine
    self.maxTokensPerPass = max(maxTokensPerPass, 1)
  }

  /// Checks that every sequence can be run; the error names the input by position.
  /// - Throws: ``InvalidRequest`` for an empty or too long sequence.
  func validate(_ sequences: [[Int32]]) throws {
    let limit = engine.maxContextLength
    for (i, s) in sequences.enumerated() {
      if s.isEmpty { throw InvalidRequest("input \(i) has no tokens to score") }
      if s.count > limit {
        throw InvalidRequest("input \(i) is \(s.count) tokens long; the reward model takes at most \(limit)")
      }
    }
  }

  /// The last-token outputs of every sequence, in order.
  /// - Parameters:
  ///   - logits: `.last` for the output row (classifier score or next-token logits), `.none` when
  ///     only the hidden state is needed.
  ///   - wantHidden: also return the final normed hidden state.
  /// - Throws: ``InvalidRequest`` (see ``validate(_:)``), `EngineError` on internal failures.
  func run(_ sequences: [[Int32]], logits: LogitsRequest, wantHidden: Bool) throws -> [ForwardOutput] {
    try validate(sequences)
    var outputs: [ForwardOutput] = []
    outputs.reserveCapacity(sequences.count)
    var start = 0
    while start < sequences.count {
      var end = start
      var tokens = 0
      while end < sequences.count, end == start || tokens + sequences[end].count <= maxTokensPerPass {
        tokens += sequences[end].count
        end += 1
      }
      outputs += try pass(sequences[start..<end], logits: logits, wantHidden: wantHidden)
      start = end
    }
    return outputs
  }

  /// Runs one group in shared passes: a prefix common to all sequences (a chat template's system
  /// header) and prefixes shared by runs of sequences (the two answers of a pair) are computed once
  /// in forked KV sequences, then every sequence runs only its own remainder. Remainders keep at
  /// least `gemmMinTokens` tokens, so every row goes through the same float products it would
  /// alone (no quantized-activation decode path).
  private func pass(_ group: ArraySlice<[Int32]>, logits: LogitsRequest, wantHidden: Bool) throws -> [ForwardOutput] {
    let sequences = Array(group)
    let plan = PrefixPlan(sequences, minShared: 16, minRemainder: max(engine.settings.gemmMinTokens, 1))
    let blockSize = 16
    func rounded(_ n: Int) -> Int { (n + blockSize - 1) / blockSize * blockSize }
    // Every sequence at full length, plus each root and a copied partial block per fork: an upper bound.
    let capacity =
      sequences.reduce(0) { $0 + rounded($1.count) } + plan.roots.reduce(0) { $0 + rounded($1.length) }
      + blockSize * (plan.roots.count + sequences.count)
    let cache = try engine.makeCache(capacityTokens: max(capacity, blockSize), blockSize: blockSize)
    // Roots first (sequence ids after the members'), level by level, outputs discarded.
    let rootID = { (r: Int) in SequenceID(sequences.count + r) }
    for level in 0..<2 {
      var items: [BatchItem] = []
      for (r, root) in plan.roots.enumerated() where root.level == level {
        if let parent = root.parent {
          try cache.fork(rootID(parent), into: rootID(r))
        } else {
          try cache.addSequence(rootID(r))
        }
        let start = root.parent.map { plan.roots[$0].length } ?? 0
        let tokens = Array(sequences[root.member][start..<root.length])
        items.append(BatchItem(sequence: rootID(r), tokens: tokens, logits: .none))
      }
      if !items.isEmpty { _ = try engine.forward(items, cache: cache) }
    }
    var items: [BatchItem] = []
    items.reserveCapacity(sequences.count)
    for (i, s) in sequences.enumerated() {
      let start: Int
      if let r = plan.rootOf[i] {
        try cache.fork(rootID(r), into: SequenceID(i))
        start = plan.roots[r].length
      } else {
        try cache.addSequence(SequenceID(i))
        start = 0
      }
      items.append(BatchItem(sequence: SequenceID(i), tokens: Array(s[start...]), logits: logits, wantHidden: wantHidden))
    }
    // The roots' blocks stay referenced by their forks; dropping the roots keeps the cache tidy.
    for r in plan.roots.indices { cache.removeSequence(rootID(r)) }
    return try engine.forward(items, cache: cache)
  }
}

/// Which token prefixes a group of sequences shares, as at most two levels of roots: one prefix
/// common to all (level 0) and prefixes common to runs of lexicographically adjacent sequences
/// (level 1, forked from level 0 when there is one).
struct PrefixPlan {
  struct Root {
    /// 0: common to the whole group; 1: common to one run.
    var level: Int
    /// Root this one extends, if any.
    var parent: Int?
    /// Prefix length in tokens.
    var length: Int
    /// A sequence holding the prefix (to read its tokens).
    var member: Int
  }

  var roots: [Root] = []
  /// The deepest root each sequence forks from, if any.
  var rootOf: [Int?]

  init(_ sequences: [[Int32]], minShared: Int, minRemainder: Int) {
    rootOf = Array(repeating: nil, count: sequences.count)
    guard sequences.count >= 2 else { return }
    func lcp(_ a: [Int32], _ b: [Int32], limit: Int) -> Int {
      var k = 0
      let n = min(limit, a.count, b.count)
      while k < n, a[k] == b[k] { k += 1 }
      return k
    }
    // The most a sequence may share and still keep its remainder.
    let cap = sequences.map { max(0, $0.count - minRemainder) }
    var global = cap.min() ?? 0
    for s in sequences.dropFirst() { global = lcp(sequences[0], s, limit: global) }
    var globalRoot: Int?
    if global >= minShared {
      roots.append(Root(level: 0, parent: nil, length: global, member: 0))
      globalRoot = 0
      for i in sequences.indices { rootOf[i] = 0 }
    }
    let base = globalRoot == nil ? 0 : global
    // Runs of adjacent sequences (in sorted order) sharing at least minShared more tokens.
    let order = sequences.indices.sorted { sequences[$0].lexicographicallyPrecedes(sequences[$1]) }
    var run: [Int] = []
    var runLength = 0
    func closeRun() {
      if run.count >= 2, runLength - base >= minShared {
        roots.append(Root(level: 1, parent: globalRoot, length: runLength, member: run[0]))
        for i in run { rootOf[i] = roots.count - 1 }
      }
    }
    for i in order {
      if let first = run.first {
        let shared = lcp(sequences[first], sequences[i], limit: min(runLength, cap[i]))
        if shared - base >= minShared {
          run.append(i)
          runLength = shared
          continue
        }
        closeRun()
      }
      run = [i]
      runLength = cap[i]
    }
    closeRun()
  }
}
