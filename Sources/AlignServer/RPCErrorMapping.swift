import AlignEngine
import AlignRollout
import AlignServing
import AlignStore
import GRPCCore

// The one mapping from alignd's domain errors to gRPC status codes. grpc-swift-2 turns a thrown
// `RPCErrorConvertible` into its status; the HTTP gateway maps the same status onward
// (`GatewayError`), so both surfaces answer every error alike. Overload is RESOURCE_EXHAUSTED
// with a `retry-after-ms` hint, bad input INVALID_ARGUMENT, a server that cannot serve yet (or
// any more) UNAVAILABLE.

/// Bad input, found by validation anywhere (request shape, a template rejecting a conversation,
/// an unknown safety profile, a text too long for a model).
extension InvalidRequest: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code { .invalidArgument }
  public var rpcErrorMessage: String { description }
}

extension ServingError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch self {
    case .unavailable: return .unavailable
    case .deadlineExceeded: return .deadlineExceeded
    case .cancelled: return .cancelled
    case .failedPrecondition: return .failedPrecondition
    case .internalError: return .internalError
    }
  }

  public var rpcErrorMessage: String { description }
}

/// The `retry-after-ms` metadata of a RESOURCE_EXHAUSTED answer (read by alignctl, the HTTP
/// gateway's `Retry-After`, and any client that backs off).
enum RetryAfter {
  static let key = "retry-after-ms"

  static func milliseconds(_ duration: Duration) -> Int {
    let components = duration.components
    let ms = Double(components.seconds) * 1000 + Double(components.attoseconds) * 1e-15
    return max(1, Int(ms.rounded(.up)))
  }
}

/// Admission to a policy's generation queue.
extension GenerationScheduler.AdmissionError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch self {
    case .queueFull: return .resourceExhausted
    case .tooLarge: return .invalidArgument
    }
  }

  public var rpcErrorMessage: String {
    switch self {
    case .queueFull:
      return "the generation queue is full; retry in about \(retryAfterMilliseconds) ms"
    case .tooLarge(let needed, let capacity):
      return "the request needs \(needed) KV cache tokens (prompt + n × max_tokens); the server has \(capacity)"
    }
  }

  public var rpcErrorMetadata: Metadata {
    guard case .queueFull = self else { return [:] }
    return [RetryAfter.key: "\(retryAfterMilliseconds)"]
  }

  private var retryAfterMilliseconds: Int {
    guard case .queueFull(let seconds) = self else { return 0 }
    return max(1, Int((seconds * 1000).rounded(.up)))
  }
}

/// The dynamic batchers of judging work (reward, safety models, log-probabilities).
extension DynamicBatcherError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch self {
    case .queueFull: return .resourceExhausted
    case .deadlineExceeded: return .deadlineExceeded
    case .mismatchedOutputs: return .internalError
    }
  }

  public var rpcErrorMessage: String { description }

  public var rpcErrorMetadata: Metadata {
    guard case .queueFull(_, _, let retryAfter) = self else { return [:] }
    return [RetryAfter.key: "\(RetryAfter.milliseconds(retryAfter))"]
  }
}

/// Checkpoint operations refused by the rollout (gate verdicts in the message).
extension RolloutError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch kind {
    case .notFound: return .notFound
    case .invalidArgument: return .invalidArgument
    case .failedPrecondition: return .failedPrecondition
    case .unavailable: return .unavailable
    }
  }

  public var rpcErrorMessage: String {
    guard !gates.isEmpty else { return description }
    return description + " [gates: "
      + gates.map { "\($0.name) \($0.passed ? "passed" : "FAILED")" }.joined(separator: ", ") + "]"
  }
}

extension CheckpointRegistryError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch category {
    case .invalidArgument: return .invalidArgument
    case .resourceExhausted: return .resourceExhausted
    case .failedPrecondition: return .failedPrecondition
    case .notFound: return .notFound
    case .internal: return .internalError
    }
  }

  public var rpcErrorMessage: String { description }
}

/// The feedback store: a store that cannot be reached is UNAVAILABLE (the client resends from its
/// last acknowledgement); anything else is the server's own failure.
extension FeedbackStoreError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch self {
    case .encoding: return .invalidArgument
    case .unavailable, .closed, .database: return .unavailable
    case .notADatabase, .corrupt, .cannotOpen, .schemaTooNew, .decoding: return .internalError
    }
  }

  public var rpcErrorMessage: String { description }
}

/// A feedback batch the store did not commit: nothing of it is acknowledged, and the client resends
/// from its last acknowledgement (whatever the store's own error was).
struct UncommittedFeedback: Error, RPCErrorConvertible {
  var cause: any Error
  var rpcErrorCode: RPCError.Code { .unavailable }
  var rpcErrorMessage: String { "the feedback store failed; resend from the last acknowledgement: \(cause)" }
}

/// A failure inside the engine (a model that cannot run a request it accepted).
extension EngineError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code { .internalError }
  public var rpcErrorMessage: String { "engine failure: \(description)" }
}

extension RPCError {
  /// Any error a handler meets, as the status it answers: the domain errors above keep their
  /// mapping; the caller's own task cancelled (the client left, or its deadline passed) is
  /// CANCELLED; anything else is INTERNAL with its description.
  static func from(_ error: any Error) -> RPCError {
    switch error {
    case let error as RPCError: return error
    case let error as any RPCErrorConvertible: return RPCError(error)
    case is CancellationError: return RPCError(ServingError.cancelled("the request was cancelled"))
    default: return RPCError(ServingError.internalError("internal error: \(error)"))
    }
  }
}
