import AlignAPI
import AlignServing
import AlignShared
import Foundation
import Hummingbird
import Metrics
import Prometheus
import SwiftProtobuf

/// The HTTP/JSON gateway: OpenAI-compatible routes and alignd's own, mapped onto the same serving
/// pipeline as the gRPC Inference service, so that validation, queues, limits, safety screening
/// and version stamping are the same code on both surfaces. Docs/HTTP.md documents the routes.
public struct HTTPGateway: Sendable {
  let pipeline: InferencePipeline
  /// API keys; nil when authentication is off (no keys file), exactly as for gRPC.
  let keys: APIKeyStore?
  /// Larger request bodies get 413 (config `max_request_bytes`).
  let maxRequestBytes: Int
  /// The registry behind `GET /metrics`; nil serves 404 there.
  let metrics: PrometheusCollectorRegistry?
  /// Admin.GetStatus behind `GET /v1/admin/status`; nil when Admin has its own listener
  /// (`admin_port`, possibly with client certificates), which HTTP must not bypass.
  let admin: AdminService?
  /// Feedback from apps behind `POST /v1/feedback`; nil answers 503 there.
  var feedback: AppFeedback? = nil
  /// Set while a request that came over HTTP/2 (h2c or TLS) is handled; GatewayHTTPChannel sets it.
  @TaskLocal static var requestIsHTTP2 = false
  /// Reported as `created` of the models in `GET /v1/models`.
  let started = Int64(Date().timeIntervalSince1970)

  var models: ModelHost { pipeline.models }
  var status: ServingStatus { pipeline.status }

  func makeRouter() -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.middlewares.add(GatewayMiddleware(keys: keys))
    router.get("/healthz") { _, _ in healthz() }
    router.get("/readyz") { _, _ in readyz() }
    router.get("/metrics") { _, _ in try prometheus() }
    router.get("/v1/models") { _, _ in modelList() }
    router.post("/v1/completions") { request, _ in try await completions(request) }
    router.post("/v1/chat/completions") { request, _ in try await chatCompletions(request) }
    router.post("/v1/moderations") { request, _ in try await moderations(request) }
    router.post("/v1/score") { request, _ in try await score(request) }
    router.post("/v1/feedback") { request, _ in try await submitFeedback(request) }
    router.get("/v1/admin/status") { _, _ in try await adminStatus() }
    return router
  }

  // MARK: Probes and metrics

  /// Liveness: the process answers.
  func healthz() -> Response {
    Self.json(.object([("status", .string("alive"))]))
  }

  /// Readiness: 200 only while serving; 503 while loading, draining or after a failed start.
  func readyz() -> Response {
    let phase: String
    switch status.phase {
    case .serving: return Self.json(.object([("status", .string("serving"))]))
    case .loading: phase = "loading"
    case .draining: phase = "draining"
    case .failed: phase = "failed"
    }
    return Self.json(.object([("status", .string(phase))]), status: .serviceUnavailable)
  }

  /// Prometheus text exposition of every swift-metrics series of the process.
  func prometheus() throws -> Response {
    guard let metrics else { throw GatewayError.notFound("metrics are not exported by this server") }
    var headers = HTTPFields()
    headers[.contentType] = PrometheusExport.contentType
    var bytes: [UInt8] = []
    metrics.emit(into: &bytes)
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
  }

  /// `GET /v1/admin/status` (admin key): Admin.GetStatus in protobuf's JSON mapping with the
  /// proto field names, for operators with curl and dashboards that read JSON.
  func adminStatus() async throws -> Response {
    guard let admin else {
      throw GatewayError.notFound("the admin surface is served on the admin listener (admin_port) only")
    }
    let status = await admin.statusResponse()
    var options = JSONEncodingOptions()
    options.preserveProtoFieldNames = true
    return Self.json(bytes: try status.jsonUTF8Bytes(options: options))
  }

  // MARK: Models

  /// `GET /v1/models`: the policy (and a canary), the reward model (or the generative judge) and
  /// the safety checker, each under its exact version, with alignd's `role` field.
  func modelList() -> Response {
    func model(_ id: String, role: String, canary: Bool = false) -> JSONValue {
      var fields: [(String, JSONValue)] = [
        ("id", .string(id)), ("object", .string("model")), ("created", .int(started)),
        ("owned_by", .string("alignd")), ("role", .string(role)),
      ]
      if canary { fields.append(("canary", .bool(true))) }
      return .object(fields)
    }
    var data: [JSONValue] = []
    let versions = models.versions
    if !versions.policy.isEmpty { data.append(model(versions.policy, role: "policy")) }
    if let canary = models.policies.canary?.version { data.append(model(canary, role: "policy", canary: true)) }
    if !versions.reward.isEmpty { data.append(model(versions.reward, role: "reward")) }
    if let canary = models.rewards.canary?.version { data.append(model(canary, role: "reward", canary: true)) }
    if !versions.safety.isEmpty { data.append(model(versions.safety, role: "safety")) }
    return Self.json(.object([("object", .string("list")), ("data", .array(data))]))
  }

  /// The `model` of a generation request must name the served policy: omitted, `alignd`, a
  /// version from `/v1/models` (active or canary), or its name without the `@hash`. Anything
  /// else is a 404 `model_not_found`, as OpenAI answers, rather than a silent substitution.
  func checkModel(_ requested: String?) throws(GatewayError) {
    guard let requested, !requested.isEmpty, requested != "alignd" else { return }
    let served = [models.policies.active?.version, models.policies.canary?.version].compactMap { $0 }
    // While loading nothing is served yet: the service answers 503, which is the truer answer.
    guard !served.isEmpty else { return }
    for version in served {
      if requested == version { return }
      if let at = version.firstIndex(of: "@"), requested == version[..<at] { return }
    }
    throw .notFound(
      "the model '\(requested)' does not exist; this server serves \(served.first ?? "no policy yet") (or use 'alignd')",
      code: "model_not_found", param: "model")
  }

  // MARK: Helpers

  static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
    json(bytes: value.serialized, status: status)
  }

  /// A response whose body is already serialized JSON.
  static func json(bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
  }

  /// A request body as a JSON object, refused with 413 above `max_request_bytes`.
  func body(of request: Request) async throws -> JSONObject {
    let bytes = try await request.body.collect(upTo: maxRequestBytes)
    return try JSONObject(body: Array(bytes.readableBytesView))
  }
}

/// Authentication, OpenAI-shaped errors and the request counter, around every route.
///
/// `/v1/*` routes need a key with the role the gRPC Inference service needs (AccessPolicy),
/// `/v1/admin/*` the Admin service's;
/// `/healthz`, `/readyz` and `/metrics` are open, like gRPC health. Every error a route throws
/// (or a 404 for an unknown route) becomes `{"error": {...}}` with its status here.
struct GatewayMiddleware<Context: RequestContext>: RouterMiddleware {
  let keys: APIKeyStore?

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    var response: Response
    do {
      var caller = ""
      if let keys, let path = context.endpointPath, path.hasPrefix("/v1/") {
        let service = path.hasPrefix("/v1/admin/") ? Alignd_V1_Admin.descriptor : Alignd_V1_Inference.descriptor
        caller = try Self.authorize(request, keys: keys, service: service.fullyQualifiedService)?.name ?? ""
      }
      response = try await CallerIdentity.$apiKeyID.withValue(caller) { try await next(request, context) }
    } catch {
      response = GatewayError.from(error).response
    }
    // Hummingbird names a path no route matched "NotFound" (or leaves it nil).
    let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? "unmatched"
    Counter(label: MetricNames.httpRequests, dimensions: [("route", route), ("status", "\(response.status.code)")])
      .increment()
    return response
  }

  /// The same checks, messages and roles as the gRPC AuthInterceptor: `/v1/admin/*` needs what
  /// the Admin service needs, other `/v1/*` routes what Inference needs.
  /// - Returns: the key's entry, or nil for an open route.
  @discardableResult
  static func authorize(_ request: Request, keys: APIKeyStore, service: String) throws(GatewayError)
    -> APIKeyStore.Entry?
  {
    guard let required = AccessPolicy.requiredRole(service: service) else { return nil }
    guard let header = request.headers[.authorization] else {
      throw GatewayError(
        .unauthorized, "missing API key: send 'Authorization: Bearer <key>'", type: "invalid_request_error",
        code: "invalid_api_key")
    }
    let trimmed = header.trimmingCharacters(in: .whitespaces)
    guard trimmed.lowercased().hasPrefix("bearer ") else {
      throw GatewayError(
        .unauthorized, "the Authorization header must be 'Bearer <key>'", type: "invalid_request_error",
        code: "invalid_api_key")
    }
    let key = String(trimmed.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
    guard let entry = keys.authenticate(key: key) else {
      throw GatewayError(.unauthorized, "unknown API key", type: "invalid_request_error", code: "invalid_api_key")
    }
    guard entry.role >= required else {
      throw GatewayError(
        .forbidden, "this route requires the '\(required.rawValue)' role; key '\(entry.name)' has '\(entry.role.rawValue)'",
        type: "permission_error", code: "permission_denied")
    }
    return entry
  }
}
