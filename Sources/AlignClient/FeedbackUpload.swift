import AlignAPI
import Foundation
import GRPCCore
import Synchronization

/// What an upload has achieved, kept beside the input file so a rerun resumes after
/// `committedLine`. Counts cover every line up to `committedLine`.
public struct UploadProgressFile: Codable, Sendable, Equatable {
  public var fileSHA256: String
  public var committedLine = 0
  public var totals = UploadTotals()

  public init(fileSHA256: String, committedLine: Int = 0, totals: UploadTotals = UploadTotals()) {
    self.fileSHA256 = fileSHA256
    self.committedLine = committedLine
    self.totals = totals
  }

  enum CodingKeys: String, CodingKey {
    case fileSHA256 = "file_sha256"
    case committedLine = "committed_line"
    case totals
  }

  /// The progress saved at `path`: nil when there is none, an error when it is unreadable.
  public static func load(_ path: String) -> Result<UploadProgressFile, ClientError>? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    guard let saved = try? JSONDecoder().decode(UploadProgressFile.self, from: data) else {
      return .failure(ClientError("ignoring unreadable progress file \(path)"))
    }
    return .success(saved)
  }

  /// Writes atomically (a torn file would lose the resume point, never corrupt it).
  public func save(_ path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
  }
}

/// Outcome counts of an upload.
public struct UploadTotals: Codable, Sendable, Equatable {
  public var stored = 0
  public var duplicates = 0
  public var rejectedByServer = 0
  public var invalidRows = 0

  public var rejected: Int { rejectedByServer + invalidRows }

  public init(stored: Int = 0, duplicates: Int = 0, rejectedByServer: Int = 0, invalidRows: Int = 0) {
    self.stored = stored
    self.duplicates = duplicates
    self.rejectedByServer = rejectedByServer
    self.invalidRows = invalidRows
  }

  enum CodingKeys: String, CodingKey {
    case stored, duplicates
    case rejectedByServer = "rejected_by_server"
    case invalidRows = "invalid_rows"
  }
}

/// One rejected row: its line and why.
public struct RowRejection: Sendable, Equatable {
  public var line: Int
  public var reason: String
}

/// Shared by an upload's sender and acknowledgement reader: what was sent on the current
/// stream, what the server committed, and the counts. The sender waits here when `window`
/// records are unacknowledged, so a failure never has much to resend.
public final class UploadTracker: Sendable {
  private struct State {
    var start: UploadProgressFile
    var committedLine: Int
    var totals: UploadTotals
    /// Totals when the current stream opened (acknowledged counts are per stream).
    var streamBase = UploadTotals()
    var serverRejectedThisStream = 0
    /// Lines sent on the current stream, and how many of them are acknowledged.
    var sent: [Int] = []
    var acknowledged = 0
    var closed = false
    var waiter: CheckedContinuation<Void, any Error>? = nil
    var invalidLines: Set<Int> = []
    var rejections: [RowRejection] = []
    var ignored: [String: Int] = [:]
    var ignoredLines: Set<Int> = []
  }

  private let state: Mutex<State>

  public init(start: UploadProgressFile) {
    state = Mutex(State(start: start, committedLine: start.committedLine, totals: start.totals))
  }

  public var committedLine: Int { state.withLock { $0.committedLine } }

  /// Opens a new stream; returns the line to resume after.
  public func beginStream() -> Int {
    state.withLock { s in
      s.streamBase = s.totals
      s.serverRejectedThisStream = 0
      s.sent = []
      s.acknowledged = 0
      s.closed = false
      return s.committedLine
    }
  }

  /// Records an invalid row; false if this line was already reported (a resend).
  public func noteInvalid(line: Int, reason: String) -> Bool {
    state.withLock { s in
      guard s.invalidLines.insert(line).inserted else { return false }
      s.rejections.append(RowRejection(line: line, reason: reason))
      return true
    }
  }

  public func noteIgnored(line: Int, fields: [String]) {
    guard !fields.isEmpty else { return }
    state.withLock { s in
      guard s.ignoredLines.insert(line).inserted else { return }
      for field in fields { s.ignored[field, default: 0] += 1 }
    }
  }

  public func sent(line: Int) { state.withLock { $0.sent.append(line) } }

  /// The first line sent on this stream and not acknowledged, if any.
  public var firstUnacknowledgedLine: Int? {
    state.withLock { s in s.acknowledged < s.sent.count ? s.sent[s.acknowledged] : nil }
  }

  /// Suspends until fewer than `window` sent records are unacknowledged; throws when the
  /// stream has ended (the RPC's own error then says why) or the task is cancelled.
  public func waitForRoom(_ window: Int) async throws {
    struct StreamEnded: Error {}
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let immediate: Result<Void, any Error>? = state.withLock { s in
          if s.closed { return .failure(StreamEnded()) }
          if s.sent.count - s.acknowledged < window { return .success(()) }
          if Task.isCancelled { return .failure(CancellationError()) }
          s.waiter = continuation
          return nil
        }
        if let immediate { continuation.resume(with: immediate) }
      }
    } onCancel: {
      state.withLock { s in
        let waiter = s.waiter
        s.waiter = nil
        return waiter
      }?.resume(throwing: CancellationError())
    }
  }

  /// Applies an acknowledgement; returns the rejections it reports and the state to save.
  public func acknowledge(_ ack: Alignd_V1_FeedbackAck) -> ([RowRejection], UploadProgressFile) {
    let (rejections, snapshot, waiter) = state.withLock { s in
      let through = Int(clamping: ack.committedThrough)
      s.committedLine = max(s.committedLine, through)
      while s.acknowledged < s.sent.count && s.sent[s.acknowledged] <= through { s.acknowledged += 1 }
      let rejections = ack.rejected.map { RowRejection(line: Int(clamping: $0.sequence), reason: $0.reason) }
      s.rejections += rejections
      s.serverRejectedThisStream += rejections.count
      s.totals.stored = s.streamBase.stored + Int(clamping: ack.stored)
      s.totals.duplicates = s.streamBase.duplicates + Int(clamping: ack.duplicates)
      s.totals.rejectedByServer = s.streamBase.rejectedByServer + s.serverRejectedThisStream
      s.totals.invalidRows = s.start.totals.invalidRows + s.invalidLines.filter { $0 <= s.committedLine }.count
      var snapshot = s.start
      snapshot.committedLine = s.committedLine
      snapshot.totals = s.totals
      let waiter = s.waiter
      s.waiter = nil
      return (rejections, snapshot, waiter)
    }
    waiter?.resume()
    return (rejections, snapshot)
  }

  /// The stream ended: wake a waiting sender.
  public func close() {
    state.withLock { s in
      s.closed = true
      let waiter = s.waiter
      s.waiter = nil
      return waiter
    }?.resume(throwing: CancellationError())
  }

  /// Final counts (every invalid row of the file included) and the rejections seen by this run.
  public func finish() -> (totals: UploadTotals, rejections: [RowRejection], ignoredFields: [String: Int]) {
    state.withLock { s in
      var totals = s.totals
      totals.invalidRows = s.start.totals.invalidRows + s.invalidLines.count
      return (totals, s.rejections.sorted { $0.line < $1.line }, s.ignored)
    }
  }
}

/// Streams a JSONL file of feedback to the Admin service (StreamFeedback), resuming after an
/// interruption: progress is saved beside the file after every acknowledgement, a retryable
/// failure resends from the last acknowledged line, and a rerun resumes from the saved progress.
/// Rows are parsed by ``FeedbackRowParser``; the server validates their content.
public struct FeedbackUpload: Sendable {
  public struct Options: Sendable {
    /// Most records sent but not yet acknowledged (bounds what a failure resends).
    public var window = 256
    /// Retries of a failed stream before giving up.
    public var retries = 5
    /// The scale of rating rows that name none.
    public var defaultScale: (min: Double, max: Double) = (1, 5)
    /// Resume from a saved progress file (false sends every row again).
    public var resume = true
    /// Backoff before retry n (1-based).
    public var backoff: @Sendable (Int) -> Duration = RetryPolicy.backoff

    public init() {}
  }

  /// What happens during an upload, for the caller to show.
  public enum Event: Sendable {
    /// The file has `lines` lines; sending starts after `resumeAfter`.
    case started(lines: Int, resumeAfter: Int)
    /// A saved progress file applies: the upload resumes after its line.
    case resuming(afterLine: Int, progressFile: String)
    /// The file changed since the saved progress: every row is sent again.
    case fileChanged
    /// A problem with the progress file (unreadable, or cannot be saved); the upload goes on.
    case progressFileProblem(String)
    case invalidRow(line: Int, reason: String)
    case rejectedByServer(line: Int, reason: String)
    /// Every line up to `line` is acknowledged.
    case acknowledged(line: Int)
    case retrying(error: RPCError, attempt: Int, of: Int, delay: Duration, resumeAfter: Int)
    case givingUp(retries: Int, resumeAfter: Int)
  }

  /// The outcome of a completed upload.
  public struct Summary: Sendable {
    public var lines: Int
    public var resumedAfterLine: Int
    public var totals: UploadTotals
    public var rejections: [RowRejection]
    /// Fields no record holds, and in how many rows they were ignored.
    public var ignoredFields: [String: Int]
  }

  public let path: String
  public let options: Options

  public init(path: String, options: Options = Options()) {
    self.path = path
    self.options = options
  }

  /// Where the upload's progress is kept between runs.
  public var progressPath: String { path + ".alignctl-progress" }

  /// Uploads the file; removes the progress file once every row is acknowledged.
  /// - Throws: ``ClientError`` when the file cannot be read; the last `RPCError` when the upload
  ///   failed (after the retries, for retryable ones), keeping the progress file.
  public func run(on connector: some AdminConnector, report: @escaping @Sendable (Event) -> Void) async throws -> Summary {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
      throw ClientError("no such file: \(path)")
    }
    let (digest, lineCount) = try JSONLines.scan(path)
    var start = UploadProgressFile(fileSHA256: digest)
    if options.resume, let saved = UploadProgressFile.load(progressPath) {
      switch saved {
      case .success(let saved) where saved.fileSHA256 == digest:
        start = saved
        report(.resuming(afterLine: saved.committedLine, progressFile: progressPath))
      case .success:
        report(.fileChanged)
      case .failure(let problem):
        report(.progressFileProblem(problem.description))
      }
    }
    report(.started(lines: lineCount, resumeAfter: start.committedLine))
    let tracker = UploadTracker(start: start)
    let parser = FeedbackRowParser(defaultScale: options.defaultScale)
    var failures = 0
    while true {
      let before = tracker.committedLine
      do {
        try await connector.withAdmin { admin, metadata in
          try await stream(admin, metadata: metadata, parser: parser, tracker: tracker, report: report)
        }
        break
      } catch let error as RPCError where RetryPolicy.isRetryable(error.code) {
        if tracker.committedLine > before { failures = 0 }
        failures += 1
        guard failures <= options.retries else {
          report(.givingUp(retries: options.retries, resumeAfter: tracker.committedLine))
          throw error
        }
        let delay = options.backoff(failures)
        report(.retrying(error: error, attempt: failures, of: options.retries, delay: delay, resumeAfter: tracker.committedLine))
        try await Task.sleep(for: delay)
      }
    }
    try? FileManager.default.removeItem(atPath: progressPath)
    let summary = tracker.finish()
    return Summary(
      lines: lineCount, resumedAfterLine: start.committedLine, totals: summary.totals, rejections: summary.rejections,
      ignoredFields: summary.ignoredFields)
  }

  /// One StreamFeedback call: sends every row after the last acknowledged line, at most `window`
  /// unacknowledged at a time, and records acknowledgements as they arrive.
  func stream(
    _ admin: any Alignd_V1_Admin.ClientProtocol, metadata: Metadata, parser: FeedbackRowParser,
    tracker: UploadTracker, report: @escaping @Sendable (Event) -> Void
  ) async throws {
    let resumeAfter = tracker.beginStream()
    report(.acknowledged(line: resumeAfter))
    let (path, window, progressPath) = (self.path, options.window, self.progressPath)
    try await admin.streamFeedback(
      metadata: metadata,
      requestProducer: { writer in
        var lines = try JSONLines(path: path)
        while let next = try lines.next() {
          let (number, data) = next
          guard number > resumeAfter else { continue }
          switch parser.record(data) {
          case .failure(let error):
            if tracker.noteInvalid(line: number, reason: error.reason) {
              report(.invalidRow(line: number, reason: error.reason))
            }
          case .success(let row):
            tracker.noteIgnored(line: number, fields: row.ignoredFields)
            var record = row.record
            record.sequence = UInt64(number)
            try await tracker.waitForRoom(window)
            tracker.sent(line: number)
            try await writer.write(record)
          }
        }
      },
      onResponse: { response in
        do {
          for try await ack in response.messages {
            let (rejections, snapshot) = tracker.acknowledge(ack)
            for rejection in rejections { report(.rejectedByServer(line: rejection.line, reason: rejection.reason)) }
            do {
              try snapshot.save(progressPath)
            } catch {
              report(.progressFileProblem("cannot save progress to \(progressPath): \(error)"))
            }
            report(.acknowledged(line: snapshot.committedLine))
          }
        } catch {
          tracker.close()
          throw error
        }
        tracker.close()
        if let line = tracker.firstUnacknowledgedLine {
          throw RPCError(code: .unavailable, message: "the server ended the stream before acknowledging line \(line)")
        }
      })
  }
}
