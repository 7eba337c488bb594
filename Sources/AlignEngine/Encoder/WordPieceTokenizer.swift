import Foundation

/// BERT's tokenizer as Hugging Face `tokenizers` runs it from a `tokenizer.json` with a
/// `BertNormalizer`, the `BertPreTokenizer`, a `WordPiece` model and the `[CLS] $A [SEP]` template.
///
/// The steps, in the library's order:
/// 1. normalize: drop NUL, U+FFFD and other control characters (Unicode "other" categories except
///    tab, newline and return) and turn white space into spaces; put spaces around CJK ideographs;
///    strip accents (canonical decomposition, then drop non-spacing marks) when asked, which by
///    default follows `lowercase`; lowercase;
/// 2. pre-tokenize: split on white space (dropped) and isolate every punctuation character (ASCII
///    punctuation and Unicode `P*`);
/// 3. WordPiece: each word becomes the longest vocabulary prefix, then `##`-continuations of the
///    longest remaining prefixes; a word with no such split, or longer than
///    `maxInputCharactersPerWord`, becomes `[UNK]`;
/// 4. truncate to `maxLength` tokens including `[CLS]` and `[SEP]`.
public struct WordPieceTokenizer: Sendable {
  /// Vocabulary size (the embedding table's rows).
  public let vocabularySize: Int
  public let clsID: Int32
  public let sepID: Int32
  public let unknownID: Int32
  public let padID: Int32

  private let vocabulary: [String: Int32]
  private let continuationPrefix: String
  private let maxInputCharactersPerWord: Int
  private let lowercase: Bool
  private let stripAccents: Bool
  private let cleanText: Bool
  private let handleChineseCharacters: Bool

  /// Reads `tokenizer.json` of a BERT-family model.
  /// - Throws: `EngineError.malformedFile` naming what is missing or not supported.
  public init(tokenizerJSON path: String) throws {
    func bad(_ reason: String) -> EngineError { .malformedFile(path: path, reason: reason) }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw EngineError.cannotOpen(path: path, reason: "cannot read the file")
    }
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw bad("not a JSON object")
    }
    guard let model = root["model"] as? [String: Any], model["type"] as? String == "WordPiece",
      let vocab = model["vocab"] as? [String: Any]
    else { throw bad("model is not WordPiece with a vocab") }
    var table: [String: Int32] = [:]
    table.reserveCapacity(vocab.count)
    var maxID: Int32 = -1
    for (piece, idAny) in vocab {
      guard let id = (idAny as? NSNumber)?.int32Value, id >= 0 else { throw bad("vocab id of \(piece) is not an integer") }
      table[piece] = id
      maxID = max(maxID, id)
    }
    vocabulary = table
    vocabularySize = Int(maxID) + 1
    continuationPrefix = model["continuing_subword_prefix"] as? String ?? "##"
    maxInputCharactersPerWord = (model["max_input_chars_per_word"] as? Int) ?? 100
    let unk = model["unk_token"] as? String ?? "[UNK]"
    guard let normalizer = root["normalizer"] as? [String: Any], normalizer["type"] as? String == "BertNormalizer" else {
      throw bad("normalizer is not BertNormalizer")
    }
    lowercase = normalizer["lowercase"] as? Bool ?? true
    stripAccents = (normalizer["strip_accents"] as? Bool) ?? lowercase
    cleanText = normalizer["clean_text"] as? Bool ?? true
    handleChineseCharacters = normalizer["handle_chinese_chars"] as? Bool ?? true
    guard let pre = root["pre_tokenizer"] as? [String: Any], pre["type"] as? String == "BertPreTokenizer" else {
      throw bad("pre_tokenizer is not BertPreTokenizer")
    }
    func id(_ token: String) throws -> Int32 {
      guard let i = table[token] else { throw bad("special token \(token) is not in the vocabulary") }
      return i
    }
    unknownID = try id(unk)
    clsID = try id("[CLS]")
    sepID = try id("[SEP]")
    padID = try id("[PAD]")
  }

  /// The token ids of `text`: `[CLS]`, the word pieces (truncated so that the whole fits), `[SEP]`.
  /// - Parameter maxLength: at least 2.
  public func encode(_ text: String, maxLength: Int) -> [Int32] {
    var ids: [Int32] = [clsID]
    let budget = max(0, maxLength - 2)
    forEachWord(normalize(text)) { word in
      if ids.count - 1 >= budget { return false }
      appendPieces(of: word, to: &ids)
      return true
    }
    if ids.count - 1 > budget { ids.removeSubrange((1 + budget)...) }
    ids.append(sepID)
    return ids
  }

  // MARK: Normalizer

  func normalize(_ text: String) -> [Unicode.Scalar] {
    var out: [Unicode.Scalar] = []
    out.reserveCapacity(text.unicodeScalars.count)
    for s in text.unicodeScalars {
      if cleanText {
        if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
        if Self.isWhitespace(s) {
          out.append(" ")
          continue
        }
      }
      if handleChineseCharacters && Self.isCJK(s) {
        out.append(" ")
        out.append(s)
        out.append(" ")
        continue
      }
      out.append(s)
    }
    if stripAccents {
      // Canonical decomposition (NFD), then drop non-spacing marks.
      let decomposed = String(String.UnicodeScalarView(out)).decomposedStringWithCanonicalMapping
      out = decomposed.unicodeScalars.filter { $0.properties.generalCategory != .nonspacingMark }
    }
    if lowercase {
      var lowered: [Unicode.Scalar] = []
      lowered.reserveCapacity(out.count)
      for s in out {
        if s.isASCII {
          lowered.append(s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s)
        } else {
          lowered.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
        }
      }
      out = lowered
    }
    return out
  }

  /// Rust's `char::is_whitespace` (the White_Space property); tab, newline and return included.
  static func isWhitespace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

  /// tokenizers' `is_control`: the Unicode "other" categories (Cc, Cf, Cn, Co, Cs), but not tab,
  /// newline or return (those count as white space).
  static func isControl(_ s: Unicode.Scalar) -> Bool {
    if s == "\t" || s == "\n" || s == "\r" { return false }
    switch s.properties.generalCategory {
    case .control, .format, .unassigned, .privateUse, .surrogate: return true
    default: return false
    }
  }

  /// The CJK ideograph blocks BERT pads with spaces.
  static func isCJK(_ s: Unicode.Scalar) -> Bool {
    switch s.value {
    case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
      0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
      return true
    default: return false
    }
  }

  /// Rust's `is_ascii_punctuation` or a Unicode `P*` category.
  static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
    if s.isASCII {
      let v = s.value
      return (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v)
    }
    switch s.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
      .initialPunctuation, .finalPunctuation, .otherPunctuation:
      return true
    default: return false
    }
  }

  // MARK: Pre-tokenizer and WordPiece

  /// Calls `body` with each word (runs of non-space, non-punctuation characters, and each
  /// punctuation character alone) until it returns false.
  private func forEachWord(_ scalars: [Unicode.Scalar], _ body: (ArraySlice<Unicode.Scalar>) -> Bool) {
    var start = -1
    for i in scalars.indices {
      let s = scalars[i]
      if Self.isWhitespace(s) || Self.isPunctuation(s) {
        if start >= 0 {
          if !body(scalars[start..<i]) { return }
          start = -1
        }
        if !Self.isWhitespace(s) && !body(scalars[i..<(i + 1)]) { return }
      } else if start < 0 {
        start = i
      }
    }
    if start >= 0 { _ = body(scalars[start...]) }
  }

  private func appendPieces(of word: ArraySlice<Unicode.Scalar>, to ids: inout [Int32]) {
    if word.count > maxInputCharactersPerWord {
      ids.append(unknownID)
      return
    }
    var pieces: [Int32] = []
    var start = word.startIndex
    while start < word.endIndex {
      var end = word.endIndex
      var found: Int32?
      while start < end {
        var piece = start == word.startIndex ? "" : continuationPrefix
        piece.unicodeScalars.append(contentsOf: word[start..<end])
        if let id = vocabulary[piece] {
          found = id
          break
        }
        end -= 1
      }
      guard let id = found else {
        ids.append(unknownID)
        return
      }
      pieces.append(id)
      start = end
    }
    ids.append(contentsOf: pieces)
  }
}
