import AlignEngine
import Foundation
import Testing

import AlignServing
import AlignShared

/// The trained default judges (Models/reward, Models/safety, installed into the models folder by
/// scripts/install-judges.sh) served through the Swift encoder, against the Python reference that
/// trained them (Training/*: sentence-transformers embeddings + head_format.forward), and on the
/// held-out test splits they never trained on.
enum TrainedJudges {
  static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let modelsDirectory =
    ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"] ?? root.appendingPathComponent("models").path
  static func model(_ name: String) -> String { modelsDirectory + "/" + name }
  static func fixture(_ path: String) -> URL { root.appendingPathComponent("Tests/Fixtures/" + path) }

  static var available: Bool {
    ["all-MiniLM-L6-v2/model.safetensors", "alignd-reward-minilm/manifest.json", "alignd-safety-minilm/manifest.json",
     LexicalClassifier.defaultFileName, ToxBlockClassifier.defaultWeightsFileName, HateSonarClassifier.defaultFileName]
      .allSatisfy { FileManager.default.fileExists(atPath: model($0)) }
  }

  static let encoder: SentenceEncoder? = try? SentenceEncoder(directory: model("all-MiniLM-L6-v2"))

  /// The ported classifiers the judges stack on their embeddings.
  static func ported() throws -> PortedClassifiers {
    PortedClassifiers(
      lexical: try LexicalClassifier(contentsOf: model(LexicalClassifier.defaultFileName)),
      toxBlock: try ToxBlockClassifier(modelsDirectory: modelsDirectory),
      hateSonar: try HateSonarClassifier(contentsOf: model(HateSonarClassifier.defaultFileName)))
  }

  /// TRL-style preference rows with a source (Tests/Fixtures/reward/heldout-*.jsonl).
  static func preferences(_ file: String) throws -> [PreferenceExample] {
    let text = try String(contentsOf: fixture(file), encoding: .utf8)
    return try text.split(separator: "\n").map { line in
      let row = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      return PreferenceExample(
        context: .prompt(try #require(row["prompt"] as? String)), chosen: try #require(row["chosen"] as? String),
        rejected: try #require(row["rejected"] as? String), source: row["source"] as? String)
    }
  }
}

@Suite(.enabled(if: TrainedJudges.available, "trained judges missing: run scripts/setup.sh"), .serialized)
struct TrainedJudgeTests {
  struct RewardReference: Decodable {
    struct Item: Decodable {
      var prompt: String
      var chosen: String
      var rejected: String
      var reward_chosen: Double
      var reward_rejected: Double
    }
    var model: String
    var items: [Item]
  }

  func rewardModel() throws -> EmbeddingRewardModel {
    try EmbeddingRewardModel(
      headDirectory: TrainedJudges.model("alignd-reward-minilm"), encoder: try #require(TrainedJudges.encoder),
      encoderSHA256: nil, stack: try TrainedJudges.ported())
  }

  @Test func rewardModelEqualsItsPythonReference() throws {
    let model = try rewardModel()
    let reference = try JSONDecoder().decode(
      RewardReference.self, from: Data(contentsOf: TrainedJudges.fixture("reward/heldout-reference.json")))
    #expect(reference.items.count == 64)
    #expect(reference.model == "\(model.head.name)@\(model.head.version)")
    #expect(model.version == (try ModelFingerprint(path: TrainedJudges.model("alignd-reward-minilm"))).version)
    var inputs: [RewardInput] = []
    for item in reference.items {
      inputs.append(RewardInput(prompt: item.prompt, response: item.chosen))
      inputs.append(RewardInput(prompt: item.prompt, response: item.rejected))
    }
    let rewards = try model.rewards(inputs)
    for (i, item) in reference.items.enumerated() {
      #expect(abs(rewards[2 * i] - item.reward_chosen) < 2e-3, "\(item.prompt.prefix(40)): \(rewards[2 * i]) vs \(item.reward_chosen)")
      #expect(abs(rewards[2 * i + 1] - item.reward_rejected) < 2e-3)
    }
    // A head that reads a classifier which is not loaded is refused with the reason.
    #expect(throws: ModelLoadError.self) {
      try EmbeddingRewardModel(
        headDirectory: TrainedJudges.model("alignd-reward-minilm"), encoder: try #require(TrainedJudges.encoder),
        encoderSHA256: nil)
    }
    // One pair at a time gives the same rewards as the batch.
    let alone = try model.rewards(Array(inputs[0..<2]))
    #expect(abs(alone[0] - rewards[0]) < 1e-5 && abs(alone[1] - rewards[1]) < 1e-5)
  }

  @Test func rewardModelRanksHeldOutPairsItNeverTrainedOn() throws {
    let model = try rewardModel()
    let examples = try TrainedJudges.preferences("reward/heldout-test.jsonl")
    #expect(examples.count >= 1000)
    let evaluation = try RewardEvaluation.evaluate(examples, with: model, batchSize: 64)
    // The figure the model card reports for this split; a broken encoder or head lands near 0.5.
    let card = try #require(
      (try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TrainedJudges.model("alignd-reward-minilm/manifest.json"))))
        as? [String: Any])?["metrics"] as? [String: Any])
    let reported = try #require(card["test_accuracy"] as? Double)
    #expect(abs(evaluation.overall.accuracy - reported) < 0.01, "Swift \(evaluation.overall.accuracy) vs card \(reported)")
    #expect(evaluation.overall.accuracy > 0.7)
    #expect(evaluation.bySource.count >= 8)
  }

  struct SafetyReference: Decodable {
    struct Case: Decodable {
      var text: String
      var blocks: [String: [Double]]
      var scores: [String: Double]
    }
    var model: String
    var thresholds: [String: Double]
    var cases: [Case]
  }

  func classifier() throws -> ClassifierBackend {
    try ClassifierBackend(
      headDirectory: TrainedJudges.model("alignd-safety-minilm"), encoder: try #require(TrainedJudges.encoder),
      encoderSHA256: nil, stack: try TrainedJudges.ported())
  }

  @Test func safetyClassifierEqualsItsPythonReference() async throws {
    let backend = try classifier()
    let reference = try JSONDecoder().decode(
      SafetyReference.self, from: Data(contentsOf: TrainedJudges.fixture("safety/heldout-reference.json")))
    #expect(reference.cases.count == 64)
    #expect(backend.version == (try ModelFingerprint(path: TrainedJudges.model("alignd-safety-minilm"))).version)
    #expect(backend.head.thresholds == reference.thresholds)
    // The default policy flags at the thresholds chosen on the validation split.
    let profile = try SafetyPolicy.builtInDefault().profile(named: nil)
    for (name, threshold) in reference.thresholds {
      #expect(profile.rules[SafetyCategory(rawValue: name)]?.threshold == threshold, "\(name)")
    }
    let scores = try await backend.scores(reference.cases.map { SafetyInput(text: $0.text) }, profile: profile)
    for (c, s) in zip(reference.cases, scores) {
      for (name, want) in c.scores {
        let got = try #require(s[SafetyCategory(rawValue: name)], "\(name) missing")
        #expect(abs(got - want) < 1e-3, "\(c.text.prefix(40)) \(name): \(got) vs \(want)")
      }
    }
  }
}
