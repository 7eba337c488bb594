// Reading the tokenizer from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`), with the
// meaning llama.cpp's `llama-vocab.cpp` gives those keys.

extension TokenizerDescription {
  /// Reads the tokenizer of a GGUF file.
  /// - Throws: `TokenizerError` when a key is missing or the tokenizer model/pre-tokenizer is unsupported.
  public init(gguf: GGUFFile) throws {
    try self.init(ggufMetadata: gguf.metadata)
  }

  /// Reads the tokenizer from GGUF metadata: `tokenizer.ggml.model` (`gpt2` = byte-level BPE, `llama` =
  /// SentencePiece BPE), `.pre`, `.tokens`, `.scores`, `.token_type`, `.merges`, `.bos_token_id`,
  /// `.eos_token_id`, `.eot_token_id`, `.unknown_token_id`, `.add_bos_token`, `.add_eos_token`,
  /// `.add_space_prefix`, and `tokenizer.chat_template`.
  /// - Throws: `TokenizerError` when a key is missing or mistyped, or the model is unsupported.
  public init(ggufMetadata m: [String: GGUFValue]) throws {
    func string(_ key: String) -> String? { m[key]?.stringValue }
    func int(_ key: String) -> Int? { m[key]?.intValue }
    func bool(_ key: String) -> Bool? { m[key]?.boolValue }
    func array(_ key: String) -> [GGUFValue]? { m[key]?.arrayValue }
    let file = "GGUF metadata"

    guard let model = string("tokenizer.ggml.model") else { throw TokenizerError.missingMetadata(key: "tokenizer.ggml.model") }
    guard let tokenValues = array("tokenizer.ggml.tokens") else { throw TokenizerError.missingMetadata(key: "tokenizer.ggml.tokens") }
    var tokens: [String] = []
    tokens.reserveCapacity(tokenValues.count)
    for v in tokenValues {
      guard let s = v.stringValue else { throw TokenizerError.missingMetadata(key: "tokenizer.ggml.tokens") }
      tokens.append(s)
    }
    var types: [TokenType] = Array(repeating: .normal, count: tokens.count)
    if let values = array("tokenizer.ggml.token_type") {
      guard values.count == tokens.count else { throw TokenizerError.missingMetadata(key: "tokenizer.ggml.token_type") }
      for (i, v) in values.enumerated() {
        guard let raw = v.intValue, let t = TokenType(rawValue: Int32(clamping: raw)) else {
          throw TokenizerError.missingMetadata(key: "tokenizer.ggml.token_type")
        }
        types[i] = t
      }
    }
    func id(_ key: String) throws -> TokenID? {
      guard let v = int(key) else { return nil }
      // llama.cpp writes -1 (as a wrapped uint32) for "none".
      if v < 0 || v == Int(UInt32.max) { return nil }
      guard v < tokens.count else { throw TokenizerError.invalidDescription("\(key) = \(v) is outside the vocabulary") }
      return TokenID(v)
    }
    let bos = try id("tokenizer.ggml.bos_token_id")
    let eos = try id("tokenizer.ggml.eos_token_id")
    let unk = try id("tokenizer.ggml.unknown_token_id")
    var eot = try id("tokenizer.ggml.eot_token_id")
    if eot == eos { eot = nil }
    if eot == nil {
      eot = Self.guessEndOfTurn(eos: eos) { name in name.flatMap { n in tokens.firstIndex(of: n).map { TokenID($0) } } }
    }

    // Control, user-defined and unknown tokens are matched whole in text, as llama.cpp does.
    var added: [AddedToken] = []
    for (i, t) in types.enumerated() where t == .control || t == .userDefined || t == .unknown {
      added.append(AddedToken(content: tokens[i], id: TokenID(i), special: t != .userDefined))
    }

    switch model {
    case "gpt2":
      guard let mergeValues = array("tokenizer.ggml.merges") else { throw TokenizerError.missingMetadata(key: "tokenizer.ggml.merges") }
      var merges: [MergeRule] = []
      merges.reserveCapacity(mergeValues.count)
      for v in mergeValues {
        guard let s = v.stringValue, let space = s.firstIndex(of: " ") else {
          throw TokenizerError.missingMetadata(key: "tokenizer.ggml.merges")
        }
        merges.append(MergeRule(left: String(s[..<space]), right: String(s[s.index(after: space)...])))
      }
      let pre = string("tokenizer.ggml.pre") ?? "default"
      let kind: PreTokenizerKind
      switch pre {
      case "default", "gpt-2", "gpt2": kind = .gpt2
      case "llama3", "llama-v3", "llama-bpe": kind = .llama3
      case "qwen2": kind = .qwen2
      case "smollm": kind = .smollm
      default: throw TokenizerError.unsupported(file: file, feature: "tokenizer.ggml.pre = \(pre)")
      }
      self.init(
        model: .byteLevelBPE, tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: kind,
        // Qwen2's tokenizer.json normalizes to NFC; llama.cpp skips it, but the reference is transformers.
        normalizeNFC: kind == .qwen2, ignoreMerges: kind == .llama3, unknownTokenID: unk, addedTokens: added,
        bosTokenID: bos, eosTokenID: eos, eotTokenID: eot,
        addBOS: (bool("tokenizer.ggml.add_bos_token") ?? false) && bos != nil,
        addEOS: (bool("tokenizer.ggml.add_eos_token") ?? false) && eos != nil,
        chatTemplate: string("tokenizer.chat_template"))
    case "llama":
      guard let scoreValues = array("tokenizer.ggml.scores"), scoreValues.count == tokens.count else {
        throw TokenizerError.missingMetadata(key: "tokenizer.ggml.scores")
      }
      var scores: [Float] = []
      scores.reserveCapacity(tokens.count)
      for v in scoreValues {
        guard let d = v.doubleValue else { throw TokenizerError.missingMetadata(key: "tokenizer.ggml.scores") }
        scores.append(Float(d))
      }
      let prefix = bool("tokenizer.ggml.add_space_prefix") ?? true
      self.init(
        model: .sentencePieceBPE, tokens: tokens, scores: scores, tokenTypes: types, merges: nil,
        spacePrefix: prefix ? .everySegment : .none, byteFallback: true, fuseUnknown: true,
        unknownTokenID: unk, addedTokens: added, bosTokenID: bos, eosTokenID: eos, eotTokenID: eot,
        addBOS: (bool("tokenizer.ggml.add_bos_token") ?? true) && bos != nil,
        addEOS: (bool("tokenizer.ggml.add_eos_token") ?? false) && eos != nil,
        stripLeadingSpaceOnDecode: prefix, chatTemplate: string("tokenizer.chat_template"))
    default:
      throw TokenizerError.unsupported(file: file, feature: "tokenizer.ggml.model = \(model)")
    }
  }
}
