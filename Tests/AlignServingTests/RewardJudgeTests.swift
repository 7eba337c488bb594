import AlignEngine
import AlignServing
import AlignTestSupport
import Foundation
import Testing

/// The generative judge on the default SmolLM2 policy (skipped when the model is absent), and what
/// it gets right on the committed good-vs-bad set (Tests/Fixtures/reward/judge_pairs.json).
@Suite("Generative judge on SmolLM2", .serialized)
struct RewardJudgeTests {
  static let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let modelPath = TestModels.defaultPolicy
  static var modelPresent: Bool { FileManager.default.fileExists(atPath: modelPath) }

  static let policy: Result<PolicyModel, any Error> = Result {
    try PolicyModel(ggufPath: modelPath, version: "SmolLM2-135M-Instruct.Q4_1@test")
  }

  struct Pair: Decodable {
    let split: String
    let prompt: String
    let good: String
    let bad: String
  }

  struct PairFile: Decodable { let pairs: [Pair] }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func ratingsAreExpectedValuesOverTheRatingDigits() throws {
    let judge = try GenerativeJudge(policy: try Self.policy.get(), policyVersion: "SmolLM2-135M-Instruct.Q4_1@test")
    #expect(judge.version == "judge:SmolLM2-135M-Instruct.Q4_1@test")
    #expect(judge.kind == .generativeJudge)
    let inputs = [
      RewardInput(prompt: "What is the capital of France?", response: "The capital of France is Paris."),
      RewardInput(
        messages: [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Name a colour.")],
        response: "Blue."),
    ]
    let distributions = try judge.ratingDistributions(inputs)
    for p in distributions {
      #expect(p.count == 5)
      #expect(abs(p.reduce(0, +) - 1) < 1e-9)
      #expect(p.allSatisfy { $0 > 0 })
    }
    let rewards = try judge.rewards(inputs)
    for (r, p) in zip(rewards, distributions) {
      #expect(r >= 1 && r <= 5)
      #expect(abs(r - zip(p, 1...5).reduce(0) { $0 + $1.0 * Double($1.1) }) < 1e-9)
    }
    // Alone or batched, the same ratings (prompt rows go through per-item matrix products).
    #expect(abs(try judge.rewards([inputs[1]])[0] - rewards[1]) < 1e-4)
    // The rating prompt quotes the last user turn and the response, and ends where the digit goes.
    let rendered = try judge.ratingPrompt(for: inputs[1])
    #expect(rendered.contains("Question: Name a colour."))
    #expect(rendered.contains("Answer: Blue."))
    #expect(rendered.hasSuffix("<|im_start|>assistant\nRating: "))
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func placeholdersInTheInputAreNotExpanded() throws {
    let judge = try GenerativeJudge(policy: try Self.policy.get(), policyVersion: "v")
    let rendered = try judge.ratingPrompt(for: RewardInput(prompt: "Say {response}", response: "{question}"))
    #expect(rendered.contains("Question: Say {response}"))
    #expect(rendered.contains("Answer: {question}"))
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func scalesThatAreNotSingleTokensAreRefused() throws {
    let policy = try Self.policy.get()
    var prompt = JudgePrompt.standard
    prompt.scale = 1...10
    #expect(throws: ModelLoadError.self) { _ = try GenerativeJudge(policy: policy, policyVersion: "v", prompt: prompt) }
  }

  /// The measurement Docs/REWARD.md reports: how often the judge rates the obviously better answer
  /// higher. A 135M judge is close to chance; the band keeps the documented claim from going stale
  /// silently (a prompt change that leaves it must update the doc) while tolerating a flip or two of
  /// the many near-tied pairs.
  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"), .timeLimit(.minutes(20)))
  func measuredAccuracyOnTheCommittedPairs() throws {
    let judge = try GenerativeJudge(policy: try Self.policy.get(), policyVersion: "v")
    let url = Self.root.appendingPathComponent("Tests/Fixtures/reward/judge_pairs.json")
    let pairs = try JSONDecoder().decode(PairFile.self, from: Data(contentsOf: url)).pairs
    #expect(pairs.count == 40)
    let inputs = pairs.flatMap { [RewardInput(prompt: $0.prompt, response: $0.good), RewardInput(prompt: $0.prompt, response: $0.bad)] }
    let r = try judge.rewards(inputs)
    var right: [String: Int] = [:]
    var margin = 0.0
    for (i, p) in pairs.enumerated() {
      if r[2 * i] > r[2 * i + 1] { right[p.split, default: 0] += 1 }
      margin += r[2 * i] - r[2 * i + 1]
    }
    // Docs/REWARD.md: dev 15/20, test 9/20, all 24/40; mean margin ≈ 0.05 rating points.
    let total = right.values.reduce(0, +)
    #expect((18...30).contains(total), "judge ranked \(total)/40 right (dev \(right["dev"] ?? 0), test \(right["test"] ?? 0))")
    #expect(abs(margin / Double(pairs.count)) < 0.2, "mean margin \(margin / Double(pairs.count))")
  }
}
