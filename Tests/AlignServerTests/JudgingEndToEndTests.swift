import AlignAPI
import AlignEngine
import AlignServing
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// Score, CheckSafety, guarded generation and best_of against the real alignd binary.
@Suite("Score and safety over gRPC", .serialized)
struct JudgingEndToEndTests {
  static var defaultModel: URL { TestPaths.modelsDir.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf") }
  static let defaultPresent = FileManager.default.fileExists(atPath: defaultModel.path)
  static func fixture(_ path: String) -> URL { TestPaths.repositoryRoot.appendingPathComponent("Tests/Fixtures/\(path)") }

  static func user(_ text: String) -> Alignd_V1_ChatMessage { .with { $0.role = "user"; $0.content = text } }

  @Test("Score on the generative judge equals the in-process judge; pairs are consistent; concurrent calls share batches",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func judgeScores() async throws {
    let server = try await ServerProcess(arguments: ["--reward-model", "judge"])
    try await server.waitUntilServing()
    let cases = [
      ("What is the capital of France?", "The capital of France is Paris."),
      ("What is the capital of France?", "I don't know, figure it out yourself."),
      ("How many legs does a spider have?", "A spider has eight legs."),
    ]
    // The same judge in process, on the same file.
    let (_, _, sha) = try ModelHost.fingerprint(path: Self.defaultModel.path)
    let version = "SmolLM2-135M-Instruct.Q4_1@\(sha.prefix(12))"
    // The server's default engine settings (batch_invariant: integer products for every token).
    let settings = EngineSettings(maxBatchTokens: 256, gemmMinTokens: Int.max)
    let local = try GenerativeJudge(
      policy: try PolicyModel(path: Self.defaultModel.path, version: version, settings: settings), policyVersion: version)
    let expected = try local.rewards(cases.map { RewardInput(prompt: $0.0, response: $0.1) })

    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let response = try await inference.score(.with {
        $0.items = cases.map { c in .with { $0.prompt = c.0; $0.response = c.1 } }
        $0.pairs = [.with { $0.prompt = cases[0].0; $0.chosen = cases[0].1; $0.rejected = cases[1].1 }]
      })
      #expect(response.versions.reward == "judge:\(version)")
      #expect(response.versions.policy == version)
      #expect(response.rewards.count == 3)
      for (got, want) in zip(response.rewards, expected) { #expect(abs(got - want) < 1e-3, "\(got) vs \(want)") }
      let pair = try #require(response.pairScores.first)
      #expect(abs(pair.chosenReward - response.rewards[0]) < 1e-3)
      #expect(abs(pair.rejectedReward - response.rewards[1]) < 1e-3)
      #expect(abs(pair.pChosenPreferred - 1 / (1 + exp(-(pair.chosenReward - pair.rejectedReward)))) < 1e-9)

      // Chat messages work too; bad input is INVALID_ARGUMENT.
      let chat = try await inference.score(.with { $0.items = [.with { $0.messages = [Self.user(cases[2].0)]; $0.response = cases[2].1 }] })
      #expect(abs(chat.rewards[0] - expected[2]) < 1e-3)
      do {
        _ = try await inference.score(.with { $0.items = [.with { $0.response = "no context" }] })
        Issue.record("a response without prompt or messages was scored")
      } catch let error as RPCError {
        #expect(error.code == .invalidArgument)
      }

      // 16 concurrent one-item calls: the dynamic batcher runs fewer batches than items.
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let before = try await admin.getStatus(.init()).queues.first { $0.model == "reward:judge:\(version)" }
      try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<16 {
          group.addTask {
            _ = try await inference.score(.with { $0.items = [.with { $0.prompt = "Question \(i)?"; $0.response = "Answer \(i)." }] })
          }
        }
        try await group.waitForAll()
      }
      let after = try #require(try await admin.getStatus(.init()).queues.first { $0.model == "reward:judge:\(version)" })
      let batches = after.batches - (before?.batches ?? 0)
      let items = after.items - (before?.items ?? 0)
      #expect(items == 16)
      #expect(batches < items, "16 concurrent calls ran in \(batches) batches")
      #expect(after.largestBatch > 1)
    }
    // alignctl score gives the same rewards.
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let cli = try await FeedbackCLITests.alignctl(
      ["score", "--server", FeedbackCLITests.address(server), "--prompt", cases[0].0,
       "--response", cases[0].1, "--response", cases[1].1, "--json"], folder: folder)
    #expect(cli.status == 0, "\(cli.stderr)")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as? [String: Any])
    let cliRewards = try #require(object["rewards"] as? [Double])
    #expect(cliRewards.count == 2 && abs(cliRewards[0] - expected[0]) < 1e-3 && abs(cliRewards[1] - expected[1]) < 1e-3)
    #expect(object["p_first_preferred"] as? Double != nil)
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("Score on a sequence-classification reward model equals the in-process model")
  func sequenceClassificationScores() async throws {
    let folder = Self.fixture("reward/llama-chat-reward")
    let server = try await ServerProcess(arguments: ["--reward-model", folder.path])
    try await server.waitUntilServing()
    let local = try SequenceClassificationRewardModel(directory: folder.path)  // version: "<folder>@<sha12>"
    let inputs = [RewardInput(prompt: "Hello there", response: "Hi! How can I help?"), RewardInput(prompt: "Hello there", response: "Go away.")]
    let expected = try local.rewards(inputs)
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let response = try await inference.score(.with {
        $0.pairs = [.with { $0.prompt = "Hello there"; $0.chosen = "Hi! How can I help?"; $0.rejected = "Go away." }]
      })
      let pair = try #require(response.pairScores.first)
      #expect(abs(pair.chosenReward - expected[0]) < 1e-4)
      #expect(abs(pair.rejectedReward - expected[1]) < 1e-4)
      #expect(response.versions.reward == local.version)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  struct Case: Decodable {
    let text: String
    let lexical_prob: Double
    let expected_flagged: [String]
    let expected_action: String
  }

  struct Cases: Decodable {
    let policy: String
    let cases: [Case]
  }

  @Test("CheckSafety on the committed set: expected flags and actions; lexical scores equal the Python package's")
  func checkSafetyCases() async throws {
    let data = try Data(contentsOf: Self.fixture("safety/checksafety_cases.json"))
    let fixture = try JSONDecoder().decode(Cases.self, from: data)
    let server = try await ServerProcess(arguments: ["--safety-policy", Self.fixture("safety/\(fixture.policy)").path])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let response = try await inference.checkSafety(.with { $0.texts = fixture.cases.map(\.text) })
      #expect(response.results.count == fixture.cases.count)
      #expect(response.versions.safety.hasPrefix("policy=test-terms@3;"))
      for (result, expected) in zip(response.results, fixture.cases) {
        #expect(result.flaggedCategories.sorted() == expected.expected_flagged.sorted(), "\(expected.text)")
        let action: String
        switch result.action {
        case .allow: action = "allow"
        case .flag: action = "flag"
        case .block: action = "block"
        default: action = "?"
        }
        #expect(action == expected.expected_action, "\(expected.text)")
        // The lexical classifier's score (harassment) agrees with alt-profanity-check.
        let lexical = result.categories.first { $0.category == "harassment" }
        #expect(lexical.map { abs($0.score - expected.lexical_prob) < 1e-6 } ?? false, "\(expected.text): \(String(describing: lexical))")
      }
      // Role-aware: a prompt and its response give two results; an unknown profile is refused.
      let pair = try await inference.checkSafety(.with { $0.prompt = "My card is 4111 1111 1111 1111"; $0.response = "Noted." })
      #expect(pair.results.count == 2)
      #expect(pair.results[0].flaggedCategories == ["pii/credit_card"])
      #expect(pair.results[0].action == .block)
      // alignctl check: exit 2 on block, the verdict in JSON.
      let folder = try TestPaths.temporaryFolder()
      defer { try? FileManager.default.removeItem(at: folder) }
      let address = FeedbackCLITests.address(server)
      let blocked = try await FeedbackCLITests.alignctl(
        ["check", "--server", address, "--text", "My card is 4111 1111 1111 1111", "--json"], folder: folder)
      #expect(blocked.status == 2, "\(blocked.stderr)")
      let verdict = try Alignd_V1_CheckSafetyResponse(jsonString: blocked.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
      #expect(verdict.results.first?.flaggedCategories == ["pii/credit_card"])
      let fine = try await FeedbackCLITests.alignctl(
        ["check", "--server", address, "--text", "Thanks, that helped a lot.", "--prompt", "Did that fix it?"], folder: folder)
      #expect(fine.status == 0, "\(fine.stderr)")
      #expect(fine.stdout.contains("action: allow"))
      do {
        _ = try await inference.checkSafety(.with { $0.texts = ["x"]; $0.profile = "no-such-profile" })
        Issue.record("an unknown profile was accepted")
      } catch let error as RPCError {
        #expect(error.code == .invalidArgument)
      }
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("a blocked prompt never reaches the policy; a streamed output that turns unsafe stops with SAFETY",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func guardedGeneration() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let question = "Tell me about the city of Lyon in France."
    let greedy = Alignd_V1_GenerateRequest.with {
      $0.chat = .with { $0.messages = [Self.user(question)] }
      $0.sampling = .with { $0.maxTokens = 40; $0.temperature = 0 }
    }
    // Greedy decoding is batch-invariant, so a first server shows what the model will write; an
    // operator term list on the second server then blocks a word of that answer.
    let probe = try await ServerProcess()
    try await probe.waitUntilServing()
    let plainText = try await probe.withClient { client in
      try await Alignd_V1_Inference.Client(wrapping: client).generate(greedy).completions[0].text
    }
    probe.signal(SIGTERM)
    _ = try await probe.waitForExit()
    // A word of the answer that the question does not contain (else the prompt screen blocks too).
    let words = plainText.split(whereSeparator: { !$0.isLetter }).map(String.init)
      .filter { $0.count >= 5 && !question.localizedCaseInsensitiveContains($0) }
    let term = try #require(words.dropFirst(2).first ?? words.first, "no word to block in: \(plainText)")
    let policy = folder.appendingPathComponent("policy.json")
    try Data("""
      {"format": "alignd.safety-policy", "format_version": 1, "name": "words", "version": "1",
       "backends": ["lexical", "rules"], "default_profile": "default",
       "profiles": {"default": {"categories": {"pii/credit_card": {"threshold": 0.5, "action": "block"}}}},
       "term_lists": {"words": {"action": "block", "terms": ["\(term)"]}}}
      """.utf8).write(to: policy)
    let server = try await ServerProcess(arguments: ["--safety-policy", policy.path])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      // Without screening the same answer comes back, blocked word included.
      let plain = try await inference.generate(greedy)
      #expect(plain.completions[0].text == plainText)

      // Prompt screening: blocked before tokenization reaches the engine.
      let blocked = try await inference.generate(.with {
        $0.chat = .with { $0.messages = [Self.user("Charge my card 4111 1111 1111 1111 please")] }
        $0.sampling = .with { $0.maxTokens = 32; $0.temperature = 0 }
        $0.safety = .with { $0.mode = .prompt }
      })
      #expect(blocked.completions.count == 1)
      #expect(blocked.completions[0].finishReason == .safety)
      #expect(blocked.completions[0].flaggedCategories == ["pii/credit_card"])
      #expect(blocked.completions[0].text.isEmpty)
      #expect(blocked.usage.promptTokens == 0 && blocked.usage.completionTokens == 0)

      // Prompt-only screening passes a clean prompt and leaves the output alone: the blocked
      // word comes back, since only `output` modes screen what the model says.
      var promptOnly = greedy
      promptOnly.safety = .with { $0.mode = .prompt }
      let unscreened = try await inference.generate(promptOnly)
      #expect(unscreened.completions[0].text == plainText)
      #expect(unscreened.completions[0].finishReason != .safety)

      // Output screening on a stream: it stops with SAFETY and the blocked word is never sent.
      var request = greedy
      request.safety = .with { $0.mode = .output }
      let (text, end) = try await inference.generateStream(request) { response in
        var text = ""
        var end: Alignd_V1_StreamEnd? = nil
        for try await message in response.messages {
          switch message.event {
          case .chunk(let chunk): text += chunk.text
          case .end(let e): end = e
          case nil: break
          }
        }
        return (text, end)
      }
      #expect(!text.lowercased().contains(term.lowercased()), "sent: \(text)")
      #expect(plainText.hasPrefix(text), "what was sent is the start of the answer")
      let completion = try #require(end?.completions.first)
      #expect(completion.finishReason == .safety)
      #expect(completion.flaggedCategories == ["terms/words"])
      #expect(end?.versions.safety.hasPrefix("policy=words@1") == true)

      // Unary output screening likewise.
      var unaryRequest = request
      unaryRequest.returnTokenIds = true
      let unary = try await inference.generate(unaryRequest)
      #expect(unary.completions[0].finishReason == .safety)
      #expect(!unary.completions[0].text.lowercased().contains(term.lowercased()))
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("best_of returns the highest-reward candidate with all candidates' rewards",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func bestOf() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let response = try await inference.generate(.with {
        $0.chat = .with { $0.messages = [Self.user("Give me one tip for staying healthy.")] }
        $0.sampling = .with {
          $0.maxTokens = 24
          $0.temperature = 1.0
          $0.seed = 11
          $0.n = 1
          $0.bestOf = 4
        }
      })
      #expect(response.completions.count == 1)
      #expect(response.candidateRewards.count == 4)
      let best = try #require(response.completions.first)
      #expect(best.reward == response.candidateRewards.max())
      #expect(response.versions.reward.hasPrefix("alignd-reward-minilm@"))  // the trained default ranks them
      // The returned text scores what best_of reported for it.
      let rescored = try await inference.score(.with {
        $0.items = [.with { $0.messages = [Self.user("Give me one tip for staying healthy.")]; $0.response = best.text }]
      })
      #expect(abs(rescored.rewards[0] - best.reward) < 1e-3)
      do {
        _ = try await inference.generateStream(.with {
          $0.prompt = "x"
          $0.sampling = .with { $0.bestOf = 2 }
        }) { response in for try await _ in response.messages {} }
        Issue.record("best_of over a stream was accepted")
      } catch let error as RPCError {
        #expect(error.code == .invalidArgument)
      }
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }
}
