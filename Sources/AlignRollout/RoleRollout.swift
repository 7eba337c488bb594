import AlignEngine
import AlignServing
import AlignShared
import AlignStore
import Foundation
import Logging

/// What the rollout needs to know of one model role: where its snapshots are published, how a
/// version loads, and the gates a loaded candidate must pass before it may serve.
///
/// ``RolloutController`` runs activation, canary, promotion, rollback and replica sync the same
/// way for every role that conforms. Policy and reward conform today; a hot-swapped safety role
/// (guard models, classifiers) is one more conformance and one more case in
/// ``RolloutController/rollout(for:)``.
protocol RoleRollout: Sendable {
  associatedtype Snapshot: ServingSnapshot

  var role: CheckpointRole { get }
  /// The role's active snapshot, canary and replaced ones.
  var slots: RoleSlots<Snapshot> { get }

  /// Loads a checkpoint as a snapshot without publishing it, reusing the serving (active or
  /// canary) snapshot of the same version.
  /// - Parameter version: the registry version; nil derives one from the files.
  func load(version: String?, path: String) async throws -> Snapshot

  /// Loads a candidate beside the serving one and runs the role's gates, appending each verdict.
  /// - Throws: ``RolloutError`` (failed precondition) naming the gate that failed.
  func gated(version: String, path: String, gates: inout [GateOutcome]) async throws -> Snapshot

  /// The gates a rollback target passes: a version that served before may return without being
  /// compared with the one it replaces (which may be the reason for the rollback).
  func gatedForRollback(version: String, path: String, gates: inout [GateOutcome]) async throws -> Snapshot

  /// What serves the role when no version of its own does (a rollback past the first activated
  /// version returns to it): the reward role's generative judge on the policy; nil when the role
  /// always needs an active version.
  var fallback: (name: String, description: String)? { get }
}

extension RoleRollout {
  func gatedForRollback(version: String, path: String, gates: inout [GateOutcome]) async throws -> Snapshot {
    try await gated(version: version, path: path, gates: &gates)
  }

  /// The load gate: loads the candidate, recording the verdict (`describe` says what loaded).
  func loadGate(
    version: String, path: String, gates: inout [GateOutcome], describe: (Snapshot) -> String
  ) async throws -> Snapshot {
    do {
      let snapshot = try await load(version: version, path: path)
      gates.append(GateOutcome(name: "load", passed: true, detail: describe(snapshot)))
      return snapshot
    } catch {
      gates.append(GateOutcome(name: "load", passed: false, detail: "\(error)"))
      throw RolloutError(kind: .failedPrecondition, description: "\(version) does not load as a \(role.rawValue) model: \(error)")
    }
  }

  /// A gate's failure: a `RolloutError` stands as thrown; any other error fails gate `name`.
  func gateFailure(_ error: any Error, gate name: String, _ what: String, version: String, gates: inout [GateOutcome])
    -> RolloutError
  {
    if let error = error as? RolloutError { return error }
    gates.append(GateOutcome(name: name, passed: false, detail: "\(error)"))
    return RolloutError(kind: .failedPrecondition, description: "\(version) failed the \(what): \(error)")
  }

  /// A snapshot of `version` that serves now (active or canary), if any: reused rather than
  /// loaded again. A replaced one is stopping and is never reused.
  func serving(_ version: String?) -> Snapshot? {
    [slots.active, slots.canary].compactMap { $0 }.first { $0.version == version }
  }
}

/// The policy role: load, tokenizer compatibility with the active policy, smoke forward, and the
/// quality gate on the evaluation prompts (``PolicyQualityGate``).
struct PolicyRollout: RoleRollout {
  let models: ModelHost
  /// The quality gate on the evaluation prompts; nil runs none.
  let qualityGate: PolicyQualityGate?
  var role: CheckpointRole { .policy }

  init(models: ModelHost, gateSet: PolicyGateSet?) {
    self.models = models
    self.qualityGate = gateSet.map(PolicyQualityGate.init(gateSet:))
  }
  var slots: RoleSlots<PolicySnapshot> { models.policies }

  func load(version: String?, path: String) async throws -> PolicySnapshot {
    if let serving = serving(version) { return serving }
    return try await models.loadPolicySnapshot(path: path, version: version)
  }

  func gated(version: String, path: String, gates: inout [GateOutcome]) async throws -> PolicySnapshot {
    try await gated(version: version, path: path, gates: &gates, quality: true)
  }

  /// A rollback skips the quality gate: the version it returns to served before.
  func gatedForRollback(version: String, path: String, gates: inout [GateOutcome]) async throws -> PolicySnapshot {
    try await gated(version: version, path: path, gates: &gates, quality: false)
  }

  private func gated(version: String, path: String, gates: inout [GateOutcome], quality: Bool) async throws -> PolicySnapshot {
    let snapshot = try await loadGate(version: version, path: path, gates: &gates) { snapshot in
      "loaded \(snapshot.model.engine.model.hyperparameters.architecture.rawValue), \(snapshot.sizeBytes) bytes"
    }
    do {
      if let active = models.policy {
        let detail = Self.tokenizerMismatch(active.model, snapshot.model)
        gates.append(GateOutcome(name: "compatibility", passed: detail == nil, detail: detail ?? "same tokenizer as \(active.version)"))
        if let detail { throw RolloutError(kind: .failedPrecondition, description: "\(version) is not compatible with the active policy: \(detail)") }
      }
      let smoke = try await Self.smokeTest(snapshot)
      gates.append(GateOutcome(name: "smoke", passed: smoke == nil, detail: smoke ?? "finite log-probabilities on a test prompt"))
      if let smoke { throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the smoke test: \(smoke)") }
      // Quality: mean reward and safety-flag rate on the evaluation prompts, against the active policy.
      if quality, let qualityGate {
        do {
          try await qualityGate.run(candidate: snapshot, version: version, models: models, gates: &gates)
        } catch {
          throw gateFailure(error, gate: "eval", "policy quality gate", version: version, gates: &gates)
        }
      }
    } catch {
      if serving(version) !== snapshot { snapshot.stop() }
      throw error
    }
    return snapshot
  }

  /// A policy role always has an active version.
  var fallback: (name: String, description: String)? { nil }

  /// Differences between two policies' tokenizers that would change what clients see.
  static func tokenizerMismatch(_ a: PolicyModel, _ b: PolicyModel) -> String? {
    let (x, y) = (a.tokenizer.definition, b.tokenizer.definition)
    if x.tokens.count != y.tokens.count {
      return "vocabulary size \(y.tokens.count) differs from the active policy's \(x.tokens.count)"
    }
    if let i = x.tokens.indices.first(where: { x.tokens[$0] != y.tokens[$0] }) {
      return "token \(i) is '\(y.tokens[i])', the active policy has '\(x.tokens[i])'"
    }
    if a.stopTokenIDs != b.stopTokenIDs {
      return "end-of-sequence tokens \(b.stopTokenIDs.sorted()) differ from \(a.stopTokenIDs.sorted())"
    }
    return nil
  }

  /// One teacher-forced pass over a short chat prompt; nil when every log-probability is finite.
  static func smokeTest(_ snapshot: PolicySnapshot) async throws -> String? {
    let model = snapshot.model
    let text = (try? model.renderChat([ChatMessage(role: "user", content: "Hello! What is 2 + 2?")], addGenerationPrompt: true))
      ?? "Hello! What is 2 + 2?"
    let tokens = model.encodePrompt(text + "It is 4.")
    let scored = try await snapshot.loop.teacherForce([tokens], topLogprobs: 1)
    guard let first = scored.first, !first.isEmpty else { return "no output" }
    if let bad = first.firstIndex(where: { !$0.logprob.isFinite || $0.top.contains { !$0.logprob.isFinite } }) {
      return "non-finite log-probability at position \(bad + 1) (NaN or infinite weights?)"
    }
    return nil
  }
}

/// The reward role: load, smoke (finite rewards), and an eval on a held-out preference set the
/// candidate never trained on (``RewardGateSet``), against the serving reward model (or the judge).
struct RewardRollout: RoleRollout {
  let models: ModelHost
  let gateSet: RewardGateSet
  let logger: Logger
  var role: CheckpointRole { .reward }
  var slots: RoleSlots<RewardSnapshot> { models.rewards }

  /// Loads a reward model (a trained embedding head on the judges' shared encoder, a reward-head
  /// folder on the active policy, or a sequence-classification folder) as a snapshot, without
  /// publishing it.
  func load(version: String?, path: String) async throws -> RewardSnapshot {
    if let serving = serving(version) { return serving }
    let policy = models.policy
    let judges = models.judges
    let (settings, batching) = (models.engineSettings, models.batching.reward)
    return try await Task.detached(priority: .userInitiated) {
      let manifest = URL(fileURLWithPath: path).appendingPathComponent("manifest.json").path
      let backend: any RewardBackend
      if JudgeModels.isEmbeddingHead(path) {
        guard let judges else { throw ModelLoadError("\(path) is a trained judge, but the judges' shared models are not loaded") }
        backend = try judges.rewardModel(headDirectory: path, version: version)
      } else if FileManager.default.fileExists(atPath: manifest) {
        guard let policy else { throw ModelLoadError("a reward head needs its base policy loaded") }
        let base = try RewardBaseModel(
          policy: policy.model, name: ModelFingerprint.name(path: policy.path), sha256: policy.sha256)
        backend = try RewardHeadModel(directory: path, base: base, version: version)
      } else {
        backend = try SequenceClassificationRewardModel(directory: path, version: version, settings: settings)
      }
      let size = ModelHost.diskSize(path: path)
      return RewardSnapshot(scorer: RewardScorer(backend: backend, batching: batching), sizeBytes: size)
    }.value
  }

  func gated(version: String, path: String, gates: inout [GateOutcome]) async throws -> RewardSnapshot {
    let snapshot = try await loadGate(version: version, path: path, gates: &gates) { snapshot in
      "loaded \(snapshot.scorer.backend.kind.rawValue)"
    }
    // Smoke: finite rewards on a sample pair.
    let sample = [
      RewardInput(prompt: "What is 2 + 2?", response: "2 + 2 = 4."),
      RewardInput(prompt: "What is 2 + 2?", response: "No idea, go away."),
    ]
    do {
      let rewards = try await snapshot.scorer.score(sample)
      let finite = rewards.allSatisfy(\.isFinite)
      gates.append(GateOutcome(name: "smoke", passed: finite, detail: finite ? "finite rewards on a sample pair" : "non-finite rewards \(rewards)"))
      if !finite { throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the smoke test: rewards \(rewards)") }
    } catch {
      throw gateFailure(error, gate: "smoke", "smoke test", version: version, gates: &gates)
    }
    // Eval: accuracy on the held-out set must not drop below the serving model's by more than
    // the margin. The figures of both go into the gate's detail (JSON), recorded on the checkpoint.
    do {
      // Pairs the candidate cannot take (longer than its context) are left out, for both models.
      let examples = try gateSet.examples()
      let (candidate, kept) = try await RewardEvaluation.evaluateSkippingRefused(examples, scorer: snapshot.scorer)
      guard kept.count * 2 >= examples.count else {
        throw RolloutError(
          kind: .failedPrecondition,
          description: "\(version) takes only \(kept.count) of \(examples.count) held-out pairs of \(gateSet.path) (the others are too long for it)")
      }
      let serving: RewardScorer? = models.rewards.active?.scorer ?? (try? models.policy?.judge())
      var baseline: RewardEvaluation? = nil
      if let serving { baseline = try await RewardEvaluation.evaluate(kept, scorer: serving) }
      let floor = (baseline?.overall.accuracy ?? 0) - gateSet.margin
      let passed = candidate.overall.accuracy + 1e-9 >= floor
      try GateRecord(
        file: gateSet.path, candidate: candidate, serving: serving?.version, servingEvaluation: baseline,
        margin: gateSet.margin, passed: passed
      ).conclude(&gates) {
        "\(version) failed the eval gate: held-out \(candidate.summary) is more than \(gateSet.margin) below "
          + "\(serving?.version ?? "none")'s \(baseline?.summary ?? "-") on \(examples.count) pairs of \(gateSet.path)"
      }
    } catch {
      throw gateFailure(error, gate: "eval", "eval gate", version: version, gates: &gates)
    }
    return snapshot
  }

  /// With no reward model active, the generative judge on the policy scores.
  var fallback: (name: String, description: String)? { ("judge", "the generative judge on the policy") }
}

/// The held-out preference pairs a reward candidate is evaluated on before it may serve: a TRL
/// JSONL file the candidate never trained on (by default the validation split shipped with the
/// default reward model, `eval/reward-validation.jsonl` in the models folder), at most `limit`
/// pairs spread evenly over it.
public struct RewardGateSet: Sendable {
  public var path: String
  public var limit: Int
  /// Largest accuracy drop a candidate may show against the serving reward model.
  public var margin: Double

  public init(path: String, limit: Int, margin: Double) {
    self.path = path
    self.limit = limit
    self.margin = margin
  }

  /// The pairs, read on each activation (an operator may replace the file).
  /// - Throws: ``RolloutError`` (failed precondition) naming the file when it is absent or broken.
  func examples() throws -> [PreferenceExample] {
    do {
      let all = try PreferenceFile.read(path: path)
      guard !all.isEmpty else { throw PreferenceFileError("\(path) holds no preference pairs") }
      return PreferenceFile.evenlySpaced(all, limit: limit)
    } catch {
      throw RolloutError(
        kind: .failedPrecondition,
        description: "the reward gate has no held-out evaluation set: \(error) (reward_gate_file)")
    }
  }
}

/// What an eval gate measured, as recorded on the checkpoint: the candidate's figures on the
/// held-out file beside the serving model's, the margin allowed, and the verdict.
struct GateRecord<Evaluation: Codable>: Codable {
  var file: String
  var candidate: Evaluation
  var serving: String?
  var servingEvaluation: Evaluation?
  var margin: Double
  var passed: Bool

  enum CodingKeys: String, CodingKey {
    case file, candidate, serving, margin, passed
    case servingEvaluation = "serving_evaluation"
  }

  var json: String { RolloutController.encode(self) }

  /// Adds the eval gate's outcome (this record as its detail) and, when it did not pass, throws
  /// FAILED_PRECONDITION with `failure`.
  func conclude(_ gates: inout [GateOutcome], failure: () -> String) throws {
    gates.append(GateOutcome(name: "eval", passed: passed, detail: json))
    if !passed { throw RolloutError(kind: .failedPrecondition, description: failure()) }
  }
}
