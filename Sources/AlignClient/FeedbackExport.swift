import AlignAPI
import Foundation
import GRPCCore
import Synchronization

/// Turns stored feedback into full export rows (training formats are built by the server:
/// Admin.ExportTrainingData).
public enum FeedbackRowWriter {
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
    try writeLine(try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys, .withoutEscapingSlashes]))
  }

  /// Writes one line (a JSON object the server made) and its newline.
  public func writeLine(_ data: Data) throws {
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

/// What to export and how: the filters and the row format. Training formats are built on the
/// server (Admin.ExportTrainingData, Docs/EXPORTS.md); `jsonl` streams the stored records
/// (Admin.ExportFeedback) and writes every field.
public struct FeedbackExport: Sendable {
  /// The row formats: TRL preference pairs (`trl`, `trl-chat`), KTO (`kto`, `kto-chat`), SFT from
  /// corrections (`sft`, `sft-chat`), on-policy rollouts from the generation log (`rollouts`),
  /// and every field of every feedback record (`jsonl`, as `feedback upload` reads it back).
  public enum Format: String, Sendable, CaseIterable {
    case trl
    case trlChat = "trl-chat"
    case kto
    case ktoChat = "kto-chat"
    case sft
    case sftChat = "sft-chat"
    case rollouts
    case jsonl

    /// The server's training format (nil for `jsonl`).
    public var training: Alignd_V1_TrainingFormat? {
      switch self {
      case .trl: .preference
      case .trlChat: .preferenceChat
      case .kto: .kto
      case .ktoChat: .ktoChat
      case .sft: .sft
      case .sftChat: .sftChat
      case .rollouts: .rollouts
      case .jsonl: nil
      }
    }
  }

  public var format: Format
  /// The filters of a `jsonl` export.
  public var request: Alignd_V1_ExportFeedbackRequest
  /// The filters of a training export (the same times and versions, plus source and types).
  public var training: Alignd_V1_ExportTrainingDataRequest
  /// Retries of a failed stream before giving up (it resumes after the last record received).
  public var retries = 5
  public var backoff: @Sendable (Int) -> Duration = RetryPolicy.backoff

  /// Builds the request from the options `feedback export` and `log export` take.
  /// - Parameters:
  ///   - kinds: kind names, `jsonl` only (empty: every kind).
  ///   - types: feedback types for training formats (rating, thumbs, preference, correction,
  ///     ranking; empty: every type the format holds; the server checks they fit).
  ///   - source: `app`, `admin` or nil (both), training formats only.
  ///   - since, until: ISO 8601 or Unix milliseconds, [since, until).
  ///   - generations: the generation-log filter of `rollouts`.
  /// - Throws: ``ClientError`` for an unknown kind, a bad time, or options the format cannot use.
  public init(
    format: Format, kinds: [String] = [], types: [String] = [], source: String? = nil, since: String? = nil,
    until: String? = nil, policyVersion: String? = nil, rewardVersion: String? = nil,
    generations: Alignd_V1_GenerationFilter? = nil
  ) throws(ClientError) {
    var selected: [Alignd_V1_FeedbackKind] = []
    for kind in kinds { selected.append(try FeedbackRowParser.kind(kind)) }
    if format != .jsonl && !selected.isEmpty {
      throw ClientError("--kind selects records of --format jsonl; training formats take --type")
    }
    if format == .jsonl && (!types.isEmpty || source != nil) {
      throw ClientError("--type and --source select training rows; --format jsonl takes --kind")
    }
    if let source, !["app", "admin"].contains(source) { throw ClientError("--source must be app or admin") }
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
    let feedback = self.request
    self.training = .with {
      $0.format = format.training ?? .unspecified
      $0.feedback = feedback
      $0.source = source ?? ""
      $0.feedbackTypes = types
      if let generations { $0.generations = generations }
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

  /// Streams every matching record's rows into `sink`, resuming after the last record received
  /// when a retryable failure interrupts it; commits the sink at the end (abandons it on failure).
  /// - Parameter retrying: told of each retry (error, attempt).
  /// - Throws: the last `RPCError` when the export failed.
  public func run(
    on connector: some AdminConnector, into sink: JSONLSink, counter: ExportCounter,
    retrying: @escaping @Sendable (RPCError, Int, Duration) -> Void = { _, _, _ in }
  ) async throws {
    var failures = 0
    do {
      while true {
        let before = counter.lastID
        do {
          try await connector.withAdmin { admin, metadata in try await self.page(after: before, admin, metadata, sink, counter) }
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

  /// One call: every record after `after`, written as it arrives.
  private func page(
    after: UInt64, _ admin: any Alignd_V1_Admin.ClientProtocol, _ metadata: Metadata, _ sink: JSONLSink,
    _ counter: ExportCounter
  ) async throws {
    guard format != .jsonl else {
      var request = self.request
      request.afterID = after
      try await admin.exportFeedback(request, metadata: metadata) { response in
        for try await stored in response.messages {
          try sink.write(FeedbackRowWriter.fullRow(stored))
          counter.add(id: stored.id, rows: 1)
        }
      }
      return
    }
    var request = training
    request.afterCursor = after
    try await admin.exportTrainingData(request, metadata: metadata) { response in
      for try await message in response.messages {
        for row in message.rows { try sink.writeLine(Data(row.utf8)) }
        counter.add(id: message.cursor, rows: message.rows.count)
      }
    }
  }
}
