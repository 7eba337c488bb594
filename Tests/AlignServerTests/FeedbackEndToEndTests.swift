import AlignAPI
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// StreamFeedback and ExportFeedback against the real alignd binary (SQLite store).
@Suite("Feedback over gRPC", .serialized)
struct FeedbackEndToEndTests {
  static func preference(_ i: Int, key: String? = nil) -> Alignd_V1_FeedbackRecord {
    .with {
      $0.sequence = UInt64(i)
      $0.idempotencyKey = key ?? "pref-\(i)"
      $0.annotatorID = "annotator-\(i % 3)"
      $0.versions = .with { $0.policy = "SmolLM2-test@\(i % 2)" }
      $0.metadata = ["batch": "e2e"]
      $0.preference = .with {
        $0.prompt = "Prompt \(i)"
        $0.chosen = "A helpful answer \(i)"
        $0.rejected = "An unhelpful answer \(i)"
      }
    }
  }

  @Test func streamedFeedbackIsAcknowledgedDeduplicatedAndExported() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      var records = (1...40).map { Self.preference($0) }
      records.append(Self.preference(41, key: "pref-7"))  // a resend of record 7 under a new sequence
      records.append(.with {  // a rating outside its scale
        $0.sequence = 42
        $0.idempotencyKey = "bad-rating"
        $0.rating = .with { $0.completion = "x"; $0.value = 9; $0.scaleMin = 1; $0.scaleMax = 5 }
      })
      records.append(.with { $0.sequence = 43; $0.idempotencyKey = "no-kind" })
      records.append(.with { $0.sequence = 44; $0.idempotencyKey = "c1"; $0.comment = .with { $0.text = "nice" } })
      let toSend = records

      let acks = try await admin.streamFeedback(
        requestProducer: { writer in
          for record in toSend { try await writer.write(record) }
        },
        onResponse: { response in
          var acks: [Alignd_V1_FeedbackAck] = []
          for try await ack in response.messages { acks.append(ack) }
          return acks
        })
      let last = try #require(acks.last)
      #expect(last.committedThrough == 44)
      #expect(last.stored == 41)  // 40 preferences + 1 comment
      #expect(last.duplicates == 1)
      let rejected = acks.flatMap(\.rejected)
      #expect(Set(rejected.map(\.sequence)) == [42, 43])
      #expect(rejected.allSatisfy { !$0.reason.isEmpty })
      // Acknowledgements only move forward.
      let through = acks.map(\.committedThrough)
      #expect(through == through.sorted())

      // Export everything, then with filters.
      func export(_ request: Alignd_V1_ExportFeedbackRequest) async throws -> [Alignd_V1_StoredFeedback] {
        try await admin.exportFeedback(request) { response in
          var all: [Alignd_V1_StoredFeedback] = []
          for try await item in response.messages { all.append(item) }
          return all
        }
      }
      let all = try await export(.init())
      #expect(all.count == 41)
      #expect(all.map(\.id) == all.map(\.id).sorted())
      #expect(all.first?.record.preference.chosen == "A helpful answer 1")
      #expect(all.first?.record.metadata["batch"] == "e2e")
      let comments = try await export(.with { $0.kinds = [.comment] })
      #expect(comments.map(\.record.comment.text) == ["nice"])
      let odd = try await export(.with { $0.policyVersion = "SmolLM2-test@1" })
      #expect(odd.count == 20)
      let page = try await export(.with { $0.afterID = all[9].id; $0.limit = 5 })
      #expect(page.map(\.id) == Array(all[10..<15].map(\.id)))

      let status = try await admin.getStatus(.init())
      #expect(status.feedbackCounts["preference"] == 40)
      #expect(status.feedbackCounts["comment"] == 1)

      // Resending everything (a client that lost its acknowledgements) stores nothing twice.
      let resent = try await admin.streamFeedback(
        requestProducer: { writer in
          for record in toSend where record.sequence <= 40 { try await writer.write(record) }
        },
        onResponse: { response in
          var last: Alignd_V1_FeedbackAck? = nil
          for try await ack in response.messages { last = ack }
          return last
        })
      #expect(resent?.stored == 0)
      #expect(resent?.duplicates == 40)
      #expect(try await export(.init()).count == 41)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  /// SIGKILL in the middle of a feedback stream, ten times in a row: after each restart the client
  /// resends everything after its last acknowledgement, and in the end every record is stored
  /// exactly once.
  @Test(arguments: TestEnvironment.storeKinds)
  func sigkillMidStreamLosesAndDoublesNothing(store: String) async throws {
    let dataDir = try TestPaths.temporaryFolder().path
    var storeArguments: [String] = []
    if store == "postgres" {
      let url = TestEnvironment.postgresURL
      // A schema of its own, so the test starts from an empty store.
      let schema = "e2e_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
      storeArguments = ["--store-url", url + (url.contains("?") ? "&" : "?") + "schema=\(schema)"]
    }
    let total = 800
    let records = (1...total).map { Self.preference($0) }
    var acknowledged = 0
    var kills = 0
    for _ in 0..<10 where acknowledged < total {
      let server = try await ServerProcess(arguments: storeArguments, dataDir: dataDir)
      try await server.waitUntilServing()
      let resumeFrom = acknowledged
      // Each trial sends at most `perTrial` records and then waits for the kill, so the kill always
      // lands mid-stream however large the store's commit batches grow on a loaded machine (when
      // everything was sent at once, one ack could cover all 800 records and end the trials early).
      let perTrial = 90
      let sendUpTo = min(total, resumeFrom + perTrial)
      let killAt = UInt64(min(resumeFrom + 30, sendUpTo))
      let lastAck = LockedText()
      let (killed, killedContinuation) = AsyncStream.makeStream(of: Void.self)
      do {
        try await server.withClient { client in
          let admin = Alignd_V1_Admin.Client(wrapping: client)
          try await admin.streamFeedback(
            requestProducer: { writer in
              for record in records[resumeFrom..<sendUpTo] { try await writer.write(record) }
              for await _ in killed {}  // until the kill (or the call's end cancels the wait)
            },
            onResponse: { response in
              for try await ack in response.messages {
                lastAck.replace(with: "\(ack.committedThrough)")
                if ack.committedThrough >= killAt {
                  server.signal(SIGKILL)
                  killedContinuation.finish()
                }
              }
            })
        }
      } catch {
        // The connection died with the server: expected. A stream that failed before the kill
        // (seen once on a loaded machine, cause unknown) is reported and the server killed, so the
        // trial still counts towards the loss/duplicate check below.
        if server.process.isRunning && (Int(lastAck.text) ?? 0) < Int(killAt) {
          FileHandle.standardError.write(Data("feedback stream failed before the kill: \(error)\n\(server.log)\n".utf8))
          server.signal(SIGKILL)
        }
      }
      killedContinuation.finish()
      let status = try await server.waitForExit()
      if status != 0 { kills += 1 }
      acknowledged = max(acknowledged, Int(lastAck.text) ?? 0)
    }
    #expect(kills >= 8, "the server must really have been killed mid-stream")

    // Finish the upload, then check the store.
    let server = try await ServerProcess(arguments: storeArguments, dataDir: dataDir)
    try await server.waitUntilServing()
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let resumeFrom = acknowledged
      let final = try await admin.streamFeedback(
        requestProducer: { writer in
          for record in records[resumeFrom...] { try await writer.write(record) }
        },
        onResponse: { response in
          var last: Alignd_V1_FeedbackAck? = nil
          for try await ack in response.messages { last = ack }
          return last
        })
      #expect(resumeFrom == total || final?.committedThrough == UInt64(total))
      let stored = try await admin.exportFeedback(.init()) { response in
        var keys: [String] = []
        for try await item in response.messages { keys.append(item.record.idempotencyKey) }
        return keys
      }
      #expect(stored.count == total, "stored \(stored.count) records for \(total) distinct keys")
      #expect(Set(stored).count == stored.count, "a record was stored twice")
      #expect(Set(stored) == Set(records.map(\.idempotencyKey)))
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }
}
