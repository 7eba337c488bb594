import AlignAPI
import AlignClient
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// `alignctl checkpoint …`: upload, list, activate, promote, rollback.
struct Checkpoint: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Manage checkpoints on a server (admin key).",
    subcommands: [Upload.self, List.self, Activate.self, Promote.self, Rollback.self])

  static func role(_ name: String) throws -> Alignd_V1_ModelRole {
    switch name {
    case "policy": return .policy
    case "reward": return .reward
    case "safety": return .safety
    default: throw ValidationError("--role must be policy, reward or safety, got '\(name)'")
    }
  }

  static func roleName(_ role: Alignd_V1_ModelRole) -> String {
    switch role {
    case .policy: return "policy"
    case .reward: return "reward"
    case .safety: return "safety"
    default: return "unspecified"
    }
  }

  /// Runs one role change (activate, promote, rollback) and prints the role's new state.
  static func change(
    _ remote: RemoteOptions,
    _ call: @escaping @Sendable (Alignd_V1_Admin.Client<HTTP2ClientTransport.Posix>, Metadata) async throws
      -> Alignd_V1_RoleState
  ) async throws {
    let state = try await withServer(remote) { client, metadata in try await call(.init(wrapping: client), metadata) }
    try printState(state, json: remote.json)
  }

  static func printState(_ state: Alignd_V1_RoleState, json: Bool) throws {
    if json {
      print(try state.jsonString())
      return
    }
    print("\(roleName(state.role)): active \(state.activeVersion.isEmpty ? "-" : state.activeVersion)")
    if !state.canaryVersion.isEmpty { print("  canary \(state.canaryVersion) at \(state.canaryPercent)%") }
    if !state.previousVersion.isEmpty { print("  previous \(state.previousVersion)") }
    for gate in state.gates { print("  gate \(gate.name): \(gate.passed ? "passed" : "FAILED") (\(gate.detail))") }
  }

  struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Upload a GGUF file, a Hugging Face folder or a reward-head folder.")
    @OptionGroup var remote: RemoteOptions
    @Argument(help: "A .gguf file, or a folder (tarred on the fly).") var path: String
    @Option(help: "policy, reward or safety.") var role: String
    @Option(help: "Checkpoint name (letters, digits, '.', '_', '-'); default: the file name.") var name: String?
    @Option(help: "Bytes per message.") var chunkBytes: Int = 1 << 20

    func run() async throws {
      var upload = CheckpointUpload(path: path, role: try Checkpoint.role(role), name: name)
      upload.chunkBytes = chunkBytes
      let connection = try remote.connection()
      let progress = ProgressBox()
      do {
        let info = try await usageErrors {
          try await upload.run(on: connection) { sent, total in
            progress.startOnce(Progress(total: total, label: "upload"))
            progress.update(sent)
          }
        }
        progress.finish()
        if remote.json {
          print(try info.jsonString())
        } else {
          print("uploaded \(info.version) (\(info.sizeBytes) bytes, \(Checkpoint.roleName(info.role)))")
        }
      } catch let error as RPCError {
        progress.finish()
        throw report(error)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List registered checkpoints.")
    @OptionGroup var remote: RemoteOptions
    @Option(help: "Only this role.") var role: String?

    func run() async throws {
      let role = try role.map(Checkpoint.role) ?? .unspecified
      let list = try await withServer(remote) { client, metadata in
        try await Alignd_V1_Admin.Client(wrapping: client).listCheckpoints(.with { $0.role = role }, metadata: metadata)
      }
      if remote.json {
        print(try list.jsonString())
        return
      }
      for c in list.checkpoints {
        let state = "\(c.state)".uppercased()
        print("\(Checkpoint.roleName(c.role))\t\(c.version)\t\(state)\t\(c.sizeBytes)\t\(c.failure)")
        if let figures = Self.evaluationSummary(c.evaluation) { print("\t\(figures)") }
      }
    }

    /// One line of the eval gate's record: the candidate's and the serving model's headline figures.
    static func evaluationSummary(_ json: String) -> String? {
      guard let record = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else { return nil }
      func headline(_ evaluation: Any?) -> String? {
        guard let e = evaluation as? [String: Any] else { return nil }
        if let overall = e["overall"] as? [String: Any], let accuracy = overall["accuracy"] as? Double {
          return String(format: "accuracy %.3f", accuracy)
        }
        if let recall = (e["harmful_recall"] as? [String: Any])?["rate"] as? Double,
          let fp = (e["benign_false_positives"] as? [String: Any])?["rate"] as? Double
        {
          return String(format: "harmful flagged %.3f, benign flagged %.3f", recall, fp)
        }
        return nil
      }
      guard let candidate = headline(record["candidate"]) else { return nil }
      var line = "eval gate \((record["passed"] as? Bool ?? false) ? "passed" : "failed"): \(candidate)"
      if let serving = headline(record["serving_evaluation"]) { line += " vs \(record["serving"] as? String ?? "serving") \(serving)" }
      return line
    }
  }

  struct Activate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Activate a checkpoint (all traffic, or a canary share).")
    @OptionGroup var remote: RemoteOptions
    @Option(help: "policy, reward or safety.") var role: String
    @Argument(help: "Version (name@sha12).") var version: String
    @Option(help: "Canary percentage 1-99 (0 = all traffic).") var canary: UInt32 = 0
    @Option(help: "Operation id (repeating it returns the first outcome).") var operationId: String = UUID().uuidString

    func run() async throws {
      let role = try Checkpoint.role(role)
      let request = Alignd_V1_ActivateCheckpointRequest.with {
        $0.role = role
        $0.version = version
        $0.canaryPercent = canary
        $0.operationID = operationId
      }
      try await Checkpoint.change(remote) { admin, metadata in try await admin.activateCheckpoint(request, metadata: metadata) }
    }
  }

  struct Promote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the canary serve all traffic.")
    @OptionGroup var remote: RemoteOptions
    @Option(help: "policy, reward or safety.") var role: String
    @Option(help: "Operation id.") var operationId: String = UUID().uuidString

    func run() async throws {
      let role = try Checkpoint.role(role)
      let request = Alignd_V1_PromoteCanaryRequest.with {
        $0.role = role
        $0.operationID = operationId
      }
      try await Checkpoint.change(remote) { admin, metadata in try await admin.promoteCanary(request, metadata: metadata) }
    }
  }

  struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Drop the canary, or return all traffic to a version (default: the previous one).")
    @OptionGroup var remote: RemoteOptions
    @Option(help: "policy, reward or safety.") var role: String
    @Option(help: "Version to return to.") var to: String = ""
    @Option(help: "Operation id.") var operationId: String = UUID().uuidString

    func run() async throws {
      let role = try Checkpoint.role(role)
      let request = Alignd_V1_RollbackRequest.with {
        $0.role = role
        $0.toVersion = to
        $0.operationID = operationId
      }
      try await Checkpoint.change(remote) { admin, metadata in try await admin.rollback(request, metadata: metadata) }
    }
  }
}

/// A progress bar on stderr (only when stderr is a terminal; silent otherwise so logs stay clean).
final class Progress: @unchecked Sendable {
  let total: UInt64
  let label: String
  private let enabled = isatty(STDERR_FILENO) != 0
  private var lastPercent = -1
  private let lock = NSLock()

  init(total: UInt64, label: String) {
    self.total = total
    self.label = label
  }

  func update(_ done: UInt64) {
    guard enabled else { return }
    let percent = total == 0 ? 100 : Int(done * 100 / total)
    lock.lock()
    defer { lock.unlock() }
    guard percent != lastPercent else { return }
    lastPercent = percent
    let filled = percent * 30 / 100
    let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
    FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(percent)% (\(done)/\(total))".utf8))
  }

  func finish() {
    guard enabled else { return }
    FileHandle.standardError.write(Data("\n".utf8))
  }
}
