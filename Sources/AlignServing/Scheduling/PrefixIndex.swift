/// The prompts whose keys and values an engine loop keeps for reuse (prefix caching), as pure
/// bookkeeping: which token prefixes are cached, which requests will start from one, and which
/// entry to drop first. The loop owns the KV cache sequences the entries name.
///
/// An entry covers whole KV blocks of one finished prefill: its first `tokens.count` prompt tokens
/// (a multiple of the block size). A new prompt reuses the entry sharing its longest run of whole
/// leading blocks; the last prompt token is always fed again, since sampling needs its logits.
/// Entries that a queued request is about to start from are pinned and never evicted; the others
/// go least recently used first.
struct PrefixIndex {
  struct Entry {
    var tokens: [Int32]
    /// The KV cache sequence holding the entry's keys and values.
    var sequence: Int
    var lastUsed: UInt64
    var pins = 0
  }

  let blockSize: Int
  private(set) var entries: [Int: Entry] = [:]
  /// Requests that will start from an entry: request → (entry, tokens reused).
  private(set) var pinned: [RequestID: (entry: Int, tokens: Int)] = [:]
  private var clock: UInt64 = 0
  private var nextEntry = 0

  init(blockSize: Int) { self.blockSize = max(1, blockSize) }

  /// Tokens the best entry covers for `prompt`, and that entry (nil: no whole block in common).
  func match(_ prompt: [Int32]) -> (entry: Int, tokens: Int)? {
    // The last prompt token is fed again: at most the whole blocks before it.
    let limit = (prompt.count - 1) / blockSize * blockSize
    guard limit >= blockSize else { return nil }
    var best: (entry: Int, tokens: Int)? = nil
    for (id, entry) in entries {
      var common = 0
      let bound = min(limit, entry.tokens.count)
      while common + blockSize <= bound,
        entry.tokens[common..<(common + blockSize)] == prompt[common..<(common + blockSize)]
      {
        common += blockSize
      }
      if common > 0, common > (best?.tokens ?? 0) { best = (id, common) }
    }
    return best
  }

  /// Looks up `prompt` for a request and pins the entry it will reuse. Returns the tokens reused.
  mutating func pin(_ request: RequestID, prompt: [Int32]) -> Int {
    guard let found = match(prompt) else { return 0 }
    clock += 1
    entries[found.entry]?.pins += 1
    entries[found.entry]?.lastUsed = clock
    pinned[request] = found
    return found.tokens
  }

  /// Releases a request's pin (when it starts from the entry, or ends before). Returns the entry's
  /// sequence and the tokens to reuse, if the request had one.
  @discardableResult
  mutating func unpin(_ request: RequestID) -> (sequence: Int, tokens: Int)? {
    guard let found = pinned.removeValue(forKey: request), let entry = entries[found.entry] else { return nil }
    entries[found.entry]?.pins = max(0, entry.pins - 1)
    return (entry.sequence, found.tokens)
  }

  /// Whether a finished prefill of `prompt` would add anything: its whole blocks, unless an entry
  /// already covers them (that entry is then marked used).
  mutating func wants(_ prompt: [Int32]) -> Int {
    let whole = prompt.count / blockSize * blockSize
    guard whole >= blockSize else { return 0 }
    clock += 1
    for (id, entry) in entries where entry.tokens.count >= whole && Array(entry.tokens.prefix(whole)) == Array(prompt.prefix(whole)) {
      entries[id]?.lastUsed = clock
      return 0
    }
    return whole
  }

  /// Adds an entry for the first `length` tokens of `prompt`, held in KV sequence `sequence`.
  /// Returns the sequences of entries it makes redundant (shorter prefixes of it, unpinned): the
  /// caller frees them.
  mutating func insert(_ prompt: [Int32], length: Int, sequence: Int) -> [Int] {
    clock += 1
    let tokens = Array(prompt.prefix(length))
    var dropped: [Int] = []
    for (id, entry) in entries
    where entry.pins == 0 && entry.tokens.count <= tokens.count && Array(tokens.prefix(entry.tokens.count)) == entry.tokens {
      dropped.append(entry.sequence)
      entries[id] = nil
    }
    entries[nextEntry] = Entry(tokens: tokens, sequence: sequence, lastUsed: clock)
    nextEntry += 1
    return dropped
  }

  /// The least recently used unpinned entry, removed (its sequence for the caller to free).
  mutating func evictOne() -> Int? {
    guard let (id, entry) = entries.filter({ $0.value.pins == 0 }).min(by: { $0.value.lastUsed < $1.value.lastUsed })
    else { return nil }
    entries[id] = nil
    return entry.sequence
  }
}
