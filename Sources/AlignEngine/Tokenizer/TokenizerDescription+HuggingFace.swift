public import Foundation

// Reading Hugging Face tokenizer.json (+ tokenizer_config.json). Only the components the supported
// model families use are accepted; anything else is a typed `unsupported` error naming the component,
// never a silent approximation.

/// The pre-tokenizer regexes this engine implements, as written in tokenizer.json files.
private let knownRegexes: [String: PreTokenizerKind] = [
  #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2,
  #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .llama3,
  #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .qwen2,
]

extension TokenizerDescription {
  /// Reads `tokenizer.json` and, if present, `tokenizer_config.json` from a Hugging Face model folder.
  /// - Throws: `TokenizerError` when a file is missing, malformed or uses an unsupported component.
  public init(huggingFaceFolder folder: URL) throws {
    let tokenizerURL = folder.appendingPathComponent("tokenizer.json")
    let configURL = folder.appendingPathComponent("tokenizer_config.json")
    guard let data = try? Data(contentsOf: tokenizerURL) else {
      throw TokenizerError.malformed(file: tokenizerURL.path, reason: "cannot read the file")
    }
    let config = FileManager.default.fileExists(atPath: configURL.path) ? try? Data(contentsOf: configURL) : nil
    try self.init(tokenizerJSON: data, tokenizerConfigJSON: config, fileName: tokenizerURL.path)
  }

  /// Parses the contents of `tokenizer.json` and optionally `tokenizer_config.json` (for the chat
  /// template, BOS/EOS names and `add_bos_token`/`add_eos_token` overrides).
  /// - Parameter fileName: the name used in error messages.
  /// - Throws: `TokenizerError` when the JSON is malformed or uses an unsupported component.
  public init(tokenizerJSON: Data, tokenizerConfigJSON: Data? = nil, fileName: String = "tokenizer.json") throws {
    let file = fileName
    guard let root = (try? JSONSerialization.jsonObject(with: tokenizerJSON)) as? [String: Any] else {
      throw TokenizerError.malformed(file: file, reason: "not a JSON object")
    }
    guard let modelJSON = root["model"] as? [String: Any] else {
      throw TokenizerError.malformed(file: file, reason: "no \"model\" object")
    }
    let modelType = modelJSON["type"] as? String ?? "BPE"
    guard modelType == "BPE" else { throw TokenizerError.unsupported(file: file, feature: "model type \(modelType)") }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
      if let v = modelJSON[key] as? String, !v.isEmpty {
        throw TokenizerError.unsupported(file: file, feature: "BPE \(key)")
      }
    }
    if let dropout = modelJSON["dropout"] as? Double, dropout > 0 {
      throw TokenizerError.unsupported(file: file, feature: "BPE dropout")
    }
    guard let vocab = modelJSON["vocab"] as? [String: Any] else {
      throw TokenizerError.malformed(file: file, reason: "no model.vocab object")
    }
    var maxID = -1
    var byID: [Int: String] = [:]
    byID.reserveCapacity(vocab.count)
    for (token, value) in vocab {
      guard let id = (value as? NSNumber)?.intValue, id >= 0, id < Int(Int32.max) else {
        throw TokenizerError.malformed(file: file, reason: "vocab entry \(token) has no integer id")
      }
      byID[id] = token
      maxID = max(maxID, id)
    }
    guard byID.count == maxID + 1 else {
      throw TokenizerError.malformed(file: file, reason: "vocab ids are not contiguous from 0")
    }
    let tokens = (0...max(maxID, 0)).compactMap { byID[$0] }

    var merges: [MergeRule] = []
    for m in modelJSON["merges"] as? [Any] ?? [] {
      if let s = m as? String {
        guard let space = s.firstIndex(of: " ") else {
          throw TokenizerError.malformed(file: file, reason: "merge \"\(s)\" has no space")
        }
        merges.append(MergeRule(left: String(s[..<space]), right: String(s[s.index(after: space)...])))
      } else if let pair = m as? [String], pair.count == 2 {
        merges.append(MergeRule(left: pair[0], right: pair[1]))
      } else {
        throw TokenizerError.malformed(file: file, reason: "a merge is neither \"a b\" nor [a, b]")
      }
    }

    var added: [AddedToken] = []
    for entry in root["added_tokens"] as? [[String: Any]] ?? [] {
      guard let id = (entry["id"] as? NSNumber).flatMap({ TokenID(exactly: $0.intValue) }), let content = entry["content"] as? String else {
        throw TokenizerError.malformed(file: file, reason: "an added token lacks id or content")
      }
      added.append(
        AddedToken(
          content: content, id: id, special: entry["special"] as? Bool ?? false,
          lstrip: entry["lstrip"] as? Bool ?? false, rstrip: entry["rstrip"] as? Bool ?? false))
    }

    // Normalizer.
    var nfc = false
    var prepend = false
    var escapesSpaces = false
    func readNormalizer(_ n: [String: Any]) throws {
      switch n["type"] as? String {
      case "Sequence":
        for inner in n["normalizers"] as? [[String: Any]] ?? [] { try readNormalizer(inner) }
      case "NFC": nfc = true
      case "Prepend":
        guard n["prepend"] as? String == "▁" else { throw TokenizerError.unsupported(file: file, feature: "Prepend normalizer other than ▁") }
        prepend = true
      case "Replace":
        let pattern = (n["pattern"] as? [String: Any])?["String"] as? String
        guard pattern == " ", n["content"] as? String == "▁" else {
          throw TokenizerError.unsupported(file: file, feature: "Replace normalizer other than \" \" → ▁")
        }
        escapesSpaces = true
      case let other: throw TokenizerError.unsupported(file: file, feature: "normalizer \(other ?? "?")")
      }
    }
    if let n = root["normalizer"] as? [String: Any] { try readNormalizer(n) }

    // Pre-tokenizer.
    var regex: PreTokenizerKind?
    var digits = false
    var byteLevel = false
    var metaspace: SpacePrefixMode?
    var metaspaceSplit = false
    func readPreTokenizer(_ p: [String: Any]) throws {
      switch p["type"] as? String {
      case "Sequence":
        for inner in p["pretokenizers"] as? [[String: Any]] ?? [] { try readPreTokenizer(inner) }
      case "ByteLevel":
        byteLevel = true
        if p["add_prefix_space"] as? Bool == true {
          throw TokenizerError.unsupported(file: file, feature: "ByteLevel pre-tokenizer with add_prefix_space")
        }
        if p["use_regex"] as? Bool ?? true {
          guard regex == nil || regex == .gpt2 else { throw TokenizerError.unsupported(file: file, feature: "two pre-tokenizer regexes") }
          regex = .gpt2
        }
      case "Split":
        let pattern = (p["pattern"] as? [String: Any])?["Regex"] as? String ?? ""
        guard let kind = knownRegexes[pattern], p["behavior"] as? String == "Isolated", p["invert"] as? Bool != true else {
          throw TokenizerError.unsupported(file: file, feature: "Split pre-tokenizer with pattern \(pattern)")
        }
        guard regex == nil else { throw TokenizerError.unsupported(file: file, feature: "two pre-tokenizer regexes") }
        regex = kind
      case "Digits":
        guard p["individual_digits"] as? Bool == true, regex == nil else {
          throw TokenizerError.unsupported(file: file, feature: "Digits pre-tokenizer without individual_digits")
        }
        digits = true
      case "Metaspace":
        guard (p["replacement"] as? String ?? "▁") == "▁" else {
          throw TokenizerError.unsupported(file: file, feature: "Metaspace replacement other than ▁")
        }
        switch p["prepend_scheme"] as? String ?? ((p["add_prefix_space"] as? Bool ?? true) ? "always" : "never") {
        case "first": metaspace = .firstSegment
        case "never": metaspace = SpacePrefixMode.none
        default: metaspace = .everySegment
        }
        metaspaceSplit = p["split"] as? Bool ?? true
      case let other: throw TokenizerError.unsupported(file: file, feature: "pre-tokenizer \(other ?? "?")")
      }
    }
    if let p = root["pre_tokenizer"] as? [String: Any] { try readPreTokenizer(p) }

    // Decoder: only the leading-space strip matters beyond the model kind.
    var strip = false
    func readDecoder(_ d: [String: Any]) {
      switch d["type"] as? String {
      case "Sequence": for inner in d["decoders"] as? [[String: Any]] ?? [] { readDecoder(inner) }
      case "Strip": strip = strip || ((d["start"] as? NSNumber)?.intValue ?? 0) > 0
      case "Metaspace": strip = strip || (d["prepend_scheme"] as? String ?? "always") != "never"
      case "ByteLevel": byteLevel = true
      default: break
      }
    }
    if let d = root["decoder"] as? [String: Any] { readDecoder(d) }

    // Post-processor: BOS/EOS around the single sequence.
    var addBOS = false
    var addEOS = false
    var bosFromTemplate: TokenID?
    var eosFromTemplate: TokenID?
    func readPostProcessor(_ p: [String: Any]) throws {
      switch p["type"] as? String {
      case "Sequence": for inner in p["processors"] as? [[String: Any]] ?? [] { try readPostProcessor(inner) }
      case "ByteLevel": break
      case "TemplateProcessing":
        let single = p["single"] as? [[String: Any]] ?? []
        let specials = p["special_tokens"] as? [String: Any] ?? [:]
        func specialID(_ item: [String: Any]) -> TokenID? {
          guard let name = (item["SpecialToken"] as? [String: Any])?["id"] as? String,
            let ids = (specials[name] as? [String: Any])?["ids"] as? [NSNumber], ids.count == 1
          else { return nil }
          return TokenID(exactly: ids[0].intValue)
        }
        guard let seq = single.firstIndex(where: { $0["Sequence"] != nil }) else {
          throw TokenizerError.unsupported(file: file, feature: "TemplateProcessing without $A")
        }
        guard seq <= 1, single.count - seq <= 2 else {
          throw TokenizerError.unsupported(file: file, feature: "TemplateProcessing with several tokens around $A")
        }
        if seq == 1 {
          guard let id = specialID(single[0]) else { throw TokenizerError.malformed(file: file, reason: "TemplateProcessing special token") }
          addBOS = true
          bosFromTemplate = id
        }
        if seq + 1 < single.count {
          guard let id = specialID(single[seq + 1]) else { throw TokenizerError.malformed(file: file, reason: "TemplateProcessing special token") }
          addEOS = true
          eosFromTemplate = id
        }
      case let other: throw TokenizerError.unsupported(file: file, feature: "post-processor \(other ?? "?")")
      }
    }
    if let p = root["post_processor"] as? [String: Any] { try readPostProcessor(p) }

    let kind: TokenizerModelKind = byteLevel ? .byteLevelBPE : .sentencePieceBPE
    var preTokenizer = PreTokenizerKind.gpt2
    if kind == .byteLevelBPE {
      guard let r = regex else { throw TokenizerError.unsupported(file: file, feature: "byte-level BPE without a pre-tokenizer regex") }
      if digits {
        guard r == .gpt2 else { throw TokenizerError.unsupported(file: file, feature: "Digits before a non-GPT-2 regex") }
        preTokenizer = .smollm
      } else {
        preTokenizer = r
      }
      if prepend || escapesSpaces || metaspace != nil {
        throw TokenizerError.unsupported(file: file, feature: "byte-level BPE with a ▁ normalizer or Metaspace")
      }
    } else {
      if regex != nil || digits { throw TokenizerError.unsupported(file: file, feature: "SentencePiece BPE with a regex pre-tokenizer") }
      if metaspace == nil && !escapesSpaces && !prepend {
        throw TokenizerError.unsupported(file: file, feature: "BPE that is neither byte-level nor SentencePiece-style")
      }
    }

    // tokenizer_config.json: chat template, BOS/EOS names, add_bos/add_eos overrides.
    var template: String?
    var bosName: String?
    var eosName: String?
    if let configData = tokenizerConfigJSON {
      guard let config = (try? JSONSerialization.jsonObject(with: configData)) as? [String: Any] else {
        throw TokenizerError.malformed(file: "tokenizer_config.json", reason: "not a JSON object")
      }
      if let t = config["chat_template"] as? String {
        template = t
      } else if let list = config["chat_template"] as? [[String: Any]] {
        template = (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
      }
      func tokenName(_ v: Any?) -> String? { (v as? String) ?? ((v as? [String: Any])?["content"] as? String) }
      bosName = tokenName(config["bos_token"])
      eosName = tokenName(config["eos_token"])
      if let b = config["add_bos_token"] as? Bool { addBOS = b }
      if let e = config["add_eos_token"] as? Bool { addEOS = e }
    }
    func idOf(_ name: String?) -> TokenID? {
      guard let name else { return nil }
      if let a = added.first(where: { $0.content == name }) { return a.id }
      return tokens.firstIndex(of: name).map { TokenID($0) }
    }
    let unk = (modelJSON["unk_token"] as? String).flatMap { idOf($0) }
    let bos = idOf(bosName) ?? bosFromTemplate
    let eos = idOf(eosName) ?? eosFromTemplate

    self.init(
      model: kind, tokens: tokens, tokenTypes: nil, merges: merges, preTokenizer: preTokenizer,
      normalizeNFC: nfc, ignoreMerges: modelJSON["ignore_merges"] as? Bool ?? false,
      spacePrefix: kind == .byteLevelBPE ? .none : (prepend ? .everySegment : (metaspace ?? .none)),
      splitOnSpacePrefix: metaspace != nil && metaspaceSplit,
      byteFallback: modelJSON["byte_fallback"] as? Bool ?? false, fuseUnknown: modelJSON["fuse_unk"] as? Bool ?? false,
      unknownTokenID: unk, addedTokens: added, bosTokenID: bos, eosTokenID: eos,
      eotTokenID: Self.guessEndOfTurn(eos: eos, lookup: idOf),
      addBOS: addBOS && bos != nil, addEOS: addEOS && eos != nil,
      stripLeadingSpaceOnDecode: strip && kind == .sentencePieceBPE, chatTemplate: template)
  }

  /// The end-of-turn token of chat models when it differs from EOS (as llama.cpp guesses it).
  static func guessEndOfTurn(eos: TokenID?, lookup: (String?) -> TokenID?) -> TokenID? {
    for name in ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"] {
      if let id = lookup(name), id != eos { return id }
    }
    return nil
  }
}
