import AlignEngine
import AlignServing
import AlignTestSupport
import Foundation
import Testing

/// The judge's shared work (its rating instructions computed once and kept, prefixes shared inside
/// a batch) must not change a single bit of a reward under alignd's batch-invariant settings: every
/// input's ratings equal those of its whole token sequence run alone from an empty cache.
@Suite("Generative judge: shared head and batches are bit-identical", .serialized)
struct RewardJudgeSharingTests {
  static let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let modelPath = TestModels.defaultPolicy
  static var modelPresent: Bool { FileManager.default.fileExists(atPath: modelPath) }
  /// What alignd runs with batch_invariant = true: every row through the integer row kernels.
  static let settings = EngineSettings(threads: 2, maxBatchTokens: 256, gemmMinTokens: Int.max)

  static let inputs = [
    RewardInput(prompt: "What is the capital of France?", response: "The capital of France is Paris."),
    RewardInput(prompt: "What is the capital of France?", response: "I don't know, look it up yourself."),
    RewardInput(prompt: "What is 7 times 8?", response: "7 times 8 is 56."),
    RewardInput(prompt: "What is 7 times 8?", response: "7 times 8 is 66."),
    RewardInput(prompt: "How do I boil an egg?", response: "Put the egg in boiling water for about 9 minutes."),
    // Starts with a newline, so its tokens may not extend the shared head: runs in full.
    RewardInput(prompt: "\n  odd spacing?", response: "Fine."),
  ]

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func sharedWorkGivesTheRatingsOfEachInputAlone() throws {
    let policy = try PolicyModel(ggufPath: Self.modelPath, version: "sharing@test", settings: Self.settings)
    let judge = try GenerativeJudge(policy: policy, policyVersion: "sharing@test")
    let batched = try judge.ratingDistributions(Self.inputs)
    let pairs = try stride(from: 0, to: Self.inputs.count, by: 2).flatMap {
      try judge.ratingDistributions(Array(Self.inputs[$0..<min($0 + 2, Self.inputs.count)]))
    }
    let single = try Self.inputs.map { try judge.ratingDistributions([$0])[0] }
    // The reference: each whole rating prompt in a fresh engine and cache, nothing shared.
    let engine = try Engine(model: policy.engine.model, settings: Self.settings)
    let ratingIDs = try (1...5).map { rating -> Int in
      let t = policy.tokenizer.encode(String(rating), addSpecialTokens: false, parseSpecial: false)
      try #require(t.count == 1)
      return Int(t[0])
    }
    for (i, input) in Self.inputs.enumerated() {
      let tokens = policy.encodeRendered(try judge.ratingPrompt(for: input))
      let cache = try engine.makeCache(capacityTokens: tokens.count)
      try cache.addSequence(0)
      let logits = try engine.forward([BatchItem(sequence: 0, tokens: tokens)], cache: cache)[0].logits
      let raw = ratingIDs.map { Double(logits[$0]) }
      let top = raw.max()!
      let weights = raw.map { exp($0 - top) }
      let expected = weights.map { $0 / weights.reduce(0, +) }
      #expect(batched[i] == expected, "input \(i) in a batch of \(Self.inputs.count)")
      #expect(pairs[i] == expected, "input \(i) in a pair")
      #expect(single[i] == expected, "input \(i) alone")
    }
  }
}
