import Metrics
import Foundation

/// The serving layer's metrics, through swift-metrics (exported by whatever backend the process
/// bootstraps; the tests inject a recording factory).
///
/// Names follow Prometheus conventions (``MetricNames``); every series carries the policy version
/// as `model`, so the number of series is bounded by the versions a process loads. The rejection
/// and early-end counters always carry `model` and `reason`: a metric name keeps one set of label
/// keys.
public struct ServingMetrics: Sendable {
  /// Requests waiting in the queue.
  let queueDepth: Gauge
  /// Sequences decoding.
  let runningSequences: Gauge
  /// Sequences fed per forward step.
  let batchSize: Recorder
  /// Tokens per forward step (decode tokens plus prefill chunks).
  let stepTokens: Recorder
  /// Submission to first streamed token.
  let timeToFirstToken: Timer
  /// Gap between successive tokens of one sequence.
  let interTokenLatency: Timer
  /// Computing the token mask of a constrained (response_format) sampling step.
  let constraintMask: Timer
  /// Generated tokens (rate = tokens per second).
  let generatedTokens: Counter
  /// Prompt tokens prefilled.
  let prefillTokens: Counter
  /// Tokens prompt lookup proposed, and those kept.
  let draftedTokens: Counter
  let acceptedDraftTokens: Counter
  /// Forward-step throughput of the last step (generated tokens / step seconds).
  let tokensPerSecond: Gauge
  /// Requests refused at admission, by reason (queue_full, too_large).
  let queueFull: Counter
  let tooLarge: Counter
  /// Requests that ended early, by reason (cancelled, deadline).
  let cancelled: Counter
  let expired: Counter
  /// Prefix-cache lookups of submitted requests, by result (hit, miss), and prompt tokens reused.
  let prefixHits: Counter
  let prefixMisses: Counter
  let prefixCachedTokens: Counter

  func prefixLookups(hit: Bool) -> Counter { hit ? prefixHits : prefixMisses }

  public init(model: String, factory: any MetricsFactory = MetricsSystem.factory) {
    let labels = [("model", model)]
    queueDepth = Gauge(label: MetricNames.queueDepth, dimensions: labels, factory: factory)
    runningSequences = Gauge(label: MetricNames.runningSequences, dimensions: labels, factory: factory)
    batchSize = Recorder(label: MetricNames.batchSequences, dimensions: labels, aggregate: true, factory: factory)
    stepTokens = Recorder(label: MetricNames.batchTokens, dimensions: labels, aggregate: true, factory: factory)
    timeToFirstToken = Timer(label: MetricNames.timeToFirstToken, dimensions: labels, factory: factory)
    interTokenLatency = Timer(label: MetricNames.interTokenLatency, dimensions: labels, factory: factory)
    constraintMask = Timer(label: MetricNames.constraintMask, dimensions: labels, factory: factory)
    generatedTokens = Counter(label: MetricNames.generatedTokens, dimensions: labels, factory: factory)
    prefillTokens = Counter(label: MetricNames.prefillTokens, dimensions: labels, factory: factory)
    draftedTokens = Counter(label: MetricNames.draftedTokens, dimensions: labels, factory: factory)
    acceptedDraftTokens = Counter(label: MetricNames.acceptedDraftTokens, dimensions: labels, factory: factory)
    tokensPerSecond = Gauge(label: MetricNames.decodeTokensPerSecond, dimensions: labels, factory: factory)
    queueFull = Counter(
      label: MetricNames.rejections, dimensions: labels + [("reason", "queue_full")], factory: factory)
    tooLarge = Counter(
      label: MetricNames.rejections, dimensions: labels + [("reason", "too_large")], factory: factory)
    cancelled = Counter(
      label: MetricNames.requestsEndedEarly, dimensions: labels + [("reason", "cancelled")], factory: factory)
    expired = Counter(
      label: MetricNames.requestsEndedEarly, dimensions: labels + [("reason", "deadline")], factory: factory)
    prefixHits = Counter(label: MetricNames.prefixLookups, dimensions: labels + [("result", "hit")], factory: factory)
    prefixMisses = Counter(label: MetricNames.prefixLookups, dimensions: labels + [("result", "miss")], factory: factory)
    prefixCachedTokens = Counter(label: MetricNames.prefixCachedTokens, dimensions: labels, factory: factory)
  }
}
