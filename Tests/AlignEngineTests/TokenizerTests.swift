import AlignEngine
import Foundation
import Testing

/// Paths of the committed fixtures and the (git-ignored) default model.
enum TokenizerFixtures {
  /// The repository root, found from this file (symlinks resolved, so a dev package linking this file works).
  static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let tokenizers = root.appendingPathComponent("Tests/Fixtures/tokenizers")
  static let smolLM2 = root.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")

  struct Case: Decodable {
    var text: String
    var ids: [TokenID]
    var decoded: String
    var idsWithSpecials: [TokenID]?
  }

  struct Expected: Decodable { var cases: [Case] }

  static func expected(_ name: String) throws -> [Case] {
    let data = try Data(contentsOf: tokenizers.appendingPathComponent("expected-\(name).json"))
    return try JSONDecoder().decode(Expected.self, from: data).cases
  }

  static func huggingFace(_ folder: String) throws -> Tokenizer {
    try Tokenizer(TokenizerDescription(huggingFaceFolder: tokenizers.appendingPathComponent(folder)))
  }

  /// A fixture tokenizer as GGUF metadata (the fields llama.cpp's converter writes).
  static func ggufMetadata(_ folder: String) throws -> [String: GGUFValue] {
    let data = try Data(contentsOf: tokenizers.appendingPathComponent("\(folder)/gguf-fields.json"))
    let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    var metadata: [String: GGUFValue] = [:]
    for (key, value) in object {
      switch value {
      case let s as String: metadata[key] = .string(s)
      case let strings as [String]: metadata[key] = .array(strings.map { .string($0) })
      case let numbers as [NSNumber] where key.hasSuffix(".scores"): metadata[key] = .array(numbers.map { .float32($0.floatValue) })
      case let numbers as [NSNumber]: metadata[key] = .array(numbers.map { .int32($0.int32Value) })
      case let n as NSNumber where key.hasPrefix("tokenizer.ggml.add_"): metadata[key] = .bool(n.boolValue)
      case let n as NSNumber: metadata[key] = .uint32(n.uint32Value)
      default: Issue.record("unexpected value for \(key)")
      }
    }
    return metadata
  }

  /// Compares a tokenizer with the reference ids and decodes; reports the first mismatches in full.
  static func check(_ tokenizer: Tokenizer, _ cases: [Case], roundTrip: Bool) {
    var failures = 0
    for c in cases {
      let ids = tokenizer.encode(c.text, addSpecialTokens: false)
      if ids != c.ids {
        failures += 1
        if failures <= 10 {
          Issue.record("encode(\(String(reflecting: c.text))) = \(ids), reference \(c.ids)")
        }
      }
      let decoded = tokenizer.decode(c.ids)
      if decoded != c.decoded {
        failures += 1
        if failures <= 10 { Issue.record("decode(\(c.ids)) = \(String(reflecting: decoded)), reference \(String(reflecting: c.decoded))") }
      }
      if roundTrip && tokenizer.decode(ids) != c.text {
        failures += 1
        if failures <= 10 { Issue.record("round trip of \(String(reflecting: c.text)) gave \(String(reflecting: tokenizer.decode(ids)))") }
      }
      if let withSpecials = c.idsWithSpecials {
        let got = tokenizer.encode(c.text, addSpecialTokens: true)
        if got != withSpecials {
          failures += 1
          if failures <= 10 { Issue.record("encode(\(String(reflecting: c.text)), addSpecialTokens) = \(got), reference \(withSpecials)") }
        }
      }
    }
    #expect(failures == 0, "\(failures) mismatches over \(cases.count) strings")
  }
}

@Suite("Tokenizer equals Hugging Face tokenizers on the committed corpus")
struct TokenizerTests {
  @Test func corpusIsLargeEnough() throws {
    let data = try Data(contentsOf: TokenizerFixtures.tokenizers.appendingPathComponent("corpus.json"))
    let corpus = try JSONDecoder().decode([String].self, from: data)
    #expect(corpus.count >= 300)
    for name in ["smollm2", "llama3-style", "qwen2-style", "llama2-style", "llama2-metaspace"] {
      #expect(try TokenizerFixtures.expected(name).map(\.text) == corpus, "expected-\(name).json is stale")
    }
  }

  @Test func llama3StyleTokenizerJSON() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("llama3-style")
    #expect(tokenizer.definition.preTokenizer == .llama3)
    #expect(tokenizer.definition.ignoreMerges)
    #expect(tokenizer.definition.addBOS)
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected("llama3-style"), roundTrip: true)
  }

  @Test func qwen2StyleTokenizerJSON() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("qwen2-style")
    #expect(tokenizer.definition.preTokenizer == .qwen2)
    #expect(tokenizer.definition.normalizeNFC)
    // NFC changes decomposed text, so decode(encode(s)) == s does not hold for every string here.
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected("qwen2-style"), roundTrip: false)
  }

  @Test func llama2StyleTokenizerJSON() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("llama2-style")
    #expect(tokenizer.definition.model == .sentencePieceBPE)
    #expect(tokenizer.definition.byteFallback)
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected("llama2-style"), roundTrip: false)
  }

  @Test func llama2MetaspaceTokenizerJSON() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("llama2-metaspace")
    #expect(tokenizer.definition.spacePrefix == .firstSegment)
    #expect(!tokenizer.definition.splitOnSpacePrefix)
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected("llama2-metaspace"), roundTrip: false)
  }

  @Test func llama2StyleFromGGUFScores() throws {
    let description = try TokenizerDescription(ggufMetadata: try TokenizerFixtures.ggufMetadata("llama2-style"))
    #expect(description.merges == nil)  // merges are derived from the SentencePiece scores
    let tokenizer = try Tokenizer(description)
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected("llama2-style"), roundTrip: false)
  }

  @Test(arguments: ["llama3-style", "qwen2-style"])
  func byteLevelFromGGUFFields(name: String) throws {
    let description = try TokenizerDescription(ggufMetadata: try TokenizerFixtures.ggufMetadata(name))
    #expect(description.preTokenizer == (name == "qwen2-style" ? .qwen2 : .llama3))
    let tokenizer = try Tokenizer(description)
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected(name), roundTrip: false)
  }

  @Test func smolLM2FromGGUF() throws {
    guard FileManager.default.fileExists(atPath: TokenizerFixtures.smolLM2.path) else {
      // The model is git-ignored; scripts/fetch-models.sh puts it there.
      print("SKIPPED smolLM2FromGGUF: \(TokenizerFixtures.smolLM2.path) is absent (run scripts/fetch-models.sh)")
      return
    }
    let gguf = try GGUFFile(path: TokenizerFixtures.smolLM2.path)
    let tokenizer = try Tokenizer(TokenizerDescription(gguf: gguf))
    #expect(tokenizer.definition.preTokenizer == .smollm)
    #expect(tokenizer.vocabularySize == 49152)
    #expect(tokenizer.definition.bosTokenID == 1 && tokenizer.definition.eosTokenID == 2)
    #expect(tokenizer.encode("<|im_start|>user", addSpecialTokens: false).first == 1)
    TokenizerFixtures.check(tokenizer, try TokenizerFixtures.expected("smollm2"), roundTrip: true)
  }

  @Test func specialTokensAreTextWhenNotParsed() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("qwen2-style")
    let imStart = try #require(tokenizer.tokenID("<|im_start|>"))
    #expect(tokenizer.encode("<|im_start|>", addSpecialTokens: false) == [imStart])
    let plain = tokenizer.encode("<|im_start|>", addSpecialTokens: false, parseSpecial: false)
    #expect(!plain.contains(imStart) && plain.count > 1)
    #expect(tokenizer.decode(plain) == "<|im_start|>")
    #expect(tokenizer.decode([imStart], skipSpecialTokens: true) == "")
  }

  @Test func unsupportedComponentsAreTypedErrors() throws {
    let json = #"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#
    #expect(throws: TokenizerError.unsupported(file: "tokenizer.json", feature: "model type WordPiece")) {
      _ = try TokenizerDescription(tokenizerJSON: Data(json.utf8))
    }
    #expect(throws: TokenizerError.self) {
      _ = try TokenizerDescription(tokenizerJSON: Data("not json".utf8))
    }
    #expect(throws: TokenizerError.missingMetadata(key: "tokenizer.ggml.model")) {
      _ = try TokenizerDescription(ggufMetadata: [:])
    }
  }
}
