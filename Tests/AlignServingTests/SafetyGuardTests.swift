import AlignEngine
import AlignServing
import AlignShared
import Foundation
import Testing

/// The guard backend's plumbing on a tiny random checkpoint (Tests/Fixtures/safety/tiny-guard,
/// made by make_guard_fixture.py with transformers): its verdicts mean nothing, but the rendered
/// prompt, its tokens, P(unsafe) and the greedy continuation must equal the reference.
@Suite("Safety guard model")
struct SafetyGuardTests {
  struct Fixture: Decodable {
    struct Input: Decodable {
      let role: String
      let text: String
      let context: String?
    }
    struct Case: Decodable {
      let input: Input
      let prompt: String
      let tokens: [Int32]
      let p_safe: Double
      let p_unsafe: Double
      let score: Double
      let greedy_after_unsafe: [Int32]
    }
    struct TemplateCase: Decodable {
      let input: Input
      let prompt: String
      let tokens: [Int32]
    }
    let safe_id: Int32
    let unsafe_id: Int32
    let cases: [Case]
    let chat_template: String
    let template_cases: [TemplateCase]
  }

  static func fixture() throws -> Fixture {
    try JSONDecoder().decode(
      Fixture.self,
      from: Data(contentsOf: URL(fileURLWithPath: SafetyFixtures.tinyGuardPath + "/expected.json")))
  }

  static func input(_ c: Fixture.Case) -> SafetyInput {
    SafetyInput(text: c.input.text, context: c.input.context, role: c.input.role == "assistant" ? .assistant : .user)
  }

  /// Float activations, so the forward pass can be compared with transformers' float32 closely.
  static func backend(maxBatchSize: Int = 8) throws -> GuardBackend {
    try GuardBackend(
      path: SafetyFixtures.tinyGuardPath,
      configuration: .init(
        engine: EngineSettings(quantizedActivations: false),
        batching: .init(maxBatchSize: maxBatchSize, maxDelay: .milliseconds(50))))
  }

  @Test("the prompt, its tokens and the verdict token ids equal the reference")
  func rendering() throws {
    let fixture = try Self.fixture()
    let backend = try Self.backend()
    #expect(backend.chatTemplate == nil)
    #expect(backend.promptSource == "the built-in Llama Guard 3 prompt (the model has no chat template)")
    #expect(backend.safeToken == fixture.safe_id)
    #expect(backend.unsafeToken == fixture.unsafe_id)
    #expect(backend.version == (try ModelFingerprint(path: SafetyFixtures.tinyGuardPath)).version)
    for c in fixture.cases {
      #expect(try backend.renderPrompt(Self.input(c)) == c.prompt)
      #expect(try backend.promptTokens(Self.input(c)) == c.tokens)
    }
  }

  @Test("a guard model's own chat template renders as transformers' apply_chat_template does")
  func modelChatTemplate() async throws {
    let fixture = try Self.fixture()
    // The tiny checkpoint with the fixture's template in its tokenizer_config.json.
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("guard-template-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
      try FileManager.default.copyItem(
        atPath: SafetyFixtures.tinyGuardPath + "/" + name, toPath: folder.appendingPathComponent(name).path)
    }
    let config: [String: Any] = [
      "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": fixture.chat_template,
    ]
    try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("tokenizer_config.json"))
    let backend = try GuardBackend(
      path: folder.path, version: "templated", configuration: .init(engine: EngineSettings(quantizedActivations: false)))
    #expect(backend.chatTemplate != nil)
    #expect(backend.promptSource == "the model's chat template")
    for c in fixture.template_cases {
      let input = SafetyInput(
        text: c.input.text, context: c.input.context, role: c.input.role == "assistant" ? .assistant : .user)
      #expect(try backend.renderPrompt(input) == c.prompt)
      #expect(try backend.promptTokens(input) == c.tokens)
    }
    let results = try await backend.evaluate([SafetyInput(text: "hello")], decodeThreshold: 1)
    #expect((0...1).contains(results[0].unsafeProbability))

    // A template that fails to render is set aside for the documented prompt, and says why.
    let failing: [String: Any] = [
      "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
      "chat_template": "{{ raise_exception('only text conversations') }}",
    ]
    try JSONSerialization.data(withJSONObject: failing).write(to: folder.appendingPathComponent("tokenizer_config.json"))
    let fallback = try GuardBackend(path: folder.path, configuration: .init(engine: EngineSettings(quantizedActivations: false)))
    #expect(fallback.chatTemplate == nil)
    #expect(fallback.promptSource.hasPrefix("the built-in Llama Guard 3 prompt (the model's chat template failed"))
    let c = fixture.cases[0]
    #expect(try fallback.renderPrompt(Self.input(c)) == c.prompt)
  }

  @Test("P(unsafe) equals transformers' softmax on the same tokens, in one batch")
  func probabilities() async throws {
    let fixture = try Self.fixture()
    let backend = try Self.backend()
    let results = try await backend.evaluate(fixture.cases.map(Self.input), decodeThreshold: .infinity)
    for (c, r) in zip(fixture.cases, results) {
      #expect(abs(r.unsafeProbability - c.score) < 1e-4, "\(c.input.text)")
      #expect(abs(r.safeTokenProbability - c.p_safe) < 1e-4 * max(c.p_safe, 1e-3) * 10)
      #expect(abs(r.unsafeTokenProbability - c.p_unsafe) < 1e-4 * max(c.p_unsafe, 1e-3) * 10)
      #expect(r.decoded == nil)
    }
    #expect(backend.batchStats.largestBatch == fixture.cases.count)
  }

  @Test("the decoded continuation after a forced \"unsafe\" equals transformers' greedy ids")
  func greedyDecode() async throws {
    let fixture = try Self.fixture()
    let backend = try Self.backend()
    let results = try await backend.evaluate(fixture.cases.map(Self.input), decodeThreshold: 0)
    for (c, r) in zip(fixture.cases, results) {
      let expected = backend.tokenizer.decode([fixture.unsafe_id] + c.greedy_after_unsafe, skipSpecialTokens: true)
      let decoded = try #require(r.decoded)
      // The backend decodes up to 12 tokens; the reference recorded 8.
      #expect(decoded.hasPrefix(expected), "\(c.input.text)")
    }
  }

  @Test("concurrent checks share forward passes")
  func batchesConcurrentCalls() async throws {
    let fixture = try Self.fixture()
    let backend = try Self.backend(maxBatchSize: 4)
    let profile = SafetyProfile(name: "none", rules: [:])
    try await withThrowingTaskGroup(of: Void.self) { group in
      for c in fixture.cases.prefix(4) {
        group.addTask { _ = try await backend.scores([Self.input(c)], profile: profile) }
      }
      try await group.waitForAll()
    }
    #expect(backend.batchStats.largestBatch > 1)
    #expect(backend.batchStats.batches < 4)
  }

  @Test("scores: below every threshold each covered category gets P(unsafe); above, only decoded ones")
  func scoresFollowProfile() async throws {
    let fixture = try Self.fixture()
    let backend = try Self.backend()
    let c = fixture.cases[0]
    let quiet = SafetyProfile(name: "q", rules: [.violence: CategoryRule(threshold: 0.9, action: .block)])
    let upper = try await backend.scores([Self.input(c)], profile: quiet)[0]
    #expect(Set(upper.keys) == Set(backend.categories))
    #expect(upper.values.allSatisfy { abs($0 - c.score) < 1e-4 })

    let eager = SafetyProfile(name: "e", rules: [.violence: CategoryRule(threshold: 0.01, action: .block)])
    let decoded = try await backend.scores([Self.input(c)], profile: eager)[0]
    let text = try #require(try await backend.evaluate([Self.input(c)], decodeThreshold: 0)[0].decoded)
    let named = LlamaGuardFormat.parse(text).categories
    #expect(Set(decoded.keys) == Set(named.isEmpty ? [.guardUnspecified] : named))
    #expect(decoded.values.allSatisfy { abs($0 - c.score) < 1e-4 })
  }

  @Test("a checker with the guard reports its version and flags through the profile")
  func checkerWithGuard() async throws {
    let fixture = try Self.fixture()
    let backend = try Self.backend()
    let checker = try SafetyChecker(policy: .builtInDefault(), backends: [backend, RulesBackend(termLists: [])])
    #expect(checker.version == "policy=default@2;guard=\(backend.version);rules=1")
    #expect(backend.version.hasPrefix("tiny-guard@"))
    let verdicts = try await checker.check(fixture.cases.map(Self.input))
    let decodeThreshold = 0.3  // the lowest default threshold among guard categories (sexual/minors)
    #expect(fixture.cases.contains { $0.score < decodeThreshold })
    #expect(fixture.cases.contains { $0.score >= decodeThreshold })
    let profile = try SafetyPolicy.builtInDefault().profile(named: nil)
    for (c, v) in zip(fixture.cases, verdicts) {
      let guardScores = v.scores.filter { $0.source == "guard" }
      if c.score < decodeThreshold {
        // Not decoded: every guard category carries P(unsafe), below every threshold.
        #expect(Set(guardScores.map(\.category)) == Set(backend.categories))
        #expect(guardScores.allSatisfy { abs($0.score - c.score) < 1e-4 && !$0.flagged })
      } else {
        // Decoded: only the named categories (or guard/unspecified) score, and the profile decides.
        let text = try #require(try await backend.evaluate([Self.input(c)], decodeThreshold: 0)[0].decoded)
        let named = LlamaGuardFormat.parse(text).categories
        let expected = Set(named.isEmpty ? [.guardUnspecified] : named)
        #expect(Set(guardScores.filter { $0.score > 0 }.map(\.category)) == expected)
        for s in guardScores where s.score > 0 {
          #expect(abs(s.score - c.score) < 1e-4)
          #expect(s.flagged == (c.score >= profile.rules[s.category]!.threshold))
        }
      }
    }
  }

  @Test("a prompt longer than the guard's context is an InvalidRequest")
  func tooLong() async throws {
    let backend = try Self.backend()
    let long = String(repeating: "word ", count: 2000)
    await #expect(throws: InvalidRequest.self) {
      _ = try await backend.evaluate([SafetyInput(text: long)], decodeThreshold: 1)
    }
  }

  @Test("a missing model folder is a configuration error naming the path")
  func missingModel() {
    #expect {
      try GuardBackend(path: "/nonexistent/guard")
    } throws: { error in
      (error as? SafetyConfigurationError)?.description.contains("/nonexistent/guard") == true
    }
  }

  @Test(
    "Llama Guard output parsing",
    arguments: [
      ("safe", false as Bool?, [String](), [SafetyCategory]()),
      ("\n\nsafe", false, [], []),
      ("unsafe\nS1", true, ["S1"], [.violence, .illicitViolent]),
      ("unsafe\nS1,S10", true, ["S1", "S10"], [.violence, .illicitViolent, .hate]),
      ("\n\nunsafe\nS10, S3 ,S10", true, ["S10", "S3"], [.hate, .sexual, .illicitViolent]),
      ("Unsafe\ns11", true, ["S11"], [.selfHarm]),
      ("unsafe\nS4<|eot_id|>", true, [], []),
      ("unsafe\nS4", true, ["S4"], [.sexualMinors]),
      ("unsafe\nS6,S7,S8,S13,S14", true, ["S6", "S7", "S8", "S13", "S14"],
       [.guardSpecializedAdvice, .guardPrivacy, .guardIntellectualProperty, .guardElections, .guardCodeInterpreterAbuse]),
      ("unsafe\nS99,Sx,violence", true, ["S99"], []),
      ("unsafe", true, [], []),
      ("maybe\nS1", nil, [], []),
      ("", nil, [], []),
    ])
  func parse(_ text: String, _ unsafe: Bool?, _ codes: [String], _ categories: [SafetyCategory]) {
    let output = LlamaGuardFormat.parse(text)
    #expect(output.unsafe == unsafe)
    #expect(output.codes == codes)
    #expect(output.categories == categories)
  }

  @Test("every hazard code S1–S14 maps to valid categories")
  func hazardMapping() {
    #expect(HazardCode.all.map(\.code) == (1...14).map { "S\($0)" })
    for entry in HazardCode.all {
      #expect(!entry.categories.isEmpty)
      #expect(entry.categories.allSatisfy { $0.isValid })
    }
    #expect(HazardCode.categories(of: "S15") == nil)
    #expect(Set(HazardCode.coveredCategories).isSuperset(of: [.hate, .selfHarm, .sexualMinors, .guardUnspecified]))
  }

  @Test("the built-in prompt is role-aware")
  func promptRoles() {
    let user = LlamaGuardFormat.prompt(for: SafetyInput(text: "hi"), bos: "<s>")
    #expect(user.hasPrefix("<s><|start_header_id|>user<|end_header_id|>\n\n"))
    #expect(user.contains("unsafe content in 'User' messages"))
    #expect(user.contains("<BEGIN CONVERSATION>\n\nUser: hi\n\n<END CONVERSATION>"))
    #expect(user.contains("S14: Code Interpreter Abuse.\n<END UNSAFE CONTENT CATEGORIES>"))
    #expect(user.hasSuffix("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"))
    let agent = LlamaGuardFormat.prompt(for: SafetyInput(text: "ok", context: "q?", role: .assistant), bos: "")
    #expect(agent.contains("unsafe content in 'Agent' messages"))
    #expect(agent.contains("User: q?\n\nAgent: ok\n\n<END CONVERSATION>"))
    #expect(agent.contains("ONLY THE LAST Agent message"))
  }
}
