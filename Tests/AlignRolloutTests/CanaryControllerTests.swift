import AlignEngine
import AlignRollout
import AlignServing
import AlignStore
import AlignTestSupport
import Foundation
import Logging
import Testing

@Suite("Canary analysis acting on a rollout")
struct CanaryControllerTests {
  static func policy() -> CanaryPolicy {
    var policy = CanaryPolicy()
    policy.enabled = true
    policy.minSamples = 8
    policy.minDurationSeconds = 0
    // 20 error-free requests per arm bound an error-rate rise below ~0.3 (Docs/CANARY.md).
    policy.maxErrorRateRise = 0.3
    // Tiny models on a busy machine: latency is not what these tests are about, and a check with a
    // large ratio does not help — one slow request on the active arm keeps its bound wide (the CI
    // run that found it: "waiting for ttft inconclusive (20/20 samples)" at ratio 20).
    policy.maxTTFTRatio = 0
    policy.maxITLRatio = 0
    return policy
  }

  func controller(_ fixture: RolloutFixture) -> RolloutController {
    RolloutController(
      models: fixture.models, registry: fixture.registry, state: fixture.state, rewardGate: fixture.rewardGate,
      safetyGate: SafetyGateSet(path: fixture.folder.appendingPathComponent("none.jsonl").path, margin: 0.02),
      canary: Self.policy(), logger: Logger(label: "canary-tests", factory: { _ in SwiftLogNoOpLogHandler() }))
  }

  /// Serves `count` short generations on a snapshot's own loop (so its latency is measured) and
  /// counts them as requests of its version.
  static func traffic(_ snapshot: PolicySnapshot, signals: LiveSignals, count: Int, failing: Int = 0) async throws {
    let prompt = snapshot.model.encodePrompt("Hello there")
    for i in 0..<count {
      let (_, events) = try snapshot.loop.submit(GenerationSpec(promptTokens: prompt, maxTokens: 3, ignoreEOS: true))
      for await _ in events {}
      signals.recordRequest(version: snapshot.version, failed: i < failing)
    }
  }

  /// A started rollout with a canary of a variant of the tiny policy at 50%.
  func withCanary(_ fixture: RolloutFixture, marker: String) async throws -> (RolloutController, String, String) {
    let rollout = controller(fixture)
    try await rollout.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let active = try #require(fixture.models.policy?.version)
    let candidate = try fixture.upload(try fixture.variant(of: TestModels.tinyPolicy, marker: marker), role: .policy, name: marker)
    _ = try await rollout.activate(role: .policy, version: candidate, canaryPercent: 50, operationID: "")
    return (rollout, active, candidate)
  }

  @Test("a canary that serves like the active version is promoted, and the decision is kept")
  func promotes() async throws {
    let fixture = try RolloutFixture()
    let (rollout, active, candidate) = try await withCanary(fixture, marker: "good")
    let slots = fixture.models.policies
    // Warm both loops up before the window starts (a first request's latency is an outlier).
    try await Self.traffic(try #require(slots.active), signals: LiveSignals(), count: 2)
    try await Self.traffic(try #require(slots.canary), signals: LiveSignals(), count: 2)
    let first = try #require(await rollout.analyzeCanary())
    #expect(first.verdict == .wait)
    try await Self.traffic(try #require(slots.active), signals: fixture.models.signals, count: 20)
    try await Self.traffic(try #require(slots.canary), signals: fixture.models.signals, count: 20)
    let comparison = try #require(await rollout.analyzeCanary())
    #expect(comparison.verdict == .promote, "\(comparison.reason)")
    #expect(comparison.canary.requests == 20 && comparison.active.requests == 20)
    #expect(slots.assignment.activeVersion == candidate && slots.assignment.canaryVersion == nil)
    let decisions = await rollout.canaryDecisions()
    #expect(decisions.first?.verdict == .promote && decisions.first?.canaryVersion == candidate)
    #expect(decisions.first?.activeVersion == active)
    #expect(await rollout.canaryDecision(of: candidate)?.contains("\"verdict\":\"promote\"") == true)
    // The promoted state is persisted like a PromoteCanary.
    let persisted = try #require(try await fixture.state.state(key: "rollout.role.policy"))
    #expect(persisted.contains("\"active\":\"\(candidate)\""))
    // No canary: nothing to compare.
    #expect(await rollout.analyzeCanary() == nil)
  }

  @Test("a canary that fails requests is rolled back with the reason on the checkpoint")
  func rollsBack() async throws {
    let fixture = try RolloutFixture()
    let (rollout, active, candidate) = try await withCanary(fixture, marker: "bad")
    _ = await rollout.analyzeCanary()
    let slots = fixture.models.policies
    try await Self.traffic(try #require(slots.active), signals: fixture.models.signals, count: 20)
    try await Self.traffic(try #require(slots.canary), signals: fixture.models.signals, count: 20, failing: 12)
    let comparison = try #require(await rollout.analyzeCanary())
    #expect(comparison.verdict == .rollback && comparison.reasonCode == "errors", "\(comparison.reason)")
    #expect(slots.assignment.activeVersion == active && slots.assignment.canaryVersion == nil)
    let failure = try #require(await rollout.failure(of: candidate))
    #expect(failure.contains("canary analysis") && failure.contains("error rate"))
    #expect(await rollout.canaryDecisions().first?.reasonCode == "errors")
  }

  @Test("with the analysis off, the comparison is computed and nothing acts")
  func shownOnly() async throws {
    let fixture = try RolloutFixture()
    var policy = Self.policy()
    policy.enabled = false
    let rollout = RolloutController(
      models: fixture.models, registry: fixture.registry, state: fixture.state, rewardGate: fixture.rewardGate,
      safetyGate: SafetyGateSet(path: fixture.folder.appendingPathComponent("none.jsonl").path, margin: 0.02),
      canary: policy, logger: Logger(label: "canary-tests", factory: { _ in SwiftLogNoOpLogHandler() }))
    try await rollout.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let candidate = try fixture.upload(try fixture.variant(of: TestModels.tinyPolicy, marker: "off"), role: .policy, name: "off")
    _ = try await rollout.activate(role: .policy, version: candidate, canaryPercent: 50, operationID: "")
    _ = await rollout.analyzeCanary()
    let slots = fixture.models.policies
    try await Self.traffic(try #require(slots.canary), signals: fixture.models.signals, count: 20, failing: 20)
    try await Self.traffic(try #require(slots.active), signals: fixture.models.signals, count: 20)
    let comparison = try #require(await rollout.analyzeCanary())
    #expect(comparison.verdict == .rollback)
    #expect(slots.assignment.canaryVersion == candidate)
    #expect(await rollout.lastComparison?.verdict == .rollback)
    #expect(await rollout.canaryDecisions().isEmpty)
  }
}
