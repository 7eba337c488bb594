import AlignRollout
import AlignServing
import AlignStore
import AlignTestSupport
import Foundation
import Testing

/// Synthetic signal streams: seeded, so every run sees the same figures.
struct SignalStream {
  var generator: SeededGenerator

  init(seed: UInt64) { generator = SeededGenerator(seed: seed) }

  /// A normal draw (Box–Muller).
  mutating func normal(_ mean: Double, _ deviation: Double) -> Double {
    let u = Double.random(in: Double.ulpOfOne..<1, using: &generator)
    let v = Double.random(in: 0..<1, using: &generator)
    return mean + deviation * (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
  }

  mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &generator) < p }

  /// One arm's window: `requests` requests, each failing with `errorRate`, each completion checked
  /// (flagged with `flagRate`), every fourth one's reward sampled, latencies around the means.
  mutating func arm(
    requests: Int, errorRate: Double = 0, flagRate: Double = 0.01, reward: Double = 0.5, rewardDeviation: Double = 0.4,
    ttft: Double = 0.05, itl: Double = 0.01
  ) -> ArmSignals {
    var arm = ArmSignals()
    for i in 0..<requests {
      arm.requests += 1
      if chance(errorRate) { arm.errors += 1 }
      arm.safetyChecked += 1
      if chance(flagRate) { arm.safetyFlagged += 1 }
      if i % 4 == 0 { arm.reward.add(normal(reward, rewardDeviation)) }
      arm.timeToFirstToken.add(max(0.001, normal(ttft, ttft * 0.2)))
      for _ in 0..<8 { arm.interTokenLatency.add(max(0.0005, normal(itl, itl * 0.2))) }
    }
    return arm
  }
}

/// xorshift64*: a small seeded generator for reproducible streams.
struct SeededGenerator: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
  mutating func next() -> UInt64 {
    state ^= state >> 12
    state ^= state << 25
    state ^= state >> 27
    return state &* 0x2545_F491_4F6C_DD1D
  }
}

@Suite("Canary analysis decisions on synthetic signals")
struct CanaryAnalysisTests {
  static func policy(minSamples: Int = 100, minSeconds: Double = 60, maxSeconds: Double = 3600) -> CanaryPolicy {
    var policy = CanaryPolicy()
    policy.enabled = true
    policy.minSamples = minSamples
    policy.minDurationSeconds = minSeconds
    policy.maxDurationSeconds = maxSeconds
    return policy
  }

  static func compare(
    _ active: ArmSignals, _ canary: ArmSignals, elapsed: Double = 120, policy: CanaryPolicy = policy(),
    requirements: CanaryRequirements = CanaryRequirements(reward: true, safety: true)
  ) -> CanaryComparison {
    CanaryAnalysis.compare(
      role: "policy", activeVersion: "a@1", canaryVersion: "b@2", active: active, canary: canary, elapsedSeconds: elapsed,
      policy: policy, requirements: requirements)
  }

  @Test("the confidence level maps onto the normal quantile")
  func quantiles() {
    var policy = CanaryPolicy()
    policy.confidence = 0.95
    #expect(abs(policy.z - 1.6449) < 1e-3)
    policy.confidence = 0.99
    #expect(abs(policy.z - 2.3263) < 1e-3)
  }

  @Test("a canary as good as the active version is promoted once every required signal passes")
  func promotesEqual() {
    var stream = SignalStream(seed: 1)
    let active = stream.arm(requests: 2000)
    let canary = stream.arm(requests: 2000)
    let comparison = Self.compare(active, canary)
    #expect(comparison.verdict == .promote, "\(comparison.reason)")
    #expect(comparison.reasonCode == "passed")
    #expect(comparison.checks.filter(\.required).allSatisfy { $0.status == .pass })
    // Feedback is optional: none arrived, and it does not block.
    #expect(comparison.checks.first { $0.signal == "win_rate" }?.status == .waiting)
  }

  @Test("a good canary waits for the minimum duration before promotion")
  func waitsForDuration() {
    var stream = SignalStream(seed: 2)
    let comparison = Self.compare(stream.arm(requests: 2000), stream.arm(requests: 2000), elapsed: 30)
    #expect(comparison.verdict == .wait)
    #expect(comparison.reasonCode == "duration")
  }

  @Test("a handful of samples never decides, however bad they look")
  func waitsForSamples() {
    var stream = SignalStream(seed: 3)
    let active = stream.arm(requests: 12)
    let canary = stream.arm(requests: 12, errorRate: 0.5, flagRate: 0.5, reward: -3)
    let comparison = Self.compare(active, canary, elapsed: 1000)
    #expect(comparison.verdict == .wait, "\(comparison.reason)")
    #expect(comparison.checks.allSatisfy { $0.status == .waiting })
    #expect(comparison.reason.contains("waiting"))
  }

  @Test("a drop in mean reward beyond the threshold rolls back, naming the figures")
  func rollsBackOnReward() {
    var stream = SignalStream(seed: 4)
    let comparison = Self.compare(stream.arm(requests: 2000, reward: 0.5), stream.arm(requests: 2000, reward: -0.2))
    #expect(comparison.verdict == .rollback)
    #expect(comparison.reasonCode == "reward")
    #expect(comparison.reason.contains("mean reward") && comparison.reason.contains("lower bound"))
  }

  @Test("a small reward drop within the threshold does not roll back")
  func toleratesSmallDrop() {
    var stream = SignalStream(seed: 5)
    let comparison = Self.compare(stream.arm(requests: 4000, reward: 0.5), stream.arm(requests: 4000, reward: 0.45))
    #expect(comparison.verdict == .promote, "\(comparison.reason)")
  }

  @Test("a rise in safety flags rolls back even before the minimum duration")
  func rollsBackOnFlags() {
    var stream = SignalStream(seed: 6)
    let comparison = Self.compare(
      stream.arm(requests: 1000, flagRate: 0.01), stream.arm(requests: 1000, flagRate: 0.15), elapsed: 5)
    #expect(comparison.verdict == .rollback)
    #expect(comparison.reasonCode == "safety_flags")
  }

  @Test("errors and latency roll back on their own thresholds")
  func rollsBackOnErrorsAndLatency() {
    var stream = SignalStream(seed: 7)
    let errors = Self.compare(stream.arm(requests: 1000), stream.arm(requests: 1000, errorRate: 0.1))
    #expect(errors.verdict == .rollback && errors.reasonCode == "errors")
    let slow = Self.compare(stream.arm(requests: 1000), stream.arm(requests: 1000, ttft: 0.2))
    #expect(slow.verdict == .rollback && slow.reasonCode == "ttft", "\(slow.reason)")
    #expect(slow.reason.contains("ratio"))
    // A ratio of 0 turns a latency check off: the same slow canary is judged on the rest.
    var latencyOff = Self.policy()
    latencyOff.maxTTFTRatio = 0
    let unchecked = Self.compare(stream.arm(requests: 1000), stream.arm(requests: 1000, ttft: 0.2), policy: latencyOff)
    #expect(!unchecked.checks.contains { $0.signal == "ttft" } && unchecked.checks.contains { $0.signal == "itl" })
    #expect(unchecked.verdict == .promote, "\(unchecked.reason)")
  }

  @Test("head-to-head feedback the canary loses rolls back; ratings count when there are enough")
  func feedback() {
    var stream = SignalStream(seed: 8)
    let active = stream.arm(requests: 2000)
    var canary = stream.arm(requests: 2000)
    canary.feedbackWins = 15
    canary.feedbackLosses = 85
    let lost = Self.compare(active, canary)
    #expect(lost.verdict == .rollback && lost.reasonCode == "win_rate", "\(lost.reason)")

    canary.feedbackWins = 52
    canary.feedbackLosses = 48
    var rated = active
    var ratedCanary = canary
    for _ in 0..<50 {
      rated.rating.add(0.9)
      ratedCanary.rating.add(0.3)
    }
    let ratings = Self.compare(rated, ratedCanary)
    #expect(ratings.verdict == .rollback && ratings.reasonCode == "rating", "\(ratings.reason)")
  }

  @Test("a canary still undecided at the time limit is rolled back as inconclusive")
  func inconclusive() {
    var stream = SignalStream(seed: 9)
    // Rewards so noisy that 60 samples cannot bound the difference within 0.25.
    let active = stream.arm(requests: 240, rewardDeviation: 3)
    let canary = stream.arm(requests: 240, rewardDeviation: 3)
    let policy = Self.policy(minSamples: 50, minSeconds: 10, maxSeconds: 100)
    let early = Self.compare(active, canary, elapsed: 50, policy: policy)
    #expect(early.verdict == .wait)
    #expect(early.checks.first { $0.signal == "reward" }?.status == .inconclusive)
    let late = Self.compare(active, canary, elapsed: 100, policy: policy)
    #expect(late.verdict == .rollback && late.reasonCode == "inconclusive", "\(late.reason)")
  }

  @Test("without a reward model the reward signal is not required")
  func rewardNotRequired() {
    var stream = SignalStream(seed: 10)
    var active = stream.arm(requests: 2000)
    var canary = stream.arm(requests: 2000)
    active.reward = RunningStat()
    canary.reward = RunningStat()
    let comparison = Self.compare(active, canary, requirements: CanaryRequirements(reward: false, safety: true))
    #expect(comparison.verdict == .promote, "\(comparison.reason)")
  }
}

@Suite("Live signals per version")
struct LiveSignalsTests {
  @Test("readings subtract into windows; feedback from the store maps onto versions")
  func windowsAndFeedback() {
    let signals = LiveSignals()
    signals.recordRequest(version: "a", failed: false)
    let start = signals.reading("a")
    signals.recordRequest(version: "a", failed: true)
    signals.recordReward(version: "a", reward: 2)
    signals.recordSafety(version: "a", flagged: true)
    let window = signals.reading("a").since(start)
    #expect(window.requests == 1 && window.errors == 1 && window.errorRate == 1)
    #expect(window.reward.count == 1 && window.reward.mean == 2)
    #expect(window.safetyFlagRate == 1)

    signals.record(
      FeedbackItem(
        idempotencyKey: "r1", policyVersion: "b",
        payload: .rating(FeedbackRating(prompt: "p", completion: "c", value: 4, scaleMin: 1, scaleMax: 5))))
    #expect(signals.reading("b").rating.mean == 0.75)
    signals.record(
      FeedbackItem(
        idempotencyKey: "p1", metadata: [LiveSignals.chosenVersionKey: "b", LiveSignals.rejectedVersionKey: "a"],
        payload: .preference(FeedbackPreference(prompt: "p", chosen: "x", rejected: "y"))))
    #expect(signals.reading("b").feedbackWins == 1 && signals.reading("a").feedbackLosses == 1)
    // A preference without versions, or between two completions of one version, says nothing.
    signals.recordPreference(chosen: "a", rejected: "a")
    signals.record(
      FeedbackItem(idempotencyKey: "p2", payload: .preference(FeedbackPreference(prompt: "p", chosen: "x", rejected: "y"))))
    #expect(signals.reading("a").feedbackWins == 0 && signals.reading("a").feedbackLosses == 1)
    signals.recordFeedback(version: "c", outcome: .rating(7))
    #expect(signals.reading("c").rating.mean == 1)
  }

  @Test("the completion sampler drops what does not fit its queue instead of waiting")
  func samplerBounded() {
    let sampler = CompletionSampler(rate: 1, capacity: 2, signals: LiveSignals())
    let job = CompletionSampler.Job(version: "a", context: .prompt("p"), text: "t", screened: false)
    #expect(sampler.shouldSample())
    sampler.offer([job, job])
    sampler.offer([job])
    #expect(sampler.counters == CompletionSampler.Counters(offered: 3, queued: 2, dropped: 1, scored: 0, failed: 0))
    #expect(!CompletionSampler(rate: 0, signals: LiveSignals()).shouldSample())
  }
}
