/// Case-insensitive, word-boundary matching of many words and phrases at once.
///
/// Texts and terms are lowercased with Swift's full Unicode lowercasing and runs of whitespace
/// become one space, so `"Bad  WORD"` matches the term `"bad word"`. A term that starts (ends)
/// with a word character matches only where the text has no word character just before (after)
/// it; word characters are letters, digits, marks and `_`.
public struct TermMatcher: Sendable {
  private struct Term: Sendable {
    var scalars: [UInt32]
    var list: Int
  }
  private let byFirst: [UInt32: [Term]]

  /// - Parameter lists: the terms of each list; ``matchingLists(in:)`` answers list indices.
  public init(_ lists: [[String]]) {
    var byFirst: [UInt32: [Term]] = [:]
    for (index, terms) in lists.enumerated() {
      for term in terms {
        let scalars = Self.normalize(term)
        guard let first = scalars.first else { continue }
        byFirst[first, default: []].append(Term(scalars: scalars, list: index))
      }
    }
    self.byFirst = byFirst
  }

  /// The indices of the lists with at least one term in `text`, ascending.
  public func matchingLists(in text: String) -> [Int] {
    guard !byFirst.isEmpty else { return [] }
    let s = Self.normalize(text)
    var found = Set<Int>()
    for i in s.indices {
      guard let candidates = byFirst[s[i]] else { continue }
      if i > 0, Self.isWord(s[i]), Self.isWord(s[i - 1]) { continue }
      for term in candidates where !found.contains(term.list) {
        let end = i + term.scalars.count
        guard end <= s.count, s[i..<end].elementsEqual(term.scalars) else { continue }
        if end < s.count, Self.isWord(term.scalars.last!), Self.isWord(s[end]) { continue }
        found.insert(term.list)
      }
    }
    return found.sorted()
  }

  static func normalize(_ text: String) -> [UInt32] {
    var out: [UInt32] = []
    var space = false
    for scalar in text.lowercased().unicodeScalars {
      if scalar.properties.isWhitespace {
        space = true
        continue
      }
      if space, !out.isEmpty { out.append(0x20) }
      space = false
      out.append(scalar.value)
    }
    return out
  }

  static func isWord(_ v: UInt32) -> Bool {
    if v < 0x80 {
      return (v >= 0x30 && v <= 0x39) || (v | 0x20 >= 0x61 && v | 0x20 <= 0x7A) || v == 0x5F
    }
    guard let scalar = Unicode.Scalar(v) else { return false }
    let p = scalar.properties
    if p.isAlphabetic || p.numericType != nil { return true }
    switch p.generalCategory {
    case .nonspacingMark, .spacingMark, .enclosingMark, .connectorPunctuation: return true
    default: return false
    }
  }
}
