import AlignServing
import GRPCCore
import Metrics

/// Counts every gRPC call by fully-qualified method and final status code
/// (`alignd_grpc_requests_total{method, code}`) and times it
/// (`alignd_grpc_request_duration_seconds{method}`).
///
/// It must be the first interceptor of the pipeline: interceptors after it that refuse a call
/// (authentication, message size) then show up with their status code. A streaming call is
/// counted when its response stream ends, with the status the client receives.
public struct GRPCMetricsInterceptor: ServerInterceptor {
  let factory: any MetricsFactory

  /// Records through `factory` (the bootstrapped metrics system by default).
  public init(factory: any MetricsFactory = MetricsSystem.factory) {
    self.factory = factory
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let call = CallRecord(method: context.descriptor.fullyQualifiedMethod, factory: factory)
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      call.finish(Self.code(of: error))
      throw error
    }
    switch response.accepted {
    case .failure(let error):
      call.finish(error.code)
      return response
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        do {
          let trailers = try await producer(writer)
          call.finish(nil)
          return trailers
        } catch {
          call.finish(Self.code(of: error))
          throw error
        }
      }
      return StreamingServerResponse(accepted: .success(contents))
    }
  }

  /// The status code the server sends for an error thrown by a handler or interceptor (the same
  /// mapping as grpc-swift's executor: `RPCError` and `RPCErrorConvertible` keep their code,
  /// anything else is UNKNOWN).
  static func code(of error: any Error) -> RPCError.Code {
    if let error = error as? RPCError { return error.code }
    if let error = error as? any RPCErrorConvertible { return error.rpcErrorCode }
    return .unknown
  }

  /// The canonical gRPC name of a status code (`OK`, `INVALID_ARGUMENT`, …), nil meaning OK.
  static func label(_ code: RPCError.Code?) -> String {
    guard let code else { return "OK" }
    switch code {
    case .cancelled: return "CANCELLED"
    case .unknown: return "UNKNOWN"
    case .invalidArgument: return "INVALID_ARGUMENT"
    case .deadlineExceeded: return "DEADLINE_EXCEEDED"
    case .notFound: return "NOT_FOUND"
    case .alreadyExists: return "ALREADY_EXISTS"
    case .permissionDenied: return "PERMISSION_DENIED"
    case .resourceExhausted: return "RESOURCE_EXHAUSTED"
    case .failedPrecondition: return "FAILED_PRECONDITION"
    case .aborted: return "ABORTED"
    case .outOfRange: return "OUT_OF_RANGE"
    case .unimplemented: return "UNIMPLEMENTED"
    case .internalError: return "INTERNAL"
    case .unavailable: return "UNAVAILABLE"
    case .dataLoss: return "DATA_LOSS"
    case .unauthenticated: return "UNAUTHENTICATED"
    default: return "UNKNOWN"
    }
  }

  /// One call's start time and method; records once, at the first `finish`.
  private struct CallRecord: Sendable {
    let method: String
    let factory: any MetricsFactory
    let start = ContinuousClock.now

    func finish(_ code: RPCError.Code?) {
      Counter(
        label: MetricNames.grpcRequests, dimensions: [("method", method), ("code", GRPCMetricsInterceptor.label(code))],
        factory: factory
      ).increment()
      Timer(label: MetricNames.grpcRequestDuration, dimensions: [("method", method)], factory: factory)
        .record(duration: ContinuousClock.now - start)
    }
  }
}
