// Text tables shared by the converted classifiers (LexicalClassifier, ToxBlockClassifier,
// HateSonarClassifier): each reproduces a Python or C library's string handling from tables the
// converter recorded, so results do not depend on this Swift's Unicode version.

/// A table that does not hold what its converter writes.
struct TextTableError: Error {
  let message: String
}

/// One `[code point, [lowered code points]]` entry of a recorded `str.lower()` table.
struct LowerMapEntry: Decodable, Sendable {
  let key: UInt32
  let value: [UInt32]

  init(key: UInt32, value: [UInt32]) {
    self.key = key
    self.value = value
  }

  init(from decoder: any Decoder) throws {
    var container = try decoder.unkeyedContainer()
    key = try container.decode(UInt32.self)
    value = try container.decode([UInt32].self)
  }
}

/// Python's `str.lower()` tables as `scripts/convert-profanity-model.py` records them.
struct PythonLowerTables: Decodable, Sendable {
  let lowerMap: [LowerMapEntry]
  let sigmaCased: [[UInt32]]
  let sigmaCaseIgnorable: [[UInt32]]

  enum CodingKeys: String, CodingKey {
    case lowerMap = "lower_map"
    case sigmaCased = "sigma_cased"
    case sigmaCaseIgnorable = "sigma_case_ignorable"
  }
}

/// Lower-casing by a recorded table: Python's `str.lower()` (one scalar may become several, and
/// capital sigma follows the Final_Sigma rule) or a C library's `towlower` (one to one, no
/// context: give no sigma tables).
struct LowercaseTable: Sendable {
  private let asciiLower: [UInt32]  // (128) lowercase of ASCII, always one scalar
  private let keys: [UInt32]  // (mappings) ascending
  private let offsets: [Int32]  // (mappings + 1) into values
  private let values: [UInt32]  // (total mapped scalars)
  private let sigma: (cased: RangeSet32, ignorable: RangeSet32)?

  /// - Parameter sigma: the Final_Sigma context tables (Python), or nil to map U+03A3 by the
  ///   table like any other scalar.
  init(_ entries: [LowerMapEntry], sigma: (cased: [[UInt32]], ignorable: [[UInt32]])?) throws(TextTableError) {
    var keys: [UInt32] = []
    var offsets: [Int32] = [0]
    var values: [UInt32] = []
    for entry in entries {
      guard entry.key <= 0x10FFFF, keys.last.map({ $0 < entry.key }) ?? true,
        !entry.value.isEmpty, entry.value.count <= 8, entry.value.allSatisfy({ $0 <= 0x10FFFF })
      else { throw TextTableError(message: "lower_map is not ascending valid scalars at U+\(entry.key)") }
      keys.append(entry.key)
      values.append(contentsOf: entry.value)
      offsets.append(Int32(values.count))
    }
    var asciiLower = (0..<128).map { UInt32($0) }
    for (i, key) in keys.enumerated() where key < 128 {
      // The ASCII fast path keeps one scalar per scalar (true of every Unicode version).
      guard offsets[i + 1] - offsets[i] == 1 else {
        throw TextTableError(message: "lower_map maps ASCII U+\(key) to several scalars")
      }
      asciiLower[Int(key)] = values[Int(offsets[i])]
    }
    self.keys = keys
    self.offsets = offsets
    self.values = values
    self.asciiLower = asciiLower
    if let sigma {
      self.sigma = (
        try RangeSet32(sigma.cased, name: "sigma_cased"), try RangeSet32(sigma.ignorable, name: "sigma_case_ignorable")
      )
    } else {
      self.sigma = nil
    }
  }

  /// Python's tables: `lower_map` with the Final_Sigma rule.
  init(python tables: PythonLowerTables) throws(TextTableError) {
    try self.init(tables.lowerMap, sigma: (tables.sigmaCased, tables.sigmaCaseIgnorable))
  }

  /// The lowercase of `source` appended to `lowered` (which is emptied first).
  func lowercase(_ source: [UInt32], into lowered: inout [UInt32]) {
    lowered.removeAll(keepingCapacity: true)
    for i in source.indices {
      let v = source[i]
      if v < 128 {
        lowered.append(asciiLower[Int(v)])
      } else if v == 0x3A3, let sigma {
        lowered.append(Self.isFinalSigma(source, at: i, sigma) ? 0x3C2 : 0x3C3)
      } else if let m = mapping(of: v) {
        lowered.append(contentsOf: values[Int(offsets[m])..<Int(offsets[m + 1])])
      } else {
        lowered.append(v)
      }
    }
  }

  /// CPython's `handle_capital_sigma`: cased (case-ignorable)* Σ !((case-ignorable)* cased).
  private static func isFinalSigma(
    _ s: [UInt32], at i: Int, _ sigma: (cased: RangeSet32, ignorable: RangeSet32)
  ) -> Bool {
    var j = i - 1
    while j >= 0, sigma.ignorable.contains(s[j]) { j -= 1 }
    guard j >= 0, sigma.cased.contains(s[j]) else { return false }
    j = i + 1
    while j < s.count, sigma.ignorable.contains(s[j]) { j += 1 }
    return j == s.count || !sigma.cased.contains(s[j])
  }

  private func mapping(of v: UInt32) -> Int? {
    var lo = 0
    var hi = keys.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if keys[mid] < v { lo = mid + 1 } else { hi = mid }
    }
    return lo < keys.count && keys[lo] == v ? lo : nil
  }
}

/// A set of Unicode scalar values as sorted, disjoint, inclusive ranges.
struct RangeSet32: Sendable {
  let lows: [UInt32]  // (ranges) ascending
  let highs: [UInt32]  // (ranges)

  init(_ pairs: [[UInt32]], name: String) throws(TextTableError) {
    var lows: [UInt32] = []
    var highs: [UInt32] = []
    for pair in pairs {
      guard pair.count == 2, pair[0] <= pair[1], pair[1] <= 0x10FFFF,
        highs.last.map({ $0 < pair[0] }) ?? true
      else { throw TextTableError(message: "\(name) is not sorted disjoint scalar ranges") }
      lows.append(pair[0])
      highs.append(pair[1])
    }
    self.lows = lows
    self.highs = highs
  }

  @inline(__always) func contains(_ v: UInt32) -> Bool {
    // The last range whose low bound is <= v.
    var lo = 0
    var hi = lows.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if lows[mid] <= v { lo = mid + 1 } else { hi = mid }
    }
    return lo > 0 && v <= highs[lo - 1]
  }
}

/// An open-addressing hash table from scalar sequences to their index, compared scalar by
/// scalar (Swift `String` equality is canonical equivalence, Python's is code point equality).
struct ScalarTable: Sendable {
  let arena: [UInt32]  // (total scalars) all keys back to back
  let offsets: [Int]  // (keys + 1) into arena
  let slots: [Int32]  // (capacity) key index or -1
  let mask: Int

  /// Returns nil when two keys are equal.
  init?(_ keys: [String]) {
    var arena: [UInt32] = []
    var offsets: [Int] = [0]
    for key in keys {
      for scalar in key.unicodeScalars { arena.append(scalar.value) }
      offsets.append(arena.count)
    }
    var capacity = 16
    while capacity < keys.count * 2 { capacity *= 2 }
    var slots = [Int32](repeating: -1, count: capacity)
    let mask = capacity - 1
    for k in keys.indices {
      let key = arena[offsets[k]..<offsets[k + 1]]
      var slot = key.withUnsafeBufferPointer { Self.hash($0) } & mask
      while slots[slot] >= 0 {
        if arena[offsets[Int(slots[slot])]..<offsets[Int(slots[slot]) + 1]].elementsEqual(key) {
          return nil
        }
        slot = (slot + 1) & mask
      }
      slots[slot] = Int32(k)
    }
    self.arena = arena
    self.offsets = offsets
    self.slots = slots
    self.mask = mask
  }

  static func hash(_ key: UnsafeBufferPointer<UInt32>) -> Int {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
    for v in key {
      h = (h ^ UInt64(v)) &* 0x0000_0100_0000_01b3
    }
    h ^= h >> 29
    return Int(truncatingIfNeeded: h)
  }

  func index(of key: UnsafeBufferPointer<UInt32>) -> Int? {
    var slot = Self.hash(key) & mask
    return arena.withUnsafeBufferPointer { arena in
      while true {
        let k = Int(slots[slot])
        if k < 0 { return nil }
        let start = offsets[k]
        let end = offsets[k + 1]
        if end - start == key.count {
          var same = true
          for i in 0..<key.count where arena[start + i] != key[i] {
            same = false
            break
          }
          if same { return k }
        }
        slot = (slot + 1) & mask
      }
    }
  }

  /// The index of `scalars[range]`.
  func index(of scalars: [UInt32], _ range: Range<Int>) -> Int? {
    scalars.withUnsafeBufferPointer { index(of: UnsafeBufferPointer(rebasing: $0[range])) }
  }
}
