import AlignAPI
import Foundation
import GRPCCore
import Synchronization

/// Turns stored feedback into export rows.
public enum FeedbackRowWriter {
  /// TRL standard preference rows: one per preference, one per ordered pair of a ranking.
  public static func trlRows(_ record: Alignd_V1_FeedbackRecord) -> [[String: Any]] {
    switch record.kind {
    case .preference(let p):
      return [["prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected]]
    case .ranking(let r):
      var rows: [[String: Any]] = []
      for i in r.completions.indices {
        for j in r.completions.indices where j > i {
          rows.append(["prompt": r.prompt, "chosen": r.completions[i], "rejected": r.completions[j]])
        }
      }
      return rows
    default:
      return []
    }
  }

  /// TRL preference rows in conversational form: `prompt` is the conversation as chat messages,
  /// `chosen` and `rejected` are one assistant message each. `conversation` is the prompt's
  /// messages as the generation log recorded them (app feedback names its completions); without
  /// it the stored prompt text becomes one user message. Each row also carries the versions that
  /// produced the texts (`policy_version`, and for app preferences `chosen_policy_version` and
  /// `rejected_policy_version`) and the completion ids when known; TRL ignores extra columns.
  public static func trlConversationalRows(
    _ record: Alignd_V1_FeedbackRecord, conversation: [Alignd_V1_ChatMessage]? = nil
  ) -> [[String: Any]] {
    let rows = trlRows(record)
    guard !rows.isEmpty else { return [] }
    func assistant(_ text: Any?) -> [[String: String]] { [["role": "assistant", "content": text as? String ?? ""]] }
    return rows.map { row in
      let prompt: [[String: String]] =
        conversation.map { messages in messages.map { ["role": $0.role, "content": $0.content] } }
        ?? [["role": "user", "content": row["prompt"] as? String ?? ""]]
      var out: [String: Any] = [
        "prompt": prompt, "chosen": assistant(row["chosen"]), "rejected": assistant(row["rejected"]),
        "policy_version": record.versions.policy, "reward_version": record.versions.reward,
      ]
      for key in [
        "chosen_policy_version", "rejected_policy_version", "chosen_completion_id", "rejected_completion_id",
        "completion_id", "feedback_type",
      ] {
        if let value = record.metadata[key] { out[key] = value }
      }
      return out
    }
  }

  /// The logged completion whose conversation a record's conversational row takes its prompt
  /// from: app feedback names it in its metadata.
  public static func loggedCompletionID(_ record: Alignd_V1_FeedbackRecord) -> String? {
    record.metadata["chosen_completion_id"] ?? record.metadata["completion_id"]
  }

  /// Every field of a stored record, in the shape `feedback upload` reads.
  public static func fullRow(_ stored: Alignd_V1_StoredFeedback) -> [String: Any] {
    let record = stored.record
    var row: [String: Any] = [
      "id": record.idempotencyKey,
      "response_id": record.responseID,
      "annotator_id": record.annotatorID,
      "policy_version": record.versions.policy,
      "reward_version": record.versions.reward,
      "safety_version": record.versions.safety,
      "metadata": record.metadata,
      "created_at_unix_ms": Int(record.createdAtUnixMs),
      "stored_id": Int(clamping: stored.id),
      "received_at_unix_ms": Int(stored.receivedAtUnixMs),
    ]
    switch record.kind {
    case .preference(let p):
      row["kind"] = "preference"
      row["prompt"] = p.prompt
      row["chosen"] = p.chosen
      row["rejected"] = p.rejected
    case .rating(let r):
      row["kind"] = "rating"
      row["prompt"] = r.prompt
      row["completion"] = r.completion
      row["rating"] = r.value
      row["scale_min"] = r.scaleMin
      row["scale_max"] = r.scaleMax
    case .ranking(let r):
      row["kind"] = "ranking"
      row["prompt"] = r.prompt
      row["completions"] = r.completions
    case .safetyLabel(let s):
      row["kind"] = "safety_label"
      row["text"] = s.text
      row["categories"] = s.categories
    case .comment(let c):
      row["kind"] = "comment"
      row["text"] = c.text
    case nil:
      row["kind"] = "unspecified"
    }
    return row
  }
}

/// Buffered JSONL output to stdout or to a file; a file is written under a temporary name and
/// renamed only when the export completed, so a failed export never looks like a whole one.
public final class JSONLSink: @unchecked Sendable {
  private let handle: FileHandle
  private let path: String?
  private let partial: String?
  private var buffer = Data()
  private let lock = NSLock()

  public init(path: String?) throws {
    self.path = path
    guard let path else {
      handle = FileHandle.standardOutput
      partial = nil
      return
    }
    let partial = path + ".partial"
    guard FileManager.default.createFile(atPath: partial, contents: nil) else {
      throw ClientError("cannot create \(partial)")
    }
    guard let handle = FileHandle(forWritingAtPath: partial) else { throw ClientError("cannot write \(partial)") }
    self.handle = handle
    self.partial = partial
  }

  public func write(_ row: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys, .withoutEscapingSlashes])
    lock.lock()
    defer { lock.unlock() }
    buffer.append(data)
    buffer.append(0x0A)
    if buffer.count >= 1 << 16 { try flushLocked() }
  }

  private func flushLocked() throws {
    guard !buffer.isEmpty else { return }
    try handle.write(contentsOf: buffer)
    buffer.removeAll(keepingCapacity: true)
  }

  /// Flushes and, for a file, moves it into place.
  public func commit() throws {
    lock.lock()
    defer { lock.unlock() }
    try flushLocked()
    guard let path, let partial else { return }
    try handle.synchronize()
    try handle.close()
    if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
    try FileManager.default.moveItem(atPath: partial, toPath: path)
  }

  /// Drops a partial file (stdout keeps what was written).
  public func abandon() {
    lock.lock()
    defer { lock.unlock() }
    if let partial {
      try? handle.close()
      try? FileManager.default.removeItem(atPath: partial)
    } else {
      try? flushLocked()
    }
  }
}

/// Export progress: records and rows written, and the last stored id received (an interrupted
/// export resumes after it).
public final class ExportCounter: Sendable {
  private struct Counts {
    var records = 0
    var rows = 0
    var lastID: UInt64 = 0
  }
  private let counts = Mutex(Counts())
  private let onRecord: @Sendable (_ records: Int) -> Void

  /// - Parameter onRecord: told the count after every record (for a progress display).
  public init(onRecord: @escaping @Sendable (_ records: Int) -> Void = { _ in }) {
    self.onRecord = onRecord
  }

  public var records: Int { counts.withLock { $0.records } }
  public var rows: Int { counts.withLock { $0.rows } }
  public var lastID: UInt64 { counts.withLock { $0.lastID } }

  /// Counts one record written as `rows` rows.
  public func add(id: UInt64, rows: Int) {
    let records = counts.withLock { c in
      c.records += 1
      c.rows += rows
      c.lastID = max(c.lastID, id)
      return c.records
    }
    onRecord(records)
  }
}

/// What to export and how: the filters of ExportFeedback and the row format.
public struct FeedbackExport: Sendable {
  /// `trl`: `{"prompt", "chosen", "rejected"}` rows (TRL's standard preference format), one per
  /// preference and one per ordered pair of a ranking; `jsonl`: every field of every record, as
  /// the upload reads it back.
  /// `trl-chat`: TRL's conversational preference format (``FeedbackRowWriter/trlConversationalRows(_:conversation:)``),
  /// the prompt's messages read from the generation log when the feedback names a completion.
  public enum Format: String, Sendable, CaseIterable {
    case trl
    case trlChat = "trl-chat"
    case jsonl
  }

  public var format: Format
  public var request: Alignd_V1_ExportFeedbackRequest
  /// Retries of a failed stream before giving up (it resumes after the last record received).
  public var retries = 5
  public var backoff: @Sendable (Int) -> Duration = RetryPolicy.backoff

  /// Builds the request from the options `feedback export` takes.
  /// - Parameters:
  ///   - kinds: kind names (empty: every kind; for `trl`, preference and ranking).
  ///   - since, until: ISO 8601 or Unix milliseconds, [since, until).
  /// - Throws: ``ClientError`` for an unknown kind, a bad time, or kinds `trl` cannot hold.
  public init(
    format: Format, kinds: [String] = [], since: String? = nil, until: String? = nil, policyVersion: String? = nil,
    rewardVersion: String? = nil
  ) throws(ClientError) {
    var selected: [Alignd_V1_FeedbackKind] = []
    for kind in kinds { selected.append(try FeedbackRowParser.kind(kind)) }
    if format != .jsonl {
      if selected.isEmpty { selected = [.preference, .ranking] }
      guard selected.allSatisfy({ $0 == .preference || $0 == .ranking }) else {
        throw ClientError(
          "--format \(format.rawValue) holds only preference and ranking records; drop --kind or use --format jsonl")
      }
    }
    let sinceMs = try since.map { text throws(ClientError) in try Self.unixMs(text, option: "--since") } ?? 0
    let untilMs = try until.map { text throws(ClientError) in try Self.unixMs(text, option: "--until") } ?? 0
    if sinceMs > 0 && untilMs > 0 && untilMs <= sinceMs { throw ClientError("--until must be after --since") }
    self.format = format
    self.request = .with {
      $0.kinds = selected
      $0.sinceUnixMs = sinceMs
      $0.untilUnixMs = untilMs
      $0.policyVersion = policyVersion ?? ""
      $0.rewardVersion = rewardVersion ?? ""
    }
  }

  /// Unix milliseconds from digits, or from an ISO 8601 date or date-time (UTC unless it says).
  public static func unixMs(_ text: String, option: String) throws(ClientError) -> Int64 {
    if !text.isEmpty, text.allSatisfy(\.isASCII), let ms = Int64(text) {
      guard ms > 0 else { throw ClientError("\(option) must be positive, got \(text)") }
      return ms
    }
    let attempts: [ISO8601DateFormatter.Options] = [
      [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime], [.withFullDate],
    ]
    for options in attempts {
      let formatter = ISO8601DateFormatter()
      formatter.formatOptions = options
      if let date = formatter.date(from: text) {
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
      }
    }
    throw ClientError(
      "\(option) must be ISO 8601 (2026-11-29 or 2026-11-29T13:00:00Z) or Unix milliseconds, got '\(text)'")
  }

  /// The rows of one stored record in this format.
  public func rows(_ stored: Alignd_V1_StoredFeedback, conversation: [Alignd_V1_ChatMessage]? = nil) -> [[String: Any]] {
    switch format {
    case .trl: FeedbackRowWriter.trlRows(stored.record)
    case .trlChat: FeedbackRowWriter.trlConversationalRows(stored.record, conversation: conversation)
    case .jsonl: [FeedbackRowWriter.fullRow(stored)]
    }
  }

  /// The conversation of the logged completion `stored` names, for `trl-chat` (nil for other
  /// formats, for records that name none, or when the log no longer holds it).
  func conversation(
    _ stored: Alignd_V1_StoredFeedback, admin: any Alignd_V1_Admin.ClientProtocol, metadata: Metadata
  ) async throws -> [Alignd_V1_ChatMessage]? {
    guard format == .trlChat, let id = FeedbackRowWriter.loggedCompletionID(stored.record) else { return nil }
    do {
      let logged = try await admin.getGeneration(.with { $0.completionID = id }, metadata: metadata)
      return logged.messages.isEmpty ? nil : logged.messages
    } catch let error as RPCError where error.code == .notFound {
      return nil
    }
  }

  /// Streams every matching record into `sink`, resuming after the last record received when a
  /// retryable failure interrupts it; commits the sink at the end (abandons it on failure).
  /// - Parameter retrying: told of each retry (error, attempt).
  /// - Throws: the last `RPCError` when the export failed.
  public func run(
    on connector: some AdminConnector, into sink: JSONLSink, counter: ExportCounter,
    retrying: @escaping @Sendable (RPCError, Int, Duration) -> Void = { _, _, _ in }
  ) async throws {
    var request = self.request
    var failures = 0
    do {
      while true {
        let before = counter.lastID
        request.afterID = before
        do {
          let page = request
          try await connector.withAdmin { admin, metadata in
            try await admin.exportFeedback(page, metadata: metadata) { response in
              for try await stored in response.messages {
                let rows = self.rows(stored, conversation: try await self.conversation(stored, admin: admin, metadata: metadata))
                for row in rows { try sink.write(row) }
                counter.add(id: stored.id, rows: rows.count)
              }
            }
          }
          break
        } catch let error as RPCError where RetryPolicy.isRetryable(error.code) {
          if counter.lastID > before { failures = 0 }
          failures += 1
          guard failures <= retries else { throw error }
          let delay = backoff(failures)
          retrying(error, failures, delay)
          try await Task.sleep(for: delay)
        }
      }
      try sink.commit()
    } catch {
      sink.abandon()
      throw error
    }
  }
}
