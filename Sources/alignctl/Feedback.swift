import AlignAPI
import AlignClient
import ArgumentParser
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

    func run() async throws {
      var options = FeedbackUpload.Options()
      options.window = batch
      options.retries = retries
      options.defaultScale = (scaleMin, scaleMax)
      options.resume = !noResume
      let upload = FeedbackUpload(path: file, options: options)
      let connection = try remote.connection()
      let progress = ProgressBox()
      let (file, retries) = (self.file, self.retries)
      let summary: FeedbackUpload.Summary
      do {
        summary = try await usageErrors {
          try await upload.run(on: connection) { event in
            switch event {
            case .started(let lines, _): progress.start(Progress(total: UInt64(lines), label: "upload"))
            case .resuming(let line, let progressFile): Feedback.warn("resuming \(file) after line \(line) (from \(progressFile))")
            case .fileChanged:
              Feedback.warn(
                "\(file) changed since the interrupted upload; sending every row again (stored rows count as duplicates)")
            case .progressFileProblem(let problem): Feedback.warn(problem)
            case .invalidRow(let line, let reason): Feedback.warn("\(file):\(line): \(reason)")
            case .rejectedByServer(let line, let reason): Feedback.warn("\(file):\(line): rejected by the server: \(reason)")
            case .acknowledged(let line): progress.update(UInt64(line))
            case .retrying(let error, let attempt, let limit, let delay, let resumeAfter):
              Feedback.warn(
                "\(error.code): \(error.message); retry \(attempt)/\(limit) in \(delay), resending after line \(resumeAfter)")
            case .givingUp(_, let resumeAfter):
              progress.finish()
              Feedback.warn("giving up after \(retries) retries; rerun to resume after line \(resumeAfter)")
            }
          }
        }
      } catch let error as RPCError {
        progress.finish()
        throw report(error)
      }
      progress.finish()
      for (field, rows) in summary.ignoredFields.sorted(by: { $0.key < $1.key }) {
        Feedback.warn("ignored field \"\(field)\" (not part of a feedback record) in \(rows) row(s)")
      }
      let t = summary.totals
      if remote.json {
        try printJSON([
          "file": file, "lines": summary.lines, "resumed_after_line": summary.resumedAfterLine,
          "stored": t.stored, "duplicates": t.duplicates, "rejected": t.rejected,
          "rejected_by_server": t.rejectedByServer, "invalid_rows": t.invalidRows,
          "rejections": summary.rejections.map { ["line": $0.line, "reason": $0.reason] as [String: Any] },
        ])
      } else {
        print(
          "\(file): stored \(t.stored), duplicates \(t.duplicates), rejected \(t.rejected)"
            + (t.rejected > 0 ? " (\(t.invalidRows) invalid rows, \(t.rejectedByServer) rejected by the server)" : ""))
      }
      if t.rejected > 0 { throw ExitCode(1) }
    }
  }

  // MARK: - export

  typealias ExportFormat = FeedbackExport.Format

  struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write stored feedback as JSONL: training rows (TRL preference, KTO, SFT) or full records.",
      discussion: """
        Training formats are built by the server (Docs/EXPORTS.md); each row also
        carries the versions that produced its texts (policy_version,
        chosen_policy_version, rejected_policy_version), the completion ids,
        feedback_type and source.
        --format trl writes {"prompt", "chosen", "rejected"} rows (TRL's
        standard preference format): one per preference (an app's comparison,
        a correction: corrected over original, an admin pair) and one per
        ordered pair of a ranking (a > b > c gives a/b, a/c, b/c).
        --format trl-chat writes the same pairs in TRL's conversational form:
        {"prompt": [messages], "chosen": [assistant message], "rejected":
        [assistant message]}, the prompt's messages taken from the generation
        log for app feedback (which names its completion ids).
        --format kto / kto-chat writes KTO's unpaired rows {"prompt",
        "completion", "label"} from ratings (label true above the scale's
        midpoint, false below, none at it) and thumbs.
        --format sft / sft-chat writes corrections as {"prompt", "completion"}
        or {"messages"} ending with the corrected assistant message.
        --format jsonl writes every field of every record, one object per
        line, as `feedback upload` reads it back (plus stored_id and
        received_at_unix_ms).
        (On-policy rollouts come from the generation log: alignctl log export
        --format rollouts.)
        --since/--until select the server's receive time, [since, until), as
        ISO 8601 (2026-11-29, 2026-11-29T13:00:00Z) or Unix milliseconds.
        The count goes to stderr.
        """)
    @OptionGroup var remote: RemoteOptions
    @Option(help: "trl, trl-chat, kto, kto-chat, sft, sft-chat or jsonl.") var format: ExportFormat = .jsonl
    @Option(
      name: .customLong("kind"),
      help: "--format jsonl: only this kind (rating, preference, ranking, safety_label, comment); repeatable.")
    var kinds: [String] = []
    @Option(
      name: .customLong("type"),
      help: "Training formats: only this feedback type (rating, thumbs, preference, correction, ranking); repeatable.")
    var types: [String] = []
    @Option(help: "Training formats: only feedback from app (POST /v1/feedback) or admin (the admin stream).")
    var source: String?
    @Option(help: "Only feedback received at or after this time (ISO 8601 or Unix ms).") var since: String?
    @Option(help: "Only feedback received before this time (ISO 8601 or Unix ms).") var until: String?
    @Option(help: "Only feedback on this policy version.") var policyVersion: String?
    @Option(help: "Only feedback on this reward version.") var rewardVersion: String?
    @Option(help: "Write to this file (default: stdout).") var output: String?
    @Option(help: "Retries of a failed stream before giving up (resumes after the last record received).")
    var retries: Int = 5

    func run() async throws {
      guard retries >= 0 else { throw ValidationError("--retries must not be negative") }
      guard format != .rollouts else {
        throw ValidationError("rollouts come from the generation log: alignctl log export --format rollouts")
      }
      var export = try usage {
        try FeedbackExport(
          format: format, kinds: kinds, types: types, source: source, since: since, until: until,
          policyVersion: policyVersion, rewardVersion: rewardVersion)
      }
      export.retries = retries
      let connection = try remote.connection()
      let sink = try usage { try JSONLSink(path: output) }
      let live = isatty(STDERR_FILENO) != 0
      let counter = ExportCounter { records in
        if live && records % 100 == 0 { FileHandle.standardError.write(Data("\rexport: \(records) records".utf8)) }
      }
      func finish() {
        if live && counter.records >= 100 { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
      }
      let limit = retries
      do {
        try await export.run(on: connection, into: sink, counter: counter) { error, attempt, delay in
          Feedback.warn("\(error.code): \(error.message); retry \(attempt)/\(limit) in \(delay)")
        }
      } catch let error as RPCError {
        finish()
        throw report(error)
      } catch {
        finish()
        throw error
      }
      finish()
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

extension FeedbackExport.Format: ExpressibleByArgument {}

/// The progress bar of an upload, created once its total is known.
final class ProgressBox: Sendable {
  private let bar = Mutex<Progress?>(nil)
  func start(_ progress: Progress) { bar.withLock { $0 = progress } }
  func startOnce(_ progress: @autoclosure () -> Progress) {
    bar.withLock { if $0 == nil { $0 = progress() } }
  }
  func update(_ done: UInt64) { bar.withLock { $0 }?.update(done) }
  func finish() { bar.withLock { $0 }?.finish() }
}
