import AlignServing
import AlignStore
import Metrics

/// Checkpoint swaps: `alignd_swap_events_total{role, kind, outcome}` and
/// `alignd_swap_duration_seconds{role, kind, outcome}` (loading, gates and publishing).
///
/// Start one when an operation that changes what a role serves begins, and finish it once, when
/// the new snapshot is published (`success`) or the operation gives up (`failure`). No-op
/// operations (a version already active, a repeated operation id) are not swaps.
struct SwapMetrics: Sendable {
  /// What kind of change.
  enum Kind: String, Sendable {
    /// A version takes all traffic.
    case activate
    /// A version takes a canary share.
    case canary
    /// The canary takes all traffic.
    case promote
    /// The canary is dropped or an earlier version takes all traffic again.
    case rollback
    /// A replica applies versions another replica activated (through the shared store).
    case sync
  }

  enum Outcome: String, Sendable {
    case success, failure
  }

  let role: String
  let kind: Kind
  let factory: any MetricsFactory
  let start = ContinuousClock.now

  init(role: CheckpointRole, kind: Kind, factory: any MetricsFactory = MetricsSystem.factory) {
    self.role = role.rawValue
    self.kind = kind
    self.factory = factory
  }

  /// Records the swap's end.
  func finish(_ outcome: Outcome) {
    let labels = [("role", role), ("kind", kind.rawValue), ("outcome", outcome.rawValue)]
    Counter(label: MetricNames.swapEvents, dimensions: labels, factory: factory).increment()
    Timer(label: MetricNames.swapDuration, dimensions: labels, factory: factory)
      .record(duration: ContinuousClock.now - start)
  }
}
