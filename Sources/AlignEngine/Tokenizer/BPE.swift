/// Merge rules as an open-addressing hash map from a pair of token ids to the merge's rank and result.
/// (Swift's Dictionary hashes with SipHash, which dominated the merge loop.)
struct MergeTable: Sendable {
  struct Entry: Sendable {
    var rank: Int32
    var result: TokenID
  }

  private static let empty = UInt64.max
  /// (capacity) pair keys, `empty` where free.
  private var keys: [UInt64] = []
  /// (capacity) the entry of each key.
  private var entries: [Entry] = []
  private var shift: UInt64 = 64
  private(set) var count = 0

  /// Creates a table sized for `expected` rules.
  init(expected: Int) {
    var capacity = 16
    while capacity < expected * 2 { capacity *= 2 }
    keys = Array(repeating: Self.empty, count: capacity)
    entries = Array(repeating: Entry(rank: 0, result: 0), count: capacity)
    shift = UInt64(64 - capacity.trailingZeroBitCount)
  }

  @inline(__always)
  static func key(_ left: TokenID, _ right: TokenID) -> UInt64 {
    UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
  }

  @inline(__always)
  private func slot(_ key: UInt64) -> Int {
    Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
  }

  /// Adds a rule unless the pair already has one (the first, highest-priority rule wins).
  mutating func add(left: TokenID, right: TokenID, rank: Int32, result: TokenID) {
    if (count + 1) * 2 > keys.count { grow() }
    let k = Self.key(left, right)
    var i = slot(k)
    let mask = keys.count - 1
    while keys[i] != Self.empty {
      if keys[i] == k { return }
      i = (i + 1) & mask
    }
    keys[i] = k
    entries[i] = Entry(rank: rank, result: result)
    count += 1
  }

  private mutating func grow() {
    let oldKeys = keys
    let oldEntries = entries
    self = MergeTable(expected: max(oldKeys.count, 16))
    for (i, k) in oldKeys.enumerated() where k != Self.empty {
      add(left: TokenID(bitPattern: UInt32(k >> 32)), right: TokenID(bitPattern: UInt32(truncatingIfNeeded: k)), rank: oldEntries[i].rank, result: oldEntries[i].result)
    }
  }

  @inline(__always)
  func lookup(_ left: TokenID, _ right: TokenID) -> Entry? {
    let k = Self.key(left, right)
    let mask = keys.count - 1
    var i = slot(k)
    while true {
      let stored = keys[i]
      if stored == k { return entries[i] }
      if stored == Self.empty { return nil }
      i = (i + 1) & mask
    }
  }
}

/// Applies merges to one word: repeatedly merges the adjacent pair with the lowest rank (leftmost on
/// ties), as Hugging Face's BPE and llama.cpp do, with a min-heap of candidate pairs so a long word
/// costs O(n log n).
struct BPEMerger {
  // Scratch buffers reused across words. // (symbols of the current word)
  private var ids: [TokenID] = []
  private var prev: [Int32] = []
  private var next: [Int32] = []
  private var heap: [UInt64] = []  // (rank << 32 | position), a min-heap

  init() {}

  /// Merges `symbols` in place into the word's final tokens.
  mutating func merge(_ symbols: inout [TokenID], table: MergeTable) {
    let n = symbols.count
    guard n > 1 else { return }
    if n == 2 {
      if let e = table.lookup(symbols[0], symbols[1]) { symbols = [e.result] }
      return
    }
    ids = symbols
    prev.removeAll(keepingCapacity: true)
    next.removeAll(keepingCapacity: true)
    heap.removeAll(keepingCapacity: true)
    for i in 0..<n {
      prev.append(Int32(i - 1))
      next.append(i + 1 < n ? Int32(i + 1) : -1)
    }
    for i in 0..<(n - 1) {
      if let e = table.lookup(ids[i], ids[i + 1]) { push(UInt64(UInt32(e.rank)) << 32 | UInt64(i)) }
    }
    while let top = pop() {
      let rank = Int32(truncatingIfNeeded: top >> 32)
      let pos = Int(UInt32(truncatingIfNeeded: top))
      let right = next[pos]
      // Skip stale entries: the left symbol was merged away (marked by a negative id) or the pair changed.
      guard ids[pos] >= 0, right >= 0, let e = table.lookup(ids[pos], ids[Int(right)]), e.rank == rank else {
        continue
      }
      ids[pos] = e.result
      ids[Int(right)] = -1
      let after = next[Int(right)]
      next[pos] = after
      if after >= 0 { prev[Int(after)] = Int32(pos) }
      let before = prev[pos]
      if before >= 0, let l = table.lookup(ids[Int(before)], ids[pos]) {
        push(UInt64(UInt32(l.rank)) << 32 | UInt64(UInt32(before)))
      }
      if after >= 0, let r = table.lookup(ids[pos], ids[Int(after)]) {
        push(UInt64(UInt32(r.rank)) << 32 | UInt64(pos))
      }
    }
    symbols.removeAll(keepingCapacity: true)
    var i: Int32 = 0
    while i >= 0 {
      symbols.append(ids[Int(i)])
      i = next[Int(i)]
    }
  }

  private mutating func push(_ v: UInt64) {
    heap.append(v)
    var i = heap.count - 1
    while i > 0 {
      let p = (i - 1) / 2
      if heap[p] <= heap[i] { break }
      heap.swapAt(p, i)
      i = p
    }
  }

  private mutating func pop() -> UInt64? {
    guard let first = heap.first else { return nil }
    let last = heap.removeLast()
    if heap.isEmpty { return first }
    heap[0] = last
    var i = 0
    let count = heap.count
    while true {
      let l = 2 * i + 1
      let r = l + 1
      var m = i
      if l < count && heap[l] < heap[m] { m = l }
      if r < count && heap[r] < heap[m] { m = r }
      if m == i { break }
      heap.swapAt(i, m)
      i = m
    }
    return first
  }
}
