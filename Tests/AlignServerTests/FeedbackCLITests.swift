import Foundation
import Testing

/// `alignctl feedback upload` and `export`: the real alignctl binary against a real alignd.
@Suite("alignctl feedback", .serialized)
struct FeedbackCLITests {
  /// What an alignctl run printed and how it exited.
  struct Run {
    var status: Int32
    var stdout: String
    var stderr: String

    /// stdout parsed as one JSON object (the `--json` summary).
    func json() throws -> [String: Any] {
      let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8))
      return try #require(object as? [String: Any], "not a JSON object: \(stdout)\n\(stderr)")
    }
  }

  /// A started alignctl process; stdout and stderr go to files so neither pipe can fill up.
  final class CLIProcess: Sendable {
    let process: Process
    let stdoutURL: URL
    let stderrURL: URL

    init(_ arguments: [String], folder: URL) throws {
      let id = UUID().uuidString
      stdoutURL = folder.appendingPathComponent("alignctl-\(id).out")
      stderrURL = folder.appendingPathComponent("alignctl-\(id).err")
      _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
      _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
      let process = Process()
      process.executableURL = TestPaths.alignctl
      process.arguments = arguments
      process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ALIGND_") }
      process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
      process.standardError = try FileHandle(forWritingTo: stderrURL)
      try process.run()
      self.process = process
    }

    func wait(timeout: Duration = .seconds(180)) async throws -> Run {
      let deadline = ContinuousClock.now + timeout
      while process.isRunning {
        if ContinuousClock.now > deadline {
          kill(process.processIdentifier, SIGKILL)
          throw ServerStartError(description: "alignctl did not finish in time")
        }
        try await Task.sleep(for: .milliseconds(20))
      }
      return Run(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "")
    }

    deinit {
      if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
  }

  static func alignctl(_ arguments: [String], folder: URL) async throws -> Run {
    try await CLIProcess(arguments, folder: folder).wait()
  }

  static func address(_ server: ServerProcess) -> String { "127.0.0.1:\(server.port)" }

  /// One JSON object per line.
  static func jsonl(_ rows: [[String: Any]]) throws -> String {
    try rows.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self) }
      .joined(separator: "\n") + "\n"
  }

  /// Parses a JSONL file into objects.
  static func readJSONL(_ url: URL) throws -> [[String: Any]] {
    let text = try String(contentsOf: url, encoding: .utf8)
    return try text.split(separator: "\n").map {
      let object = try JSONSerialization.jsonObject(with: Data($0.utf8))
      return try #require(object as? [String: Any])
    }
  }

  /// String-valued fields of a row (what a TRL row is made of).
  static func strings(_ row: [String: Any]) -> [String: String] {
    row.compactMapValues { $0 as? String }
  }

  /// A TRL row's trainer columns (the server adds provenance columns trainers ignore).
  static func pair(_ row: [String: Any]) -> [String: String] {
    strings(row).filter { ["prompt", "chosen", "rejected"].contains($0.key) }
  }

  static func trlRow(_ i: Int) -> [String: Any] {
    [
      "prompt": "Prompt \(i): what is \"quoted\", ünïcødé and a\nnewline?",
      "chosen": "A careful answer \(i) 🙂",
      "rejected": "A careless answer \(i)",
    ]
  }

  static func int(_ value: Any?) -> Int? { (value as? NSNumber)?.intValue }

  @Test func mixedUploadReportsEachRowAndARerunStoresNothingTwice() async throws {
    let folder = try TestPaths.temporaryFolder()
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let file = folder.appendingPathComponent("feedback.jsonl")
    var lines: [String] = []
    for i in 1...5 { lines.append(try Self.jsonl([Self.trlRow(i)]).trimmingCharacters(in: .newlines)) }  // lines 1-5
    lines.append(#"{"prompt": "Rate this", "completion": "An answer", "rating": 4}"#)  // 6: scale 1..5 by default
    lines.append(#"{"prompt": "Rate that", "completion": "Another", "rating": 0.7, "scale_min": 0, "scale_max": 1}"#)  // 7
    lines.append(#"{"prompt": "Rate high", "completion": "Too much", "rating": 9}"#)  // 8: outside 1..5, server rejects
    lines.append(#"{"prompt": "broken", "chosen": "#)  // 9: not JSON
    lines.append("")  // 10: blank, skipped
    lines.append(#"{"prompt": "No chosen", "rejected": "only rejected"}"#)  // 11: missing field
    lines.append(lines[0])  // 12: duplicate of line 1
    lines.append(
      #"{"id": "explicit-1", "prompt": "P", "chosen": "yes", "rejected": "no", "annotator_id": "ann-7", "#
        + #""policy_version": "SmolLM2@abc", "metadata": {"source": "cli-test"}, "score_chosen": 9}"#)  // 13
    try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)

    let first = try await Self.alignctl(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--json"], folder: folder)
    #expect(first.status == 1, "rejections exit with 1: \(first.stderr)")
    let summary = try first.json()
    #expect(Self.int(summary["stored"]) == 8)
    #expect(Self.int(summary["duplicates"]) == 1)
    #expect(Self.int(summary["rejected"]) == 3)
    #expect(Self.int(summary["invalid_rows"]) == 2)
    #expect(Self.int(summary["rejected_by_server"]) == 1)
    let rejections = try #require(summary["rejections"] as? [[String: Any]])
    #expect(rejections.compactMap { Self.int($0["line"]) } == [8, 9, 11])
    #expect(first.stderr.contains("feedback.jsonl:8: rejected by the server: rating.value 9.0 is outside the scale"), "\(first.stderr)")
    #expect(first.stderr.contains("feedback.jsonl:9: not valid JSON"), "\(first.stderr)")
    #expect(first.stderr.contains(#"feedback.jsonl:11: missing field "chosen""#), "\(first.stderr)")
    #expect(first.stderr.contains(#"ignored field "score_chosen""#), "\(first.stderr)")
    #expect(!FileManager.default.fileExists(atPath: file.path + ".alignctl-progress"), "a finished upload leaves no progress file")

    // The same file again: everything that was stored is a duplicate now.
    let second = try await Self.alignctl(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--json"], folder: folder)
    #expect(second.status == 1)
    let again = try second.json()
    #expect(Self.int(again["stored"]) == 0)
    #expect(Self.int(again["duplicates"]) == 9)
    #expect(Self.int(again["rejected"]) == 3)

    // The store holds each record once, with every field given.
    let exportFile = folder.appendingPathComponent("all.jsonl")
    let export = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--output", exportFile.path], folder: folder)
    #expect(export.status == 0, "\(export.stderr)")
    let stored = try Self.readJSONL(exportFile)
    #expect(stored.count == 8)
    let keys = stored.compactMap { $0["id"] as? String }
    #expect(Set(keys).count == 8)
    #expect(keys.filter { $0.hasPrefix("sha256:") }.count == 7)
    let explicit = try #require(stored.first { $0["id"] as? String == "explicit-1" })
    #expect(explicit["annotator_id"] as? String == "ann-7")
    #expect(explicit["policy_version"] as? String == "SmolLM2@abc")
    #expect(explicit["metadata"] as? [String: String] == ["source": "cli-test"])
    #expect(explicit["score_chosen"] == nil)
    let ratings = stored.filter { $0["kind"] as? String == "rating" }
    #expect(ratings.map { ($0["rating"] as? NSNumber)?.doubleValue } == [4, 0.7])
    #expect(ratings.map { ($0["scale_max"] as? NSNumber)?.doubleValue } == [5, 1])
    #expect(export.stderr.contains("exported 8 records"), "\(export.stderr)")

    // Filters: by kind, by version, by receive time.
    let onlyRatings = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--kind", "rating"], folder: folder)
    #expect(onlyRatings.stdout.split(separator: "\n").count == 2)
    let byVersion = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--policy-version", "SmolLM2@abc"], folder: folder)
    #expect(byVersion.stdout.split(separator: "\n").count == 1)
    let future = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--since", "2100-01-01T00:00:00Z"], folder: folder)
    #expect(future.status == 0)
    #expect(future.stdout.isEmpty)
    let past = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--until", "2000-01-01"], folder: folder)
    #expect(past.status == 0, "\(past.stderr)")
    #expect(past.stdout.isEmpty)
    let everything = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--since", "946684800000"], folder: folder)
    #expect(everything.stdout.split(separator: "\n").count == 8)
    let badTime = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--since", "yesterday"], folder: folder)
    #expect(badTime.status == 64)
    #expect(badTime.stderr.contains("--since must be ISO 8601"), "\(badTime.stderr)")
    let badKind = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--format", "trl", "--kind", "rating"], folder: folder)
    #expect(badKind.status == 64)

    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func trlAndFullExportsRoundTrip() async throws {
    let folder = try TestPaths.temporaryFolder()
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let preferences = (1...30).map(Self.trlRow)
    var rows = preferences
    rows.append(["prompt": "Rate", "completion": "Fine", "rating": 3, "annotator_id": "a1", "created_at_unix_ms": 1_700_000_000_000])
    rows.append(["kind": "ranking", "prompt": "Rank", "completions": ["best", "middle", "worst"], "id": "rank-1"])
    rows.append(["kind": "safety_label", "text": "Some text", "categories": ["violence"], "response_id": "resp-1"])
    rows.append(["kind": "comment", "text": "Nice", "metadata": ["k": "v"], "reward_version": "rm@1"])
    let file = folder.appendingPathComponent("input.jsonl")
    try Self.jsonl(rows).write(to: file, atomically: true, encoding: .utf8)
    let upload = try await Self.alignctl(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--json"], folder: folder)
    #expect(upload.status == 0, "\(upload.stderr)")
    #expect(Self.int(try upload.json()["stored"]) == 34)

    // TRL, preferences only: exactly the rows uploaded, in order.
    let trlFile = folder.appendingPathComponent("trl.jsonl")
    let trl = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--format", "trl", "--type", "preference",
       "--output", trlFile.path], folder: folder)
    #expect(trl.status == 0, "\(trl.stderr)")
    let exported = try Self.readJSONL(trlFile)
    #expect(exported.map(Self.pair) == preferences.map(Self.strings))
    #expect(exported.allSatisfy { $0["source"] as? String == "admin" && $0["feedback_type"] as? String == "preference" })

    // TRL with rankings: each ranking adds its ordered pairs.
    let withRankings = try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--format", "trl"], folder: folder)
    let pairs = withRankings.stdout.split(separator: "\n").suffix(3).map {
      Self.pair((try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) ?? [:])
    }
    #expect(pairs == [
      ["prompt": "Rank", "chosen": "best", "rejected": "middle"],
      ["prompt": "Rank", "chosen": "best", "rejected": "worst"],
      ["prompt": "Rank", "chosen": "middle", "rejected": "worst"],
    ])
    #expect(withRankings.stderr.contains("exported 31 records as 33 trl rows"), "\(withRankings.stderr)")

    // The TRL export uploaded again: the content keys match, so all duplicates.
    let reupload = try await Self.alignctl(
      ["feedback", "upload", trlFile.path, "--server", Self.address(server), "--json"], folder: folder)
    #expect(reupload.status == 0)
    #expect(Self.int(try reupload.json()["duplicates"]) == 30)
    #expect(Self.int(try reupload.json()["stored"]) == 0)

    // Full export → a second, fresh server → the same records.
    let fullFile = folder.appendingPathComponent("full.jsonl")
    #expect(try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(server), "--format", "jsonl", "--output", fullFile.path],
      folder: folder).status == 0)
    let other = try await ServerProcess()
    try await other.waitUntilServing()
    let copy = try await Self.alignctl(
      ["feedback", "upload", fullFile.path, "--server", Self.address(other), "--json"], folder: folder)
    #expect(copy.status == 0, "\(copy.stderr)")
    #expect(Self.int(try copy.json()["stored"]) == 34)
    #expect(!copy.stderr.contains("ignored field"), "export fields are all understood: \(copy.stderr)")
    let copiedFile = folder.appendingPathComponent("copied.jsonl")
    #expect(try await Self.alignctl(
      ["feedback", "export", "--server", Self.address(other), "--output", copiedFile.path], folder: folder).status == 0)
    func comparable(_ url: URL) throws -> [NSDictionary] {
      try Self.readJSONL(url).map { row in
        var row = row
        row["stored_id"] = nil
        row["received_at_unix_ms"] = nil
        return row as NSDictionary
      }
    }
    let original = try comparable(fullFile)
    #expect(original.count == 34)
    #expect(try comparable(copiedFile) == original)
    let rating = try #require(original.first { $0["kind"] as? String == "rating" })
    #expect(Self.int(rating["created_at_unix_ms"]) == 1_700_000_000_000)

    for s in [server, other] {
      s.signal(SIGTERM)
      _ = try await s.waitForExit()
    }
  }

  /// Rows "row-1" … "row-N" as TRL preferences with explicit ids.
  static func numberedRows(_ count: Int) throws -> String {
    try jsonl((1...count).map { i in
      var row = trlRow(i)
      row["id"] = "row-\(i)"
      return row
    })
  }

  /// Polls the progress file until it says at least `line` is committed.
  static func waitForCommitted(_ path: String, atLeast line: Int, timeout: Duration = .seconds(120)) async throws -> Int {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let committed = committedLine(path), committed >= line { return committed }
      try await Task.sleep(for: .milliseconds(2))
    }
    throw ServerStartError(description: "the upload did not reach line \(line) in time")
  }

  /// The committed line a progress file records, if it exists.
  static func committedLine(_ path: String) -> Int? {
    guard let data = FileManager.default.contents(atPath: path),
      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return nil }
    return int(object["committed_line"])
  }

  static func storedKeys(_ server: ServerProcess, folder: URL) async throws -> [String] {
    let out = folder.appendingPathComponent("keys-\(UUID().uuidString).jsonl")
    let export = try await alignctl(["feedback", "export", "--server", address(server), "--output", out.path], folder: folder)
    #expect(export.status == 0, "\(export.stderr)")
    return try readJSONL(out).compactMap { $0["id"] as? String }
  }

  /// SIGKILL the server mid-upload with retries off: alignctl fails with UNAVAILABLE and keeps
  /// its progress; after a restart (on a new port) a rerun resumes after the last acknowledged
  /// line and every row is stored exactly once.
  @Test func rerunAfterServerKillResumesFromLastAcknowledgement() async throws {
    let folder = try TestPaths.temporaryFolder()
    let dataDir = try TestPaths.temporaryFolder().path
    let total = 6000
    let file = folder.appendingPathComponent("big.jsonl")
    try Self.numberedRows(total).write(to: file, atomically: true, encoding: .utf8)
    let progressPath = file.path + ".alignctl-progress"

    let server = try await ServerProcess(dataDir: dataDir)
    try await server.waitUntilServing()
    let upload = try CLIProcess(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--batch", "8", "--retries", "0", "--json"],
      folder: folder)
    _ = try await Self.waitForCommitted(progressPath, atLeast: 200)
    server.signal(SIGKILL)
    _ = try await server.waitForExit()
    let failed = try await upload.wait()
    #expect(failed.status == 24, "UNAVAILABLE (14) exits with 24: \(failed.stderr)")
    let saved = try #require(Self.committedLine(progressPath), "the progress file survives the failure")
    #expect(saved >= 200 && saved < total, "killed mid-upload at line \(saved)")
    #expect(failed.stderr.contains("rerun to resume after line"), "\(failed.stderr)")

    let restarted = try await ServerProcess(dataDir: dataDir)
    try await restarted.waitUntilServing()
    let rerun = try await Self.alignctl(
      ["feedback", "upload", file.path, "--server", Self.address(restarted), "--json"], folder: folder)
    #expect(rerun.status == 0, "\(rerun.stderr)")
    #expect(rerun.stderr.contains("resuming \(file.path) after line \(saved)"), "\(rerun.stderr)")
    let summary = try rerun.json()
    #expect(Self.int(summary["resumed_after_line"]) == saved)
    // Rows committed but not acknowledged before the kill come back as duplicates.
    #expect((Self.int(summary["stored"]) ?? 0) + (Self.int(summary["duplicates"]) ?? 0) == total)
    #expect((Self.int(summary["duplicates"]) ?? total) <= 8, "only the unacknowledged window was resent")
    #expect(!FileManager.default.fileExists(atPath: progressPath))

    let keys = try await Self.storedKeys(restarted, folder: folder)
    #expect(keys.count == total, "stored \(keys.count) records for \(total) rows")
    #expect(Set(keys) == Set((1...total).map { "row-\($0)" }))
    restarted.signal(SIGTERM)
    _ = try await restarted.waitForExit()
  }

  /// SIGKILL the server mid-upload and restart it on the same port: the running alignctl retries
  /// with backoff, resends what was not acknowledged and finishes; every row is stored once.
  @Test func uploadRetriesThroughAServerRestart() async throws {
    let folder = try TestPaths.temporaryFolder()
    let dataDir = try TestPaths.temporaryFolder().path
    let total = 3000
    let file = folder.appendingPathComponent("retry.jsonl")
    try Self.numberedRows(total).write(to: file, atomically: true, encoding: .utf8)

    let server = try await ServerProcess(dataDir: dataDir)
    try await server.waitUntilServing()
    let port = server.port
    let upload = try CLIProcess(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--batch", "8", "--retries", "10", "--json"],
      folder: folder)
    _ = try await Self.waitForCommitted(file.path + ".alignctl-progress", atLeast: 200)
    server.signal(SIGKILL)
    _ = try await server.waitForExit()
    let restarted = try await ServerProcess(
      arguments: ["--port", "\(port)"], defaultPort: true, dataDir: dataDir)
    try await restarted.waitUntilServing()

    let run = try await upload.wait()
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stderr.contains("unavailable"), "the kill was noticed and retried: \(run.stderr)")
    let summary = try run.json()
    #expect((Self.int(summary["stored"]) ?? 0) + (Self.int(summary["duplicates"]) ?? 0) == total)
    let keys = try await Self.storedKeys(restarted, folder: folder)
    #expect(keys.count == total)
    #expect(Set(keys) == Set((1...total).map { "row-\($0)" }))
    restarted.signal(SIGTERM)
    _ = try await restarted.waitForExit()
  }

  /// Ctrl-C (SIGINT) on alignctl mid-upload: the rerun resumes from the saved acknowledgement.
  @Test func interruptedUploadResumesOnRerun() async throws {
    let folder = try TestPaths.temporaryFolder()
    let total = 6000
    let file = folder.appendingPathComponent("interrupted.jsonl")
    try Self.numberedRows(total).write(to: file, atomically: true, encoding: .utf8)
    let progressPath = file.path + ".alignctl-progress"
    let server = try await ServerProcess()
    try await server.waitUntilServing()

    let upload = try CLIProcess(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--batch", "8"], folder: folder)
    _ = try await Self.waitForCommitted(progressPath, atLeast: 200)
    upload.process.interrupt()
    let interrupted = try await upload.wait()
    #expect(interrupted.status != 0)
    let saved = try #require(Self.committedLine(progressPath))
    #expect(saved >= 200 && saved < total, "interrupted mid-upload at line \(saved)")

    let rerun = try await Self.alignctl(
      ["feedback", "upload", file.path, "--server", Self.address(server), "--json"], folder: folder)
    #expect(rerun.status == 0, "\(rerun.stderr)")
    #expect(Self.int(try rerun.json()["resumed_after_line"]) == saved)
    let keys = try await Self.storedKeys(server, folder: folder)
    #expect(keys.count == total)
    #expect(Set(keys) == Set((1...total).map { "row-\($0)" }))
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }
}
