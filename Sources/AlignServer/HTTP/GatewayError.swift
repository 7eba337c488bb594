import AlignShared
import Foundation
import GRPCCore
import HTTPTypes
import Hummingbird
import NIOCore

/// An HTTP error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
/// status OpenAI's clients map to their typed exceptions (400 BadRequestError, 401
/// AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError, 5xx
/// InternalServerError).
///
/// Errors map by their gRPC status (the one mapping of domain errors, RPCErrorMapping.swift), as
/// follows (Docs/HTTP.md):
/// INVALID_ARGUMENT, OUT_OF_RANGE and FAILED_PRECONDITION → 400 (FAILED_PRECONDITION is the
/// server's state, e.g. no reward model can run; OpenAI's clients retry 409 automatically, which
/// would not help), UNAUTHENTICATED → 401, PERMISSION_DENIED → 403, NOT_FOUND → 404,
/// ALREADY_EXISTS and ABORTED → 409, RESOURCE_EXHAUSTED → 429 with `Retry-After`, CANCELLED → 499,
/// UNIMPLEMENTED → 501, UNAVAILABLE → 503, DEADLINE_EXCEEDED → 504, anything else → 500.
public struct GatewayError: Error, Sendable {
  public var status: HTTPResponse.Status
  public var message: String
  public var type: String
  public var param: String?
  public var code: String?
  /// Milliseconds for `retry-after-ms` and (rounded up to seconds) `Retry-After` (429 and 503).
  public var retryAfterMilliseconds: Int?

  init(
    _ status: HTTPResponse.Status, _ message: String, type: String, param: String? = nil, code: String? = nil,
    retryAfterMilliseconds: Int? = nil
  ) {
    self.status = status
    self.message = message
    self.type = type
    self.param = param
    self.code = code
    self.retryAfterMilliseconds = retryAfterMilliseconds
  }

  /// A 400 for a bad request parameter.
  static func invalid(_ message: String, param: String? = nil) -> GatewayError {
    GatewayError(.badRequest, message, type: "invalid_request_error", param: param)
  }

  static func notFound(_ message: String, code: String = "not_found", param: String? = nil) -> GatewayError {
    GatewayError(.notFound, message, type: "invalid_request_error", param: param, code: code)
  }

  /// The HTTP form of a gRPC status.
  init(_ error: RPCError) {
    let message = error.message
    switch error.code {
    case .invalidArgument, .outOfRange:
      self.init(.badRequest, message, type: "invalid_request_error", code: "invalid_argument")
    case .failedPrecondition:
      self.init(.badRequest, message, type: "invalid_request_error", code: "failed_precondition")
    case .unauthenticated:
      self.init(.unauthorized, message, type: "invalid_request_error", code: "invalid_api_key")
    case .permissionDenied:
      self.init(.forbidden, message, type: "permission_error", code: "permission_denied")
    case .notFound:
      self.init(.notFound, message, type: "invalid_request_error", code: "not_found")
    case .alreadyExists, .aborted:
      self.init(.conflict, message, type: "invalid_request_error", code: "conflict")
    case .resourceExhausted:
      let hint = error.metadata[stringValues: "retry-after-ms"].first(where: { _ in true }).flatMap { Int($0) }
      self.init(
        .tooManyRequests, message, type: "rate_limit_error", code: "rate_limit_exceeded",
        retryAfterMilliseconds: hint ?? 1000)
    case .cancelled:
      self.init(.init(code: 499, reasonPhrase: "Client Closed Request"), message, type: "server_error", code: "cancelled")
    case .unimplemented:
      self.init(.notImplemented, message, type: "server_error", code: "unimplemented")
    case .unavailable:
      self.init(.serviceUnavailable, message, type: "server_error", code: "unavailable", retryAfterMilliseconds: 1000)
    case .deadlineExceeded:
      self.init(.gatewayTimeout, message, type: "server_error", code: "timeout")
    default:
      self.init(.internalServerError, message, type: "server_error", code: "internal_error")
    }
  }

  /// Any error a route handler threw, as the gateway answers it.
  public static func from(_ error: any Error) -> GatewayError {
    switch error {
    case let error as GatewayError: return error
    case let error as any RPCErrorConvertible: return GatewayError(RPCError(error))
    case is NIOTooManyBytesError:
      return GatewayError(
        .contentTooLarge, "the request body exceeds the limit of max_request_bytes", type: "invalid_request_error",
        code: "request_too_large")
    case let error as HTTPError:
      switch error.status {
      case .contentTooLarge:
        return GatewayError(
          .contentTooLarge, "the request body exceeds the limit (max_request_bytes)", type: "invalid_request_error",
          code: "request_too_large")
      case .notFound:
        return .notFound("no such route")
      default:
        return GatewayError(
          error.status, error.body ?? error.status.reasonPhrase,
          type: error.status.code < 500 ? "invalid_request_error" : "server_error")
      }
    case is CancellationError:
      return GatewayError(.init(code: 499, reasonPhrase: "Client Closed Request"), "the request was cancelled", type: "server_error", code: "cancelled")
    default:
      return GatewayError(.internalServerError, "internal error: \(error)", type: "server_error", code: "internal_error")
    }
  }

  /// `{"error": {...}}`.
  public var json: JSONValue {
    .object([
      (
        "error",
        .object([
          ("message", .string(message)),
          ("type", .string(type)),
          ("param", .optional(param)),
          ("code", .optional(code)),
        ])
      )
    ])
  }

  /// The error as an HTTP response, with `Retry-After` (whole seconds, at least 1) and
  /// `retry-after-ms` (which OpenAI's clients read first) when a retry hint exists.
  public var response: Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    if let milliseconds = retryAfterMilliseconds {
      headers[.retryAfter] = "\(max(1, (milliseconds + 999) / 1000))"
      headers[HTTPField.Name("retry-after-ms")!] = "\(milliseconds)"
    }
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: json.serialized)))
  }
}
