import AlignStore
import AlignTestSupport
import Foundation
import Synchronization
import Testing

/// The `alignstore-crash-child` executable, beside the test bundle in the products folder.
enum CrashChild {
  static var executable: URL {
    let products: URL
    if let override = ProcessInfo.processInfo.environment["ALIGND_PRODUCTS_DIR"] {
      products = URL(fileURLWithPath: override)
    } else {
      products = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        .deletingLastPathComponent()
    }
    return products.appendingPathComponent("alignstore-crash-child")
  }
}

/// A running crash child whose stdout lines arrive as a stream.
final class ChildProcess: Sendable {
  let process: Process
  let lines: AsyncStream<String>
  let input = Pipe()
  private let errors = ErrorText()

  /// What the child wrote to stderr so far.
  var errorOutput: String { errors.text.withLock { $0 } }

  init(arguments: [String]) throws {
    let executable = CrashChild.executable
    guard FileManager.default.isExecutableFile(atPath: executable.path) else {
      throw TestSetupError(
        "\(executable.path) is missing: build the alignstore-crash-child product with the tests")
    }
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardInput = input
    let errorPipe = Pipe()
    process.standardError = errorPipe
    let (lines, continuation) = AsyncStream.makeStream(of: String.self)
    let buffer = Mutex("")
    self.process = process
    self.lines = lines
    let errors = self.errors
    try process.run()
    PipeReader.readToEnd(pipe.fileHandleForReading) { data in
      let complete = buffer.withLock { text -> [String] in
        text += String(decoding: data, as: UTF8.self)
        var parts = text.components(separatedBy: "\n")
        text = parts.removeLast()
        return parts
      }
      for line in complete { continuation.yield(line) }
    } onEnd: {
      continuation.finish()
    }
    PipeReader.readToEnd(errorPipe.fileHandleForReading) { data in
      errors.text.withLock { $0 += String(decoding: data, as: UTF8.self) }
    } onEnd: {}
  }

  func kill() { Foundation.kill(process.processIdentifier, SIGKILL) }

  /// Lets the child append its next batch.
  func proceed() { try? input.fileHandleForWriting.write(contentsOf: Data("next\n".utf8)) }

  /// Ends the pacing: the child appends to the end without waiting.
  func unpace() { try? input.fileHandleForWriting.close() }

  /// Waits for the process to exit and returns how it ended.
  func waitForExit() async -> (status: Int32, killed: Bool) {
    while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    return (process.terminationStatus, process.terminationReason == .uncaughtSignal)
  }
}

/// Text collected from a pipe.
final class ErrorText: Sendable {
  let text = Mutex("")
}

@Suite("FeedbackStore: SIGKILL in the middle of appends", .timeLimit(.minutes(20)))
struct CrashTests {
  /// Checks the store: every acknowledged record is there exactly once, nothing is doubled,
  /// ids increase. Returns how many records are stored.
  static func check(_ store: any FeedbackStore, acknowledged: Int) async throws -> Int {
    var keys: [String: Int] = [:]
    var lastID: Int64 = 0
    for try await page in store.exportPages(FeedbackFilter(), pageSize: 500) {
      for row in page {
        #expect(row.id > lastID)
        lastID = row.id
        keys[row.item.idempotencyKey, default: 0] += 1
      }
    }
    let doubled = keys.filter { $0.value > 1 }.keys.sorted()
    #expect(doubled.isEmpty, "stored twice: \(doubled.prefix(5))")
    let missing = (0..<acknowledged).filter { keys["crash-\($0)"] == nil }
    #expect(missing.isEmpty, "acknowledged but missing: \(missing.prefix(5))")
    return keys.count
  }

  @Test(
    "a child killed with SIGKILL 10 times mid-append loses and doubles no acknowledged record",
    arguments: StoreBackend.enabled)
  func sigkillTenTimes(backend: StoreBackend) async throws {
    let total = 4000
    let batch = 20
    switch backend {
    case .sqlite:
      let folder = try TemporaryFolder()
      defer { folder.remove() }
      try await run(backend: "sqlite", location: folder.url.path, total: total, batch: batch) {
        let store = try SQLiteFeedbackStore(dataDirectory: folder.url)
        defer { try? store.close() }
        return try await Self.check(store, acknowledged: $0)
      }
    case .postgres:
      try await PostgresTestDatabase.withSchema { url in
        try await run(backend: "postgres", location: url, total: total, batch: batch) {
          let store = try await PostgresFeedbackStore(
            url: url, configuration: PostgresTestDatabase.configuration)
          do {
            let count = try await Self.check(store, acknowledged: $0)
            await store.close()
            return count
          } catch {
            await store.close()
            throw error
          }
        }
      }
    }
  }

  private func run(
    backend: String, location: String, total: Int, batch: Int,
    check: (Int) async throws -> Int
  ) async throws {
    var acknowledged = 0
    var kills = 0
    var generator = SystemRandomNumberGenerator()
    for round in 0..<10 {
      // Resend a few acknowledged records too, as a client unsure of its last ack would.
      let from = max(0, acknowledged - 7)
      let child = try ChildProcess(arguments: [
        backend, location, "\(from)", "\(total)", "\(batch)",
      ])
      let killAfter = Int.random(in: 3...12, using: &generator)
      var acks = 0
      for await line in child.lines {
        guard line.hasPrefix("ack "), let n = Int(line.dropFirst(4)) else { continue }
        acknowledged = max(acknowledged, n)
        acks += 1
        child.proceed()
        if acks == killAfter {
          // Kill while the next batch is being appended (or about to be).
          try? await Task.sleep(for: .microseconds(Int.random(in: 0...3000, using: &generator)))
          child.kill()
          break
        }
      }
      let exit = await child.waitForExit()
      #expect(
        exit.killed,
        "round \(round): the child exited by itself (\(exit.status)): \(child.errorOutput)")
      if exit.killed { kills += 1 }
      let stored = try await check(acknowledged)
      // At most the batch in flight when the kill landed may be stored beyond the last ack read.
      #expect(stored >= acknowledged)
    }
    #expect(kills == 10)
    #expect(acknowledged < total, "the test must kill before the end")

    // Finish the upload from the last acknowledgement; then everything is there exactly once.
    let child = try ChildProcess(arguments: [
      backend, location, "\(acknowledged)", "\(total)", "\(batch)",
    ])
    child.unpace()
    for await _ in child.lines {}
    let exit = await child.waitForExit()
    #expect(exit.status == 0 && !exit.killed, "\(child.errorOutput)")
    #expect(try await check(total) == total)
  }
}
