import AlignAPI
import AlignServing
import GRPCCore

/// The standard gRPC health service (grpc.health.v1), answering from ``ServingStatus``.
///
/// Every alignd service reports SERVING only once the models are loaded, and NOT_SERVING again as
/// soon as draining starts. `Watch` streams end when draining starts (after sending NOT_SERVING), so
/// they never hold up a graceful shutdown.
struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
  let status: ServingStatus
  /// The services whose health can be asked; "" is the server as a whole.
  let services: Set<String>

  static func servingStatus(_ phase: ServingStatus.Phase) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
    phase == .serving ? .serving : .notServing
  }

  func check(
    request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    guard services.contains(request.service) else {
      throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
    }
    return .with { $0.status = Self.servingStatus(status.phase) }
  }

  func list(
    request: Grpc_Health_V1_HealthListRequest, context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthListResponse {
    let current = Self.servingStatus(status.phase)
    return .with { response in
      for service in services {
        response.statuses[service] = .with { $0.status = current }
      }
    }
  }

  func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    guard services.contains(request.service) else {
      try await response.write(.with { $0.status = .serviceUnknown })
      return
    }
    let (updates, stop) = status.updates()
    try await withRPCCancellationHandler {
      var last: Grpc_Health_V1_HealthCheckResponse.ServingStatus? = nil
      for await phase in updates {
        let current = Self.servingStatus(phase)
        if current != last {
          try await response.write(.with { $0.status = current })
          last = current
        }
        if phase == .draining { break }
      }
    } onCancelRPC: {
      stop()
    }
  }
}
