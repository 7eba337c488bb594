import AlignAPI
import AlignServing
import AlignShared
import AlignStore
import Foundation

/// The generation log at the server's edges: answered requests onto store entries (with PII
/// redaction), store entries onto admin.proto's `LoggedCompletion`, and the admin filters.
enum GenerationLogMapping {
  /// One entry per returned completion of `record`.
  /// - Parameters:
  ///   - redactPII: replace PII spans in prompt, messages and text, dropping the token ids and
  ///     logprobs of anything redacted.
  ///   - createdAt: the write time stamped on the entries (Unix ms).
  static func entries(_ record: GenerationRecord, redactPII: Bool, createdAt: Int64) -> [GenerationLogEntry] {
    let request = record.request
    var messages: [LoggedMessage] = []
    if case .chat(let chat, _) = request.input {
      messages = chat.map { LoggedMessage(role: $0.role, content: $0.content) }
    }
    var prompt = record.renderedPrompt
    var promptRedacted = false
    if redactPII {
      if let clean = PIIScanner.redact(prompt) {
        prompt = clean
        promptRedacted = true
      }
      for index in messages.indices {
        if let clean = PIIScanner.redact(messages[index].content) {
          messages[index].content = clean
          promptRedacted = true
        }
      }
    }
    let result = record.result
    let sampling = samplingJSON(record)
    let ttft = record.timeToFirstToken.map(milliseconds) ?? 0
    let duration = milliseconds(record.duration)
    return result.completions.map { completion in
      var text = completion.text
      var tokenIDs = completion.tokenIDs
      var logprobs = completion.logprobs.map(\.logprob)
      var redacted = promptRedacted
      if redactPII, let clean = PIIScanner.redact(text) {
        text = clean
        tokenIDs = []
        logprobs = []
        redacted = true
      }
      return GenerationLogEntry(
        completionID: completion.completionID, responseID: result.responseID,
        clientRequestID: request.clientRequestID ?? "", index: completion.index, apiKeyID: request.apiKeyID,
        endpoint: request.endpoint, prompt: prompt, messages: messages, text: text, tokenIDs: tokenIDs,
        tokenLogprobs: logprobs, finishReason: completion.finishReason?.rawValue ?? "", samplingJSON: sampling,
        policyVersion: completion.policyVersion.isEmpty ? result.versions.policy : completion.policyVersion,
        rewardVersion: result.versions.reward,
        safetyVersion: result.versions.safety, reward: completion.reward,
        flaggedCategories: completion.flaggedCategories.map(\.rawValue), createdAtUnixMs: createdAt,
        ttftMs: ttft, durationMs: duration, promptTokens: result.usage.promptTokens,
        completionTokens: completion.tokenIDs.count, redacted: redacted)
    }
  }

  static func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
  }

  /// The sampling parameters in force, as a JSON object with sorted keys.
  static func samplingJSON(_ record: GenerationRecord) -> String {
    let s = record.sampling
    let request = record.request
    let fields: [(String, JSONValue)] = [
      ("best_of", .int(Int64(request.bestOf))),
      ("frequency_penalty", .number(s.frequencyPenalty)),
      ("logprobs", .int(Int64(request.logprobs))),
      ("max_tokens", .int(Int64(record.maxTokens))),
      ("min_p", .number(s.minP)),
      ("n", .int(Int64(max(1, request.n)))),
      ("presence_penalty", .number(s.presencePenalty)),
      ("repetition_penalty", .number(s.repetitionPenalty)),
      // As a string: a UInt64 seed does not fit every JSON reader's numbers.
      ("seed", .string(String(s.seed))),
      ("stop", .array(request.stop.map { JSONValue.string($0) })),
      ("temperature", .number(s.temperature)),
      ("top_k", .int(Int64(s.topK))),
      ("top_p", .number(s.topP)),
    ]
    let value = JSONValue.object(fields)
    return value.text
  }

  // MARK: Admin surface

  static func loggedCompletion(_ stored: StoredGeneration) -> Alignd_V1_LoggedCompletion {
    let e = stored.entry
    return .with {
      $0.id = UInt64(stored.id)
      $0.completionID = e.completionID
      $0.responseID = e.responseID
      $0.clientRequestID = e.clientRequestID
      $0.index = UInt32(e.index)
      $0.apiKeyID = e.apiKeyID
      $0.endpoint = e.endpoint
      $0.prompt = e.prompt
      $0.messages = e.messages.map { message in
        Alignd_V1_ChatMessage.with {
          $0.role = message.role
          $0.content = message.content
        }
      }
      $0.text = e.text
      $0.tokenIds = e.tokenIDs
      $0.tokenLogprobs = e.tokenLogprobs
      $0.finishReason = e.finishReason
      $0.samplingJson = e.samplingJSON
      $0.versions = .with {
        $0.policy = e.policyVersion
        $0.reward = e.rewardVersion
        $0.safety = e.safetyVersion
      }
      if let reward = e.reward { $0.reward = reward }
      $0.flaggedCategories = e.flaggedCategories
      $0.createdAtUnixMs = e.createdAtUnixMs
      $0.ttftMs = e.ttftMs
      $0.durationMs = e.durationMs
      $0.promptTokens = UInt32(clamping: e.promptTokens)
      $0.completionTokens = UInt32(clamping: e.completionTokens)
      $0.redacted = e.redacted
    }
  }

  /// Most entries one ListGenerations page holds, and its default.
  static let maxPage = 1000
  static let defaultPage = 50

  static func generationFilter(_ filter: Alignd_V1_GenerationFilter) throws(InvalidRequest) -> GenerationLogFilter {
    if filter.sinceUnixMs < 0 || filter.untilUnixMs < 0 {
      throw InvalidRequest("since_unix_ms and until_unix_ms must not be negative")
    }
    return GenerationLogFilter(
      sinceUnixMs: filter.sinceUnixMs == 0 ? nil : filter.sinceUnixMs,
      untilUnixMs: filter.untilUnixMs == 0 ? nil : filter.untilUnixMs,
      policyVersion: filter.policyVersion, apiKeyID: filter.apiKeyID)
  }

  /// A ListGenerations page request: newest first, below the page token's id.
  static func listFilter(_ request: Alignd_V1_ListGenerationsRequest) throws(InvalidRequest) -> GenerationLogFilter {
    var filter = try generationFilter(request.filter)
    filter.newestFirst = true
    if request.limit > maxPage { throw InvalidRequest("limit must be at most \(maxPage), got \(request.limit)") }
    filter.limit = request.limit == 0 ? defaultPage : Int(request.limit)
    if !request.pageToken.isEmpty {
      guard let before = Int64(request.pageToken), before > 0 else {
        throw InvalidRequest("page_token '\(request.pageToken)' is not one this server returned")
      }
      filter.beforeID = before
    }
    return filter
  }

  /// The page and the token of the next one (empty when the page was not full).
  static func listResponse(_ page: [StoredGeneration], limit: Int) -> Alignd_V1_ListGenerationsResponse {
    .with {
      $0.completions = page.map(loggedCompletion)
      if page.count == limit, let last = page.last { $0.nextPageToken = String(last.id) }
    }
  }

  static func exportFilter(_ request: Alignd_V1_ExportGenerationsRequest) throws(InvalidRequest) -> GenerationLogFilter {
    var filter = try generationFilter(request.filter)
    filter.afterID = Int64(clamping: request.afterID)
    filter.limit = request.limit == 0 ? nil : Int(request.limit)
    return filter
  }
}
