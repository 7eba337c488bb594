import AlignServing
import AlignStore
import Metrics

/// The running canary comparison on `/metrics`: per role and arm (`active`, `canary`) the
/// window's requests, error rate, safety-flag rate, mean sampled reward and mean latencies, the
/// verdict so far, and the decisions taken, by verdict and deciding signal.
enum CanaryMetrics {
  static func record(_ comparison: CanaryComparison, role: CheckpointRole, factory: any MetricsFactory = MetricsSystem.factory) {
    for (arm, signals) in [("active", comparison.active), ("canary", comparison.canary)] {
      let labels = [("role", role.rawValue), ("arm", arm)]
      func gauge(_ name: String, _ value: Double) {
        Gauge(label: name, dimensions: labels, factory: factory).record(value)
      }
      gauge(MetricNames.canaryRequests, Double(signals.requests))
      gauge(MetricNames.canaryErrorRate, signals.errorRate)
      gauge(MetricNames.canarySafetyFlagRate, signals.safetyFlagRate)
      gauge(MetricNames.canaryRewardMean, signals.reward.mean)
      gauge(MetricNames.canaryRewardSamples, Double(signals.reward.count))
      gauge(MetricNames.canaryTimeToFirstToken, signals.timeToFirstToken.mean)
      gauge(MetricNames.canaryInterTokenLatency, signals.interTokenLatency.mean)
    }
    let verdict: Double
    switch comparison.verdict {
    case .wait: verdict = 0
    case .promote: verdict = 1
    case .rollback: verdict = -1
    }
    Gauge(label: MetricNames.canaryVerdict, dimensions: [("role", role.rawValue)], factory: factory).record(verdict)
  }

  /// No canary serves the role: the arms' gauges drop to zero.
  static func clear(role: CheckpointRole, factory: any MetricsFactory = MetricsSystem.factory) {
    let empty = CanaryComparison(
      role: role.rawValue, activeVersion: "", canaryVersion: "", elapsedSeconds: 0, active: ArmSignals(),
      canary: ArmSignals(), checks: [], verdict: .wait, reason: "", reasonCode: "")
    record(empty, role: role, factory: factory)
  }

  static func decided(_ decision: CanaryDecision, factory: any MetricsFactory = MetricsSystem.factory) {
    Counter(
      label: MetricNames.canaryDecisions,
      dimensions: [("role", decision.role), ("decision", decision.verdict.rawValue), ("reason", decision.reasonCode)],
      factory: factory
    ).increment()
  }
}
