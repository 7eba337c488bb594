import Foundation
import Synchronization

/// A BPE tokenizer (byte-level or SentencePiece-style) built from a `TokenizerDescription`.
///
/// Encoding first cuts added tokens (specials such as `<|im_start|>`) out of the raw text, so they
/// are never split; the text between them is normalized, pre-tokenized and merged. Results of the
/// merge step are cached per piece. Safe to share between tasks.
public final class Tokenizer: Sendable {
  /// What the tokenizer was built from.
  public let definition: TokenizerDescription
  /// Number of ids in the vocabulary (including added tokens).
  public let vocabularySize: Int

  private let merges: MergeTable
  /// (vocab) raw bytes each id decodes to.
  private let tokenBytes: [[UInt8]]
  /// (vocab) whether decode(skipSpecialTokens: true) drops the id.
  private let isSpecial: [Bool]
  /// (256) byte-level: the id of each byte's single-character token, or -1.
  private let byteSymbols: [TokenID]
  /// SentencePiece: the id of each `<0xNN>` token, or -1.
  private let byteFallbackIDs: [TokenID]
  /// (65536) SentencePiece initial symbols: the single-scalar token of each BMP scalar, or -1.
  private let bmpSymbols: [TokenID]
  /// The same for scalars above U+FFFF.
  private let astralSymbols: [UInt32: TokenID]
  /// Whole-piece lookup by raw bytes, for `ignoreMerges`.
  private let pieceIDs: [[UInt8]: TokenID]
  private let added: AddedTokenMatcher
  /// Token text → id, added tokens included.
  private let vocabulary: [String: TokenID]
  private let cache = Mutex<[[UInt8]: [TokenID]]>([:])
  private static let cacheLimit = 50_000

  /// Builds a tokenizer.
  /// - Throws: `TokenizerError.invalidDescription` when ids or merges are inconsistent.
  public init(_ d: TokenizerDescription) throws {
    definition = d
    var size = d.tokens.count
    for a in d.addedTokens {
      // Added tokens extend the vocabulary; bound them so a malformed file cannot make us allocate wildly.
      guard a.id >= 0, Int(a.id) < max(d.tokens.count, 1) * 4 + 1_000_000 else {
        throw TokenizerError.invalidDescription("added token \(a.content) has id \(a.id) outside the vocabulary")
      }
      size = max(size, Int(a.id) + 1)
    }
    for id in [d.bosTokenID, d.eosTokenID, d.eotTokenID, d.unknownTokenID] {
      if let id, id < 0 || Int(id) >= size { throw TokenizerError.invalidDescription("special token id \(id) outside the vocabulary") }
    }
    vocabularySize = size
    guard d.tokenTypes.count == d.tokens.count else {
      throw TokenizerError.invalidDescription("\(d.tokenTypes.count) token types for \(d.tokens.count) tokens")
    }

    var vocab: [String: TokenID] = [:]
    vocab.reserveCapacity(size)
    var texts = d.tokens + Array(repeating: "", count: size - d.tokens.count)
    for a in d.addedTokens { texts[Int(a.id)] = a.content }
    for (i, t) in texts.enumerated() where vocab[t] == nil && !(i >= d.tokens.count && t.isEmpty) { vocab[t] = TokenID(i) }

    var special = [Bool](repeating: false, count: size)
    for (i, t) in d.tokenTypes.enumerated() where t == .control { special[i] = true }
    for a in d.addedTokens where a.special { special[Int(a.id)] = true }
    isSpecial = special

    // Decoded bytes per id.
    var bytes: [[UInt8]] = []
    bytes.reserveCapacity(size)
    var fallback = [TokenID](repeating: -1, count: 256)
    for (i, t) in texts.enumerated() {
      switch d.model {
      case .byteLevelBPE:
        bytes.append(ByteLevel.decode(token: t))
      case .sentencePieceBPE:
        if d.byteFallback, let b = Self.byteFallbackValue(t) {
          bytes.append([b])
          if fallback[Int(b)] < 0 { fallback[Int(b)] = TokenID(i) }
        } else {
          bytes.append(Array(String(String.UnicodeScalarView(t.unicodeScalars.map { $0 == Self.metaspace ? " " : $0 })).utf8))
        }
      }
    }
    tokenBytes = bytes
    byteFallbackIDs = fallback

    var symbols = [TokenID](repeating: -1, count: 256)
    var bmp: [TokenID] = []
    var astral: [UInt32: TokenID] = [:]
    var pieces: [[UInt8]: TokenID] = [:]
    switch d.model {
    case .byteLevelBPE:
      for b in 0..<256 { symbols[b] = vocab[String(Character(ByteLevel.byteToScalar[b]))] ?? -1 }
      if d.ignoreMerges {
        for i in d.tokens.indices where pieces[bytes[i]] == nil { pieces[bytes[i]] = TokenID(i) }
      }
    case .sentencePieceBPE:
      for (i, t) in d.tokens.enumerated() {
        let us = t.unicodeScalars
        if bmp.isEmpty { bmp = Array(repeating: -1, count: 0x10000) }
        if us.count == 1, let s = us.first {
          if s.value < 0x10000 {
            if bmp[Int(s.value)] < 0 { bmp[Int(s.value)] = TokenID(i) }
          } else if astral[s.value] == nil {
            astral[s.value] = TokenID(i)
          }
        }
        if d.ignoreMerges && pieces[Array(t.utf8)] == nil { pieces[Array(t.utf8)] = TokenID(i) }
      }
    }
    byteSymbols = symbols
    bmpSymbols = bmp
    astralSymbols = astral
    pieceIDs = pieces

    vocabulary = vocab
    merges = try Self.buildMerges(d, vocab: vocab)
    added = AddedTokenMatcher(d.addedTokens)
  }

  /// `<0xNN>` → NN.
  private static func byteFallbackValue(_ t: String) -> UInt8? {
    let u = Array(t.utf8)
    guard u.count == 6, u[0] == 60, u[1] == 48, u[2] == 120, u[5] == 62 else { return nil }
    return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
  }

  private static func buildMerges(_ d: TokenizerDescription, vocab: [String: TokenID]) throws -> MergeTable {
    var table = MergeTable(expected: d.merges?.count ?? d.tokens.count * 2)
    if let rules = d.merges {
      for (rank, m) in rules.enumerated() {
        guard let l = vocab[m.left], let r = vocab[m.right], let res = vocab[m.left + m.right] else {
          throw TokenizerError.invalidDescription("merge \"\(m.left) \(m.right)\" uses a token missing from the vocabulary")
        }
        table.add(left: l, right: r, rank: Int32(rank), result: res)
      }
      return table
    }
    guard d.model == .sentencePieceBPE, let scores = d.scores, scores.count == d.tokens.count else {
      throw TokenizerError.invalidDescription("a BPE tokenizer needs merges (or SentencePiece scores)")
    }
    // As transformers' SpmConverter: every split of a normal piece into two normal pieces is a merge,
    // ranked by the merged piece's score (higher first), then by its id.
    var normal: [String: TokenID] = [:]
    for (i, t) in d.tokens.enumerated() where d.tokenTypes[i] == .normal && normal[t] == nil { normal[t] = TokenID(i) }
    var ranked: [(score: Float, id: TokenID, left: TokenID, right: TokenID)] = []
    for (i, t) in d.tokens.enumerated() where d.tokenTypes[i] == .normal {
      // Splits between Unicode scalars (Python string indices), not grapheme clusters.
      let scalars = Array(t.unicodeScalars)
      guard scalars.count > 1 else { continue }
      for split in 1..<scalars.count {
        let left = String(String.UnicodeScalarView(scalars[..<split]))
        let right = String(String.UnicodeScalarView(scalars[split...]))
        if let l = normal[left], let r = normal[right] {
          ranked.append((scores[i], TokenID(i), l, r))
        }
      }
    }
    ranked.sort { $0.score != $1.score ? $0.score > $1.score : ($0.id != $1.id ? $0.id < $1.id : $0.left < $1.left) }
    for (rank, m) in ranked.enumerated() { table.add(left: m.left, right: m.right, rank: Int32(rank), result: m.id) }
    return table
  }

  // MARK: Encoding

  /// Encodes text to token ids.
  /// - Parameters:
  ///   - text: the text.
  ///   - addSpecialTokens: add BOS/EOS as the model's post-processor does (`addBOS`, `addEOS`).
  ///   - parseSpecial: recognize special (control) tokens written in the text, e.g. `<|im_start|>`;
  ///     when false they are tokenized as plain text. User-defined added tokens are always recognized.
  public func encode(_ text: String, addSpecialTokens: Bool = true, parseSpecial: Bool = true) -> [TokenID] {
    var out: [TokenID] = []
    out.reserveCapacity(text.utf8.count / 3 + 2)
    let d = definition
    if addSpecialTokens && d.addBOS, let bos = d.bosTokenID { out.append(bos) }
    var work = EncodeScratch()
    var segmentIndex = 0
    added.split(text, parseSpecial: parseSpecial) { segment in
      switch segment {
      case .token(let id):
        out.append(id)
      case .text(let s, let atStart):
        encodeSegment(s, atStart: atStart, first: segmentIndex == 0, into: &out, work: &work)
      }
      segmentIndex += 1
    }
    if addSpecialTokens && d.addEOS, let eos = d.eosTokenID { out.append(eos) }
    return out
  }

  private func encodeSegment(_ s: Substring, atStart: Bool, first: Bool, into out: inout [TokenID], work: inout EncodeScratch) {
    let d = definition
    switch d.model {
    case .byteLevelBPE:
      var segment = s
      if d.normalizeNFC {
        let n = String(s).precomposedStringWithCanonicalMapping
        segment = Substring(n)
      }
      let text = ScalarText(segment.unicodeScalars)
      let utf8 = Array(segment.utf8)
      work.pieces.removeAll(keepingCapacity: true)
      preTokenize(text, kind: d.preTokenizer, into: &work.pieces)
      for p in work.pieces {
        let bytes = utf8[text.utf8Offsets[p.lowerBound]..<text.utf8Offsets[p.upperBound]]
        encodeByteLevelPiece(bytes, into: &out, work: &work)
      }
    case .sentencePieceBPE:
      guard !s.isEmpty else { return }
      var source = Substring(s)
      if d.normalizeNFC { source = Substring(String(s).precomposedStringWithCanonicalMapping) }
      // Spaces become ▁, and the dummy prefix is added (Metaspace adds none if the text already starts with ▁).
      var text = work.scalars
      text.removeAll(keepingCapacity: true)
      switch d.spacePrefix {
      case .none: break
      case .everySegment: text.append(Self.metaspace)
      case .firstSegment:
        if atStart, let first = source.unicodeScalars.first, first != " " && first != Self.metaspace { text.append(Self.metaspace) }
      }
      for u in source.unicodeScalars { text.append(u == " " ? Self.metaspace : u) }
      if d.splitOnSpacePrefix {
        // Metaspace(split: true): words that each start at a ▁.
        var start = 0
        for i in 1..<max(text.count, 1) where text[i] == Self.metaspace {
          encodeSentencePiecePiece(text[start..<i], into: &out, work: &work)
          start = i
        }
        encodeSentencePiecePiece(text[start...], into: &out, work: &work)
      } else {
        encodeSentencePiecePiece(text[...], into: &out, work: &work)
      }
      work.scalars = text
    }
  }

  private static let metaspace: Unicode.Scalar = "\u{2581}"

  private func encodeByteLevelPiece(_ bytes: ArraySlice<UInt8>, into out: inout [TokenID], work: inout EncodeScratch) {
    if bytes.count == 1 {
      let id = byteSymbols[Int(bytes[bytes.startIndex])]
      if id >= 0 { out.append(id) }
      return
    }
    let key = Array(bytes)
    if definition.ignoreMerges, let id = pieceIDs[key] {
      out.append(id)
      return
    }
    if let hit = cache.withLock({ $0[key] }) {
      out.append(contentsOf: hit)
      return
    }
    work.symbols.removeAll(keepingCapacity: true)
    for b in bytes {
      let id = byteSymbols[Int(b)]
      if id >= 0 { work.symbols.append(id) }  // a byte missing from the vocabulary is dropped, as in HF
    }
    work.merger.merge(&work.symbols, table: merges)
    out.append(contentsOf: work.symbols)
    if key.count <= 256 { store(key, work.symbols) }
  }

  private func encodeSentencePiecePiece(_ piece: ArraySlice<Unicode.Scalar>, into out: inout [TokenID], work: inout EncodeScratch) {
    let d = definition
    if piece.isEmpty { return }
    // Short pieces are cached by their UTF-8; long ones (whole paragraphs) rarely repeat.
    var key: [UInt8] = []
    if piece.count <= 64 {
      key.reserveCapacity(piece.count * 3)
      for u in piece { Self.appendUTF8(u, to: &key) }
      if d.ignoreMerges, let id = pieceIDs[key] {
        out.append(id)
        return
      }
      if let hit = cache.withLock({ $0[key] }) {
        out.append(contentsOf: hit)
        return
      }
    }
    // Initial symbols: one per scalar; unknown scalars become byte tokens or the unknown token.
    var symbols = work.symbols
    symbols.removeAll(keepingCapacity: true)
    var lastWasUnknown = false
    var utf8: [UInt8] = []
    for u in piece {
      let id = u.value < 0x10000 ? bmpSymbols[Int(u.value)] : (astralSymbols[u.value] ?? -1)
      if id >= 0 {
        symbols.append(id)
        lastWasUnknown = false
        continue
      }
      if d.byteFallback {
        utf8.removeAll(keepingCapacity: true)
        Self.appendUTF8(u, to: &utf8)
        if utf8.allSatisfy({ byteFallbackIDs[Int($0)] >= 0 }) {
          for b in utf8 { symbols.append(byteFallbackIDs[Int(b)]) }
          lastWasUnknown = false
          continue
        }
      }
      if let unk = d.unknownTokenID {
        if !(d.fuseUnknown && lastWasUnknown) { symbols.append(unk) }
        lastWasUnknown = true
      }
    }
    work.merger.merge(&symbols, table: merges)
    out.append(contentsOf: symbols)
    if !key.isEmpty { store(key, symbols) }
    work.symbols = symbols
  }

  @inline(__always)
  private static func appendUTF8(_ u: Unicode.Scalar, to bytes: inout [UInt8]) {
    let v = u.value
    switch v {
    case 0..<0x80: bytes.append(UInt8(v))
    case 0x80..<0x800:
      bytes.append(UInt8(0xC0 | (v >> 6)))
      bytes.append(UInt8(0x80 | (v & 0x3F)))
    case 0x800..<0x10000:
      bytes.append(UInt8(0xE0 | (v >> 12)))
      bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
      bytes.append(UInt8(0x80 | (v & 0x3F)))
    default:
      bytes.append(UInt8(0xF0 | (v >> 18)))
      bytes.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
      bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
      bytes.append(UInt8(0x80 | (v & 0x3F)))
    }
  }

  private func store(_ key: [UInt8], _ value: [TokenID]) {
    cache.withLock { c in
      if c.count >= Self.cacheLimit { c.removeAll(keepingCapacity: true) }
      c[key] = value
    }
  }

  // MARK: Decoding

  /// The raw bytes of one token (a `▁` of SentencePiece models is a space; `<0xNN>` is byte NN).
  /// Out-of-range ids give no bytes.
  public func bytes(of id: TokenID) -> [UInt8] {
    guard id >= 0 && Int(id) < tokenBytes.count else { return [] }
    return tokenBytes[Int(id)]
  }

  /// Whether `id` is a special token (control or special added token).
  public func isSpecialToken(_ id: TokenID) -> Bool {
    id >= 0 && Int(id) < isSpecial.count && isSpecial[Int(id)]
  }

  /// The token's text in the vocabulary (byte-level tokens in their mapped form), or nil.
  public func tokenText(_ id: TokenID) -> String? {
    guard id >= 0 && Int(id) < vocabularySize else { return nil }
    if Int(id) < definition.tokens.count { return definition.tokens[Int(id)] }
    return definition.addedTokens.first { $0.id == id }?.content
  }

  /// The id of a token given by its vocabulary text (e.g. `"<|im_end|>"`), or nil.
  public func tokenID(_ text: String) -> TokenID? {
    vocabulary[text]
  }

  /// Concatenated raw bytes of `ids`, without the decoder's leading-space strip.
  public func decodeBytes(_ ids: [TokenID], skipSpecialTokens: Bool = false) -> [UInt8] {
    var out: [UInt8] = []
    for id in ids where !(skipSpecialTokens && isSpecialToken(id)) { out.append(contentsOf: bytes(of: id)) }
    return out
  }

  /// Decodes ids to text as Hugging Face's `decode` does (invalid UTF-8 becomes U+FFFD; SentencePiece
  /// models drop one leading space).
  public func decode(_ ids: [TokenID], skipSpecialTokens: Bool = false) -> String {
    var bytes = decodeBytes(ids, skipSpecialTokens: skipSpecialTokens)
    if definition.stripLeadingSpaceOnDecode, bytes.first == 32 { bytes.removeFirst() }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// Per-call scratch buffers of `encode`.
private struct EncodeScratch {
  var pieces: [Range<Int>] = []
  var scalars: [Unicode.Scalar] = []
  var symbols: [TokenID] = []
  var merger = BPEMerger()
}
