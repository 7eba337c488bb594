import AlignEngine
import AlignRollout
import AlignServing
import AlignShared
import AlignStore
import AlignTestSupport
import Crypto
import Foundation
import Logging
import Synchronization
import Testing

/// Rollout state kept in memory, as a store would keep it.
final class MemoryStateStore: RolloutStateStore {
  let values = Mutex<[String: String]>([:])
  func setState(key: String, value: String?) async throws { values.withLock { $0[key] = value } }
  func state(key: String) async throws -> String? { values.withLock { $0[key] } }
}

/// A registry, a feedback store and a model host in a temporary folder, with tiny checkpoints
/// uploaded: what a rollout needs, without a server.
final class RolloutFixture: Sendable {
  let folder: URL
  let registry: CheckpointRegistry
  let feedback: SQLiteFeedbackStore
  let state = MemoryStateStore()
  let models: ModelHost

  init() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent("rollout-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    registry = try CheckpointRegistry(root: folder.appendingPathComponent("checkpoints").path)
    feedback = try SQLiteFeedbackStore(dataDirectory: folder.appendingPathComponent("data"))
    models = Self.host()
  }

  static func host() -> ModelHost {
    ModelHost(
      scheduler: .init(maxRunningSequences: 4, maxStepTokens: 64, queueCapacity: 16, kvCapacityTokens: 2048),
      engine: EngineSettings(threads: 1, quantizedActivations: false))
  }

  /// A held-out preference file for the reward gate (the tiny models' rewards mean nothing, so the
  /// margin lets any finite candidate pass: these tests are about the gates running).
  var rewardGate: RewardGateSet {
    let path = folder.appendingPathComponent("gate-pairs.jsonl").path
    if !FileManager.default.fileExists(atPath: path) {
      let rows = [
        #"{"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "Fish.", "source": "arithmetic"}"#,
        #"{"prompt": [{"role": "user", "content": "Say hi."}], "chosen": [{"role": "assistant", "content": "Hi!"}], "rejected": "No."}"#,
      ]
      try? Data(rows.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: path))
    }
    return RewardGateSet(path: path, limit: 100, margin: 1)
  }

  func controller(state: (any RolloutStateStore)? = nil, models: ModelHost? = nil) -> RolloutController {
    RolloutController(
      models: models ?? self.models, registry: registry, state: state ?? self.state, rewardGate: rewardGate,
      safetyGate: SafetyGateSet(path: folder.appendingPathComponent("no-safety-gate.jsonl").path, margin: 0.02),
      logger: Logger(label: "rollout-tests", factory: { _ in SwiftLogNoOpLogHandler() }))
  }

  /// A copy of a fixture folder with one more file (so its digest, and its version, differ).
  func variant(of fixture: String, marker: String) throws -> String {
    let copy = folder.appendingPathComponent("variant-\(marker)")
    try FileManager.default.copyItem(atPath: fixture, toPath: copy.path)
    try Data(marker.utf8).write(to: copy.appendingPathComponent("variant.txt"))
    return copy.path
  }

  /// Uploads a folder as a Hugging Face checkpoint; returns its registry version.
  func upload(_ path: String, role: CheckpointRole, name: String) throws -> String {
    let tar = folder.appendingPathComponent("\(name)-\(UUID().uuidString).tar").path
    try TarWriter.archive(directory: path, to: tar)
    let bytes = try Data(contentsOf: URL(fileURLWithPath: tar))
    let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    let upload = try registry.beginUpload(
      CheckpointHeader(role: role, name: name, format: .hfSafetensors, sizeBytes: UInt64(bytes.count), sha256: digest))
    try upload.append(bytes)
    return try upload.finish().version
  }

  deinit {
    models.shutdown()
    try? feedback.close()
    try? FileManager.default.removeItem(at: folder)
  }
}

@Suite("Checkpoint rollout without a server")
struct RolloutControllerTests {
  @Test("canary, promote and rollback move traffic between policy versions and persist each state")
  func policyCanaryPromoteRollback() async throws {
    let fixture = try RolloutFixture()
    let rollout = fixture.controller()
    try await rollout.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let builtin = try #require(fixture.models.policy?.version)
    let candidate = try fixture.upload(
      try fixture.variant(of: TestModels.tinyPolicy, marker: "b"), role: .policy, name: "tiny-b")

    let canary = try await rollout.activate(role: .policy, version: candidate, canaryPercent: 25, operationID: "op-1")
    #expect(canary.state.active == builtin && canary.state.canary == candidate && canary.state.canaryPercent == 25)
    #expect(canary.gates.map(\.name) == ["load", "compatibility", "smoke"])
    #expect(canary.gates.allSatisfy { $0.passed })
    #expect(fixture.models.policies.assignment.canaryVersion == candidate)

    // The same operation id answers the same outcome, without a second swap.
    let again = try await rollout.activate(role: .policy, version: candidate, canaryPercent: 25, operationID: "op-1")
    #expect(again.state == canary.state)

    let promoted = try await rollout.promote(role: .policy, operationID: "")
    #expect(promoted.state.active == candidate && promoted.state.canary == nil && promoted.state.previous == builtin)
    let persisted = try #require(try await fixture.state.state(key: "rollout.role.policy"))
    #expect(persisted.contains(candidate))

    let rolledBack = try await rollout.rollback(role: .policy, toVersion: "", operationID: "")
    #expect(rolledBack.state.active == builtin)
    #expect(fixture.models.policy?.version == builtin)
  }

  @Test("a checkpoint that fails its gates is refused, serves nothing, and says why")
  func failedGates() async throws {
    let fixture = try RolloutFixture()
    let rollout = fixture.controller()
    try await rollout.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let before = fixture.models.policies.assignment
    // A sequence classifier is not a policy: the load gate fails.
    let classifier = try fixture.upload(TestModels.fixture("reward/llama-chat-reward"), role: .policy, name: "classifier")
    let error = await #expect(throws: RolloutError.self) {
      try await rollout.activate(role: .policy, version: classifier, canaryPercent: 0, operationID: "op-fail")
    }
    #expect(error?.kind == .failedPrecondition)
    #expect(error?.gates.map(\.name) == ["load"])
    #expect(error?.gates.first?.passed == false)
    #expect(fixture.models.policies.assignment == before)
    #expect(await rollout.failure(of: classifier) != nil)
    // The failed outcome is kept for the operation id.
    await #expect(throws: RolloutError.self) {
      try await rollout.activate(role: .policy, version: classifier, canaryPercent: 0, operationID: "op-fail")
    }
  }

  @Test("unknown versions, roles and canary shares are refused with the right kind")
  func refusals() async throws {
    let fixture = try RolloutFixture()
    let rollout = fixture.controller()
    try await rollout.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let notFound = await #expect(throws: RolloutError.self) {
      try await rollout.activate(role: .policy, version: "nothing@000000000000", canaryPercent: 0, operationID: "")
    }
    #expect(notFound?.kind == .notFound)
    let badShare = await #expect(throws: RolloutError.self) {
      try await rollout.activate(role: .policy, version: "nothing@000000000000", canaryPercent: 100, operationID: "")
    }
    #expect(badShare?.kind == .invalidArgument)
    let safety = await #expect(throws: RolloutError.self) {
      try await rollout.activate(role: .safety, version: "guard@000000000000", canaryPercent: 0, operationID: "")
    }
    #expect(safety?.kind == .notFound)
    let noCanary = await #expect(throws: RolloutError.self) {
      try await rollout.promote(role: .policy, operationID: "")
    }
    #expect(noCanary?.kind == .failedPrecondition)
  }

  @Test("a reward model activates behind load, smoke and eval gates; rolling back past it returns to the judge")
  func rewardRole() async throws {
    let fixture = try RolloutFixture()
    let rollout = fixture.controller()
    try await rollout.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let reward = try fixture.upload(TestModels.fixture("reward/llama-chat-reward"), role: .reward, name: "tiny-reward")
    let outcome = try await rollout.activate(role: .reward, version: reward, canaryPercent: 0, operationID: "")
    #expect(outcome.gates.map(\.name) == ["load", "smoke", "eval"])
    #expect(fixture.models.rewards.active?.version == reward)
    // The eval gate's figures are recorded on the checkpoint: both pairs, per source. The tiny
    // policy has no chat template, so no judge serves and there is no baseline to beat.
    let figures = try #require(await rollout.evaluation(of: reward))
    #expect(figures.contains("\"pairs\":2") && figures.contains("arithmetic") && figures.contains("\"passed\":true"))
    #expect(!figures.contains("serving_evaluation"))

    let back = try await rollout.rollback(role: .reward, toVersion: "", operationID: "")
    #expect(back.gates.map(\.name) == ["judge"])
    #expect(back.state.active == nil)
    #expect(fixture.models.rewards.active == nil)
    let none = await #expect(throws: RolloutError.self) {
      try await rollout.rollback(role: .reward, toVersion: "", operationID: "")
    }
    #expect(none?.kind == .failedPrecondition)
  }

  @Test("a replica sharing the state store converges on the versions another one activated")
  func replicaSync() async throws {
    let fixture = try RolloutFixture()
    let first = fixture.controller()
    try await first.startup(defaultPolicyPath: TestModels.tinyPolicy)
    let otherModels = RolloutFixture.host()
    defer { otherModels.shutdown() }
    let second = fixture.controller(models: otherModels)
    try await second.startup(defaultPolicyPath: TestModels.tinyPolicy)

    let candidate = try fixture.upload(
      try fixture.variant(of: TestModels.tinyPolicy, marker: "sync"), role: .policy, name: "tiny-sync")
    _ = try await first.activate(role: .policy, version: candidate, canaryPercent: 40, operationID: "")
    #expect(otherModels.policies.assignment.canaryVersion == nil)
    await second.sync()
    #expect(otherModels.policies.assignment.canaryVersion == candidate)
    #expect(otherModels.policies.assignment.canaryPercent == 40)
  }
}
