import AlignServer
import AlignServing
import GRPCCore
import Prometheus
import Testing

/// The Prometheus exposition in process: alignd's buckets, one type per series name, and the gRPC
/// interceptor's counts by method and final status code.
@Suite("Prometheus metrics")
struct PrometheusMetricsTests {
  /// One sample line of the text format: `name{k="v",…} value`.
  struct Sample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
  }

  /// Parses the sample lines (label values here never hold quotes, commas or braces).
  static func samples(_ text: String) -> [Sample] {
    text.split(separator: "\n").compactMap { line -> Sample? in
      guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...])
      else { return nil }
      let series = line[..<space]
      guard let open = series.firstIndex(of: "{") else {
        return Sample(name: String(series), labels: [:], value: value)
      }
      var labels: [String: String] = [:]
      for pair in series[series.index(after: open)..<series.index(before: series.endIndex)].split(separator: ",") {
        let parts = pair.split(separator: "=", maxSplits: 1)
        labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
      }
      return Sample(name: String(series[..<open]), labels: labels, value: value)
    }
  }

  static func value(_ samples: [Sample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
    samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }?.value
  }

  static func context(_ method: String, service: String = "alignd.v1.Inference") -> ServerContext {
    ServerContext(
      descriptor: MethodDescriptor(fullyQualifiedService: service, method: method),
      remotePeer: "ipv4:127.0.0.1:5000", localPeer: "ipv4:127.0.0.1:50051",
      cancellation: ServerContext.RPCCancellationHandle())
  }

  static func request() -> StreamingServerRequest<String> {
    StreamingServerRequest(metadata: [:], messages: RPCAsyncSequence(wrapping: AsyncThrowingStream { $0.finish() }))
  }

  /// Accepts and drops what a response producer writes.
  struct Discard: RPCWriterProtocol {
    func write(_ element: String) async throws {}
    func write(contentsOf elements: some Sequence<String>) async throws {}
  }

  @Test func histogramsUseAligndBucketsAndTimersExportSeconds() throws {
    let registry = PrometheusCollectorRegistry()
    let factory = PrometheusExport.makeFactory(registry: registry)
    let reward = RewardMetrics(rewardVersion: "rm-7", factory: factory)
    reward.recordBatch(size: 5)
    reward.recordReturned([0.75, -2.5])
    _ = ServingMetrics(model: "policy-1", factory: factory)
    let samples = Self.samples(registry.emitToString())

    let batchBuckets = samples.filter { $0.name == "alignd_score_batch_size_bucket" }
    #expect(batchBuckets.map { $0.labels["le"] ?? "" } == ["1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "+Inf"])
    #expect(batchBuckets.map(\.value) == [0, 0, 0, 1, 1, 1, 1, 1])
    #expect(Self.value(samples, "alignd_score_batch_size_sum", ["reward_version": "rm-7"]) == 5)
    #expect(Self.value(samples, "alignd_reward_score_count", ["reward_version": "rm-7"]) == 2)
    #expect(Self.value(samples, "alignd_reward_score_bucket", ["reward_version": "rm-7", "le": "-2.0"]) == 1)
    #expect(Self.value(samples, "alignd_reward_score_bucket", ["reward_version": "rm-7", "le": "1.0"]) == 2)

    // A swift-metrics Timer is a histogram in seconds with alignd's latency buckets.
    let ttft = samples.filter { $0.name == "alignd_time_to_first_token_seconds_bucket" }
    #expect(ttft.map { $0.labels["le"] ?? "" } == ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf"])
    #expect(ttft.allSatisfy { $0.labels["model"] == "policy-1" })
    #expect(samples.contains { $0.name == "alignd_inter_token_latency_seconds_bucket" && $0.labels["le"] == "0.001" })
  }

  @Test func everySeriesNameHasOneTypeAndOneSetOfLabelKeys() throws {
    let registry = PrometheusCollectorRegistry()
    let factory = PrometheusExport.makeFactory(registry: registry)
    for model in ["policy-1", "policy-2"] { _ = ServingMetrics(model: model, factory: factory) }
    for version in ["rm-1", "rm-2"] {
      let reward = RewardMetrics(rewardVersion: version, factory: factory)
      reward.recordBatch(size: 3)
      reward.recordReturned([0.5])
    }
    SafetyMetrics.record(
      [[SafetyCategory(rawValue: "pii/email")], [SafetyCategory(rawValue: "hate")]],
      policyVersion: "default@2", stage: .check, factory: factory)
    let text = registry.emitToString()

    var types: [String: [String]] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
      let parts = line.split(separator: " ")
      types[String(parts[2]), default: []].append(String(parts[3]))
    }
    for (name, kinds) in types { #expect(kinds.count == 1, "\(name) is declared \(kinds)") }
    #expect(types["alignd_rejections_total"] == ["counter"])
    #expect(types["alignd_queue_depth"] == ["gauge"])
    #expect(types["alignd_batch_sequences"] == ["histogram"])
    #expect(types["alignd_score_batch_size"] == ["histogram"])
    #expect(types["alignd_safety_flags_total"] == ["counter"])

    var keys: [String: Set<[String]>] = [:]
    for sample in Self.samples(text) {
      var family = sample.name
      for suffix in ["_bucket", "_sum", "_count"] where family.hasSuffix(suffix) && types[String(family.dropLast(suffix.count))] == ["histogram"] {
        family = String(family.dropLast(suffix.count))
      }
      keys[family, default: []].insert(sample.labels.keys.filter { $0 != "le" }.sorted())
    }
    for (name, sets) in keys { #expect(sets.count == 1, "\(name) has label keys \(sets)") }
    #expect(keys["alignd_safety_flags_total"] == [["category", "policy_version", "stage"]])
    #expect(
      Self.value(Self.samples(text), "alignd_safety_flags_total", ["category": "pii/email", "policy_version": "default@2"]) == 1)
  }

  @Test func interceptorCountsRefusedFailedStreamedAndSuccessfulCalls() async throws {
    let registry = PrometheusCollectorRegistry()
    let interceptor = GRPCMetricsInterceptor(factory: PrometheusExport.makeFactory(registry: registry))

    // Refused by a later interceptor (authentication) before the handler runs.
    await #expect(throws: RPCError.self) {
      let _: StreamingServerResponse<String> = try await interceptor.intercept(
        request: Self.request(), context: Self.context("Generate")
      ) { _, _ in throw RPCError(code: .unauthenticated, message: "no key") }
    }

    // A unary handler that succeeds.
    let unary: StreamingServerResponse<String> = try await interceptor.intercept(
      request: Self.request(), context: Self.context("Score")
    ) { _, _ in StreamingServerResponse(single: ServerResponse(message: "ok")) }
    _ = try await unary.accepted.get().producer(RPCWriter(wrapping: Discard()))

    // A stream accepted and then failing: counted when the stream ends, with the final code.
    let stream: StreamingServerResponse<String> = try await interceptor.intercept(
      request: Self.request(), context: Self.context("GenerateStream")
    ) { _, _ in
      StreamingServerResponse { writer in
        try await writer.write("token")
        throw RPCError(code: .resourceExhausted, message: "queue full")
      }
    }
    let before = Self.samples(registry.emitToString())
    #expect(Self.value(before, "alignd_grpc_requests_total", ["method": "alignd.v1.Inference/GenerateStream"]) == nil)
    await #expect(throws: RPCError.self) { _ = try await stream.accepted.get().producer(RPCWriter(wrapping: Discard())) }

    // A handler that throws a non-gRPC error: the server answers UNKNOWN.
    struct Unexpected: Error {}
    await #expect(throws: Unexpected.self) {
      let _: StreamingServerResponse<String> = try await interceptor.intercept(
        request: Self.request(), context: Self.context("CheckSafety")
      ) { _, _ in throw Unexpected() }
    }

    let samples = Self.samples(registry.emitToString())
    let counts = samples.filter { $0.name == "alignd_grpc_requests_total" }
      .map { "\($0.labels["method"] ?? "") \($0.labels["code"] ?? "") \(Int($0.value))" }.sorted()
    #expect(
      counts == [
        "alignd.v1.Inference/CheckSafety UNKNOWN 1",
        "alignd.v1.Inference/Generate UNAUTHENTICATED 1",
        "alignd.v1.Inference/GenerateStream RESOURCE_EXHAUSTED 1",
        "alignd.v1.Inference/Score OK 1",
      ])
    #expect(Self.value(samples, "alignd_grpc_request_duration_seconds_count", ["method": "alignd.v1.Inference/Score"]) == 1)
  }
}
