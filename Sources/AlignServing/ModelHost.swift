import AlignEngine
import AlignShared
import Foundation
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
public final class PolicySnapshot: ServingSnapshot {
  /// "name@<first 12 hex digits of the SHA-256>" (``ModelFingerprint``), or the registry version.
  public let version: String
  public let path: String
  public let sizeBytes: UInt64
  public let sha256: String
  /// The engine loop serving this checkpoint (continuous batching).
  public let loop: GenerationLoop
  /// Teacher-forced log-probability requests, batched dynamically into shared forward passes.
  public let teacherForcing: DynamicBatcher<TeacherForcingRequest, [[ScoredToken]]>
  /// The generative judge on this policy, once created (see ``judge(batching:)``).
  let judgeSlot = Mutex<RewardScorer?>(nil)

  public var model: PolicyModel { loop.model }

  /// How the judge on this policy batches (``judge()``).
  let judgeBatching: RewardScorer.Batching

  init(
    version: String, path: String, sizeBytes: UInt64, sha256: String, loop: GenerationLoop,
    batching: JudgingBatching = JudgingBatching()
  ) {
    self.version = version
    self.path = path
    self.sizeBytes = sizeBytes
    self.sha256 = sha256
    self.loop = loop
    self.judgeBatching = batching.reward
    self.teacherForcing = DynamicBatcher(configuration: batching.logprobs) { requests in
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

  /// Stops the engine loop (after the last request that used this snapshot).
  public func stop() { loop.shutdown() }
}

/// How the dynamic batchers of judging work batch and queue (config `reward_batch_size`,
/// `reward_batch_wait_ms`, `safety_…`, `logprobs_…`, `priority_aging_seconds`).
public struct JudgingBatching: Sendable, Equatable {
  /// Reward models and the generative judge (per response scored).
  public var reward: DynamicBatcher<RewardInput, Result<Double, any Error>>.Configuration
  /// Safety models that batch (the guard model; per text checked).
  public var safety: DynamicBatcher<GuardBackend.GuardJob, GuardBackend.GuardResult>.Configuration
  /// Teacher-forced log-probabilities (per Logprobs request).
  public var logprobs: DynamicBatcher<TeacherForcingRequest, [[ScoredToken]]>.Configuration

  public init(
    reward: DynamicBatcher<RewardInput, Result<Double, any Error>>.Configuration = .init(
      maxBatchSize: 16, maxDelay: .milliseconds(5), name: "reward"),
    safety: DynamicBatcher<GuardBackend.GuardJob, GuardBackend.GuardResult>.Configuration = .init(
      maxBatchSize: 8, maxDelay: .milliseconds(5), name: "safety"),
    logprobs: DynamicBatcher<TeacherForcingRequest, [[ScoredToken]]>.Configuration = .init(
      maxBatchSize: 16, maxDelay: .milliseconds(5), name: "log-probability")
  ) {
    self.reward = reward
    self.safety = safety
    self.logprobs = logprobs
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

/// Holds the snapshots serving each model role and publishes new ones atomically.
public final class ModelHost: Sendable {
  /// The policy: active snapshot, optional canary, and replaced ones still finishing requests.
  public let policies = RoleSlots<PolicySnapshot>()
  /// Activated reward models; when none is active the policy's generative judge scores.
  public let rewards = RoleSlots<RewardSnapshot>()
  /// The safety checker.
  public let safety = RoleSlots<SafetySnapshot>()
  /// Live signals per serving version (requests, errors, safety flags, sampled rewards,
  /// feedback), compared by the canary analysis.
  public let signals = LiveSignals()
  /// Judges a sampled share of completions off the token path (``CompletionSampler``).
  public let sampler: CompletionSampler
  /// How policy snapshots are run (fixed for the process).
  public let scheduler: GenerationScheduler.Configuration
  public let engineSettings: EngineSettings
  /// The kernels the policy engines run on.
  public var engineKernels: KernelSet { engineSettings.kernels ?? (try? KernelSet.preferred()) ?? .detected }
  /// How judging work (reward, safety models, log-probabilities) is batched.
  public let batching: JudgingBatching
  /// The trained judges' shared encoder and classifiers, once loaded (``setJudges(_:)``).
  private let judgeModels = Mutex<JudgeModels?>(nil)

  public init(
    scheduler: GenerationScheduler.Configuration = .init(), engine: EngineSettings = EngineSettings(),
    batching: JudgingBatching = JudgingBatching(), rewardSampleRate: Double = 0, rewardSampleQueue: Int = 256
  ) {
    self.scheduler = scheduler
    self.engineSettings = engine
    self.batching = batching
    self.sampler = CompletionSampler(rate: rewardSampleRate, capacity: rewardSampleQueue, signals: signals)
  }

  /// The trained judges' shared encoder and classifiers (nil until the model loader sets them).
  public var judges: JudgeModels? { judgeModels.withLock { $0 } }

  /// Publishes the judges' shared models (at startup, before any judge loads).
  public func setJudges(_ judges: JudgeModels) { judgeModels.withLock { $0 = judges } }

  /// The active policy snapshot, if loaded (status only: requests take a lease).
  public var policy: PolicySnapshot? { policies.active }

  /// A lease on the policy snapshot that serves one request (canary routing by `routingKey`).
  public func leasePolicy(routingKey: String? = nil) -> SnapshotLease<PolicySnapshot>? {
    policies.lease(routingKey: routingKey)
  }

  /// The versions currently active.
  public var versions: ModelVersions {
    ModelVersions(
      policy: policy?.version ?? "",
      reward: rewards.active?.version ?? policy.map { "judge:\($0.version)" } ?? "",
      safety: safety.active?.version ?? "")
  }

  /// Bytes of model files loaded (every loaded snapshot, including a canary and replaced ones
  /// still finishing requests).
  public var loadedBytes: UInt64 {
    policies.loaded.reduce(0) { $0 + $1.sizeBytes } + rewards.loaded.reduce(0) { $0 + $1.sizeBytes }
      + safety.loaded.reduce(0) { $0 + $1.sizeBytes }
  }

  /// Loads a policy checkpoint (GGUF file or Hugging Face folder) into a new snapshot with its own
  /// engine loop, without publishing it.
  /// - Parameter version: the registry version; nil derives "file-name@sha12" from the file.
  /// - Throws: ``ModelLoadError`` when the file is missing, unreadable or not a supported model.
  public func loadPolicySnapshot(path: String, version: String? = nil) async throws -> PolicySnapshot {
    let (scheduler, engine, batching) = (self.scheduler, self.engineSettings, self.batching)
    return try await Task.detached(priority: .userInitiated) {
      let (derived, size, digest) = try Self.fingerprint(path: path)
      let version = version ?? derived
      let model = try PolicyModel(path: path, version: version, settings: engine)
      let loop = try GenerationLoop(model: model, configuration: scheduler)
      return PolicySnapshot(
        version: version, path: path, sizeBytes: size, sha256: digest, loop: loop, batching: batching)
    }.value
  }

  /// Loads the startup policy and makes it active.
  /// - Throws: ``ModelLoadError`` when the file is missing, unreadable or not a supported model.
  public func loadPolicy(path: String, version: String? = nil) async throws {
    let snapshot = try await loadPolicySnapshot(path: path, version: version)
    policies.activate(snapshot)
  }

  /// Stops every engine loop (at shutdown, after draining).
  public func shutdown() {
    let loaded = policies.loaded
    policies.retireAll()
    for snapshot in loaded { snapshot.stop() }
  }

  /// The version string, size and SHA-256 of a model file or folder (``ModelFingerprint``, the
  /// one format every role uses).
  /// - Throws: ``ModelLoadError`` when the path is missing or unreadable.
  public static func fingerprint(path: String) throws -> (version: String, size: UInt64, sha256: String) {
    do {
      let fingerprint = try ModelFingerprint(path: path)
      return (fingerprint.version, fingerprint.sizeBytes, fingerprint.sha256)
    } catch {
      throw ModelLoadError("\(error) (run scripts/fetch-models.sh for the default model)")
    }
  }

  /// Bytes of a model file, or of a folder's files, read from file metadata (no hashing; for
  /// status figures when the content was already verified).
  public static func diskSize(path: String) -> UInt64 {
    let manager = FileManager.default
    func size(_ file: String) -> UInt64 { ((try? manager.attributesOfItem(atPath: file))?[.size] as? NSNumber)?.uint64Value ?? 0 }
    var isDirectory: ObjCBool = false
    guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else { return 0 }
    guard isDirectory.boolValue else { return size(path) }
    let names = (try? manager.contentsOfDirectory(atPath: path)) ?? []
    return names.reduce(0) { $0 + size(URL(fileURLWithPath: path).appendingPathComponent($1).path) }
  }
}
