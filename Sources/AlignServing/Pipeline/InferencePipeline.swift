import AlignEngine
import Foundation

/// Why a request could not be served, beyond bad input (``InvalidRequest``) and full queues
/// (``GenerationScheduler/AdmissionError``, ``DynamicBatcherError``). The server maps every one of
/// these to a status code in one place.
public enum ServingError: Error, Equatable, CustomStringConvertible {
  /// Loading, draining, a failed start, or a model role that is not loaded yet.
  case unavailable(String)
  /// The request's deadline passed before it finished.
  case deadlineExceeded(String)
  /// The client went away or cancelled.
  case cancelled(String)
  /// The server's state cannot serve this request (e.g. the judge cannot run on this policy).
  case failedPrecondition(String)
  /// The engine failed.
  case internalError(String)

  public var description: String {
    switch self {
    case .unavailable(let message), .deadlineExceeded(let message), .cancelled(let message),
      .failedPrecondition(let message), .internalError(let message):
      return message
    }
  }
}

/// The serving side of every inference request, whichever transport it came in on: lease the
/// snapshots that serve it, validate, screen, schedule, collect, rank, and return domain values
/// stamped with the versions that produced them. The gRPC Inference service and the HTTP gateway
/// only map their messages onto it.
///
/// Generation: screen the prompt → submit → collect (with output screening) → rank best_of
/// candidates by reward → result with versions. Cancellation is the calling task's: cancel it
/// and a generation ends at its next step with finish reason `cancelled`, queued judging work is
/// dropped.
public struct InferencePipeline: Sendable {
  public let status: ServingStatus
  public let models: ModelHost
  public let limits: GenerationLimits
  /// Safety screening of generate requests that leave the mode unspecified (config `safety_mode`).
  public let defaultSafetyMode: SafetyMode
  /// Receives every answered generation (the generation log); nil logs nothing.
  public let recorder: (any GenerationRecorder)?

  public init(
    status: ServingStatus, models: ModelHost, limits: GenerationLimits, defaultSafetyMode: SafetyMode,
    recorder: (any GenerationRecorder)? = nil
  ) {
    (self.status, self.models, self.limits, self.defaultSafetyMode) = (status, models, limits, defaultSafetyMode)
    self.recorder = recorder
  }

  /// Most responses one Score request may hold (a pair counts two).
  public static let maxScoreInputs = 64
  /// Most texts one CheckSafety request may hold.
  public static let maxSafetyTexts = 64

  /// A lease on the policy snapshot serving this request (the canary for its share of routing
  /// keys), held until the request ends so a swap never changes the weights under it.
  /// - Throws: ``ServingError/unavailable(_:)`` while loading or draining.
  func policy(routingKey: String? = nil) throws(ServingError) -> SnapshotLease<PolicySnapshot> {
    try checkServing()
    guard let lease = models.leasePolicy(routingKey: routingKey) else {
      throw .unavailable("no policy model is loaded")
    }
    return lease
  }

  /// - Throws: ``ServingError/unavailable(_:)`` unless the server is serving.
  func checkServing() throws(ServingError) {
    switch status.phase {
    case .loading: throw .unavailable("alignd is loading its models; retry shortly")
    case .draining: throw .unavailable("alignd is shutting down")
    case .failed(let reason): throw .unavailable("alignd failed to start: \(reason)")
    case .serving: break
    }
  }

  /// A lease on the safety checker.
  func safetyChecker() throws(ServingError) -> SnapshotLease<SafetySnapshot> {
    guard let lease = models.safety.lease() else {
      throw .unavailable("the safety checker is not loaded yet")
    }
    return lease
  }

  /// The versions a request served by `policy` names: the active reward model (or the judge on
  /// this policy) unless `reward` says which scored, and the active safety checker.
  func versions(policy: PolicySnapshot, reward: String? = nil) -> ModelVersions {
    ModelVersions(
      policy: policy.version,
      reward: reward ?? models.rewards.active?.version ?? "judge:\(policy.version)",
      safety: models.safety.active?.version ?? "")
  }

  /// A new response id: `prefix-` and 16 random hex digits.
  public static func responseID(_ prefix: String) -> String {
    var generator = SystemRandomNumberGenerator()
    return prefix + "-" + String(format: "%016llx", generator.next() as UInt64)
  }
}
