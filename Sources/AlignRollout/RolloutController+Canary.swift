import AlignServing
import AlignStore
import Foundation

/// A decision of the canary analysis, kept in the rollout state store (newest first under
/// `rollout.canary.decisions`, and by canary version).
public struct CanaryDecision: Codable, Sendable, Equatable {
  public var role: String
  public var canaryVersion: String
  public var activeVersion: String
  /// promote or rollback.
  public var verdict: CanaryVerdict
  public var reason: String
  /// The signal that decided (`passed` for a promotion, `inconclusive` at the time limit).
  public var reasonCode: String
  public var decidedAtUnixMs: Int64
  /// The figures it was decided on.
  public var comparison: CanaryComparison
}

/// The stretch of traffic a comparison covers: from when this process first saw the pair of
/// versions. Signals are cumulative per version, so the window's figures are the readings minus
/// the baselines taken at its start (the active version's earlier traffic does not count).
struct CanaryWindow: Sendable {
  var activeVersion: String
  var canaryVersion: String
  var start: ContinuousClock.Instant
  var activeBaseline: ArmSignals
  var canaryBaseline: ArmSignals
}

extension RolloutController {
  static let decisionsKey = "rollout.canary.decisions"
  static func decisionKey(_ version: String) -> String { "rollout.canary.decision.\(version)" }
  /// Decisions kept in the history.
  static let decisionHistory = 20

  /// Compares the policy canary with the active policy on the live signals of the traffic since
  /// the pair started serving and, when ``canaryPolicy`` is enabled and the verdict is not to wait,
  /// promotes or rolls back, recording why. Returns the comparison (nil while no canary serves).
  ///
  /// Only the policy role is analysed: reward and safety canaries serve Score and CheckSafety,
  /// whose quality this process cannot observe without labels.
  @discardableResult
  public func analyzeCanary() async -> CanaryComparison? {
    let slots = models.policies
    guard let active = slots.active, let canary = slots.canary else {
      canaryWindow = nil
      lastComparison = nil
      CanaryMetrics.clear(role: .policy)
      return nil
    }
    let (activeNow, canaryNow) = (policyReading(active), policyReading(canary))
    if canaryWindow?.activeVersion != active.version || canaryWindow?.canaryVersion != canary.version {
      canaryWindow = CanaryWindow(
        activeVersion: active.version, canaryVersion: canary.version, start: .now, activeBaseline: activeNow,
        canaryBaseline: canaryNow)
    }
    guard let window = canaryWindow else { return nil }
    let elapsed = ContinuousClock.now - window.start
    let sampling = models.sampler.rate > 0
    let comparison = CanaryAnalysis.compare(
      role: CheckpointRole.policy.rawValue, activeVersion: active.version, canaryVersion: canary.version,
      active: activeNow.since(window.activeBaseline), canary: canaryNow.since(window.canaryBaseline),
      elapsedSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18,
      policy: canaryPolicy,
      requirements: CanaryRequirements(
        reward: sampling && models.rewards.active != nil, safety: sampling && models.safety.active != nil))
    lastComparison = comparison
    CanaryMetrics.record(comparison, role: .policy)
    guard canaryPolicy.enabled, comparison.verdict != .wait else { return comparison }
    await conclude(comparison)
    return comparison
  }

  /// A policy version's signals with its engine loop's latency.
  func policyReading(_ snapshot: PolicySnapshot) -> ArmSignals {
    var reading = models.signals.reading(snapshot.version)
    let latency = snapshot.loop.latency.reading
    reading.timeToFirstToken = latency.ttft
    reading.interTokenLatency = latency.itl
    return reading
  }

  /// Acts on a promote or rollback verdict, if the compared pair still serves, and records it.
  private func conclude(_ comparison: CanaryComparison) async {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    let slots = models.policies
    let assignment = slots.assignment
    // An admin operation may have changed the versions since the comparison was read.
    guard assignment.activeVersion == comparison.activeVersion, assignment.canaryVersion == comparison.canaryVersion
    else { return }
    let promote = comparison.verdict == .promote
    let swap = SwapMetrics(role: .policy, kind: promote ? .promote : .rollback)
    let changed = promote ? slots.promoteCanary() : slots.dropCanary() != nil
    swap.finish(changed ? .success : .failure)
    guard changed else { return }
    canaryWindow = nil
    lastComparison = nil
    CanaryMetrics.clear(role: .policy)
    let decision = CanaryDecision(
      role: CheckpointRole.policy.rawValue, canaryVersion: comparison.canaryVersion,
      activeVersion: comparison.activeVersion, verdict: comparison.verdict, reason: comparison.reason,
      reasonCode: comparison.reasonCode, decidedAtUnixMs: Int64(Date().timeIntervalSince1970 * 1000),
      comparison: comparison)
    CanaryMetrics.decided(decision)
    logger.notice(
      "canary analysis: \(promote ? "promoted" : "rolled back") the policy canary",
      metadata: ["canary": "\(comparison.canaryVersion)", "active": "\(comparison.activeVersion)", "reason": "\(comparison.reason)"])
    if !promote {
      try? await state.setState(
        key: Self.failureKey(comparison.canaryVersion), value: "rolled back by the canary analysis: \(comparison.reason)")
    }
    do {
      _ = try await finish(
        role: .policy,
        gates: [GateOutcome(name: "canary-analysis", passed: promote, detail: comparison.reason)], operationID: "")
      try await record(decision)
    } catch {
      logger.error("the canary decision serves but could not be persisted", metadata: ["error": "\(error)"])
    }
  }

  /// Adds a decision to the history and keeps it by canary version.
  private func record(_ decision: CanaryDecision) async throws {
    try await state.setState(key: Self.decisionKey(decision.canaryVersion), value: Self.encode(decision))
    let history = [decision] + (await canaryDecisions()).prefix(Self.decisionHistory - 1)
    try await state.setState(key: Self.decisionsKey, value: Self.encode(history))
  }

  /// The canary analysis' recent decisions, newest first (from the store: a restart, and other
  /// replicas on a shared store, see them).
  public func canaryDecisions() async -> [CanaryDecision] {
    guard let text = (try? await state.state(key: Self.decisionsKey)) ?? nil else { return [] }
    return (try? JSONDecoder().decode([CanaryDecision].self, from: Data(text.utf8))) ?? []
  }

  /// The canary analysis' decision about `version`, if it made one (JSON, ListCheckpoints).
  public func canaryDecision(of version: String) async -> String? {
    (try? await state.state(key: Self.decisionKey(version))) ?? nil
  }
}
