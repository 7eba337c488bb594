/// A token id in a model's vocabulary.
public typealias TokenID = Int32

/// The subword model of a tokenizer.
public enum TokenizerModelKind: String, Sendable, Codable {
  /// GPT-2 style BPE over bytes mapped to printable characters (SmolLM2, Llama 3, Qwen2).
  case byteLevelBPE
  /// SentencePiece-style BPE over Unicode characters with `▁` for spaces and `<0xNN>` byte
  /// fallback tokens (Llama 2, TinyLlama, Mistral).
  case sentencePieceBPE
}

/// How text is cut into pieces before byte-level BPE, named after llama.cpp's `tokenizer.ggml.pre`.
public enum PreTokenizerKind: String, Sendable, Codable {
  /// GPT-2's regex (case-sensitive contractions, ` ?\p{N}+`).
  case gpt2
  /// Llama 3's regex (case-insensitive contractions, `\p{N}{1,3}`).
  case llama3
  /// Qwen2's regex: Llama 3's with single digits.
  case qwen2
  /// SmolLM2: every numeric character alone, then GPT-2's regex on the rest.
  case smollm
}

/// Where a SentencePiece-style tokenizer puts the `▁` dummy prefix.
public enum SpacePrefixMode: String, Sendable, Codable {
  /// Never.
  case none
  /// Before every text segment between added tokens (Llama 2's legacy `Prepend` normalizer and llama.cpp).
  case everySegment
  /// Only before a segment that starts the text (`Metaspace` with `prepend_scheme: first`).
  case firstSegment
}

/// The type of a vocabulary entry, with GGUF's numbering (`tokenizer.ggml.token_type`).
public enum TokenType: Int32, Sendable, Codable {
  /// Not set by the converter.
  case undefined = 0
  /// An ordinary vocabulary entry.
  case normal = 1
  /// The unknown token (`<unk>`).
  case unknown = 2
  /// A special token such as BOS, EOS or `<|im_start|>`.
  case control = 3
  /// A token added by the user (matched whole in text, not special).
  case userDefined = 4
  /// A placeholder that should never be produced.
  case unused = 5
  /// A byte-fallback token `<0xNN>`.
  case byte = 6
}

/// A token matched whole in raw text before normalization and pre-tokenization; never split.
public struct AddedToken: Sendable, Hashable, Codable {
  /// The token's text.
  public var content: String
  /// Its id.
  public var id: TokenID
  /// Special tokens (control tokens) are skipped by `decode(skipSpecialTokens: true)` and are only
  /// recognized in text when encoding with `parseSpecial: true`.
  public var special: Bool
  /// Whether whitespace on the left of the token is absorbed into it.
  public var lstrip: Bool
  /// Whether whitespace on the right of the token is absorbed into it.
  public var rstrip: Bool

  /// Creates an added token.
  public init(content: String, id: TokenID, special: Bool, lstrip: Bool = false, rstrip: Bool = false) {
    self.content = content
    self.id = id
    self.special = special
    self.lstrip = lstrip
    self.rstrip = rstrip
  }
}

/// A BPE merge rule: the pair of tokens `left` `right` becomes the token `left + right`.
public struct MergeRule: Sendable, Hashable, Codable {
  /// The left token's text.
  public var left: String
  /// The right token's text.
  public var right: String

  /// Creates a merge rule.
  public init(left: String, right: String) {
    self.left = left
    self.right = right
  }
}

/// Everything needed to build a `Tokenizer`, independent of the file it came from
/// (tokenizer.json + tokenizer_config.json, or GGUF metadata).
public struct TokenizerDescription: Sendable {
  /// The subword model.
  public var model: TokenizerModelKind
  /// The vocabulary: token text by id (byte-level tokens in GPT-2's byte-to-character mapping).
  public var tokens: [String]
  /// SentencePiece scores by id (used to derive merges when `merges` is nil).
  public var scores: [Float]?
  /// Token types by id; `.normal` when the source has none.
  public var tokenTypes: [TokenType]
  /// Merge rules in priority order (first = applied first). For SentencePiece models without merges,
  /// they are derived from `scores` as transformers' converter does.
  public var merges: [MergeRule]?
  /// The pre-tokenizer of a byte-level model.
  public var preTokenizer: PreTokenizerKind
  /// Whether text is put in Unicode NFC before tokenization (Qwen2's tokenizer.json).
  public var normalizeNFC: Bool
  /// Whether a whole pre-tokenized piece found in the vocabulary is emitted without merging (Llama 3).
  public var ignoreMerges: Bool
  /// Where SentencePiece models add the `▁` dummy prefix.
  public var spacePrefix: SpacePrefixMode
  /// Whether SentencePiece models split the text into `▁`-led words before BPE (`Metaspace(split: true)`).
  public var splitOnSpacePrefix: Bool
  /// Whether characters missing from the vocabulary become `<0xNN>` byte tokens.
  public var byteFallback: Bool
  /// Whether runs of unknown characters become a single unknown token.
  public var fuseUnknown: Bool
  /// The unknown token, if any.
  public var unknownTokenID: TokenID?
  /// Tokens matched whole in raw text (specials and user-defined tokens).
  public var addedTokens: [AddedToken]
  /// Beginning-of-sequence token.
  public var bosTokenID: TokenID?
  /// End-of-sequence token.
  public var eosTokenID: TokenID?
  /// End-of-turn token (e.g. Llama 3's `<|eot_id|>`), when it differs from EOS.
  public var eotTokenID: TokenID?
  /// Whether `encode(addSpecialTokens: true)` prepends BOS.
  public var addBOS: Bool
  /// Whether `encode(addSpecialTokens: true)` appends EOS.
  public var addEOS: Bool
  /// Whether the full decode strips one leading space (SentencePiece `Strip` decoder).
  public var stripLeadingSpaceOnDecode: Bool
  /// The Jinja chat template shipped with the model, if any.
  public var chatTemplate: String?

  /// Creates a description; every field but the vocabulary has a default.
  public init(
    model: TokenizerModelKind,
    tokens: [String],
    scores: [Float]? = nil,
    tokenTypes: [TokenType]? = nil,
    merges: [MergeRule]? = nil,
    preTokenizer: PreTokenizerKind = .gpt2,
    normalizeNFC: Bool = false,
    ignoreMerges: Bool = false,
    spacePrefix: SpacePrefixMode = .none,
    splitOnSpacePrefix: Bool = false,
    byteFallback: Bool = false,
    fuseUnknown: Bool = false,
    unknownTokenID: TokenID? = nil,
    addedTokens: [AddedToken] = [],
    bosTokenID: TokenID? = nil,
    eosTokenID: TokenID? = nil,
    eotTokenID: TokenID? = nil,
    addBOS: Bool = false,
    addEOS: Bool = false,
    stripLeadingSpaceOnDecode: Bool = false,
    chatTemplate: String? = nil
  ) {
    self.model = model
    self.tokens = tokens
    self.scores = scores
    self.tokenTypes = tokenTypes ?? Array(repeating: .normal, count: tokens.count)
    self.merges = merges
    self.preTokenizer = preTokenizer
    self.normalizeNFC = normalizeNFC
    self.ignoreMerges = ignoreMerges
    self.spacePrefix = spacePrefix
    self.splitOnSpacePrefix = splitOnSpacePrefix
    self.byteFallback = byteFallback
    self.fuseUnknown = fuseUnknown
    self.unknownTokenID = unknownTokenID
    self.addedTokens = addedTokens
    self.bosTokenID = bosTokenID
    self.eosTokenID = eosTokenID
    self.eotTokenID = eotTokenID
    self.addBOS = addBOS
    self.addEOS = addEOS
    self.stripLeadingSpaceOnDecode = stripLeadingSpaceOnDecode
    self.chatTemplate = chatTemplate
  }
}

/// Why a tokenizer could not be loaded or used.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
  /// The file is not valid JSON or lacks a required field.
  case malformed(file: String, reason: String)
  /// The file uses a model, normalizer, pre-tokenizer or decoder this engine does not implement.
  case unsupported(file: String, feature: String)
  /// A GGUF metadata key is missing or has the wrong type.
  case missingMetadata(key: String)
  /// The description is inconsistent (e.g. a merge names a token that is not in the vocabulary).
  case invalidDescription(String)

  public var description: String {
    switch self {
    case .malformed(let file, let reason): return "\(file): malformed tokenizer file: \(reason)"
    case .unsupported(let file, let feature): return "\(file): unsupported tokenizer feature: \(feature)"
    case .missingMetadata(let key): return "GGUF metadata: missing or mistyped key \(key)"
    case .invalidDescription(let reason): return "invalid tokenizer description: \(reason)"
    }
  }
}
