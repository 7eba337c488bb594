import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// Paths of the committed fixtures and the (git-ignored) default model.
enum TokenizerFixtures {
  /// The repository root, found from this file (symlinks resolved, so a dev package linking this file works).
  static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let tokenizers = root.appendingPathComponent("Tests/Fixtures/tokenizers")
  static let smolLM2 = URL(fileURLWithPath: TestModels.defaultPolicy)

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

  /// The scanners cut every corpus string exactly where Hugging Face's pre-tokenizers do.
  @Test(arguments: [PreTokenizerKind.gpt2, .llama3, .qwen2, .smollm])
  func preTokenizerPiecesEqualHuggingFace(kind: PreTokenizerKind) throws {
    let data = try Data(contentsOf: TokenizerFixtures.tokenizers.appendingPathComponent("expected-pretokenize.json"))
    let expected = try JSONDecoder().decode([String: [[Int]]].self, from: data)
    let rows = try #require(expected[kind.rawValue])
    let corpus = try TokenizerFixtures.expected("smollm2").map(\.text)
    #expect(rows.count == corpus.count)
    var failures = 0
    for (text, lengths) in zip(corpus, rows) {
      let pieces = kind.pieces(of: text)
      let got = pieces.map { $0.unicodeScalars.count }
      if got != lengths {
        failures += 1
        if failures <= 5 { Issue.record("\(kind) cuts \(String(reflecting: text)) into \(pieces.map { String(reflecting: $0) }), reference lengths \(lengths)") }
      }
      #expect(pieces.joined() == text)
    }
    #expect(failures == 0)
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

  @Test(.enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func smolLM2FromGGUF() throws {
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

@Suite("Tokenizer round trips on random text")
struct TokenizerRoundTripTests {
  /// A seeded generator (SplitMix64), so failures reproduce.
  struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
  }

  /// Random text mixing ASCII, whitespace, Latin-1, CJK, emoji, combining marks and rare planes.
  static func randomText(_ rng: inout SplitMix) -> String {
    var scalars = String.UnicodeScalarView()
    for _ in 0..<Int.random(in: 1...60, using: &rng) {
      let v: UInt32
      switch Int.random(in: 0..<8, using: &rng) {
      case 0, 1: v = UInt32.random(in: 0x20...0x7E, using: &rng)
      case 2: v = [0x09, 0x0A, 0x0D, 0x20, 0xA0, 0x3000, 0x2028][Int.random(in: 0..<7, using: &rng)]
      case 3: v = UInt32.random(in: 0xA1...0x24F, using: &rng)
      case 4: v = UInt32.random(in: 0x4E00...0x9FFF, using: &rng)
      case 5: v = UInt32.random(in: 0x1F300...0x1FAFF, using: &rng)
      case 6: v = UInt32.random(in: 0x300...0x36F, using: &rng)
      default: v = UInt32.random(in: 0x10000...0x10FFFF, using: &rng)
      }
      if let s = Unicode.Scalar(v) { scalars.append(s) }
    }
    return String(scalars)
  }

  /// Byte-level BPE without a normalizer, and SentencePiece BPE with byte fallback and the legacy
  /// per-segment prefix, reproduce any text exactly; ids are always in the vocabulary.
  @Test(arguments: ["llama3-style", "llama2-style"])
  func decodeOfEncodeIsIdentity(name: String) throws {
    let tokenizer = try TokenizerFixtures.huggingFace(name)
    var rng = SplitMix(state: 42)
    for _ in 0..<2000 {
      let text = Self.randomText(&rng)
      let ids = tokenizer.encode(text, addSpecialTokens: false, parseSpecial: false)
      #expect(ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize })
      let decoded = tokenizer.decode(ids)
      if decoded != text {
        Issue.record("round trip of \(String(reflecting: text)) gave \(String(reflecting: decoded))")
        return
      }
    }
  }
}
