import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// The JSON automaton of constrained decoding, byte by byte, and the token masks it yields.
@Suite("JSON grammar")
struct JSONGrammarTests {
  static let person: JSONShape = .object(
    properties: [
      JSONProperty("name", .string(minLength: 1, maxLength: nil)),
      JSONProperty("age", .number(integer: true)),
      JSONProperty("tags", .array(items: .string(minLength: 0, maxLength: nil), minItems: 0, maxItems: 3)),
      JSONProperty("role", .literals(["\"admin\"", "\"user\""])),
      JSONProperty("manager", .anyOf([.null, .object(properties: [JSONProperty("name", .string(minLength: 0, maxLength: nil))], required: ["name"], additional: nil)])),
      JSONProperty("score", .number(integer: false)),
      JSONProperty("active", .boolean),
    ],
    required: ["name", "age"], additional: nil)

  static let freeObject: JSONShape = .object(properties: [], required: [], additional: .anyValue)

  /// Whether the grammar accepts `text` as a whole document.
  static func accepts(_ shape: JSONShape, _ text: String) throws -> Bool {
    let grammar = try JSONGrammar(shape)
    let state = grammar.advance(grammar.initialState, by: Array(text.utf8))
    return !state.isDead && grammar.isAccepting(state)
  }

  static let valid: [(JSONShape, String)] = [
    (person, #"{"name":"Ann","age":41}"#),
    (person, #"{"age": -3, "name": "B\"ob\\ \u00e9 ü 中文 😀"}"#),
    (person, "{\n  \"name\": \"x\",\n  \"age\": 0,\n  \"tags\": [\"a\", \"\"],\n  \"role\": \"user\"\n}"),
    (person, #"{"name":"x","age":7,"manager":null,"score":-1.5e+10,"active":false}"#),
    (person, #"{"manager":{"name":""},"name":"x","age":12,"score":0.25,"tags":[]}"#),
    (freeObject, #"{}"#),
    (freeObject, #"{"a":[1,2,{"b":null}],"c":"d","e":true,"":{"x":[[]]}}"#),
    (.array(items: .number(integer: true), minItems: 2, maxItems: 2), "[1, 2]"),
    (.number(integer: false), "12.5"),
    (.literals(["1", "12", "\"a\""]), "12"),
    (.literals(["1", "12", "\"a\""]), "1"),
    (.anyOf([.string(minLength: 0, maxLength: 2), .number(integer: true)]), "\"ab\""),
    (.string(minLength: 0, maxLength: 1), #""\n""#),
  ]

  @Test("Accepts valid documents byte by byte", arguments: 0..<Self.valid.count)
  func acceptsValid(index: Int) throws {
    let (shape, text) = Self.valid[index]
    #expect(try Self.accepts(shape, text), "\(text)")
    // And the text is JSON.
    #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil)
  }

  static let invalid: [(JSONShape, String)] = [
    (person, #"{"name":"Ann"}"#),  // age is required
    (person, #"{"name":"Ann","age":4.5}"#),  // integer
    (person, #"{"name":"","age":4}"#),  // minLength 1
    (person, #"{"name":"A","age":4,"name":"B"}"#),  // repeated key
    (person, #"{"name":"A","age":4,"nick":"B"}"#),  // additionalProperties false
    (person, #"{"name":"A","age":4,}"#),  // trailing comma
    (person, #"{"name":"A","age":04}"#),  // leading zero
    (person, #"{"name":"A","age":4,"role":"root"}"#),  // enum
    (person, #"{"name":"A","age":4,"tags":["a","b","c","d"]}"#),  // maxItems
    (person, #"{"name":"A\q","age":4}"#),  // bad escape
    (person, "{\"name\":\"A\u{01}\",\"age\":4}"),  // raw control character
    (person, #"{"name":"A","age":4} "#),  // nothing after the document
    (person, "{" + String(repeating: " ", count: 9) + #""name":"A","age":4}"#),  // whitespace bound
    (person, #"{"name":"A","age":12345678901234567}"#),  // digit bound
    (freeObject, "[]"),
    (freeObject, #"{"a":tru}"#),
    (.array(items: .number(integer: true), minItems: 2, maxItems: 2), "[1]"),
    (.number(integer: false), "1."),
    (.number(integer: false), "-"),
    (.string(minLength: 0, maxLength: 1), #""ab""#),
  ]

  @Test("Rejects invalid documents", arguments: 0..<Self.invalid.count)
  func rejectsInvalid(index: Int) throws {
    let (shape, text) = Self.invalid[index]
    #expect(try !Self.accepts(shape, text), "\(text)")
  }

  @Test("Strings take only well-formed UTF-8")
  func utf8() throws {
    let grammar = try JSONGrammar(.string(minLength: 0, maxLength: nil))
    func accepts(_ bytes: [UInt8]) -> Bool {
      let state = grammar.advance(grammar.initialState, by: [0x22] + bytes + [0x22])
      return !state.isDead && grammar.isAccepting(state)
    }
    #expect(accepts([0xC3, 0xA9]))
    #expect(accepts([0xF0, 0x9F, 0x98, 0x80]))
    #expect(!accepts([0xC0, 0x80]))  // overlong
    #expect(!accepts([0xED, 0xA0, 0x80]))  // surrogate
    #expect(!accepts([0xE0, 0x80, 0x80]))  // overlong
    #expect(!accepts([0xC3]))  // cut short
    #expect(!accepts([0xFF]))
  }

  @Test("Nesting is bounded")
  func depth() throws {
    let grammar = try JSONGrammar(Self.freeObject)
    let deep = #"{"a":"# + String(repeating: "[", count: JSONGrammar.depthLimit + 2)
    #expect(grammar.advance(grammar.initialState, by: Array(deep.utf8)).isDead)
  }

  @Test("Unsupported shapes are refused with a reason")
  func refused() {
    #expect(throws: JSONGrammarError.self) {
      try JSONGrammar(.object(properties: [JSONProperty("a\"b", .null)], required: [], additional: nil))
    }
    #expect(throws: JSONGrammarError.self) {
      try JSONGrammar(.object(properties: [JSONProperty("a", .null)], required: [], additional: .anyValue))
    }
    #expect(throws: JSONGrammarError.self) { try JSONGrammar(.literals([])) }
  }

  /// A toy vocabulary: the mask is the set of tokens whose bytes continue the document.
  @Test("The mask of a toy vocabulary is exactly the tokens that continue the document")
  func toyMask() throws {
    let pieces = ["{", "}", "\"", "\"name", "\":", "\"age\":", " ", "1", "12", "x", "\"}", ",", ":", "a"]
    let trie = VocabularyTrie(
      entries: pieces.enumerated().map { (Array($0.element.utf8), Int32($0.offset)) }, vocabularySize: pieces.count + 1)
    let shape: JSONShape = .object(
      properties: [JSONProperty("name", .string(minLength: 0, maxLength: nil)), JSONProperty("age", .number(integer: true))],
      required: ["age"], additional: nil)
    let constraint = JSONTokenConstraint(grammar: try JSONGrammar(shape), trie: trie, endTokens: [Int32(pieces.count)])
    func allowed(after text: String) -> Set<String> {
      let state = constraint.grammar.advance(constraint.grammar.initialState, by: Array(text.utf8))
      let mask = constraint.mask(for: state)
      var names = Set((0..<pieces.count).filter { mask.allows($0) }.map { pieces[$0] })
      if mask.allows(pieces.count) { names.insert("<end>") }
      return names
    }
    #expect(allowed(after: "") == ["{", " "])
    #expect(allowed(after: "{") == ["\"", "\"name", "\"age\":", " "])  // "}" needs age first
    #expect(allowed(after: "{\"age\":") == [" ", "1", "12"])
    #expect(allowed(after: "{\"age\":1") == ["}", ",", " ", "1", "12"])
    #expect(allowed(after: "{\"age\":1}") == ["<end>"])
    // Inside a string anything goes up to the closing quote, after which only "}" may follow.
    #expect(allowed(after: "{\"age\":1,\"name\":\"") == ["\"", "\"}", ",", " ", "1", "12", "x", "{", "}", ":", "a"])
    #expect(constraint.walkCount == 6)
    _ = allowed(after: "{")  // cached
    #expect(constraint.walkCount == 6)
  }

  static var smolTokenizer: Tokenizer? {
    guard TestModels.defaultPolicyPresent, let gguf = try? GGUFFile(path: TestModels.defaultPolicy) else { return nil }
    return try? Tokenizer(TokenizerDescription(gguf: gguf))
  }

  /// On the real 49,152-token vocabulary, the trie walk allows exactly the tokens a brute-force
  /// check (every token's bytes stepped through the grammar on their own) allows.
  @Test(
    "Masks on SmolLM2's vocabulary match a brute-force check",
    .enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func realVocabulary() throws {
    let tokenizer = try #require(Self.smolTokenizer)
    let trie = VocabularyTrie(tokenizer: tokenizer, excluding: [2])
    let grammar = try JSONGrammar(Self.person)
    let constraint = JSONTokenConstraint(grammar: grammar, trie: trie, endTokens: [2])
    for prefix in ["", "{", #"{"name": "Ann"#, #"{"name":"Ann","age":4"#, #"{"name":"Ann","age":4,"tags":["#, #"{"name":"Ann","age":4}"#] {
      let state = grammar.advance(grammar.initialState, by: Array(prefix.utf8))
      #expect(!state.isDead)
      let started = ContinuousClock.now
      let mask = constraint.mask(for: state)
      let elapsed = ContinuousClock.now - started
      var expected = TokenMask(count: tokenizer.vocabularySize)
      for id in 0..<tokenizer.vocabularySize where id != 2 && !tokenizer.isSpecialToken(Int32(id)) {
        let bytes = tokenizer.bytes(of: Int32(id))
        if !bytes.isEmpty && !grammar.advance(state, by: bytes).isDead { expected.insert(id) }
      }
      if grammar.isAccepting(state) { expected.insert(2) }
      #expect(mask == expected, "\(prefix)")
      print("mask walk after \(prefix.debugDescription): \(mask.allowedCount) tokens allowed, \(elapsed)")
    }
    print("vocabulary trie: \(trie.nodeCount) nodes")
  }

  /// Random walks through the masks on the real vocabulary end in documents that parse as JSON.
  @Test(
    "Random masked walks on SmolLM2's vocabulary produce valid JSON",
    .enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)),
    arguments: [0, 1, 2])
  func randomWalks(shapeIndex: Int) throws {
    let tokenizer = try #require(Self.smolTokenizer)
    let trie = VocabularyTrie(tokenizer: tokenizer, excluding: [2])
    let shapes: [JSONShape] = [
      Self.person, Self.freeObject,
      .array(items: .literals(["\"red\"", "\"green\"", "7"]), minItems: 1, maxItems: 4),
    ]
    let constraint = JSONTokenConstraint(grammar: try JSONGrammar(shapes[shapeIndex]), trie: trie, endTokens: [2])
    var rng: UInt64 = 0x9E37_79B9_7F4A_7C15 &* UInt64(shapeIndex + 1)
    func next(_ n: Int) -> Int {
      rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Int((rng >> 33) % UInt64(n))
    }
    var completed = 0
    for _ in 0..<10 {
      var state = constraint.grammar.initialState
      var bytes: [UInt8] = []
      for _ in 0..<600 {
        let mask = constraint.mask(for: state)
        if mask.allows(2) && (constraint.grammar.isComplete(state) || next(4) == 0) { break }
        // Pick among a few random allowed tokens the one closing most (so walks end).
        var picks: [Int] = []
        for _ in 0..<400 where picks.count < 3 {
          let id = next(mask.count)
          if mask.allows(id) && id != 2 { picks.append(id) }
        }
        if picks.isEmpty {
          let allowed = (0..<mask.count).filter { mask.allows($0) && $0 != 2 }
          try #require(!allowed.isEmpty)
          picks = [allowed[next(allowed.count)]]
        }
        let token = picks.min { a, b in
          let ca = tokenizer.bytes(of: Int32(a)).filter { "}]\"".utf8.contains($0) }.count
          let cb = tokenizer.bytes(of: Int32(b)).filter { "}]\"".utf8.contains($0) }.count
          return ca > cb
        }!
        bytes += tokenizer.bytes(of: Int32(token))
        state = constraint.grammar.advance(state, by: tokenizer.bytes(of: Int32(token)))
        try #require(!state.isDead)
      }
      guard constraint.grammar.isAccepting(state) else { continue }
      completed += 1
      #expect(
        (try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])) != nil,
        "\(String(decoding: bytes, as: UTF8.self))")
    }
    #expect(completed >= 5)
  }

  @Test("The sampler never picks a masked token, and a seed still reproduces the draws")
  func maskedSampling() throws {
    let logits: [Float] = (0..<64).map { Float(($0 * 37) % 11) - 5 }
    var mask = TokenMask(count: 64)
    for t in [3, 17, 40, 63] { mask.insert(t) }
    for parameters in [
      SamplingParameters(temperature: 1.5, seed: 5), SamplingParameters(temperature: 0.7, topP: 0.9, seed: 6),
      SamplingParameters(temperature: 1, topK: 10, seed: 7), SamplingParameters(temperature: 1, minP: 0.5, seed: 8),
      SamplingParameters(temperature: 0, seed: 9),
    ] {
      var a = try Sampler(parameters: parameters)
      var b = try Sampler(parameters: parameters)
      for _ in 0..<300 {
        let x = try a.sample(logits, mask: mask)
        #expect(mask.allows(Int(x.token)))
        #expect(x == (try b.sample(logits, mask: mask)))
      }
    }
    var sampler = try Sampler(parameters: SamplingParameters(seed: 1))
    #expect(throws: EngineError.self) { try sampler.sample(logits, mask: TokenMask(count: 64)) }
  }

  @Test("logit_bias shifts logits: +100 forces a token, −100 bans it; out-of-range biases are refused")
  func logitBias() throws {
    let logits: [Float] = [3, 2, 1, 0]
    var forced = try Sampler(parameters: SamplingParameters(temperature: 1, seed: 3, logitBias: [2: 100]))
    var banned = try Sampler(parameters: SamplingParameters(temperature: 0, seed: 3, logitBias: [0: -100]))
    for _ in 0..<100 {
      #expect(try forced.sample(logits).token == 2)
      #expect(try banned.sample(logits).token == 1)
    }
    #expect(throws: EngineError.self) { try Sampler(parameters: SamplingParameters(logitBias: [1: 101])) }
    #expect(throws: EngineError.self) { try Sampler(parameters: SamplingParameters(logitBias: [-1: 1])) }
  }
}
