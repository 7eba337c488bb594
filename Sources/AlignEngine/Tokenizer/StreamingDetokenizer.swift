/// Turns a stream of token ids into text pieces without ever emitting half a UTF-8 character:
/// bytes of an incomplete character are held back until the tokens that complete it arrive.
///
/// Byte-level and byte-fallback tokens often end inside a multi-byte character (an emoji is split
/// over several tokens), so decoding token by token would print U+FFFD garbage.
public struct StreamingDetokenizer: Sendable {
  private let tokenizer: Tokenizer
  private let skipSpecialTokens: Bool
  private var stripLeadingSpace: Bool
  /// Bytes received but not yet emitted: at most one incomplete character (≤ 3 bytes).
  private var pending: [UInt8] = []

  /// Creates a detokenizer.
  /// - Parameters:
  ///   - tokenizer: the tokenizer whose ids will be appended.
  ///   - skipSpecialTokens: drop special tokens (e.g. `<|im_end|>`) from the text.
  ///   - stripLeadingSpace: drop one space at the very start, as a full SentencePiece decode does;
  ///     leave false when the stream continues a prompt.
  public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false, stripLeadingSpace: Bool = false) {
    self.tokenizer = tokenizer
    self.skipSpecialTokens = skipSpecialTokens
    self.stripLeadingSpace = stripLeadingSpace
  }

  /// Adds one token and returns the text it completes (possibly empty).
  public mutating func append(_ id: TokenID) -> String {
    if skipSpecialTokens && tokenizer.isSpecialToken(id) { return "" }
    pending.append(contentsOf: tokenizer.bytes(of: id))
    if stripLeadingSpace, let first = pending.first {
      if first == 32 { pending.removeFirst() }
      stripLeadingSpace = false
    }
    let cut = Self.completePrefixLength(pending)
    guard cut > 0 else { return "" }
    let text = String(decoding: pending[..<cut], as: UTF8.self)
    pending.removeFirst(cut)
    return text
  }

  /// Adds several tokens and returns the text they complete.
  public mutating func append(contentsOf ids: some Sequence<TokenID>) -> String {
    var out = ""
    for id in ids { out += append(id) }
    return out
  }

  /// Emits whatever is held back (an incomplete character becomes U+FFFD) and resets.
  public mutating func finish() -> String {
    defer { pending.removeAll() }
    return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
  }

  /// Whether bytes are being held back.
  public var hasPendingBytes: Bool { !pending.isEmpty }

  /// Length of the longest prefix that does not end inside a character that may still be completed.
  static func completePrefixLength(_ bytes: [UInt8]) -> Int {
    let n = bytes.count
    var i = n - 1
    // Find the start of the last character: at most 3 continuation bytes back.
    while i >= 0 && i >= n - 4 {
      let b = bytes[i]
      if b & 0xC0 != 0x80 {
        let needed: Int
        switch b {
        case 0xC2...0xDF: needed = 2
        case 0xE0...0xEF: needed = 3
        case 0xF0...0xF4: needed = 4
        default: return n  // ASCII or a byte that can never start a character: nothing to wait for
        }
        return n - i < needed ? i : n
      }
      i -= 1
    }
    return n  // only continuation bytes: invalid, emit them (as U+FFFD)
  }
}
