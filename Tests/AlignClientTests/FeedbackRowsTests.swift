import AlignAPI
import AlignClient
import Foundation
import Testing

@Suite("Feedback rows: parsing, keys, export rows")
struct FeedbackRowsTests {
  let parser = FeedbackRowParser(defaultScale: (1, 5))

  func parse(_ line: String) -> Result<ParsedRow, RowError> { parser.record(Data(line.utf8)) }

  @Test("a TRL preference row becomes a preference record with a content key")
  func trlPreference() throws {
    let row = try parse(#"{"prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "x"}"#).get()
    guard case .preference(let p) = row.record.kind else {
      Issue.record("not a preference: \(row.record)")
      return
    }
    #expect(p.prompt == "2+2?" && p.chosen == "4" && p.rejected == "5")
    #expect(row.ignoredFields == ["source"])
    #expect(row.record.idempotencyKey.hasPrefix("sha256:"))
    // The same content gets the same key; other content another.
    let again = try parse(#"{"rejected": "5", "chosen": "4", "prompt": "2+2?"}"#).get()
    #expect(again.record.idempotencyKey == row.record.idempotencyKey)
    let other = try parse(#"{"prompt": "2+2?", "chosen": "4", "rejected": "6"}"#).get()
    #expect(other.record.idempotencyKey != row.record.idempotencyKey)
  }

  @Test("a rating row takes the default scale unless it names both ends")
  func rating() throws {
    let row = try parse(#"{"prompt": "p", "completion": "c", "rating": 4}"#).get()
    guard case .rating(let r) = row.record.kind else {
      Issue.record("not a rating")
      return
    }
    #expect(r.value == 4 && r.scaleMin == 1 && r.scaleMax == 5)
    let scaled = try parse(#"{"completion": "c", "rating": 0.5, "scale_min": 0, "scale_max": 1}"#).get()
    guard case .rating(let s) = scaled.record.kind else {
      Issue.record("not a rating")
      return
    }
    #expect(s.scaleMin == 0 && s.scaleMax == 1)
  }

  @Test(
    "bad rows say what is wrong",
    arguments: [
      ("not json", "not valid JSON"),
      ("[1, 2]", "expected a JSON object"),
      (#"{"prompt": "p"}"#, "cannot tell the kind"),
      (#"{"prompt": ["a"], "chosen": "c", "rejected": "r"}"#, "TRL conversational format"),
      (#"{"completion": "c", "rating": 3, "scale_min": 0}"#, "give both scale_min and scale_max"),
      (#"{"kind": "vote", "text": "t"}"#, "unknown feedback kind"),
      (#"{"kind": "comment", "text": "t", "id": ""}"#, "id is empty"),
      (#"{"kind": "comment", "text": "t", "created_at_unix_ms": -1}"#, "must not be negative"),
    ])
  func badRows(line: String, reason: String) {
    switch parse(line) {
    case .success(let row): Issue.record("accepted: \(row.record)")
    case .failure(let error): #expect(error.reason.contains(reason), "\(error.reason)")
    }
  }

  @Test("an exported full row reads back as the same record")
  func roundTrip() throws {
    let record = try parse(
      #"{"kind": "ranking", "prompt": "p", "completions": ["a", "b", "c"], "id": "k1", "annotator_id": "ann", "metadata": {"m": "v"}, "policy_version": "pol@1"}"#
    ).get().record
    let stored = Alignd_V1_StoredFeedback.with {
      $0.id = 7
      $0.receivedAtUnixMs = 1000
      $0.record = record
    }
    let row = FeedbackRowWriter.fullRow(stored)
    let data = try JSONSerialization.data(withJSONObject: row)
    let back = try parser.record(data).get()
    #expect(back.record == record)
    #expect(back.ignoredFields.isEmpty)
  }

  @Test("JSONLines numbers lines from 1, skips blank ones and reads a last line without newline")
  func jsonLines() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("lines-\(UUID().uuidString).jsonl").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try "a\n\n  \nb\r\nc".write(toFile: path, atomically: true, encoding: .utf8)
    var lines = try JSONLines(path: path)
    var read: [(Int, String)] = []
    while let (number, data) = try lines.next() { read.append((number, String(decoding: data, as: UTF8.self))) }
    #expect(read.map(\.0) == [1, 4, 5])
    #expect(read.map(\.1) == ["a", "b", "c"])
    #expect(try JSONLines.scan(path).lines == 5)
  }

  @Test("an export file appears only when the export completes")
  func sinkCommits() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString).jsonl").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let sink = try JSONLSink(path: path)
    try sink.write(["b": 2, "a": 1])
    #expect(!FileManager.default.fileExists(atPath: path))
    try sink.commit()
    #expect(try String(contentsOfFile: path, encoding: .utf8) == #"{"a":1,"b":2}"# + "\n")
    let abandoned = try JSONLSink(path: path + ".2")
    try abandoned.write(["x": 1])
    abandoned.abandon()
    #expect(!FileManager.default.fileExists(atPath: path + ".2"))
    #expect(!FileManager.default.fileExists(atPath: path + ".2.partial"))
  }

  @Test("export options become the request; bad ones are client errors")
  func exportRequest() throws {
    let export = try FeedbackExport(
      format: .trlChat, types: ["correction"], source: "app", since: "2026-11-29", until: "1800000000000",
      policyVersion: "p@1")
    #expect(export.training.format == .preferenceChat)
    #expect(export.training.feedback.sinceUnixMs == 1_795_910_400_000)
    #expect(export.training.feedback.untilUnixMs == 1_800_000_000_000)
    #expect(export.training.feedback.policyVersion == "p@1")
    #expect(export.training.feedbackTypes == ["correction"] && export.training.source == "app")
    let full = try FeedbackExport(format: .jsonl, kinds: ["rating"])
    #expect(full.request.kinds == [.rating])
    #expect(throws: ClientError.self) { try FeedbackExport(format: .trl, kinds: ["comment"]) }
    #expect(throws: ClientError.self) { try FeedbackExport(format: .jsonl, types: ["thumbs"]) }
    #expect(throws: ClientError.self) { try FeedbackExport(format: .kto, source: "web") }
    #expect(throws: ClientError.self) { try FeedbackExport(format: .jsonl, since: "yesterday") }
    #expect(throws: ClientError.self) { try FeedbackExport(format: .jsonl, since: "2000", until: "1000") }
  }

  @Test("server addresses and TLS options are checked before connecting")
  func connectionOptions() throws {
    let connection = try ServerConnection(address: "127.0.0.1:50051", apiKey: "k")
    #expect(connection.host == "127.0.0.1" && connection.port == 50051 && !connection.tls)
    #expect(connection.metadata[stringValues: "authorization"].first(where: { _ in true }) == "Bearer k")
    #expect(throws: ClientError.self) { try ServerConnection(address: "localhost") }
    #expect(throws: ClientError.self) { try ServerConnection(address: "h:0") }
    #expect(throws: ClientError.self) { try ServerConnection(address: "h:1", certFile: "/nonexistent") }
    #expect(throws: ClientError.self) { try ServerConnection(address: "h:1", caFile: "/nonexistent/ca.pem") }
  }
}
