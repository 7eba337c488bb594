import AlignAPI
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

/// Paths of the repository and the built binaries, found from the test binary's location.
enum TestPaths {
  static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  /// The folder holding the built products (the test bundle sits beside `alignd`).
  static var productsFolder: URL {
    if let override = ProcessInfo.processInfo.environment["ALIGND_PRODUCTS_DIR"] {
      return URL(fileURLWithPath: override)
    }
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return executable.deletingLastPathComponent()
  }

  static var alignd: URL { productsFolder.appendingPathComponent("alignd") }
  static var alignctl: URL { productsFolder.appendingPathComponent("alignctl") }

  static var modelsDir: URL {
    if let override = ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"] {
      return URL(fileURLWithPath: override)
    }
    return repositoryRoot.appendingPathComponent("models")
  }

  static func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("alignd-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }
}

struct ServerStartError: Error, CustomStringConvertible {
  var description: String
}

/// A real `alignd` process on a free loopback port, with its stderr captured.
final class ServerProcess: Sendable {
  let process: Process
  let port: Int
  /// The HTTP gateway's port (a free one unless the test passes `--http-port`).
  let httpPort: Int
  private let output: LockedText

  /// Starts alignd with `arguments` (after `serve`) and waits until it listens.
  init(
    arguments: [String] = [], environment: [String: String] = [:], defaultPort: Bool = false,
    dataDir: String? = nil, timeout: Duration = .seconds(60)
  ) async throws {
    let process = Process()
    process.executableURL = TestPaths.alignd
    let dataDir = try dataDir ?? TestPaths.temporaryFolder().path
    // Test servers run side by side (suites run in parallel): a smaller KV cache than the default
    // 16384 tokens (~750 MB) keeps their memory bounded, unless a test sets its own.
    let cache = arguments.contains("--kv-cache-tokens") ? [] : ["--kv-cache-tokens", "4096"]
    // Servers run side by side: the HTTP gateway takes a free port too unless the test names one.
    let http = arguments.contains("--http-port") ? [] : ["--http-port", "0"]
    // The policy quality gate's prompts straight from the repository (the models folder may not
    // have them installed yet: scripts/install-judges.sh copies them).
    let policyGate =
      arguments.contains("--policy-gate-file")
      ? []
      : ["--policy-gate-file", TestPaths.repositoryRoot.appendingPathComponent("Models/eval/policy-eval-prompts.jsonl").path]
    process.arguments =
      ["serve"] + (defaultPort ? [] : ["--port", "0"]) + http
      + ["--models-dir", TestPaths.modelsDir.path, "--data-dir", dataDir] + cache + policyGate + arguments
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ALIGND_") }
    env.merge(environment) { $1 }
    process.environment = env
    let pipe = Pipe()
    process.standardError = pipe
    process.standardOutput = FileHandle.nullDevice
    let output = LockedText()
    let (lines, continuation) = AsyncStream.makeStream(of: String.self)
    try process.run()
    PipeReader.readToEnd(pipe.fileHandleForReading, name: "alignd-log-reader") { data in
      let text = String(decoding: data, as: UTF8.self)
      output.append(text)
      continuation.yield(text)
    } onEnd: {
      continuation.finish()
    }
    self.process = process
    self.output = output

    // Wait for the "alignd listening" log lines (gRPC and HTTP) and read the ports from them.
    let found: (Int, Int)? = try await withThrowingTaskGroup(of: (Int, Int)?.self) { group in
      group.addTask {
        var buffer = ""
        for await chunk in lines {
          buffer += chunk
          if let port = Self.listeningPort(in: buffer), let http = Self.listeningPort(in: buffer, protocol: "http") {
            return (port, http)
          }
        }
        return nil
      }
      group.addTask {
        try await Task.sleep(for: timeout)
        return nil
      }
      let first = try await group.next() ?? nil
      group.cancelAll()
      return first
    }
    guard let (port, httpPort) = found else {
      if process.isRunning { process.terminate() }
      throw ServerStartError(description: "alignd did not start listening:\n\(output.text)")
    }
    self.port = port
    self.httpPort = httpPort
  }

  /// The port of the `alignd listening` line of `protocol` (gRPC by default).
  static func listeningPort(in log: String, protocol kind: String = "grpc") -> Int? {
    for line in log.split(separator: "\n")
    where line.contains("alignd listening") && line.contains("protocol=\(kind)") {
      // address=[IPv4]127.0.0.1/127.0.0.1:PORT
      guard let range = line.range(of: "address=") else { continue }
      let rest = line[range.upperBound...].prefix { $0 != " " }
      if let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) {
        return port
      }
    }
    return nil
  }

  /// Everything the server logged so far.
  var log: String { output.text }

  /// Waits for the health check to answer SERVING (models loaded).
  func waitUntilServing(timeout: Duration = .seconds(120)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      let status = try? await withClient { client in
        try await Grpc_Health_V1_Health.Client(wrapping: client).check(.with { $0.service = "" }).status
      }
      if status == .serving { return }
      guard process.isRunning else {
        throw ServerStartError(description: "alignd exited while loading:\n\(log)")
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw ServerStartError(description: "alignd did not become SERVING in time:\n\(log)")
  }

  /// Runs `body` with a client connected to this server.
  func withClient<Result: Sendable>(
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
  ) async throws -> Result {
    try await withGRPCClient(
      transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
    ) { client in
      try await body(client)
    }
  }

  func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

  /// Waits for the process to exit and returns its status.
  func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32 {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
      if ContinuousClock.now > deadline {
        process.interrupt()
        kill(process.processIdentifier, SIGKILL)
        throw ServerStartError(description: "alignd did not exit in time:\n\(log)")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    return process.terminationStatus
  }

  deinit {
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
  }
}

/// Runs alignd to completion (for commands that should fail at once) and returns status and output.
/// The caller's ALIGND_* variables are left out so that only `environment` configures it.
func runAlignd(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stderr: String) {
  var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ALIGND_") }
  env.merge(environment) { $1 }
  let result = try runTool(TestPaths.alignd, arguments, environment: env)
  return (result.status, result.output)
}

/// Runs a command-line tool to completion and returns its status and combined stdout and stderr.
func runTool(
  _ tool: URL, _ arguments: [String], environment: [String: String]? = nil
) throws -> (status: Int32, output: String) {
  let process = Process()
  process.executableURL = tool
  process.arguments = arguments
  if let environment { process.environment = environment }
  let pipe = Pipe()
  process.standardError = pipe
  process.standardOutput = pipe
  try process.run()
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Text appended from a pipe's reader thread and read from tests.
final class LockedText: Sendable {
  private let storage = Mutex("")
  func append(_ text: String) { storage.withLock { $0 += text } }
  func replace(with text: String) { storage.withLock { $0 = text } }
  var text: String { storage.withLock { $0 } }
}
