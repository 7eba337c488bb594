import Metrics
import AlignServing
import Prometheus

/// Prometheus exposition of alignd's swift-metrics series.
///
/// The process bootstraps swift-metrics once with ``makeFactory(registry:)`` and serves
/// `registry.emitToString()` on `GET /metrics` (content type ``contentType``). Histograms get
/// buckets sized for what they measure (seconds for latencies, items for batch sizes, reward
/// units for scores) instead of swift-prometheus's generic defaults. Docs/METRICS.md lists every
/// series.
public enum PrometheusExport {
  /// The `Content-Type` of the text exposition format that `emitToString()` writes.
  public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

  /// A swift-metrics factory writing into `registry`, with alignd's histogram buckets.
  ///
  /// swift-metrics `Timer`s become duration histograms exported in seconds; aggregating
  /// `Recorder`s become value histograms; `Gauge`s and non-aggregating recorders become gauges.
  public static func makeFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
    var factory = PrometheusMetricsFactory(registry: registry)
    factory.durationHistogramBuckets = durationBuckets
    factory.valueHistogramBuckets = valueBuckets
    return factory
  }

  /// Buckets of the duration histograms (swift-metrics `Timer`s), by series name.
  static let durationBuckets: [String: [Duration]] = [
    MetricNames.timeToFirstToken: seconds([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
    MetricNames.interTokenLatency: seconds([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]),
    MetricNames.constraintMask: seconds([0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]),
    MetricNames.swapDuration: seconds([0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]),
    MetricNames.grpcRequestDuration: seconds([
      0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ]),
  ]

  /// Buckets of the value histograms (aggregating swift-metrics `Recorder`s), by series name.
  static let valueBuckets: [String: [Double]] = [
    MetricNames.scoreBatchSize: [1, 2, 4, 8, 16, 32, 64],
    MetricNames.batchSequences: [1, 2, 4, 8, 16, 32, 64, 128],
    MetricNames.batchTokens: [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096],
    MetricNames.rewardScore: [-10, -5, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 5, 10],
  ]

  private static func seconds(_ values: [Double]) -> [Duration] {
    values.map { Duration.nanoseconds(Int64(($0 * 1e9).rounded())) }
  }
}
