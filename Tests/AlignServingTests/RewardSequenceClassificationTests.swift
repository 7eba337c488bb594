import AlignEngine
import AlignServing
import Foundation
import Testing

/// Sequence-classification reward models against transformers (Tests/Fixtures/reward/*-chat-reward,
/// made by make_reward_fixtures.py), and the dynamic-batching scorer on top of them.
@Suite("Sequence-classification reward models")
struct RewardSequenceClassificationTests {
  static let fixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // AlignServingTests
    .deletingLastPathComponent()  // Tests
    .appendingPathComponent("Fixtures")

  static func folder(_ name: String) -> String {
    fixtures.appendingPathComponent("reward/\(name)").path
  }

  struct Message: Decodable {
    let role: String
    let content: String
  }

  struct Case: Decodable {
    let mode: String
    let messages: [Message]?
    let prompt: String?
    let response: String
    let tokens: [Int32]
    let reward: Double

    var input: RewardInput {
      if mode == "chat" {
        return RewardInput(messages: (messages ?? []).map { ChatMessage(role: $0.role, content: $0.content) }, response: response)
      }
      return RewardInput(prompt: prompt ?? "", response: response)
    }
  }

  struct Expected: Decodable {
    let cases: [Case]
    let pad_token_id: Int32
  }

  static func expected(_ name: String) throws -> Expected {
    try JSONDecoder().decode(
      Expected.self, from: Data(contentsOf: URL(fileURLWithPath: folder(name)).appendingPathComponent("expected.json")))
  }

  @Test(arguments: ["llama-chat-reward", "qwen2-chat-reward", "qwen3-chat-reward"])
  func tokensAndRewardsMatchTransformers(name: String) throws {
    let model = try SequenceClassificationRewardModel(directory: Self.folder(name))
    let expected = try Self.expected(name)
    #expect(model.kind == .sequenceClassification)
    #expect(model.version.hasPrefix("\(name)@"))
    #expect(model.model.metadata.padTokenID == expected.pad_token_id)
    for c in expected.cases {
      #expect(try model.tokens(for: c.input) == c.tokens, "tokens of \(c.mode) case \(c.prompt ?? c.messages?.last?.content ?? "")")
    }
    // All cases in one batched call.
    let rewards = try model.rewards(expected.cases.map(\.input))
    #expect(rewards.count == expected.cases.count)
    for (r, c) in zip(rewards, expected.cases) {
      #expect(abs(r - c.reward) < 1e-4, "reward \(r) vs transformers \(c.reward) for \(c.response)")
    }
    // One at a time gives the same numbers.
    for c in expected.cases.prefix(3) {
      let alone = try model.rewards([c.input])[0]
      #expect(abs(alone - c.reward) < 1e-4)
    }
  }

  @Test func trailingPaddingTokenIsSkippedLikeTransformers() throws {
    // The llama fixture's pad token is <|end_of_text|>; its last case ends with it, so transformers
    // pools one token earlier. Without that rule the reward would be the logit at the pad token.
    let model = try SequenceClassificationRewardModel(directory: Self.folder("llama-chat-reward"))
    let expected = try Self.expected("llama-chat-reward")
    let padCase = try #require(expected.cases.first { $0.tokens.last == expected.pad_token_id })
    let reward = try model.rewards([padCase.input])[0]
    #expect(abs(reward - padCase.reward) < 1e-4)
  }

  /// Inputs that share a long system message and question are run with shared prefixes (computed
  /// once in forked KV sequences); their rewards must equal the rewards of each input run alone.
  @Test(arguments: ["llama-chat-reward", "qwen3-chat-reward"])
  func sharedPrefixesGiveTheSameRewardsAsRunningAlone(name: String) throws {
    let model = try SequenceClassificationRewardModel(directory: Self.folder(name))
    let system = ChatMessage(role: "system", content: "You are a careful assistant who answers questions about cooking in plain words.")
    var inputs: [RewardInput] = []
    for q in ["How long do I boil an egg?", "How long do I boil pasta for?"] {
      for a in ["About nine minutes.", "Ten minutes, then cool it in cold water.", "No idea.", "Ok"] {
        inputs.append(RewardInput(messages: [system, ChatMessage(role: "user", content: q)], response: a))
      }
    }
    inputs.append(RewardInput(prompt: "Unrelated raw text", response: " here."))
    inputs.append(RewardInput(prompt: "x", response: ""))
    let batched = try model.rewards(inputs)
    for (i, input) in inputs.enumerated() {
      let alone = try model.rewards([input])[0]
      #expect(abs(batched[i] - alone) < 1e-5, "input \(i): \(batched[i]) batched vs \(alone) alone")
    }
    // The same inputs in any order give the same bits (the runner sorts them before its passes).
    var shuffled = Array(inputs.indices)
    var rng = Xoshiro256(seed: 7)
    shuffled.shuffle(using: &rng)
    let permuted = try model.rewards(shuffled.map { inputs[$0] })
    for (k, i) in shuffled.enumerated() {
      #expect(permuted[k] == batched[i], "input \(i) at position \(k): \(permuted[k]) vs \(batched[i])")
    }
  }

  @Test func modelsThatAreNotOneLabelRewardModelsAreRefused() throws {
    // A causal LM folder.
    #expect(throws: ModelLoadError.self) {
      _ = try SequenceClassificationRewardModel(directory: Self.fixtures.appendingPathComponent("tiny-models/llama-f32").path)
    }
    // A classifier without tokenizer files.
    let error = #expect(throws: ModelLoadError.self) {
      _ = try SequenceClassificationRewardModel(directory: Self.fixtures.appendingPathComponent("tiny-models/llama-reward").path)
    }
    #expect(error?.description.contains("tokenizer.json") == true)
    #expect(throws: ModelLoadError.self) {
      _ = try SequenceClassificationRewardModel(directory: "/nonexistent/reward-model")
    }
  }

  @Test func inputsTheModelCannotTakeAreInvalidRequests() throws {
    let model = try SequenceClassificationRewardModel(directory: Self.folder("qwen3-chat-reward"))
    let tooLong = RewardInput(prompt: String(repeating: "word ", count: 2000), response: "x")
    #expect(throws: InvalidRequest.self) { _ = try model.rewards([tooLong]) }
    #expect(throws: InvalidRequest.self) { _ = try model.rewards([RewardInput(prompt: "", response: "")]) }
  }

  @Test(.timeLimit(.minutes(20)))
  func concurrentScoreCallsShareForwardPasses() async throws {
    let model = try SequenceClassificationRewardModel(directory: Self.folder("llama-chat-reward"))
    let expected = try Self.expected("llama-chat-reward")
    let scorer = RewardScorer(backend: model, batching: .init(maxBatchSize: 32, maxDelay: .milliseconds(50)))
    #expect(scorer.version == model.version)
    let inputs = (0..<24).map { expected.cases[$0 % expected.cases.count] }
    let results = try await withThrowingTaskGroup(of: (Int, Double).self) { group in
      for (i, c) in inputs.enumerated() { group.addTask { (i, try await scorer.score(c.input)) } }
      var out = [Double](repeating: .nan, count: inputs.count)
      for try await (i, r) in group { out[i] = r }
      return out
    }
    for (r, c) in zip(results, inputs) { #expect(abs(r - c.reward) < 1e-4) }
    let stats = scorer.stats
    #expect(stats.itemsScored == 24)
    #expect(stats.batches < 24, "24 concurrent calls must share forward passes: \(stats)")
    #expect(stats.largestBatch > 1)
  }

  @Test(.timeLimit(.minutes(20)))
  func aBadInputFailsOnlyItsOwnRequest() async throws {
    let model = try SequenceClassificationRewardModel(directory: Self.folder("llama-chat-reward"))
    let expected = try Self.expected("llama-chat-reward")
    let scorer = RewardScorer(backend: model, batching: .init(maxBatchSize: 8, maxDelay: .milliseconds(50)))
    let good = expected.cases[0]
    let bad = RewardInput(prompt: String(repeating: "word ", count: 2000), response: "x")
    async let a = scorer.score(good.input)
    async let b: Result<Double, any Error> = { do { return .success(try await scorer.score(bad)) } catch { return .failure(error) } }()
    async let c = scorer.score(expected.cases[1].input)
    let ra = try await a
    let rc = try await c
    let rb = await b
    #expect(throws: InvalidRequest.self) { _ = try rb.get() }
    // The three met in one batch, which the bad input made the backend refuse; it was then split.
    #expect(scorer.stats.splitBatches == 1, "\(scorer.stats)")
    #expect(scorer.stats.itemsScored == 2)
    #expect(abs(ra - good.reward) < 1e-4)
    #expect(abs(rc - expected.cases[1].reward) < 1e-4)
  }

  @Test func pairwiseProbabilityIsTheSigmoidOfTheRewardGap() async throws {
    let model = try SequenceClassificationRewardModel(directory: Self.folder("qwen3-chat-reward"))
    let scorer = RewardScorer(backend: model)
    let expected = try Self.expected("qwen3-chat-reward")
    let first = expected.cases[0], second = expected.cases[1]  // same question, two answers
    let context = first.input.context
    let pair = try await scorer.pairwise(context: context, chosen: first.response, rejected: second.response)
    #expect(abs(pair.chosen - first.reward) < 1e-4)
    #expect(abs(pair.rejected - second.reward) < 1e-4)
    let p = 1 / (1 + exp(-(first.reward - second.reward)))
    #expect(abs(pair.probabilityChosenPreferred - p) < 1e-4)
    // Listing the two answers the other way round runs the same forward pass (the runner sorts its
    // inputs), so the rewards are the same bits and the probabilities sum to 1 on every CPU — on
    // OpenBLAS's AVX2 sgemm kernels a row's place in the batch changes its last bits, and without
    // the sorting this was 5.3e-8 (OPENBLAS_CORETYPE=Haswell reproduces it on an AVX-512 machine).
    let swapped = try await scorer.pairwise(context: context, chosen: second.response, rejected: first.response)
    #expect(swapped.chosen == pair.rejected && swapped.rejected == pair.chosen)
    #expect(abs(swapped.probabilityChosenPreferred + pair.probabilityChosenPreferred - 1) < 1e-12)
    // Extreme gaps stay finite and in [0, 1].
    #expect(preferenceProbability(chosen: 1000, rejected: -1000) == 1)
    #expect(preferenceProbability(chosen: -1000, rejected: 1000) == 0)
    #expect(preferenceProbability(chosen: 0.5, rejected: 0.5) == 0.5)
  }
}
