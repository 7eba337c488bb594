import AlignEngine
import Synchronization

/// Runs many token sequences through one engine and returns what each needs at its last token (the
/// output row, the final hidden state, or both): the shared core of every reward backend.
///
/// Sequences go in as few `Engine.forward` calls as the token budget allows. Prefixes shared inside
/// a group are computed once (forked KV sequences). A runner may also be given a fixed head that
/// most inputs start with (a judge's rating instructions): its keys and values are computed once and
/// kept in a cache that is reused by every later group (so one-at-a-time calls benefit too); without
/// a head, each group gets a KV cache sized for exactly its sequences, freed afterwards.
struct LastTokenRunner: Sendable {
  let engine: Engine
  /// Most tokens in one forward call (bounds the temporary KV cache; a longer single sequence runs
  /// alone).
  let maxTokensPerPass: Int
  /// The fixed head and the cache that holds its keys and values, when there is one.
  private let head: SharedHead?

  /// - Parameter sharedHead: tokens most inputs start with, computed once and kept (empty or nil:
  ///   none). Inputs that do not start with them run as if there were no head.
  init(engine: Engine, maxTokensPerPass: Int = 4096, sharedHead: [Int32]? = nil) {
    self.engine = engine
    self.maxTokensPerPass = max(maxTokensPerPass, 1)
    if let sharedHead, !sharedHead.isEmpty {
      head = SharedHead(tokens: sharedHead)
    } else {
      head = nil
    }
  }

  /// A persistent KV cache holding one sequence: the head's tokens.
  final class SharedHead: Sendable {
    let tokens: [Int32]
    /// The cache (nil until first used; replaced by a larger one when a group needs more room).
    let cache = Mutex<KVCache?>(nil)
    static let sequence = SequenceID(Int.max)

    init(tokens: [Int32]) { self.tokens = tokens }
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

  /// The last-token outputs of every sequence, in the order given.
  ///
  /// The outputs do not depend on that order: the sequences run sorted by their tokens (ties keep
  /// their positions), so the same set of inputs makes the same forward calls with the same rows in
  /// the same places whatever order a caller lists them in. That matters where the weights are
  /// floats: sgemm's result for a row can depend on its place in the batch (OpenBLAS's AVX2 kernels
  /// differ in the last bits between a block's edge rows and its inner ones), so without it
  /// `pairwise(a, b)` and `pairwise(b, a)` could disagree in the 8th digit. Quantized weights go
  /// through the batch-invariant integer products and are unaffected either way.
  /// - Parameters:
  ///   - logits: `.last` for the output row (classifier score or next-token logits), `.none` when
  ///     only the hidden state is needed.
  ///   - wantHidden: also return the final normed hidden state.
  /// - Throws: ``InvalidRequest`` (see ``validate(_:)``), `EngineError` on internal failures.
  func run(_ sequences: [[Int32]], logits: LogitsRequest, wantHidden: Bool) throws -> [ForwardOutput] {
    try validate(sequences)
    let order = sequences.indices.sorted { a, b in
      sequences[a] == sequences[b] ? a < b : sequences[a].lexicographicallyPrecedes(sequences[b])
    }
    let sorted = order.map { sequences[$0] }
    var outputs: [ForwardOutput?] = Array(repeating: nil, count: sequences.count)
    var start = 0
    while start < sorted.count {
      var end = start
      var tokens = 0
      while end < sorted.count, end == start || tokens + sorted[end].count <= maxTokensPerPass {
        tokens += sorted[end].count
        end += 1
      }
      let group = try pass(sorted[start..<end], logits: logits, wantHidden: wantHidden)
      for (k, output) in group.enumerated() { outputs[order[start + k]] = output }
      start = end
    }
    return outputs.map { $0! }
  }

  /// The fewest tokens worth a shared root (a root costs one more forked sequence and a copied
  /// partial KV block per fork).
  static let minShared = 8

  /// The fewest tokens a sequence must keep past a shared prefix so that its rows go through the
  /// same products as when it runs alone: any count when the engine sends every row through the
  /// batch-invariant integer products (`gemmMinTokens` above the step size, as alignd runs it),
  /// else `gemmMinTokens` (remainders then stay on sgemm, like a whole prompt).
  private var minRemainder: Int {
    let s = engine.settings
    return s.gemmMinTokens > s.maxBatchTokens ? 1 : max(s.gemmMinTokens, 1)
  }

  /// Runs one group in shared passes: a prefix common to all sequences (a chat template's system
  /// header) and prefixes shared by runs of sequences (the two answers of a pair) are computed once
  /// in forked KV sequences, then every sequence runs only its own remainder (see ``minRemainder``).
  /// When every sequence starts with the runner's head, the group runs in the head's persistent
  /// cache and forks from it.
  private func pass(_ group: ArraySlice<[Int32]>, logits: LogitsRequest, wantHidden: Bool) throws -> [ForwardOutput] {
    let sequences = Array(group)
    let minRemainder = self.minRemainder
    if let head, sequences.allSatisfy({ $0.count >= head.tokens.count + minRemainder && $0.starts(with: head.tokens) }) {
      return try head.cache.withLock { cache in
        try pass(sequences, logits: logits, wantHidden: wantHidden, head: head, cache: &cache)
      }
    }
    let plan = PrefixPlan(sequences, minShared: Self.minShared, minRemainder: minRemainder, base: 0)
    let cache = try engine.makeCache(capacityTokens: max(Self.capacity(sequences, plan, base: 0), 16), blockSize: 16)
    return try pass(sequences, plan: plan, cache: cache, base: nil, logits: logits, wantHidden: wantHidden)
  }

  /// An upper bound of the blocks' tokens a group needs past `base` shared tokens: every sequence's
  /// remainder, each root, and a copied partial block per fork.
  private static func capacity(_ sequences: [[Int32]], _ plan: PrefixPlan, base: Int) -> Int {
    let blockSize = 16
    func rounded(_ n: Int) -> Int { (n + blockSize - 1) / blockSize * blockSize }
    return sequences.reduce(0) { $0 + rounded($1.count - base) } + plan.roots.reduce(0) { $0 + rounded($1.length - base) }
      + blockSize * (plan.roots.count + sequences.count)
  }

  /// The group in the head's cache (made or enlarged here, the head computed into it once).
  private func pass(
    _ sequences: [[Int32]], logits: LogitsRequest, wantHidden: Bool, head: SharedHead, cache: inout KVCache?
  ) throws -> [ForwardOutput] {
    let base = head.tokens.count
    let plan = PrefixPlan(sequences, minShared: Self.minShared, minRemainder: minRemainder, base: base)
    let needed = Self.capacity(sequences, plan, base: base) + (base + 15) / 16 * 16
    if cache == nil || cache!.capacityTokens < needed {
      cache = nil  // free the old one first
      let fresh = try engine.makeCache(capacityTokens: needed, blockSize: 16)
      try fresh.addSequence(SharedHead.sequence)
      _ = try engine.forward([BatchItem(sequence: SharedHead.sequence, tokens: head.tokens, logits: .none)], cache: fresh)
      cache = fresh
    }
    let kv = cache!
    do {
      let out = try pass(sequences, plan: plan, cache: kv, base: SharedHead.sequence, logits: logits, wantHidden: wantHidden)
      for id in kv.sequenceIDs where id != SharedHead.sequence { kv.removeSequence(id) }
      return out
    } catch {
      cache = nil  // leave no half-run group behind
      throw error
    }
  }

  /// Runs the roots of `plan` then every sequence's remainder in `cache`; sequences and roots with no
  /// parent fork from `base` when given (whose tokens they all start with), else start empty.
  private func pass(
    _ sequences: [[Int32]], plan: PrefixPlan, cache: KVCache, base: SequenceID?, logits: LogitsRequest,
    wantHidden: Bool
  ) throws -> [ForwardOutput] {
    let baseLength = base.flatMap { cache.length(of: $0) } ?? 0
    func start(_ id: SequenceID) throws {
      if let base { try cache.fork(base, into: id) } else { try cache.addSequence(id) }
    }
    // Roots first (sequence ids after the members'), level by level, outputs discarded.
    let rootID = { (r: Int) in SequenceID(sequences.count + r) }
    for level in 0..<2 {
      var items: [BatchItem] = []
      for (r, root) in plan.roots.enumerated() where root.level == level {
        if let parent = root.parent {
          try cache.fork(rootID(parent), into: rootID(r))
        } else {
          try start(rootID(r))
        }
        let first = root.parent.map { plan.roots[$0].length } ?? baseLength
        let tokens = Array(sequences[root.member][first..<root.length])
        items.append(BatchItem(sequence: rootID(r), tokens: tokens, logits: .none))
      }
      if !items.isEmpty { _ = try engine.forward(items, cache: cache) }
    }
    var items: [BatchItem] = []
    items.reserveCapacity(sequences.count)
    for (i, s) in sequences.enumerated() {
      let first: Int
      if let r = plan.rootOf[i] {
        try cache.fork(rootID(r), into: SequenceID(i))
        first = plan.roots[r].length
      } else {
        try start(SequenceID(i))
        first = baseLength
      }
      items.append(BatchItem(sequence: SequenceID(i), tokens: Array(s[first...]), logits: logits, wantHidden: wantHidden))
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

  /// - Parameter base: tokens every sequence already shares (a persistent head); roots extend it.
  init(_ sequences: [[Int32]], minShared: Int, minRemainder: Int, base headLength: Int) {
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
    if global - headLength >= minShared {
      roots.append(Root(level: 0, parent: nil, length: global, member: 0))
      globalRoot = 0
      for i in sequences.indices { rootOf[i] = 0 }
    }
    let base = globalRoot == nil ? headLength : global
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
