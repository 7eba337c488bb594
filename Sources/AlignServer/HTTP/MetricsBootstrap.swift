import Metrics
import Prometheus

/// The process's one Prometheus registry. Reading ``registry`` the first time bootstraps
/// swift-metrics with it (alignd's histogram buckets, see ``PrometheusExport``); swift-metrics
/// allows one bootstrap per process, so this is the only place that does it.
enum MetricsBootstrap {
  static let registry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusExport.makeFactory(registry: registry))
    return registry
  }()
}
