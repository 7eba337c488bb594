import AlignServing
import AlignStore
import Metrics

/// Feedback records committed to the store by the feedback stream
/// (`alignd_feedback_records_total{kind}`; duplicates and rejected records are not counted).
enum FeedbackMetrics {
  static func committed(_ item: FeedbackItem, factory: any MetricsFactory = MetricsSystem.factory) {
    Counter(
      label: MetricNames.feedbackRecords, dimensions: [("kind", item.payload.kind.rawValue)], factory: factory
    ).increment()
  }
}
