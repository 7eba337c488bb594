import AlignAPI
import AlignServer
import ArgumentParser
import Crypto
import Foundation
import GRPCCore
import Synchronization

/// `alignctl feedback …`: stream a JSONL file of feedback in, export stored feedback out.
struct Feedback: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Upload and export human feedback (admin key).",
    subcommands: [Upload.self, Export.self])

  /// Prints one line on stderr, clearing a progress bar first when stderr is a terminal.
  static func warn(_ message: String) {
    let clear = isatty(STDERR_FILENO) != 0 ? "\r\u{1B}[2K" : ""
    FileHandle.standardError.write(Data("\(clear)alignctl: \(message)\n".utf8))
  }

  /// RPC failures worth retrying: the server or the connection went away, or the store asked
  /// for a resend. Everything else (bad key, bad argument) fails at once.
  static func isRetryable(_ code: RPCError.Code) -> Bool {
    code == .unavailable || code == .aborted
  }

  /// Backoff before retry `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s, then 8 s.
  static func backoff(_ attempt: Int) -> Duration {
    .milliseconds(500 << min(max(attempt - 1, 0), 4))
  }

  // MARK: - upload

  struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Stream a JSONL file of feedback to the server, resuming after an interruption.",
      discussion: """
        Each non-empty line is one JSON object:
          TRL preference  {"prompt", "chosen", "rejected"}
          rating          {"prompt", "completion", "rating"} with optional
                          "scale_min"/"scale_max" (default --scale-min/--scale-max)
          any kind        {"kind": rating|preference|ranking|safety_label|comment,
                          ...} as `feedback export --format jsonl` writes it
        Optional fields: id (the idempotency key; default "sha256:" + the
        SHA-256 of the record's content, so an identical row is a duplicate),
        response_id, annotator_id, policy_version, reward_version,
        safety_version, metadata (object of strings), created_at_unix_ms.
        Other fields are ignored, and a warning names them.

        Progress is saved after every acknowledgement in
        FILE.alignctl-progress: a rerun after a failure or Ctrl-C resends from
        the last acknowledged line (rows committed but not acknowledged come
        back as duplicates). The file is removed when the upload completes.

        Exit status: 0 when every row was stored or was a duplicate; 1 when
        some rows were rejected (bad JSON or fields, or by the server) and the
        others uploaded; 10 + the gRPC status code when the upload failed
        (24 = unavailable after the retries), keeping the progress file.
        """)
    @OptionGroup var remote: RemoteOptions
    @Argument(help: "The JSONL file.") var file: String
    @Option(help: "Most records sent but not yet acknowledged (bounds what a failure resends).")
    var batch: Int = 256
    @Option(help: "Retries of a failed stream (server unavailable, connection lost) before giving up.")
    var retries: Int = 5
    @Option(help: "Rating scale minimum for rating rows without scale_min/scale_max.")
    var scaleMin: Double = 1
    @Option(help: "Rating scale maximum for rating rows without scale_min/scale_max.")
    var scaleMax: Double = 5
    @Flag(help: "Ignore a saved progress file and send every row again.")
    var noResume = false

    func validate() throws {
      guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
      guard retries >= 0 else { throw ValidationError("--retries must not be negative") }
      guard scaleMin.isFinite, scaleMax.isFinite, scaleMin < scaleMax else {
        throw ValidationError("--scale-min must be less than --scale-max")
      }
    }

    /// Where the upload's progress is kept between runs.
    var statePath: String { file + ".alignctl-progress" }

    func run() async throws {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory.boolValue else {
        throw ValidationError("no such file: \(file)")
      }
      let (digest, lineCount) = try JSONLines.scan(file)
      var start = UploadProgressFile(fileSHA256: digest)
      if !noResume, let saved = UploadProgressFile.load(statePath) {
        if saved.fileSHA256 == digest {
          start = saved
          Feedback.warn("resuming \(file) after line \(saved.committedLine) (from \(statePath))")
        } else {
          Feedback.warn(
            "\(file) changed since the interrupted upload; sending every row again (stored rows count as duplicates)")
        }
      }
      let tracker = UploadTracker(start: start)
      let parser = FeedbackRowParser(defaultScale: (scaleMin, scaleMax))
      let progress = Progress(total: UInt64(lineCount), label: "upload")
      let (path, window, progressPath) = (file, batch, statePath)
      var failures = 0
      while true {
        let before = tracker.committedLine
        do {
          try await withServer(remote) { client, metadata in
            try await Self.stream(
              Alignd_V1_Admin.Client(wrapping: client), metadata: metadata, path: path, parser: parser,
              tracker: tracker, window: window, progress: progress, progressPath: progressPath)
          }
          break
        } catch let error as RPCError where Feedback.isRetryable(error.code) {
          if tracker.committedLine > before { failures = 0 }
          failures += 1
          guard failures <= retries else {
            progress.finish()
            Feedback.warn("giving up after \(retries) retries; rerun to resume after line \(tracker.committedLine)")
            throw report(error)
          }
          let delay = Feedback.backoff(failures)
          Feedback.warn(
            "\(error.code): \(error.message); retry \(failures)/\(retries) in \(delay), resending after line \(tracker.committedLine)")
          try await Task.sleep(for: delay)
        } catch let error as RPCError {
          progress.finish()
          throw report(error)
        }
      }
      progress.finish()
      try? FileManager.default.removeItem(atPath: progressPath)

      let summary = tracker.finish()
      for (field, rows) in summary.ignoredFields.sorted(by: { $0.key < $1.key }) {
        Feedback.warn("ignored field \"\(field)\" (not part of a feedback record) in \(rows) row(s)")
      }
      if remote.json {
        try printJSON([
          "file": file, "lines": lineCount, "resumed_after_line": start.committedLine,
          "stored": summary.totals.stored, "duplicates": summary.totals.duplicates,
          "rejected": summary.totals.rejected, "rejected_by_server": summary.totals.rejectedByServer,
          "invalid_rows": summary.totals.invalidRows,
          "rejections": summary.rejections.map { ["line": $0.line, "reason": $0.reason] as [String: Any] },
        ])
      } else {
        let t = summary.totals
        print(
          "\(file): stored \(t.stored), duplicates \(t.duplicates), rejected \(t.rejected)"
            + (t.rejected > 0 ? " (\(t.invalidRows) invalid rows, \(t.rejectedByServer) rejected by the server)" : ""))
      }
      if summary.totals.rejected > 0 { throw ExitCode(1) }
    }

    /// One StreamFeedback call: sends every row after the last acknowledged line, at most
    /// `window` unacknowledged at a time, and records acknowledgements as they arrive.
    static func stream(
      _ admin: Alignd_V1_Admin.Client<some ClientTransport>, metadata: Metadata, path: String,
      parser: FeedbackRowParser, tracker: UploadTracker, window: Int, progress: Progress, progressPath: String
    ) async throws {
      let resumeAfter = tracker.beginStream()
      progress.update(UInt64(resumeAfter))
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
                Feedback.warn("\(path):\(number): \(error.reason)")
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
              for rejection in rejections {
                Feedback.warn("\(path):\(rejection.line): rejected by the server: \(rejection.reason)")
              }
              snapshot.save(progressPath)
              progress.update(UInt64(snapshot.committedLine))
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

  // MARK: - export

  enum ExportFormat: String, ExpressibleByArgument, CaseIterable {
    case trl
    case jsonl
  }

  struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write stored feedback as JSONL (TRL preference pairs or full records).",
      discussion: """
        --format trl writes {"prompt", "chosen", "rejected"} rows (TRL's
        standard preference format): one per preference record and one per
        ordered pair of a ranking (a > b > c gives a/b, a/c, b/c). Other kinds
        do not fit that format and are left out.
        --format jsonl writes every field of every record, one object per
        line, as `feedback upload` reads it back (plus stored_id and
        received_at_unix_ms).
        --since/--until select the server's receive time, [since, until), as
        ISO 8601 (2026-11-29, 2026-11-29T13:00:00Z) or Unix milliseconds.
        The count goes to stderr.
        """)
    @OptionGroup var remote: RemoteOptions
    @Option(help: "trl or jsonl.") var format: ExportFormat = .jsonl
    @Option(
      name: .customLong("kind"),
      help: "Only this kind (rating, preference, ranking, safety_label, comment); repeatable.")
    var kinds: [String] = []
    @Option(help: "Only feedback received at or after this time (ISO 8601 or Unix ms).") var since: String?
    @Option(help: "Only feedback received before this time (ISO 8601 or Unix ms).") var until: String?
    @Option(help: "Only feedback on this policy version.") var policyVersion: String?
    @Option(help: "Only feedback on this reward version.") var rewardVersion: String?
    @Option(help: "Write to this file (default: stdout).") var output: String?
    @Option(help: "Retries of a failed stream before giving up (resumes after the last record received).")
    var retries: Int = 5

    func request() throws -> Alignd_V1_ExportFeedbackRequest {
      var selected = try kinds.map(FeedbackRowParser.kind)
      if format == .trl {
        if selected.isEmpty { selected = [.preference, .ranking] }
        guard selected.allSatisfy({ $0 == .preference || $0 == .ranking }) else {
          throw ValidationError("--format trl holds only preference and ranking records; drop --kind or use --format jsonl")
        }
      }
      let since = try since.map { try Self.unixMs($0, option: "--since") } ?? 0
      let until = try until.map { try Self.unixMs($0, option: "--until") } ?? 0
      if since > 0 && until > 0 && until <= since { throw ValidationError("--until must be after --since") }
      return .with {
        $0.kinds = selected
        $0.sinceUnixMs = since
        $0.untilUnixMs = until
        $0.policyVersion = policyVersion ?? ""
        $0.rewardVersion = rewardVersion ?? ""
      }
    }

    /// Unix milliseconds from digits, or from an ISO 8601 date or date-time (UTC unless it says).
    static func unixMs(_ text: String, option: String) throws -> Int64 {
      if !text.isEmpty, text.allSatisfy(\.isASCII), let ms = Int64(text) {
        guard ms > 0 else { throw ValidationError("\(option) must be positive, got \(text)") }
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
      throw ValidationError(
        "\(option) must be ISO 8601 (2026-11-29 or 2026-11-29T13:00:00Z) or Unix milliseconds, got '\(text)'")
    }

    func run() async throws {
      guard retries >= 0 else { throw ValidationError("--retries must not be negative") }
      var request = try request()
      let sink = try JSONLSink(path: output)
      let counter = ExportCounter()
      let format = format
      var failures = 0
      do {
        while true {
          let before = counter.lastID
          request.afterID = before
          do {
            let page = request
            try await withServer(remote) { client, metadata in
              try await Alignd_V1_Admin.Client(wrapping: client).exportFeedback(page, metadata: metadata) { response in
                for try await stored in response.messages {
                  let rows = format == .trl ? FeedbackRowWriter.trlRows(stored.record) : [FeedbackRowWriter.fullRow(stored)]
                  for row in rows { try sink.write(row) }
                  counter.add(id: stored.id, rows: rows.count)
                }
              }
            }
            break
          } catch let error as RPCError where Feedback.isRetryable(error.code) {
            if counter.lastID > before { failures = 0 }
            failures += 1
            guard failures <= retries else { throw error }
            let delay = Feedback.backoff(failures)
            Feedback.warn("\(error.code): \(error.message); retry \(failures)/\(retries) in \(delay)")
            try await Task.sleep(for: delay)
          }
        }
        try sink.commit()
      } catch let error as RPCError {
        counter.finish()
        sink.abandon()
        throw report(error)
      } catch {
        counter.finish()
        sink.abandon()
        throw error
      }
      counter.finish()
      let destination = output ?? "stdout"
      if remote.json {
        let data = try JSONSerialization.data(
          withJSONObject: ["records": counter.records, "rows": counter.rows, "output": destination], options: [.sortedKeys])
        FileHandle.standardError.write(data + Data("\n".utf8))
      } else {
        Feedback.warn("exported \(counter.records) records as \(counter.rows) \(format.rawValue) rows to \(destination)")
      }
    }
  }
}

// MARK: - rows in

/// Why a row cannot be uploaded.
struct RowError: Error {
  var reason: String
}

/// A row turned into a record (sequence not yet set), and the fields it ignored.
struct ParsedRow {
  var record: Alignd_V1_FeedbackRecord
  var ignoredFields: [String]
}

/// Turns one JSONL row into a feedback record; see `alignctl feedback upload --help` for the
/// accepted shapes. Checks structure and types only: the server validates content (empty
/// texts, values outside their scale, sizes) and its reasons are reported per line.
struct FeedbackRowParser: Sendable {
  /// The scale given to rating rows that name none.
  var defaultScale: (min: Double, max: Double)

  /// Fields that describe the record rather than its payload; `stored_id` and
  /// `received_at_unix_ms` come from exports and are assigned anew by the receiving store.
  static let commonFields: Set<String> = [
    "id", "kind", "response_id", "annotator_id", "policy_version", "reward_version", "safety_version", "metadata",
    "created_at_unix_ms", "stored_id", "received_at_unix_ms",
  ]

  static func kind(_ name: String) throws(ValidationError) -> Alignd_V1_FeedbackKind {
    switch name {
    case "rating": return .rating
    case "preference": return .preference
    case "ranking": return .ranking
    case "safety_label", "safety-label": return .safetyLabel
    case "comment": return .comment
    default:
      throw ValidationError("unknown feedback kind '\(name)' (rating, preference, ranking, safety_label, comment)")
    }
  }

  func record(_ line: Data) -> Result<ParsedRow, RowError> {
    let value: JSONValue
    do {
      value = try JSONDecoder().decode(JSONValue.self, from: line)
    } catch {
      return .failure(RowError(reason: "not valid JSON"))
    }
    guard let fields = value.objectFields else {
      return .failure(RowError(reason: "expected a JSON object, got \(value.typeName)"))
    }
    do {
      return .success(try parse(fields))
    } catch {
      return .failure(error)
    }
  }

  private func parse(_ fields: [String: JSONValue]) throws(RowError) -> ParsedRow {
    var row = Fields(fields)
    var record = Alignd_V1_FeedbackRecord()
    let kind: Alignd_V1_FeedbackKind
    if let name = try row.string("kind") {
      do {
        kind = try Self.kind(name)
      } catch {
        throw RowError(reason: "kind: \(error.message)")
      }
    } else if fields["chosen"] != nil || fields["rejected"] != nil {
      kind = .preference
    } else if fields["rating"] != nil {
      kind = .rating
    } else {
      throw RowError(
        reason: "cannot tell the kind: expected a TRL preference (prompt, chosen, rejected), "
          + "a rating (prompt, completion, rating) or a \"kind\" field")
    }
    switch kind {
    case .preference:
      let prompt = try row.requiredString("prompt")
      let chosen = try row.requiredString("chosen")
      let rejected = try row.requiredString("rejected")
      record.preference = .with {
        $0.prompt = prompt
        $0.chosen = chosen
        $0.rejected = rejected
      }
    case .rating:
      let prompt = try row.string("prompt") ?? ""
      let completion = try row.requiredString("completion")
      guard let value = try row.number("rating") else { throw RowError(reason: "missing field \"rating\"") }
      let scaleMin = try row.number("scale_min")
      let scaleMax = try row.number("scale_max")
      guard (scaleMin == nil) == (scaleMax == nil) else {
        throw RowError(reason: "give both scale_min and scale_max, or neither (default \(defaultScale.min)..\(defaultScale.max))")
      }
      let scale = (scaleMin ?? defaultScale.min, scaleMax ?? defaultScale.max)
      record.rating = .with {
        $0.prompt = prompt
        $0.completion = completion
        $0.value = value
        $0.scaleMin = scale.0
        $0.scaleMax = scale.1
      }
    case .ranking:
      let prompt = try row.requiredString("prompt")
      guard let completions = try row.strings("completions") else {
        throw RowError(reason: "missing field \"completions\"")
      }
      record.ranking = .with {
        $0.prompt = prompt
        $0.completions = completions
      }
    case .safetyLabel:
      let text = try row.requiredString("text")
      let categories = try row.strings("categories") ?? []
      record.safetyLabel = .with {
        $0.text = text
        $0.categories = categories
      }
    default:
      let text = try row.requiredString("text")
      record.comment = .with { $0.text = text }
    }
    record.responseID = try row.string("response_id") ?? ""
    record.annotatorID = try row.string("annotator_id") ?? ""
    record.versions.policy = try row.string("policy_version") ?? ""
    record.versions.reward = try row.string("reward_version") ?? ""
    record.versions.safety = try row.string("safety_version") ?? ""
    record.metadata = try row.stringMap("metadata") ?? [:]
    if let created = try row.integer("created_at_unix_ms") {
      guard created >= 0 else { throw RowError(reason: "created_at_unix_ms must not be negative") }
      record.createdAtUnixMs = created
    }
    for field in ["stored_id", "received_at_unix_ms"] { row.used.insert(field) }
    if let id = fields["id"] {
      row.used.insert("id")
      switch id {
      case .string(let key): record.idempotencyKey = key
      case .int(let number): record.idempotencyKey = String(number)
      default: throw RowError(reason: "id must be a string or an integer, got \(id.typeName)")
      }
      if record.idempotencyKey.isEmpty { throw RowError(reason: "id is empty") }
    } else {
      record.idempotencyKey = Self.contentKey(record)
    }
    let ignored = fields.keys.filter { !row.used.contains($0) }.sorted()
    return ParsedRow(record: record, ignoredFields: ignored)
  }

  /// "sha256:" + the SHA-256 of everything the record says (not its sequence or key), so the
  /// same row always gets the same key and a TRL row exported and uploaded again is a duplicate.
  static func contentKey(_ record: Alignd_V1_FeedbackRecord) -> String {
    var canonical = "alignctl-feedback-1\n"
    func add(_ name: String, _ value: String) {
      canonical += "\(name) \(value.utf8.count):\(value)\n"
    }
    switch record.kind {
    case .preference(let p):
      add("kind", "preference")
      add("prompt", p.prompt)
      add("chosen", p.chosen)
      add("rejected", p.rejected)
    case .rating(let r):
      add("kind", "rating")
      add("prompt", r.prompt)
      add("completion", r.completion)
      add("value", "\(r.value)")
      add("scale_min", "\(r.scaleMin)")
      add("scale_max", "\(r.scaleMax)")
    case .ranking(let r):
      add("kind", "ranking")
      add("prompt", r.prompt)
      for completion in r.completions { add("completion", completion) }
    case .safetyLabel(let s):
      add("kind", "safety_label")
      add("text", s.text)
      for category in s.categories { add("category", category) }
    case .comment(let c):
      add("kind", "comment")
      add("text", c.text)
    case nil:
      add("kind", "")
    }
    add("response_id", record.responseID)
    add("annotator_id", record.annotatorID)
    add("policy_version", record.versions.policy)
    add("reward_version", record.versions.reward)
    add("safety_version", record.versions.safety)
    for (key, value) in record.metadata.sorted(by: { $0.key < $1.key }) { add("metadata " + key, value) }
    add("created_at_unix_ms", "\(record.createdAtUnixMs)")
    return "sha256:" + SHA256.hash(data: Data(canonical.utf8)).map { String(format: "%02x", $0) }.joined()
  }

  /// Typed access to a row's fields, remembering which were read.
  private struct Fields {
    let values: [String: JSONValue]
    var used: Set<String> = []

    init(_ values: [String: JSONValue]) { self.values = values }

    mutating func field(_ name: String) -> JSONValue? {
      used.insert(name)
      guard let value = values[name] else { return nil }
      if case .null = value { return nil }
      return value
    }

    mutating func string(_ name: String) throws(RowError) -> String? {
      guard let value = field(name) else { return nil }
      guard case .string(let text) = value else {
        if case .array = value, ["prompt", "chosen", "rejected"].contains(name) {
          throw RowError(
            reason: "\(name) is a list (TRL conversational format); only the standard format with strings is supported")
        }
        throw RowError(reason: "\(name) must be a string, got \(value.typeName)")
      }
      return text
    }

    mutating func requiredString(_ name: String) throws(RowError) -> String {
      guard let text = try string(name) else { throw RowError(reason: "missing field \"\(name)\"") }
      return text
    }

    mutating func number(_ name: String) throws(RowError) -> Double? {
      switch field(name) {
      case nil: return nil
      case .int(let n): return Double(n)
      case .double(let d): return d
      case let other?: throw RowError(reason: "\(name) must be a number, got \(other.typeName)")
      }
    }

    mutating func integer(_ name: String) throws(RowError) -> Int64? {
      switch field(name) {
      case nil: return nil
      case .int(let n): return n
      case let other?: throw RowError(reason: "\(name) must be an integer, got \(other.typeName)")
      }
    }

    mutating func strings(_ name: String) throws(RowError) -> [String]? {
      guard let value = field(name) else { return nil }
      guard case .array(let items) = value else { throw RowError(reason: "\(name) must be a list of strings") }
      var out: [String] = []
      for (i, item) in items.enumerated() {
        guard case .string(let text) = item else {
          throw RowError(reason: "\(name)[\(i)] must be a string, got \(item.typeName)")
        }
        out.append(text)
      }
      return out
    }

    mutating func stringMap(_ name: String) throws(RowError) -> [String: String]? {
      guard let value = field(name) else { return nil }
      guard case .object(let entries) = value else {
        throw RowError(reason: "\(name) must be an object of strings, got \(value.typeName)")
      }
      var out: [String: String] = [:]
      for (key, item) in entries {
        guard case .string(let text) = item else {
          throw RowError(reason: "\(name).\(key) must be a string, got \(item.typeName)")
        }
        out[key] = text
      }
      return out
    }
  }
}

/// Reads a file line by line (1-based numbers, blank lines skipped, a trailing CR dropped).
struct JSONLines {
  private let handle: FileHandle
  private var buffer = Data()
  private var atEnd = false
  private var number = 0

  init(path: String) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw ValidationError("cannot read \(path)") }
    self.handle = handle
  }

  /// The next non-blank line and its number, or nil at the end.
  mutating func next() throws -> (Int, Data)? {
    while true {
      if let newline = buffer.firstIndex(of: 0x0A) {
        var line = buffer[buffer.startIndex..<newline]
        buffer = buffer[(newline + 1)...]
        number += 1
        if line.last == 0x0D { line = line.dropLast() }
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
        return (number, Data(line))
      }
      if atEnd {
        guard !buffer.isEmpty else {
          try? handle.close()
          return nil
        }
        buffer.append(0x0A)  // the last line has no newline
        continue
      }
      if let chunk = try handle.read(upToCount: 1 << 16), !chunk.isEmpty {
        buffer.append(chunk)
      } else {
        atEnd = true
      }
    }
  }

  /// SHA-256 (hex) and line count of a file: the identity a saved progress belongs to, and the
  /// progress bar's total.
  static func scan(_ path: String) throws -> (sha256: String, lines: Int) {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw ValidationError("cannot read \(path)") }
    defer { try? handle.close() }
    var hasher = SHA256()
    var lines = 0
    var last: UInt8 = 0x0A
    while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
      hasher.update(data: data)
      lines += data.reduce(0) { $1 == 0x0A ? $0 + 1 : $0 }
      last = data.last ?? last
    }
    if last != 0x0A { lines += 1 }
    return (hasher.finalize().map { String(format: "%02x", $0) }.joined(), lines)
  }
}

// MARK: - upload state

/// What an upload has achieved, kept beside the input file so a rerun resumes after
/// `committedLine`. Counts cover every line up to `committedLine`.
struct UploadProgressFile: Codable, Sendable {
  var fileSHA256: String
  var committedLine = 0
  var totals = UploadTotals()

  enum CodingKeys: String, CodingKey {
    case fileSHA256 = "file_sha256"
    case committedLine = "committed_line"
    case totals
  }

  static func load(_ path: String) -> UploadProgressFile? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    guard let saved = try? JSONDecoder().decode(UploadProgressFile.self, from: data) else {
      Feedback.warn("ignoring unreadable progress file \(path)")
      return nil
    }
    return saved
  }

  /// Writes atomically (a torn file would lose the resume point, never corrupt it).
  func save(_ path: String) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do {
      try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      Feedback.warn("cannot save progress to \(path): \(error)")
    }
  }
}

/// Outcome counts of an upload.
struct UploadTotals: Codable, Sendable, Equatable {
  var stored = 0
  var duplicates = 0
  var rejectedByServer = 0
  var invalidRows = 0

  var rejected: Int { rejectedByServer + invalidRows }

  enum CodingKeys: String, CodingKey {
    case stored, duplicates
    case rejectedByServer = "rejected_by_server"
    case invalidRows = "invalid_rows"
  }
}

/// One rejected row: its line and why.
struct RowRejection: Sendable {
  var line: Int
  var reason: String
}

/// Shared by an upload's sender and acknowledgement reader: what was sent on the current
/// stream, what the server committed, and the counts. The sender waits here when `window`
/// records are unacknowledged, so a failure never has much to resend.
final class UploadTracker: Sendable {
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

  init(start: UploadProgressFile) {
    state = Mutex(State(start: start, committedLine: start.committedLine, totals: start.totals))
  }

  var committedLine: Int { state.withLock { $0.committedLine } }

  /// Opens a new stream; returns the line to resume after.
  func beginStream() -> Int {
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
  func noteInvalid(line: Int, reason: String) -> Bool {
    state.withLock { s in
      guard s.invalidLines.insert(line).inserted else { return false }
      s.rejections.append(RowRejection(line: line, reason: reason))
      return true
    }
  }

  func noteIgnored(line: Int, fields: [String]) {
    guard !fields.isEmpty else { return }
    state.withLock { s in
      guard s.ignoredLines.insert(line).inserted else { return }
      for field in fields { s.ignored[field, default: 0] += 1 }
    }
  }

  func sent(line: Int) { state.withLock { $0.sent.append(line) } }

  /// The first line sent on this stream and not acknowledged, if any.
  var firstUnacknowledgedLine: Int? {
    state.withLock { s in s.acknowledged < s.sent.count ? s.sent[s.acknowledged] : nil }
  }

  /// Suspends until fewer than `window` sent records are unacknowledged; throws when the
  /// stream has ended (the RPC's own error then says why) or the task is cancelled.
  func waitForRoom(_ window: Int) async throws {
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
  func acknowledge(_ ack: Alignd_V1_FeedbackAck) -> ([RowRejection], UploadProgressFile) {
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
  func close() {
    state.withLock { s in
      s.closed = true
      let waiter = s.waiter
      s.waiter = nil
      return waiter
    }?.resume(throwing: CancellationError())
  }

  /// Final counts (every invalid row of the file included) and the rejections seen by this run.
  func finish() -> (totals: UploadTotals, rejections: [RowRejection], ignoredFields: [String: Int]) {
    state.withLock { s in
      var totals = s.totals
      totals.invalidRows = s.start.totals.invalidRows + s.invalidLines.count
      return (totals, s.rejections.sorted { $0.line < $1.line }, s.ignored)
    }
  }
}

// MARK: - rows out

/// Turns stored feedback into export rows.
enum FeedbackRowWriter {
  /// TRL standard preference rows: one per preference, one per ordered pair of a ranking.
  static func trlRows(_ record: Alignd_V1_FeedbackRecord) -> [[String: Any]] {
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

  /// Every field of a stored record, in the shape `feedback upload` reads.
  static func fullRow(_ stored: Alignd_V1_StoredFeedback) -> [String: Any] {
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
final class JSONLSink: @unchecked Sendable {
  private let handle: FileHandle
  private let path: String?
  private let partial: String?
  private var buffer = Data()
  private let lock = NSLock()

  init(path: String?) throws {
    self.path = path
    guard let path else {
      handle = FileHandle.standardOutput
      partial = nil
      return
    }
    let partial = path + ".partial"
    guard FileManager.default.createFile(atPath: partial, contents: nil) else {
      throw ValidationError("cannot create \(partial)")
    }
    guard let handle = FileHandle(forWritingAtPath: partial) else { throw ValidationError("cannot write \(partial)") }
    self.handle = handle
    self.partial = partial
  }

  func write(_ row: [String: Any]) throws {
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
  func commit() throws {
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
  func abandon() {
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

/// Export progress: records and rows written, shown on stderr when it is a terminal.
final class ExportCounter: Sendable {
  private struct Counts {
    var records = 0
    var rows = 0
    var lastID: UInt64 = 0
  }
  private let counts = Mutex(Counts())
  private let live = isatty(STDERR_FILENO) != 0

  var records: Int { counts.withLock { $0.records } }
  var rows: Int { counts.withLock { $0.rows } }
  /// The last stored id received (an interrupted export resumes after it).
  var lastID: UInt64 { counts.withLock { $0.lastID } }

  func add(id: UInt64, rows: Int) {
    let records = counts.withLock { c in
      c.records += 1
      c.rows += rows
      c.lastID = max(c.lastID, id)
      return c.records
    }
    if live && records % 100 == 0 {
      FileHandle.standardError.write(Data("\rexport: \(records) records".utf8))
    }
  }

  func finish() {
    if live && records >= 100 { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
  }
}
