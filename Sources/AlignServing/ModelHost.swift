import AlignEngine
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
  /// The engine loop serving this checkpoint (continuous batching).
  public let loop: GenerationLoop
  /// Teacher-forced log-probability requests, batched dynamically into shared forward passes.
  public let teacherForcing: DynamicBatcher<TeacherForcingRequest, [[ScoredToken]]>

  public var model: PolicyModel { loop.model }

  init(
    version: String, path: String, sizeBytes: UInt64, sha256: String, loop: GenerationLoop,
    batching: DynamicBatcher<TeacherForcingRequest, [[ScoredToken]]>.Configuration = .init()
  ) {
    self.version = version
    self.path = path
    self.sizeBytes = sizeBytes
    self.sha256 = sha256
    self.loop = loop
    self.teacherForcing = DynamicBatcher(configuration: batching) { requests in
      // Submitted together, the requests reach the engine loop between the same two generation
      // steps, which runs them in one forward pass (split only where a context would overflow).
      try await withThrowingTaskGroup(of: (Int, [[ScoredToken]]).self) { group in
        for (index, request) in requests.enumerated() {
          group.addTask {
            (index, try await loop.teacherForce(request.sequences, topLogprobs: request.topLogprobs))
          }
        }
        var results = [[[ScoredToken]]](repeating: [], count: requests.count)
        for try await (index, result) in group { results[index] = result }
        return results
      }
    }
  }
}

/// Token sequences whose log-probabilities a client asked for.
public struct TeacherForcingRequest: Sendable {
  public var sequences: [[Int32]]
  public var topLogprobs: Int

  public init(sequences: [[Int32]], topLogprobs: Int) {
    self.sequences = sequences
    self.topLogprobs = topLogprobs
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

  /// Loads a policy checkpoint, starts its engine loop and makes it active.
  /// - Throws: ``ModelLoadError`` when the file is missing, unreadable or not a supported model.
  public func loadPolicy(
    path: String, scheduler: GenerationScheduler.Configuration, engine: EngineSettings
  ) async throws {
    let snapshot = try await Task.detached(priority: .userInitiated) {
      let (version, size, digest) = try Self.fingerprint(path: path)
      let model = try PolicyModel(ggufPath: path, version: version, settings: engine)
      let loop = try GenerationLoop(model: model, configuration: scheduler)
      return PolicySnapshot(version: version, path: path, sizeBytes: size, sha256: digest, loop: loop)
    }.value
    // Swapping a loaded policy (drain the old loop while the new one serves) belongs to checkpoint
    // activation; this initial load refuses to replace one.
    let replaced = policySlot.withLock { slot -> Bool in
      guard slot == nil else { return true }
      slot = snapshot
      return false
    }
    if replaced {
      snapshot.loop.shutdown()
      throw ModelLoadError("a policy is already loaded; activate another checkpoint through the Admin service")
    }
  }

  /// Stops every engine loop (at shutdown, after draining).
  public func shutdown() {
    policy?.loop.shutdown()
  }

  /// The version string and size of a model file.
  static func fingerprint(path: String) throws -> (version: String, size: UInt64, sha256: String) {
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
    return ("\(name)@\(digest.prefix(12))", size, digest)
  }
}
