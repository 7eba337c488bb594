import Foundation
import Crypto
import Synchronization

/// The versions of the models that produce answers; stamped on every response.
public struct ModelVersions: Sendable, Equatable {
  public var policy: String
  public var reward: String
  public var safety: String

  public init(policy: String = "", reward: String = "", safety: String = "") {
    self.policy = policy
    self.reward = reward
    self.safety = safety
  }
}

/// A problem loading a model; the message names the file and the cause.
public struct ModelLoadError: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// An immutable, fully loaded policy checkpoint. Requests capture the snapshot current at
/// admission and keep it until they finish, so a swap never changes the weights under them.
public final class PolicySnapshot: Sendable {
  /// "name@<first 12 hex digits of the file's SHA-256>".
  public let version: String
  public let path: String
  public let sizeBytes: UInt64
  public let sha256: String

  init(version: String, path: String, sizeBytes: UInt64, sha256: String) {
    self.version = version
    self.path = path
    self.sizeBytes = sizeBytes
    self.sha256 = sha256
  }
}

/// Holds the active snapshot of each model role and publishes new ones atomically.
public final class ModelHost: Sendable {
  private let policySlot = Mutex<PolicySnapshot?>(nil)

  public init() {}

  /// The active policy snapshot, if loaded. Load it once per request.
  public var policy: PolicySnapshot? { policySlot.withLock { $0 } }

  /// The versions currently active.
  public var versions: ModelVersions {
    ModelVersions(policy: policy?.version ?? "")
  }

  /// Bytes of model files loaded.
  public var loadedBytes: UInt64 { policy?.sizeBytes ?? 0 }

  /// Loads a policy checkpoint and makes it active.
  /// - Throws: ``ModelLoadError`` when the file is missing or unreadable.
  public func loadPolicy(path: String) async throws {
    let snapshot = try await Task.detached(priority: .userInitiated) {
      try Self.readPolicy(path: path)
    }.value
    policySlot.withLock { $0 = snapshot }
  }

  static func readPolicy(path: String) throws -> PolicySnapshot {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw ModelLoadError("cannot open the policy model \(path) (run scripts/fetch-models.sh for the default model)")
    }
    defer { try? handle.close() }
    var hasher = SHA256()
    var size: UInt64 = 0
    while true {
      let chunk: Data
      do {
        chunk = try handle.read(upToCount: 4 << 20) ?? Data()
      } catch {
        throw ModelLoadError("cannot read the policy model \(path): \(error)")
      }
      if chunk.isEmpty { break }
      hasher.update(data: chunk)
      size += UInt64(chunk.count)
    }
    let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    var name = URL(fileURLWithPath: path).lastPathComponent
    if name.hasSuffix(".gguf") { name.removeLast(5) }
    return PolicySnapshot(
      version: "\(name)@\(digest.prefix(12))", path: path, sizeBytes: size, sha256: digest)
  }
}
