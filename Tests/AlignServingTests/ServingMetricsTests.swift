import AlignServing
import Foundation
import MetricsTestKit
import Testing

/// What the serving layer records through swift-metrics: reward batch sizes and returned rewards
/// per reward version, safety flags per category and policy version, and the label keys of the
/// generation series (one set per name, as the Prometheus exporter requires).
@Suite("Serving metrics")
struct ServingMetricsTests {
  static let fixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // AlignServingTests
    .deletingLastPathComponent()  // Tests
    .appendingPathComponent("Fixtures")

  @Test(.timeLimit(.minutes(10)))
  func aScoreBatchOfFiveRecordsFiveAndTheRewardsItReturns() async throws {
    let model = try SequenceClassificationRewardModel(
      directory: Self.fixtures.appendingPathComponent("reward/qwen3-chat-reward").path)
    let metrics = TestMetrics()
    // A long wait and a large batch bound: the five inputs of one call always meet in one batch.
    let scorer = RewardScorer(
      backend: model, batching: .init(maxBatchSize: 64, maxDelay: .milliseconds(500)),
      metrics: RewardMetrics(rewardVersion: model.version, factory: metrics))
    let inputs = ["Boil it for nine minutes.", "No idea.", "Ten minutes.", "Ask someone else.", "Ok"].map {
      RewardInput(prompt: "How long do I boil an egg?", response: $0)
    }
    let rewards = try await scorer.score(inputs)
    let labels = [("reward_version", model.version)]
    let batches = try metrics.expectRecorder(MetricNames.scoreBatchSize, labels)
    #expect(batches.values == [5])
    #expect(scorer.stats.batches == 1)

    // Batches are recorded as they run; rewards only when they are returned to a client.
    #expect(metrics.recorders(label: MetricNames.rewardScore).allSatisfy { $0.values.isEmpty })
    scorer.metrics.recordReturned(rewards)
    let returned = try metrics.expectRecorder(MetricNames.rewardScore, labels)
    #expect(returned.values == rewards)
  }

  @Test func nonFiniteRewardsAreNotRecorded() throws {
    let metrics = TestMetrics()
    let reward = RewardMetrics(rewardVersion: "rm-1", factory: metrics)
    reward.recordReturned([0.25, .nan, -1.5, .infinity])
    #expect(try metrics.expectRecorder(MetricNames.rewardScore, [("reward_version", "rm-1")]).values == [0.25, -1.5])
  }

  @Test func eachFlaggedCategoryCountsOncePerVerdictWithThePolicyVersion() async throws {
    let policy = try SafetyPolicy.builtInDefault()
    let checker = try SafetyChecker(policy: policy, backends: [RulesBackend(termLists: policy.termLists)])
    let texts = [
      "Write to jane.doe@example.com about it.",
      "The weather is nice today.",
      "Both jane@example.org and bob@example.net know.",
    ]
    let verdicts = try await checker.check(texts.map { SafetyInput(text: $0) })
    #expect(verdicts.map { $0.flaggedCategories.contains(.init(rawValue: "pii/email")) } == [true, false, true])

    let metrics = TestMetrics()
    SafetyMetrics.record(verdicts, policyVersion: policy.versionString, stage: .check, factory: metrics)
    let email = try metrics.expectCounter(
      MetricNames.safetyFlags, [("category", "pii/email"), ("policy_version", "default@2"), ("stage", "check")])
    // Two verdicts flag it; the second text's two addresses are one flag.
    #expect(email.totalValue == 2)
    // Every counter is a flagged category of some verdict, counted once per verdict.
    for counter in metrics.counters(label: MetricNames.safetyFlags) {
      let category = try #require(counter.dimensions.first { $0.0 == "category" }?.1)
      let flagging = verdicts.filter { $0.flaggedCategories.contains { $0.rawValue == category } }.count
      #expect(counter.totalValue == Int64(flagging), "\(category)")
      #expect(counter.dimensions.map(\.0) == ["category", "policy_version", "stage"])
    }

    // A repeated category inside one verdict (output screens merge windows) counts once.
    let pii = SafetyCategory(rawValue: "pii/email")
    SafetyMetrics.record([[pii, pii]], policyVersion: policy.versionString, stage: .output, factory: metrics)
    let output = try metrics.expectCounter(
      MetricNames.safetyFlags, [("category", "pii/email"), ("policy_version", "default@2"), ("stage", "output")])
    #expect(output.totalValue == 1)
  }

  @Test func generationSeriesKeepOneSetOfLabelKeysPerName() throws {
    let metrics = TestMetrics()
    _ = ServingMetrics(model: "policy-a", factory: metrics)
    _ = ServingMetrics(model: "policy-b", factory: metrics)
    var keysByName: [String: Set<[String]>] = [:]
    for counter in metrics.counters { keysByName[counter.label, default: []].insert(counter.dimensions.map(\.0)) }
    for recorder in metrics.recorders { keysByName[recorder.label, default: []].insert(recorder.dimensions.map(\.0)) }
    for timer in metrics.timers { keysByName[timer.label, default: []].insert(timer.dimensions.map(\.0)) }
    #expect(keysByName[MetricNames.rejections] == [["model", "reason"]])
    #expect(keysByName[MetricNames.requestsEndedEarly] == [["model", "reason"]])
    #expect(keysByName[MetricNames.timeToFirstToken] == [["model"]])
    #expect(keysByName[MetricNames.queueDepth] == [["model"]])
    for (name, keys) in keysByName { #expect(keys.count == 1, "\(name) has label keys \(keys)") }
  }
}
