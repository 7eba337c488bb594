import AlignEngine
import AlignServing
import AlignTestSupport
import Foundation
import Testing

/// Synthetic preference pairs with a learnable signal: the chosen response is polite and helpful,
/// the rejected one rude or unhelpful. Built from templates with variety (tasks × question forms ×
/// answer forms), shuffled by a seed.
enum PolitenessPairs {
  static let tasks: [(task: String, step: String)] = [
    ("bake bread", "mixing flour, water, yeast and salt, then letting the dough rise for an hour"),
    ("learn to swim", "practising floating in shallow water with an instructor"),
    ("fix a flat bicycle tyre", "removing the tube, finding the hole and applying a patch"),
    ("save money each month", "writing down your spending and setting a fixed amount aside on payday"),
    ("start running", "alternating one minute of jogging with two minutes of walking"),
    ("grow tomatoes", "planting them in a sunny spot and watering the soil every morning"),
    ("write a cover letter", "opening with the role you want and two achievements that fit it"),
    ("clean a cast iron pan", "scrubbing it with hot water, drying it and rubbing in a little oil"),
    ("improve my handwriting", "practising slowly for ten minutes a day with lined paper"),
    ("train a puppy to sit", "holding a treat above its nose and rewarding it when it sits"),
    ("study for an exam", "making a schedule and testing yourself with practice questions"),
    ("make friends in a new city", "joining a club or class that meets every week"),
    ("reduce stress", "taking short walks and breathing slowly for a few minutes"),
    ("cook rice", "rinsing it, then simmering one cup of rice in two cups of water for fifteen minutes"),
    ("prepare for a job interview", "researching the company and practising answers out loud"),
    ("keep houseplants alive", "checking the soil with a finger and watering only when it is dry"),
    ("learn to play guitar", "learning three basic chords and practising changes between them"),
    ("organise my desk", "clearing everything off and putting back only what you use daily"),
    ("write a short story", "picking one character with one problem and writing a page a day"),
    ("sleep better", "going to bed at the same time every night and dimming screens an hour before"),
    ("paint a room", "taping the edges, laying a drop cloth and using a roller for the walls"),
    ("back up my photos", "copying them to an external drive and to a cloud folder"),
    ("make a budget", "listing your income and fixed costs, then planning the rest by category"),
    ("learn a new language", "practising a little each day with flashcards and short conversations"),
    ("brew good coffee", "using freshly ground beans and water just below boiling"),
  ]

  static let questions = [
    "How do I %@?", "Can you help me %@?", "What's the best way to %@?", "Any tips on how to %@?",
    "I want to %@. Where should I start?", "Could you explain how to %@?",
  ]

  static let chosen = [
    "Sure, happy to help! To %@, start by %@. Let me know if you have any other questions.",
    "Great question. A good way to %@ is %@. Good luck, you've got this!",
    "Of course. I'd suggest %@. I hope that helps you %@!",
    "Absolutely! The easiest way to %@ is %@. Feel free to ask if anything is unclear.",
    "Thanks for asking. To %@, try %@. Have fun with it!",
    "Happy to explain. You can %@ by %@. Please reach out if you'd like more detail.",
  ]

  static let rejected = [
    "Why would I help you %@? Figure it out yourself.",
    "That's a stupid question. Just search for how to %@ like everyone else.",
    "No. I don't feel like explaining how to %@.",
    "Ugh, whatever. %@ however you want, I don't care.",
    "Stop wasting my time with questions about how to %@.",
    "Not my problem. Go bother someone else about how to %@.",
  ]

  /// `count` pairs, deterministic for a seed.
  static func make(count: Int, seed: UInt64) -> [PreferencePair] {
    var rng = Xoshiro256(seed: seed)
    func pick<T>(_ a: [T]) -> T { a[Int(rng.next() % UInt64(a.count))] }
    return (0..<count).map { _ in
      let t = pick(tasks)
      let q = String(format: pick(questions), t.task)
      let c = pick(chosen)
      // Some chosen templates put the step first.
      let good =
        c.hasPrefix("Of course. I'd suggest")
        ? String(format: c, t.step, t.task) : String(format: c, t.task, t.step)
      let bad = String(format: pick(rejected), t.task)
      return PreferencePair(prompt: q, chosen: good, rejected: bad)
    }
  }
}

/// Bradley–Terry reward-head training: the optimizer on synthetic features, and the whole loop on
/// the default SmolLM2 policy (skipped when the model is absent).
@Suite("Reward-head trainer")
struct RewardHeadTrainerTests {
  static let modelPath = TestModels.defaultPolicy
  static var modelPresent: Bool { FileManager.default.fileExists(atPath: modelPath) }

  /// Gaussian features where chosen responses are shifted along a hidden direction.
  @Test func fitRecoversASyntheticPreferenceDirection() throws {
    var rng = Xoshiro256(seed: 7)
    func gaussian() -> Float {
      let u1 = max(rng.nextUnit(), 1e-12), u2 = rng.nextUnit()
      return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
    let d = 16
    let direction = (0..<d).map { i in Float(i % 3 == 0 ? 1 : 0) }
    // Dimensions at very different scales: standardization must handle them.
    let scales = (0..<d).map { Float(pow(10, Double($0 % 4) - 1)) }
    func feature(shift: Float) -> [Float] { (0..<d).map { (gaussian() + shift * direction[$0]) * scales[$0] } }
    let n = 400
    let chosen = (0..<n).map { _ in feature(shift: 0.8) }
    let rejected = (0..<n).map { _ in feature(shift: -0.8) }
    let fit = RewardHeadTrainer.fit(chosen: chosen, rejected: rejected, l2: 1e-3)
    #expect(fit.weight.count == d)
    #expect(fit.iterations > 0)
    #expect(fit.loss.isFinite && fit.loss < log(2.0))
    func reward(_ f: [Float]) -> Double { zip(fit.weight, f).reduce(fit.bias) { $0 + $1.0 * Double($1.1) } }
    let right = (0..<n).filter { reward(chosen[$0]) > reward(rejected[$0]) }.count
    #expect(Double(right) / Double(n) > 0.85)
    // The weights (in standardized units) point along the planted direction.
    let standardized = (0..<d).map { fit.weight[$0] * Double(scales[$0]) }
    let onDirection = (0..<d).filter { direction[$0] == 1 }.map { standardized[$0] }
    #expect(onDirection.allSatisfy { $0 > 0 })
    let dot = zip(standardized, direction).reduce(0) { $0 + $1.0 * Double($1.1) }
    let norms = standardized.map { $0 * $0 }.reduce(0, +).squareRoot() * Double(onDirection.count).squareRoot()
    #expect(dot / norms > 0.9, "cosine between the weights and the planted direction: \(dot / norms)")
    // The bias centres the training rewards.
    let mean = (chosen + rejected).map(reward).reduce(0, +) / Double(2 * n)
    #expect(abs(mean) < 1e-9)
  }

  @Test func theHeldOutSplitIsDeterministicAndDisjoint() {
    let a = RewardHeadTrainer.split(count: 100, heldoutFraction: 0.2, seed: 3)
    let b = RewardHeadTrainer.split(count: 100, heldoutFraction: 0.2, seed: 3)
    let c = RewardHeadTrainer.split(count: 100, heldoutFraction: 0.2, seed: 4)
    #expect(a.train == b.train && a.heldout == b.heldout)
    #expect(a.heldout != c.heldout)
    #expect(a.heldout.count == 20 && a.train.count == 80)
    #expect(Set(a.train).isDisjoint(with: a.heldout))
    #expect(Set(a.train + a.heldout) == Set(0..<100))
    #expect(RewardHeadTrainer.split(count: 3, heldoutFraction: 0.01, seed: 0).heldout.count == 1)
    #expect(RewardHeadTrainer.split(count: 1, heldoutFraction: 0.5, seed: 0).train == [0])
    #expect(RewardHeadTrainer.split(count: 10, heldoutFraction: 0, seed: 0).heldout.isEmpty)
  }

  /// The base model, loaded once for the tests below.
  static let base: Result<RewardBaseModel, any Error> = Result { try RewardBaseModel(ggufPath: modelPath) }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func badTrainingRequestsAreRefused() throws {
    let trainer = RewardHeadTrainer(base: try Self.base.get())
    let pairs = PolitenessPairs.make(count: 4, seed: 1)
    #expect(throws: InvalidRequest.self) { _ = try trainer.train([]) }
    #expect(throws: InvalidRequest.self) { _ = try trainer.train(pairs, options: .init(heldoutFraction: 1)) }
    #expect(throws: InvalidRequest.self) { _ = try trainer.train(pairs, options: .init(heldoutFraction: -0.1)) }
    #expect(throws: InvalidRequest.self) { _ = try trainer.train(pairs, options: .init(l2: .nan)) }
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func aHeadForAnotherBaseModelIsRefused() throws {
    let base = try Self.base.get()
    #expect(base.sha256.count == 64)
    #expect(base.hiddenSize == 576)
    let other = RewardHeadManifest(
      baseModel: .init(name: "other", sha256: String(repeating: "0", count: 64)), hiddenSize: 576, input: .chatTemplate,
      metrics: .init(heldoutAccuracy: nil, trainPairs: 0, heldoutPairs: 0))
    let wrongBase = try RewardHeadCheckpoint(manifest: other, weight: [Float](repeating: 0, count: 576), bias: 0)
    #expect(throws: RewardHeadError.baseModelMismatch(expected: String(repeating: "0", count: 64), found: base.sha256)) {
      _ = try RewardHeadModel(checkpoint: wrongBase, base: base, version: "x")
    }
    let narrow = RewardHeadManifest(
      baseModel: .init(name: "base", sha256: base.sha256), hiddenSize: 64, input: .chatTemplate,
      metrics: .init(heldoutAccuracy: nil, trainPairs: 0, heldoutPairs: 0))
    let wrongWidth = try RewardHeadCheckpoint(manifest: narrow, weight: [Float](repeating: 0, count: 64), bias: 0)
    #expect(throws: RewardHeadError.hiddenSizeMismatch(head: 64, baseModel: 576)) {
      _ = try RewardHeadModel(checkpoint: wrongWidth, base: base, version: "x")
    }
  }

  /// The issue's acceptance loop in process: ≥ 200 synthetic pairs → held-out accuracy ≥ 0.9 → the
  /// written checkpoint loads and the scorer ranks the held-out pairs as training measured.
  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"), .timeLimit(.minutes(20)))
  func trainsAPolitenessHeadThatRanksHeldOutPairs() async throws {
    let base = try Self.base.get()
    let pairs = PolitenessPairs.make(count: 200, seed: 42)
    #expect(Set(pairs.map(\.chosen)).count > 100, "the generator must vary its answers")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reward-head-train-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    let options = RewardHeadTrainingOptions(heldoutFraction: 0.25, l2: 1e-2, seed: 9)
    var progressCalls = 0
    let result = try RewardHeadTrainer(base: base).train(pairs, options: options, writeTo: dir.path) { done, total in
      progressCalls += 1
      #expect(done <= total && total == 400)
    }
    #expect(progressCalls > 1)
    #expect(result.heldoutIndices.count == 50)
    #expect(result.trainIndices.count == 150)
    let heldout = try #require(result.heldoutAccuracy)
    #expect(heldout >= 0.9, "held-out accuracy \(heldout)")
    #expect(result.trainAccuracy >= 0.95)
    #expect(result.directory == dir.standardizedFileURL.path)
    #expect(result.summary.contains("held-out accuracy: \(String(format: "%.1f%%", 100 * heldout))"))
    #expect(result.summary.contains("checkpoint: \(dir.standardizedFileURL.path)"))

    // The checkpoint on disk records what happened.
    let ckpt = try RewardHeadCheckpoint(directory: dir.path)
    #expect(ckpt.manifest.baseModel.sha256 == base.sha256)
    #expect(ckpt.manifest.baseModel.name == "SmolLM2-135M-Instruct.Q4_1")
    #expect(ckpt.manifest.hiddenSize == 576)
    #expect(ckpt.manifest.input == .chatTemplate)
    #expect(ckpt.manifest.metrics == .init(heldoutAccuracy: heldout, trainPairs: 150, heldoutPairs: 50))
    #expect(ckpt.weight == result.checkpoint.weight)

    // Loaded as a backend behind the batching scorer, it ranks the held-out pairs the same way.
    let model = try RewardHeadModel(directory: dir.path, base: base)
    #expect(model.kind == .rewardHead)
    #expect(model.version.hasPrefix(dir.lastPathComponent + "@"))
    let scorer = RewardScorer(backend: model, batching: .init(maxBatchSize: 32, maxDelay: .milliseconds(20)))
    var right = 0
    try await withThrowingTaskGroup(of: PairwiseScore.self) { group in
      for i in result.heldoutIndices {
        let p = pairs[i]
        group.addTask { try await scorer.pairwise(context: p.context, chosen: p.chosen, rejected: p.rejected) }
      }
      for try await score in group where score.probabilityChosenPreferred > 0.5 { right += 1 }
    }
    #expect(abs(Double(right) / Double(result.heldoutIndices.count) - heldout) < 1e-9)
    #expect(scorer.stats.largestBatch > 1)
    // A new prompt/response the head never saw still gets the polite answer preferred.
    let fresh = try await scorer.pairwise(
      context: .prompt("How do I tie a tie?"),
      chosen: "Sure, happy to help! Cross the wide end over, loop it up through the neck and pull it down through the knot.",
      rejected: "Figure it out yourself, I'm not your butler.")
    #expect(fresh.probabilityChosenPreferred > 0.5)
  }
}
