import AlignServing
import AlignStore
import Crypto
import Foundation
import GRPCCore
import Metrics
import Synchronization

/// Feedback from apps (Inference.SubmitFeedback, HTTP `POST /v1/feedback`) on completions from
/// the generation log.
///
/// The app names completion ids; the server fills prompt, texts and versions from the log (never
/// from the client) and stores an ordinary feedback record, so exports and training see it like
/// admin feedback. Metadata the server sets (`source=app`, `feedback_type`, `api_key_id`,
/// `completion_id` or `chosen_completion_id`/`rejected_completion_id` with each one's policy
/// version) overrides the client's keys of the same name.
///
/// - Unknown, unsampled or pruned ids: ``AppFeedbackError/notFound(_:)`` (NOT_FOUND / 404).
/// - Another key's completion: ``AppFeedbackError/notYours(_:)`` (PERMISSION_DENIED / 403) unless
///   `feedback_allow_other_keys`.
/// - Too many requests from one key: ``AppFeedbackError/rateLimited(retryAfter:)``
///   (RESOURCE_EXHAUSTED / 429, with a retry hint).
/// - Malformed requests: ``InvalidRequest`` (INVALID_ARGUMENT / 400).
/// - Idempotent: the client's key, or one derived from the content, scoped to the API key; a
///   retry stores nothing and answers the first feedback id with `duplicate`.
public struct AppFeedback: Sendable {
  /// What the app judges.
  public enum Judgement: Sendable, Equatable {
    case rating(completionID: String, value: Double, scaleMin: Double, scaleMax: Double)
    case thumbs(completionID: String, up: Bool)
    case preference(chosenCompletionID: String, rejectedCompletionID: String)
    case correction(completionID: String, correctedText: String)
    case safetyLabel(completionID: String, categories: [String])

    var typeName: String {
      switch self {
      case .rating: "rating"
      case .thumbs: "thumbs"
      case .preference: "preference"
      case .correction: "correction"
      case .safetyLabel: "safety_label"
      }
    }
  }

  /// A submission as a transport received it.
  public struct Submission: Sendable, Equatable {
    public var idempotencyKey = ""
    public var judgement: Judgement?
    public var annotatorID = ""
    public var metadata: [String: String] = [:]

    public init(judgement: Judgement? = nil) { self.judgement = judgement }
  }

  /// What was stored.
  public struct Outcome: Sendable, Equatable {
    public var feedbackID: Int64
    public var duplicate: Bool
    /// The judged completions' versions as logged (the chosen one's for a preference).
    public var versions: ModelVersions
  }

  let store: any FeedbackStore
  let log: any GenerationLogStore
  /// Writes the log's queue out, so a completion answered a moment ago can be found.
  let flushLog: @Sendable () async -> Void
  let allowOtherKeys: Bool
  let limiter: RateLimiter
  /// Hears of each newly stored judgement (the canary analysis' feedback signals).
  let onStored: @Sendable (FeedbackItem) -> Void

  public init(
    store: any FeedbackStore, log: any GenerationLogStore, flushLog: @escaping @Sendable () async -> Void,
    ratePerMinute: Int, allowOtherKeys: Bool, onStored: @escaping @Sendable (FeedbackItem) -> Void = { _ in }
  ) {
    self.store = store
    self.log = log
    self.flushLog = flushLog
    self.onStored = onStored
    self.allowOtherKeys = allowOtherKeys
    self.limiter = RateLimiter(perMinute: ratePerMinute)
  }

  /// Checks, fills from the log and stores one submission from the key `apiKeyID`.
  /// - Throws: ``AppFeedbackError``, ``InvalidRequest``, `FeedbackStoreError`.
  public func submit(_ submission: Submission, apiKeyID: String) async throws -> Outcome {
    if let wait = limiter.take(apiKeyID) {
      Counter(label: MetricNames.appFeedback, dimensions: [("outcome", "rate_limited")]).increment()
      throw AppFeedbackError.rateLimited(retryAfter: wait)
    }
    guard let judgement = submission.judgement else {
      throw InvalidRequest("give one of rating, thumbs, preference, correction, safety_label")
    }
    var metadata = submission.metadata
    metadata["source"] = "app"
    metadata["feedback_type"] = judgement.typeName
    metadata["api_key_id"] = apiKeyID
    let payload: FeedbackPayload
    let judged: GenerationLogEntry
    switch judgement {
    case .rating(let id, let value, var scaleMin, var scaleMax):
      judged = try await completion(id, field: "rating.completion_id", apiKeyID: apiKeyID)
      if scaleMin == 0 && scaleMax == 0 { (scaleMin, scaleMax) = (1, 5) }
      guard value.isFinite, scaleMin < scaleMax, (scaleMin...scaleMax).contains(value) else {
        throw InvalidRequest("rating.value \(value) must lie within the scale \(scaleMin)...\(scaleMax)")
      }
      payload = .rating(
        FeedbackRating(prompt: judged.prompt, completion: judged.text, value: value, scaleMin: scaleMin, scaleMax: scaleMax))
    case .thumbs(let id, let up):
      judged = try await completion(id, field: "thumbs.completion_id", apiKeyID: apiKeyID)
      payload = .rating(
        FeedbackRating(prompt: judged.prompt, completion: judged.text, value: up ? 1 : 0, scaleMin: 0, scaleMax: 1))
    case .preference(let chosenID, let rejectedID):
      guard chosenID != rejectedID else {
        throw InvalidRequest("preference.chosen_completion_id and rejected_completion_id name the same completion")
      }
      judged = try await completion(chosenID, field: "preference.chosen_completion_id", apiKeyID: apiKeyID)
      let rejected = try await completion(
        rejectedID, field: "preference.rejected_completion_id", apiKeyID: apiKeyID)
      guard judged.prompt == rejected.prompt else {
        throw InvalidRequest("the two completions of a preference must answer the same prompt")
      }
      metadata["chosen_completion_id"] = chosenID
      metadata["rejected_completion_id"] = rejectedID
      metadata["chosen_policy_version"] = judged.policyVersion
      metadata["rejected_policy_version"] = rejected.policyVersion
      payload = .preference(FeedbackPreference(prompt: judged.prompt, chosen: judged.text, rejected: rejected.text))
    case .correction(let id, let corrected):
      judged = try await completion(id, field: "correction.completion_id", apiKeyID: apiKeyID)
      guard !corrected.isEmpty, corrected != judged.text else {
        throw InvalidRequest("correction.corrected_text must be a non-empty text that differs from the completion")
      }
      payload = .preference(FeedbackPreference(prompt: judged.prompt, chosen: corrected, rejected: judged.text))
    case .safetyLabel(let id, let categories):
      judged = try await completion(id, field: "safety_label.completion_id", apiKeyID: apiKeyID)
      payload = .safetyLabel(FeedbackSafetyLabel(text: judged.text, categories: categories))
    }
    if case .preference = judgement {} else { metadata["completion_id"] = judged.completionID }

    let item = FeedbackItem(
      idempotencyKey: Self.idempotencyKey(submission, judgement: judgement, apiKeyID: apiKeyID),
      responseID: judged.responseID, policyVersion: judged.policyVersion, rewardVersion: judged.rewardVersion,
      safetyVersion: judged.safetyVersion, annotatorID: submission.annotatorID, metadata: metadata,
      payload: payload)
    let outcome = try await store.append([item]).first ?? .rejected(reason: "internal: no outcome")
    let versions = ModelVersions(policy: judged.policyVersion, reward: judged.rewardVersion, safety: judged.safetyVersion)
    switch outcome {
    case .stored(let id):
      FeedbackMetrics.committed(item)
      onStored(item)
      Counter(label: MetricNames.appFeedback, dimensions: [("outcome", "stored")]).increment()
      return Outcome(feedbackID: id, duplicate: false, versions: versions)
    case .duplicate(let id):
      Counter(label: MetricNames.appFeedback, dimensions: [("outcome", "duplicate")]).increment()
      return Outcome(feedbackID: id, duplicate: true, versions: versions)
    case .rejected(let reason):
      throw InvalidRequest(reason)
    }
  }

  /// The logged completion `id`, if the caller may judge it. A miss first writes out the log's
  /// queue: the completion may have been answered a moment ago.
  func completion(_ id: String, field: String, apiKeyID: String) async throws -> GenerationLogEntry {
    guard !id.isEmpty else { throw InvalidRequest("\(field) is empty") }
    var stored = try await log.generation(completionID: id)
    if stored == nil {
      await flushLog()
      stored = try await log.generation(completionID: id)
    }
    guard let entry = stored?.entry else {
      throw AppFeedbackError.notFound(
        "\(field): no logged completion '\(id)' (unknown, not sampled by the generation log, or past its retention)")
    }
    if !allowOtherKeys && entry.apiKeyID != apiKeyID {
      throw AppFeedbackError.notYours("\(field): completion '\(id)' was generated for another API key")
    }
    return entry
  }

  /// The stored idempotency key: the client's key, or the content (judgement and client fields),
  /// hashed together with the API key so keys of different callers never collide.
  static func idempotencyKey(_ submission: Submission, judgement: Judgement, apiKeyID: String) -> String {
    var hasher = SHA256()
    func add(_ text: String) {
      hasher.update(data: Array(text.utf8))
      hasher.update(data: [0])
    }
    add(apiKeyID)
    if !submission.idempotencyKey.isEmpty {
      add("client")
      add(submission.idempotencyKey)
    } else {
      add("content")
      add(String(reflecting: judgement))
      add(submission.annotatorID)
      for (key, value) in submission.metadata.sorted(by: { $0.key < $1.key }) {
        add(key)
        add(value)
      }
    }
    return "app-" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
  }
}

/// Why app feedback was refused (besides bad input, ``InvalidRequest``).
public enum AppFeedbackError: Error, Equatable, CustomStringConvertible {
  case notFound(String)
  case notYours(String)
  case rateLimited(retryAfter: Duration)

  public var description: String {
    switch self {
    case .notFound(let message), .notYours(let message): message
    case .rateLimited(let wait):
      "too many feedback requests from this API key; retry in about \(RetryAfter.milliseconds(wait)) ms"
    }
  }
}

extension AppFeedbackError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch self {
    case .notFound: .notFound
    case .notYours: .permissionDenied
    case .rateLimited: .resourceExhausted
    }
  }

  public var rpcErrorMessage: String { description }

  public var rpcErrorMetadata: Metadata {
    guard case .rateLimited(let wait) = self else { return [:] }
    return [RetryAfter.key: "\(RetryAfter.milliseconds(wait))"]
  }
}

/// A token bucket per API key: `perMinute` requests, refilled evenly, bursts up to `perMinute`.
final class RateLimiter: Sendable {
  private struct Bucket {
    var tokens: Double
    var updated: ContinuousClock.Instant
  }

  let perMinute: Int
  private let buckets = Mutex<[String: Bucket]>([:])
  private let now: @Sendable () -> ContinuousClock.Instant

  init(perMinute: Int, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
    self.perMinute = max(1, perMinute)
    self.now = now
  }

  /// Takes one token for `key`: nil when allowed, else how long until a token is free.
  func take(_ key: String) -> Duration? {
    let now = self.now()
    let capacity = Double(perMinute)
    let perSecond = capacity / 60
    return buckets.withLock { buckets in
      var bucket = buckets[key] ?? Bucket(tokens: capacity, updated: now)
      let elapsed = now - bucket.updated
      let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
      bucket.tokens = min(capacity, bucket.tokens + seconds * perSecond)
      bucket.updated = now
      defer { buckets[key] = bucket }
      if bucket.tokens >= 1 {
        bucket.tokens -= 1
        return nil
      }
      return .milliseconds(Int64(((1 - bucket.tokens) / perSecond * 1000).rounded(.up)))
    }
  }
}
