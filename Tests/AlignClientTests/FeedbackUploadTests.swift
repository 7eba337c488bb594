import AlignAPI
import AlignClient
import Foundation
import GRPCCore
import GRPCInProcessTransport
import Synchronization
import Testing

/// An Admin service in process that stores feedback by idempotency key and acknowledges each
/// record; it can drop the stream once after a number of records, as a restarting server would.
final class FakeAdmin: Alignd_V1_Admin.SimpleServiceProtocol {
  struct State {
    var stored: [String: Alignd_V1_FeedbackRecord] = [:]
    var failAfter: Int?
    var streams = 0
  }
  let state: Mutex<State>

  init(failAfter: Int? = nil) { state = Mutex(State(failAfter: failAfter)) }

  var stored: Int { state.withLock { $0.stored.count } }
  var streams: Int { state.withLock { $0.streams } }

  func streamFeedback(
    request: RPCAsyncSequence<Alignd_V1_FeedbackRecord, any Error>, response: RPCWriter<Alignd_V1_FeedbackAck>,
    context: ServerContext
  ) async throws {
    state.withLock { $0.streams += 1 }
    var (stored, duplicates, through): (UInt64, UInt64, UInt64) = (0, 0, 0)
    for try await record in request {
      let outcome = state.withLock { state -> Bool? in
        if let limit = state.failAfter, state.stored.count >= limit {
          state.failAfter = nil
          return nil
        }
        return state.stored.updateValue(record, forKey: record.idempotencyKey) == nil
      }
      guard let isNew = outcome else { throw RPCError(code: .unavailable, message: "restarting") }
      if isNew { stored += 1 } else { duplicates += 1 }
      through = max(through, record.sequence)
      try await response.write(.with {
        $0.committedThrough = through
        $0.stored = stored
        $0.duplicates = duplicates
      })
    }
  }

  func exportFeedback(
    request: Alignd_V1_ExportFeedbackRequest, response: RPCWriter<Alignd_V1_StoredFeedback>, context: ServerContext
  ) async throws {
    let records = state.withLock { Array($0.stored.values) }.sorted { $0.sequence < $1.sequence }
    for (index, record) in records.enumerated() where UInt64(index + 1) > request.afterID {
      try await response.write(.with {
        $0.id = UInt64(index + 1)
        $0.record = record
      })
    }
  }

  /// Training rows the way a server sends them: one message per record, its stored id the cursor.
  /// The rows here are the records' prompts only; the row shapes are the server's (TrainingRowsTests).
  func exportTrainingData(
    request: Alignd_V1_ExportTrainingDataRequest, response: RPCWriter<Alignd_V1_TrainingRows>,
    context: ServerContext
  ) async throws {
    let records = state.withLock { Array($0.stored.values) }.sorted { $0.sequence < $1.sequence }
    for (index, record) in records.enumerated() where UInt64(index + 1) > request.afterCursor {
      try await response.write(.with {
        $0.rows = [#"{"prompt":"\#(record.preference.prompt)"}"#]
        $0.cursor = UInt64(index + 1)
      })
    }
  }

  func uploadCheckpoint(
    request: RPCAsyncSequence<Alignd_V1_UploadCheckpointRequest, any Error>, context: ServerContext
  ) async throws -> Alignd_V1_UploadCheckpointResponse { throw RPCError(code: .unimplemented, message: "") }
  func activateCheckpoint(request: Alignd_V1_ActivateCheckpointRequest, context: ServerContext) async throws
    -> Alignd_V1_RoleState
  { throw RPCError(code: .unimplemented, message: "") }
  func promoteCanary(request: Alignd_V1_PromoteCanaryRequest, context: ServerContext) async throws
    -> Alignd_V1_RoleState
  { throw RPCError(code: .unimplemented, message: "") }
  func rollback(request: Alignd_V1_RollbackRequest, context: ServerContext) async throws -> Alignd_V1_RoleState {
    throw RPCError(code: .unimplemented, message: "")
  }
  func listCheckpoints(request: Alignd_V1_ListCheckpointsRequest, context: ServerContext) async throws
    -> Alignd_V1_ListCheckpointsResponse
  { throw RPCError(code: .unimplemented, message: "") }
  func getStatus(request: Alignd_V1_GetStatusRequest, context: ServerContext) async throws
    -> Alignd_V1_GetStatusResponse
  { throw RPCError(code: .unimplemented, message: "") }
  func listGenerations(request: Alignd_V1_ListGenerationsRequest, context: ServerContext) async throws
    -> Alignd_V1_ListGenerationsResponse
  { throw RPCError(code: .unimplemented, message: "") }
  func getGeneration(request: Alignd_V1_GetGenerationRequest, context: ServerContext) async throws
    -> Alignd_V1_LoggedCompletion
  { throw RPCError(code: .unimplemented, message: "") }
  func exportGenerations(
    request: Alignd_V1_ExportGenerationsRequest, response: RPCWriter<Alignd_V1_LoggedCompletion>,
    context: ServerContext
  ) async throws { throw RPCError(code: .unimplemented, message: "") }
}

/// Hands out clients of an in-process server.
struct InProcessAdmin: AdminConnector {
  let client: GRPCClient<InProcessTransport.Client>

  func withAdmin<Result: Sendable>(
    _ body: (any Alignd_V1_Admin.ClientProtocol, Metadata) async throws -> Result
  ) async throws -> Result {
    try await body(Alignd_V1_Admin.Client(wrapping: client), [:])
  }

  /// Runs `body` against `service` served in process.
  static func with<T: Sendable>(_ service: FakeAdmin, _ body: (InProcessAdmin) async throws -> T) async throws -> T {
    let transport = InProcessTransport()
    let server = GRPCServer(transport: transport.server, services: [service])
    return try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.serve() }
      let result = try await withGRPCClient(transport: transport.client) { client in
        try await body(InProcessAdmin(client: client))
      }
      server.beginGracefulShutdown()
      try await group.waitForAll()
      return result
    }
  }
}

@Suite("Feedback upload and export through the client library")
struct FeedbackUploadTests {
  static func file(lines: Int, invalidAt: Set<Int> = []) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("upload-\(UUID().uuidString).jsonl").path
    let text = (1...lines).map { i in
      invalidAt.contains(i) ? "{broken" : #"{"prompt": "q\#(i)", "chosen": "good \#(i)", "rejected": "bad \#(i)"}"#
    }.joined(separator: "\n")
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  final class Events: Sendable {
    let all = Mutex<[FeedbackUpload.Event]>([])
    func record(_ event: FeedbackUpload.Event) { all.withLock { $0.append(event) } }
    var retries: Int { all.withLock { $0.filter { if case .retrying = $0 { true } else { false } }.count } }
    var resumedAfter: Int? {
      all.withLock { events in
        for case .resuming(let line, _) in events { return line }
        return nil
      }
    }
  }

  static func options(retries: Int) -> FeedbackUpload.Options {
    var options = FeedbackUpload.Options()
    options.window = 8
    options.retries = retries
    options.backoff = { _ in .milliseconds(1) }
    return options
  }

  @Test("a stream dropped midway is resent from the last acknowledgement: every row stored once")
  func retriesResume() async throws {
    let path = try Self.file(lines: 50, invalidAt: [7])
    defer { try? FileManager.default.removeItem(atPath: path) }
    let admin = FakeAdmin(failAfter: 20)
    let events = Events()
    let upload = FeedbackUpload(path: path, options: Self.options(retries: 3))
    let summary = try await InProcessAdmin.with(admin) { connector in
      try await upload.run(on: connector, report: events.record)
    }
    #expect(admin.stored == 49)
    #expect(admin.streams == 2)
    #expect(events.retries == 1)
    #expect(summary.totals.invalidRows == 1)
    #expect(summary.rejections.map(\.line) == [7])
    #expect(summary.totals.stored + summary.totals.duplicates >= 49 - 20)
    #expect(!FileManager.default.fileExists(atPath: upload.progressPath), "a finished upload removes its progress")
  }

  @Test("an upload that gives up keeps its progress; a rerun resumes after the last acknowledged line")
  func rerunResumes() async throws {
    let path = try Self.file(lines: 40)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let admin = FakeAdmin(failAfter: 25)
    let first = FeedbackUpload(path: path, options: Self.options(retries: 0))
    await #expect(throws: RPCError.self) {
      try await InProcessAdmin.with(admin) { connector in try await first.run(on: connector) { _ in } }
    }
    let saved = try #require(UploadProgressFile.load(first.progressPath)).get()
    #expect(saved.committedLine == 25)

    let events = Events()
    let summary = try await InProcessAdmin.with(admin) { connector in
      try await FeedbackUpload(path: path, options: Self.options(retries: 0)).run(on: connector, report: events.record)
    }
    #expect(events.resumedAfter == 25)
    #expect(summary.resumedAfterLine == 25)
    #expect(admin.stored == 40)
    #expect(summary.totals.stored == 40)
  }

  @Test("an export writes every record once, in the chosen format")
  func export() async throws {
    let path = try Self.file(lines: 5)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let admin = FakeAdmin()
    let output = path + ".out"
    defer { try? FileManager.default.removeItem(atPath: output) }
    try await InProcessAdmin.with(admin) { connector in
      _ = try await FeedbackUpload(path: path, options: Self.options(retries: 0)).run(on: connector) { _ in }
      let counter = ExportCounter()
      try await FeedbackExport(format: .jsonl).run(on: connector, into: try JSONLSink(path: output), counter: counter)
      #expect(counter.records == 5 && counter.rows == 5)
      // A training format writes the server's rows as they come, one line each.
      let training = ExportCounter()
      try await FeedbackExport(format: .trl).run(on: connector, into: try JSONLSink(path: output + ".trl"), counter: training)
      #expect(training.records == 5 && training.rows == 5 && training.lastID == 5)
    }
    defer { try? FileManager.default.removeItem(atPath: output + ".trl") }
    let rows = try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n")
    #expect(rows.count == 5)
    #expect(rows.first?.contains(#""chosen":"good 1""#) == true)
    let trl = try String(contentsOfFile: output + ".trl", encoding: .utf8).split(separator: "\n")
    #expect(trl.count == 5 && trl.allSatisfy { $0.hasPrefix(#"{"prompt":""#) })
  }
}
