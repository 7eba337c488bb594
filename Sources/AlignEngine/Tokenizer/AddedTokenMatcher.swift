/// Finds added tokens in raw text, leftmost-longest like Hugging Face's added vocabulary, with a
/// byte trie over their UTF-8 (UTF-8 is self-synchronizing, so a whole match starts and ends on
/// scalar boundaries).
struct AddedTokenMatcher: Sendable {
  enum Segment {
    /// An added token.
    case token(TokenID)
    /// Text between added tokens; `atStart` when it begins the input.
    case text(Substring, atStart: Bool)
  }

  /// (nodes) child transitions per trie node, as (byte, node) pairs.
  private var children: [[(UInt8, Int32)]] = [[]]
  /// (nodes) the added token ending at a node, as an index in `tokens`, or -1.
  private var terminal: [Int32] = [-1]
  /// (256) bytes that start some token.
  private var firstByte = [Bool](repeating: false, count: 256)
  private let tokens: [AddedToken]

  init(_ tokens: [AddedToken]) {
    self.tokens = tokens
    for (index, t) in tokens.enumerated() where !t.content.isEmpty {
      var node = 0
      for b in t.content.utf8 {
        if let child = children[node].first(where: { $0.0 == b }) {
          node = Int(child.1)
        } else {
          children.append([])
          terminal.append(-1)
          let child = Int32(children.count - 1)
          children[node].append((b, child))
          node = Int(child)
        }
      }
      if terminal[node] < 0 { terminal[node] = Int32(index) }
      firstByte[Int(t.content.utf8.first!)] = true
    }
  }

  var isEmpty: Bool { tokens.isEmpty }

  /// Calls `body` with the text segments and added tokens of `text`, in order.
  func split(_ text: String, parseSpecial: Bool, _ body: (Segment) -> Void) {
    let utf8 = text.utf8
    guard !tokens.isEmpty else {
      body(.text(Substring(text), atStart: true))
      return
    }
    let bytes = Array(utf8)
    let n = bytes.count
    var segmentStart = 0
    var i = 0
    while i < n {
      guard firstByte[Int(bytes[i])], let (matchEnd, index) = longestMatch(bytes, at: i, parseSpecial: parseSpecial) else {
        i += 1
        continue
      }
      let token = tokens[index]
      var textEnd = i
      if token.lstrip {
        while textEnd > segmentStart, let s = Self.scalarBefore(bytes, textEnd, floor: segmentStart), s.scalar.properties.isWhitespace {
          textEnd = s.start
        }
      }
      if textEnd > segmentStart {
        body(.text(Self.substring(text, segmentStart, textEnd), atStart: segmentStart == 0))
      }
      body(.token(token.id))
      var next = matchEnd
      if token.rstrip {
        while next < n, let s = Self.scalarAt(bytes, next), s.scalar.properties.isWhitespace { next += s.length }
      }
      segmentStart = next
      i = next
    }
    if segmentStart < n {
      body(.text(Self.substring(text, segmentStart, n), atStart: segmentStart == 0))
    }
  }

  private func longestMatch(_ bytes: [UInt8], at start: Int, parseSpecial: Bool) -> (end: Int, index: Int)? {
    var node = 0
    var best: (Int, Int)?
    var i = start
    while i < bytes.count {
      let b = bytes[i]
      guard let child = children[node].first(where: { $0.0 == b }) else { break }
      node = Int(child.1)
      i += 1
      let t = terminal[node]
      if t >= 0 && (parseSpecial || !tokens[Int(t)].special) { best = (i, Int(t)) }
    }
    return best
  }

  private static func substring(_ text: String, _ from: Int, _ to: Int) -> Substring {
    let u = text.utf8
    let a = u.index(u.startIndex, offsetBy: from)
    let b = u.index(a, offsetBy: to - from)
    return Substring(text.unicodeScalars[a..<b])
  }

  private static func scalarAt(_ bytes: [UInt8], _ i: Int) -> (scalar: Unicode.Scalar, length: Int)? {
    var it = bytes[i...].makeIterator()
    var decoder = UTF8()
    if case .scalarValue(let s) = decoder.decode(&it) { return (s, UTF8.width(s)) }
    return nil
  }

  private static func scalarBefore(_ bytes: [UInt8], _ end: Int, floor: Int) -> (scalar: Unicode.Scalar, start: Int)? {
    var start = end - 1
    while start > floor && bytes[start] & 0xC0 == 0x80 { start -= 1 }
    guard let s = scalarAt(bytes, start) else { return nil }
    return (s.scalar, start)
  }
}
