import Metrics
import Foundation

/// The serving layer's metrics, through swift-metrics (exported by whatever backend the process
/// bootstraps; the tests inject a recording factory).
///
/// Names follow Prometheus conventions; every series carries the model version as `model`.
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
  /// Generated tokens (rate = tokens per second).
  let generatedTokens: Counter
  /// Prompt tokens prefilled.
  let prefillTokens: Counter
  /// Forward-step throughput of the last step (generated tokens / step seconds).
  let tokensPerSecond: Gauge
  /// Requests refused at admission, by reason (queue_full, too_large).
  let queueFull: Counter
  let tooLarge: Counter
  /// Requests that ended early, by reason (cancelled, deadline).
  let cancelled: Counter
  let expired: Counter

  public init(model: String, factory: any MetricsFactory = MetricsSystem.factory) {
    let labels = [("model", model)]
    queueDepth = Gauge(label: "alignd_queue_depth", dimensions: labels, factory: factory)
    runningSequences = Gauge(label: "alignd_running_sequences", dimensions: labels, factory: factory)
    batchSize = Recorder(label: "alignd_batch_sequences", dimensions: labels, aggregate: true, factory: factory)
    stepTokens = Recorder(label: "alignd_batch_tokens", dimensions: labels, aggregate: true, factory: factory)
    timeToFirstToken = Timer(label: "alignd_time_to_first_token_seconds", dimensions: labels, factory: factory)
    interTokenLatency = Timer(label: "alignd_inter_token_latency_seconds", dimensions: labels, factory: factory)
    generatedTokens = Counter(label: "alignd_generated_tokens_total", dimensions: labels, factory: factory)
    prefillTokens = Counter(label: "alignd_prefill_tokens_total", dimensions: labels, factory: factory)
    tokensPerSecond = Gauge(label: "alignd_decode_tokens_per_second", dimensions: labels, factory: factory)
    queueFull = Counter(
      label: "alignd_rejections_total", dimensions: labels + [("reason", "queue_full")], factory: factory)
    tooLarge = Counter(
      label: "alignd_rejections_total", dimensions: labels + [("reason", "too_large")], factory: factory)
    cancelled = Counter(
      label: "alignd_requests_ended_early_total", dimensions: labels + [("reason", "cancelled")], factory: factory)
    expired = Counter(
      label: "alignd_requests_ended_early_total", dimensions: labels + [("reason", "deadline")], factory: factory)
  }
}
