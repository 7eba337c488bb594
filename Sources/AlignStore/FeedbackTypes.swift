// Plain domain types of the feedback store. They mirror the feedback messages of
// Schemas/alignd/v1/admin.proto but do not depend on the generated API module: the server maps
// between the two at its edge.

/// The kind of a feedback record (admin.proto `FeedbackKind`, without the unspecified case).
///
/// The raw value is the stable name written to the database's `kind` column and used as the key
/// of feedback counts; do not rename it.
public enum FeedbackKind: String, Sendable, Hashable, CaseIterable, Codable {
  case rating
  case preference
  case ranking
  case safetyLabel = "safety_label"
  case comment
}

/// A scalar rating of one completion (admin.proto `Rating`).
public struct FeedbackRating: Sendable, Hashable, Codable {
  public var prompt: String
  public var completion: String
  /// The rating; must lie within `scaleMin...scaleMax`.
  public var value: Double
  public var scaleMin: Double
  public var scaleMax: Double

  /// Creates a rating.
  public init(prompt: String, completion: String, value: Double, scaleMin: Double, scaleMax: Double)
  {
    self.prompt = prompt
    self.completion = completion
    self.value = value
    self.scaleMin = scaleMin
    self.scaleMax = scaleMax
  }
}

/// A preference between two completions of one prompt (admin.proto `Preference`).
public struct FeedbackPreference: Sendable, Hashable, Codable {
  public var prompt: String
  public var chosen: String
  public var rejected: String

  /// Creates a preference.
  public init(prompt: String, chosen: String, rejected: String) {
    self.prompt = prompt
    self.chosen = chosen
    self.rejected = rejected
  }
}

/// An ordered list of completions of one prompt, best first (admin.proto `Ranking`).
public struct FeedbackRanking: Sendable, Hashable, Codable {
  public var prompt: String
  /// Completions, best first.
  public var completions: [String]

  /// Creates a ranking.
  public init(prompt: String, completions: [String]) {
    self.prompt = prompt
    self.completions = completions
  }
}

/// Safety categories that apply to a text; empty categories mean "judged safe"
/// (admin.proto `SafetyLabel`).
public struct FeedbackSafetyLabel: Sendable, Hashable, Codable {
  public var text: String
  public var categories: [String]

  /// Creates a safety label.
  public init(text: String, categories: [String]) {
    self.text = text
    self.categories = categories
  }
}

/// A free-text comment (admin.proto `Comment`).
public struct FeedbackComment: Sendable, Hashable, Codable {
  public var text: String

  /// Creates a comment.
  public init(text: String) {
    self.text = text
  }
}

/// What a feedback record says: one of the five kinds (admin.proto `FeedbackRecord.kind`).
public enum FeedbackPayload: Sendable, Hashable {
  case rating(FeedbackRating)
  case preference(FeedbackPreference)
  case ranking(FeedbackRanking)
  case safetyLabel(FeedbackSafetyLabel)
  case comment(FeedbackComment)

  /// The kind of this payload.
  public var kind: FeedbackKind {
    switch self {
    case .rating: .rating
    case .preference: .preference
    case .ranking: .ranking
    case .safetyLabel: .safetyLabel
    case .comment: .comment
    }
  }
}

/// One piece of feedback as a client sent it (admin.proto `FeedbackRecord`, without the
/// per-stream `sequence`, which is the server's business).
///
/// Optional proto strings keep the proto convention: an empty string means "not given".
public struct FeedbackItem: Sendable, Hashable {
  /// The client's deduplication key: a record whose key is already stored is not stored again.
  public var idempotencyKey: String
  /// The response this feedback judges (`GenerateResponse.response_id`), or "".
  public var responseID: String
  /// The policy version that produced what is judged, or "".
  public var policyVersion: String
  /// The reward model version that produced what is judged, or "".
  public var rewardVersion: String
  /// The safety policy/classifier version that produced what is judged, or "".
  public var safetyVersion: String
  /// Who judged, or "".
  public var annotatorID: String
  /// Free-form key/value annotations.
  public var metadata: [String: String]
  /// When the judgement was made (client clock), Unix milliseconds; 0 = when received (the store
  /// then records its receive time here).
  public var createdAtUnixMs: Int64
  /// What the feedback says.
  public var payload: FeedbackPayload

  /// The kind of the payload.
  public var kind: FeedbackKind { payload.kind }

  /// Creates a feedback item.
  public init(
    idempotencyKey: String,
    responseID: String = "",
    policyVersion: String = "",
    rewardVersion: String = "",
    safetyVersion: String = "",
    annotatorID: String = "",
    metadata: [String: String] = [:],
    createdAtUnixMs: Int64 = 0,
    payload: FeedbackPayload
  ) {
    self.idempotencyKey = idempotencyKey
    self.responseID = responseID
    self.policyVersion = policyVersion
    self.rewardVersion = rewardVersion
    self.safetyVersion = safetyVersion
    self.annotatorID = annotatorID
    self.metadata = metadata
    self.createdAtUnixMs = createdAtUnixMs
    self.payload = payload
  }
}

/// A feedback item as stored (admin.proto `StoredFeedback`).
public struct StoredFeedbackItem: Sendable, Hashable {
  /// Store-assigned id, increasing in commit order (never reused). Always ≥ 1.
  public var id: Int64
  /// The item as stored.
  public var item: FeedbackItem
  /// When the store committed it (server clock), Unix milliseconds.
  public var receivedAtUnixMs: Int64

  /// Creates a stored item.
  public init(id: Int64, item: FeedbackItem, receivedAtUnixMs: Int64) {
    self.id = id
    self.item = item
    self.receivedAtUnixMs = receivedAtUnixMs
  }
}

/// What `FeedbackStore.append` did with one item.
public enum AppendOutcome: Sendable, Hashable {
  /// Newly stored under this id.
  case stored(id: Int64)
  /// An item with the same idempotency key was already stored (earlier, or earlier in the same
  /// batch) under this id; nothing was written.
  case duplicate(existingID: Int64)
  /// The item failed `FeedbackValidation.validate`; nothing was written.
  case rejected(reason: String)

  /// The stored id for `.stored` and `.duplicate`, nil for `.rejected`.
  public var id: Int64? {
    switch self {
    case .stored(let id): id
    case .duplicate(let id): id
    case .rejected: nil
    }
  }
}

/// Which stored feedback to export (admin.proto `ExportFeedbackRequest`).
///
/// Results are ordered by id. Resume a paged export by setting `afterID` to the last id seen.
public struct FeedbackFilter: Sendable, Hashable {
  /// Only items received at or after this time (Unix ms); nil = unbounded.
  public var sinceUnixMs: Int64?
  /// Only items received strictly before this time (Unix ms); nil = unbounded.
  public var untilUnixMs: Int64?
  /// Only these kinds; empty = all kinds.
  public var kinds: Set<FeedbackKind>
  /// Only feedback on this policy version; nil or "" = any.
  public var policyVersion: String?
  /// Only feedback on this reward version; nil or "" = any.
  public var rewardVersion: String?
  /// Only ids strictly greater than this; 0 = from the start.
  public var afterID: Int64
  /// At most this many items; nil or 0 = no limit.
  public var limit: Int?

  /// Creates a filter; the defaults select everything.
  public init(
    sinceUnixMs: Int64? = nil,
    untilUnixMs: Int64? = nil,
    kinds: Set<FeedbackKind> = [],
    policyVersion: String? = nil,
    rewardVersion: String? = nil,
    afterID: Int64 = 0,
    limit: Int? = nil
  ) {
    self.sinceUnixMs = sinceUnixMs
    self.untilUnixMs = untilUnixMs
    self.kinds = kinds
    self.policyVersion = policyVersion
    self.rewardVersion = rewardVersion
    self.afterID = afterID
    self.limit = limit
  }
}
