import Foundation

// The generation log: every completion the server answered, as stored. Plain domain types (the
// server maps them onto admin.proto's `LoggedCompletion` at its edge) and the store protocol both
// feedback stores implement, in the same database as the feedback they are joined to.

/// One chat turn as logged (common.proto `ChatMessage`).
public struct LoggedMessage: Sendable, Hashable, Codable {
  public var role: String
  public var content: String

  /// Creates a message.
  public init(role: String, content: String) {
    self.role = role
    self.content = content
  }
}

/// One completion as the generation log records it (admin.proto `LoggedCompletion`).
public struct GenerationLogEntry: Sendable, Hashable, Codable {
  /// The completion's own id (unique in the log; a rewritten entry with the same id is ignored).
  public var completionID: String
  /// The response it belongs to (shared by the n completions of one request).
  public var responseID: String
  public var clientRequestID: String
  /// Its index in the response.
  public var index: Int
  /// The API key that asked (its name), or "".
  public var apiKeyID: String
  /// Where it was asked (`grpc.Generate`, `http.chat.completions`, ...).
  public var endpoint: String
  /// The prompt as rendered for the model.
  public var prompt: String
  /// A chat request's messages; empty for a raw prompt.
  public var messages: [LoggedMessage]
  public var text: String
  public var tokenIDs: [Int32]
  /// The sampled tokens' log-probabilities, when the request computed them.
  public var tokenLogprobs: [Float]
  /// `stop`, `length`, `safety`, `cancelled`, `deadline`.
  public var finishReason: String
  /// Sampling parameters as a JSON object.
  public var samplingJSON: String
  public var policyVersion: String
  public var rewardVersion: String
  public var safetyVersion: String
  /// The reward, when one was computed.
  public var reward: Double?
  public var flaggedCategories: [String]
  /// When the request was answered (server clock), Unix milliseconds.
  public var createdAtUnixMs: Int64
  public var ttftMs: Double
  public var durationMs: Double
  public var promptTokens: Int
  public var completionTokens: Int
  /// PII spans were redacted from prompt, messages and text.
  public var redacted: Bool

  /// Creates an entry; the defaults are empty.
  public init(
    completionID: String, responseID: String, clientRequestID: String = "", index: Int = 0,
    apiKeyID: String = "", endpoint: String = "", prompt: String = "", messages: [LoggedMessage] = [],
    text: String = "", tokenIDs: [Int32] = [], tokenLogprobs: [Float] = [], finishReason: String = "",
    samplingJSON: String = "{}", policyVersion: String = "", rewardVersion: String = "",
    safetyVersion: String = "", reward: Double? = nil, flaggedCategories: [String] = [],
    createdAtUnixMs: Int64 = 0, ttftMs: Double = 0, durationMs: Double = 0, promptTokens: Int = 0,
    completionTokens: Int = 0, redacted: Bool = false
  ) {
    self.completionID = completionID
    self.responseID = responseID
    self.clientRequestID = clientRequestID
    self.index = index
    self.apiKeyID = apiKeyID
    self.endpoint = endpoint
    self.prompt = prompt
    self.messages = messages
    self.text = text
    self.tokenIDs = tokenIDs
    self.tokenLogprobs = tokenLogprobs
    self.finishReason = finishReason
    self.samplingJSON = samplingJSON
    self.policyVersion = policyVersion
    self.rewardVersion = rewardVersion
    self.safetyVersion = safetyVersion
    self.reward = reward
    self.flaggedCategories = flaggedCategories
    self.createdAtUnixMs = createdAtUnixMs
    self.ttftMs = ttftMs
    self.durationMs = durationMs
    self.promptTokens = promptTokens
    self.completionTokens = completionTokens
    self.redacted = redacted
  }
}

/// A logged completion with its log id.
public struct StoredGeneration: Sendable, Hashable {
  /// Store-assigned id, increasing in write order. Always ≥ 1.
  public var id: Int64
  public var entry: GenerationLogEntry

  /// Creates a stored entry.
  public init(id: Int64, entry: GenerationLogEntry) {
    self.id = id
    self.entry = entry
  }
}

/// Which logged completions to read (admin.proto `GenerationFilter` plus paging).
public struct GenerationLogFilter: Sendable, Hashable {
  /// Only entries created at or after this time (Unix ms); nil = unbounded.
  public var sinceUnixMs: Int64?
  /// Only entries created strictly before this time (Unix ms); nil = unbounded.
  public var untilUnixMs: Int64?
  /// Only this policy version; nil or "" = any.
  public var policyVersion: String?
  /// Only this API key; nil or "" = any.
  public var apiKeyID: String?
  /// Oldest first: only ids strictly greater than this (0 = from the start).
  public var afterID: Int64
  /// Newest first instead, only ids strictly below this (set: `newestFirst`; 0 = from the newest).
  public var beforeID: Int64
  /// Order newest first (list pages) rather than oldest first (exports).
  public var newestFirst: Bool
  /// At most this many; nil or 0 = no limit.
  public var limit: Int?

  /// Creates a filter; the defaults select everything, oldest first.
  public init(
    sinceUnixMs: Int64? = nil, untilUnixMs: Int64? = nil, policyVersion: String? = nil,
    apiKeyID: String? = nil, afterID: Int64 = 0, beforeID: Int64 = 0, newestFirst: Bool = false,
    limit: Int? = nil
  ) {
    self.sinceUnixMs = sinceUnixMs
    self.untilUnixMs = untilUnixMs
    self.policyVersion = policyVersion
    self.apiKeyID = apiKeyID
    self.afterID = afterID
    self.beforeID = beforeID
    self.newestFirst = newestFirst
    self.limit = limit
  }
}

/// What the retention pruner removes.
public struct GenerationLogRetention: Sendable, Hashable {
  /// Remove entries created before this time (Unix ms); nil = keep whatever their age.
  public var olderThanUnixMs: Int64?
  /// Keep at most this many of the newest entries; nil = no row limit.
  public var maxRows: Int?

  /// Creates a retention rule.
  public init(olderThanUnixMs: Int64? = nil, maxRows: Int? = nil) {
    self.olderThanUnixMs = olderThanUnixMs
    self.maxRows = maxRows
  }
}

/// A durable log of generated completions, kept in the feedback store's database.
///
/// Implementations: `SQLiteFeedbackStore` and `PostgresFeedbackStore`; one test suite runs
/// against both.
public protocol GenerationLogStore: Sendable {
  /// Writes a batch in one transaction. An entry whose completion id is already logged is
  /// skipped (a retried batch writes nothing twice).
  /// - Returns: how many entries were newly written.
  /// - Throws: `FeedbackStoreError` if the batch could not be committed (then none of it is).
  @discardableResult
  func appendGenerations(_ entries: [GenerationLogEntry]) async throws -> Int

  /// Entries matching `filter`, ordered by id (newest first with `filter.newestFirst`).
  /// - Throws: `FeedbackStoreError` on a database failure or an undecodable row.
  func generations(_ filter: GenerationLogFilter) async throws -> [StoredGeneration]

  /// The entry logged under `completionID`, or nil.
  /// - Throws: `FeedbackStoreError` on a database failure or an undecodable row.
  func generation(completionID: String) async throws -> StoredGeneration?

  /// Removes entries past `retention`.
  /// - Returns: how many entries were removed.
  /// - Throws: `FeedbackStoreError` on a database failure.
  @discardableResult
  func pruneGenerations(_ retention: GenerationLogRetention) async throws -> Int
}

// The row format both stores share: plain columns for what filters and lookups need
// (completion_id, response_id, api_key_id, policy_version, created_at), the whole entry as one
// JSON `body`, written by one encoder so both databases hold the same text.
extension GenerationLogEntry {
  /// The entry as the JSON `body` column. Throws `FeedbackStoreError.encoding`.
  func bodyJSON() throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(
      positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    do {
      return String(decoding: try encoder.encode(self), as: UTF8.self)
    } catch {
      throw FeedbackStoreError.encoding(idempotencyKey: completionID, detail: "\(error)")
    }
  }

  /// Decodes a `body` column. Throws `FeedbackStoreError.decoding` naming the row.
  static func decode(body: String, id: Int64, path: String) throws -> StoredGeneration {
    let decoder = JSONDecoder()
    decoder.nonConformingFloatDecodingStrategy = .convertFromString(
      positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    do {
      return StoredGeneration(id: id, entry: try decoder.decode(Self.self, from: Data(body.utf8)))
    } catch {
      throw FeedbackStoreError.decoding(path: path, id: id, detail: "\(error)")
    }
  }
}
