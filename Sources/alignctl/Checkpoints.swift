import AlignAPI
import AlignStore
import ArgumentParser
import Crypto
import Foundation
import GRPCCore

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
      let role = try Checkpoint.role(role)
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw ValidationError("no such file or folder: \(path)")
      }
      var file = path
      var format = Alignd_V1_CheckpointFormat.gguf
      var temporary: String? = nil
      if isDirectory.boolValue {
        let manifest = URL(fileURLWithPath: path).appendingPathComponent("manifest.json").path
        format = FileManager.default.fileExists(atPath: manifest) ? .rewardHead : .hfSafetensorsTar
        let tar = FileManager.default.temporaryDirectory.appendingPathComponent("alignctl-\(UUID().uuidString).tar").path
        do {
          try TarWriter.archive(directory: path, to: tar)
        } catch {
          throw ValidationError("cannot tar \(path): \(error)")
        }
        file = tar
        temporary = tar
      }
      defer { if let temporary { try? FileManager.default.removeItem(atPath: temporary) } }
      let defaultName = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
      let (size, digest) = try Self.measure(file)
      let progress = Progress(total: size, label: "upload")
      let (uploadFile, uploadFormat) = (file, format)
      let chunk = max(4096, chunkBytes)
      do {
        let info = try await withServer(remote) { client, metadata in
          try await Alignd_V1_Admin.Client(wrapping: client).uploadCheckpoint(metadata: metadata) { writer in
            try await writer.write(.with {
              $0.header = .with {
                $0.role = role
                $0.name = name ?? defaultName
                $0.format = uploadFormat
                $0.sizeBytes = size
                $0.sha256 = digest
              }
            })
            guard let handle = FileHandle(forReadingAtPath: uploadFile) else {
              throw ValidationError("cannot read \(uploadFile)")
            }
            defer { try? handle.close() }
            var sent: UInt64 = 0
            while let data = try handle.read(upToCount: chunk), !data.isEmpty {
              try await writer.write(.with { $0.chunk = data })
              sent += UInt64(data.count)
              progress.update(sent)
            }
          }.checkpoint
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

    /// Size and SHA-256 of a file, read in chunks.
    static func measure(_ path: String) throws -> (UInt64, String) {
      guard let handle = FileHandle(forReadingAtPath: path) else { throw ValidationError("cannot read \(path)") }
      defer { try? handle.close() }
      var hasher = SHA256()
      var size: UInt64 = 0
      while let data = try handle.read(upToCount: 4 << 20), !data.isEmpty {
        hasher.update(data: data)
        size += UInt64(data.count)
      }
      return (size, hasher.finalize().map { String(format: "%02x", $0) }.joined())
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List registered checkpoints.")
    @OptionGroup var remote: RemoteOptions
    @Option(help: "Only this role.") var role: String?

    func run() async throws {
      let role = try role.map(Checkpoint.role) ?? .unspecified
      do {
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
        }
      } catch let error as RPCError {
        throw report(error)
      }
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
      do {
        let state = try await withServer(remote) { client, metadata in
          try await Alignd_V1_Admin.Client(wrapping: client).activateCheckpoint(
            .with {
              $0.role = role
              $0.version = version
              $0.canaryPercent = canary
              $0.operationID = operationId
            }, metadata: metadata)
        }
        try Checkpoint.printState(state, json: remote.json)
      } catch let error as RPCError {
        throw report(error)
      }
    }
  }

  struct Promote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the canary serve all traffic.")
    @OptionGroup var remote: RemoteOptions
    @Option(help: "policy, reward or safety.") var role: String
    @Option(help: "Operation id.") var operationId: String = UUID().uuidString

    func run() async throws {
      let role = try Checkpoint.role(role)
      do {
        let state = try await withServer(remote) { client, metadata in
          try await Alignd_V1_Admin.Client(wrapping: client).promoteCanary(
            .with {
              $0.role = role
              $0.operationID = operationId
            }, metadata: metadata)
        }
        try Checkpoint.printState(state, json: remote.json)
      } catch let error as RPCError {
        throw report(error)
      }
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
      do {
        let state = try await withServer(remote) { client, metadata in
          try await Alignd_V1_Admin.Client(wrapping: client).rollback(
            .with {
              $0.role = role
              $0.toVersion = to
              $0.operationID = operationId
            }, metadata: metadata)
        }
        try Checkpoint.printState(state, json: remote.json)
      } catch let error as RPCError {
        throw report(error)
      }
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
