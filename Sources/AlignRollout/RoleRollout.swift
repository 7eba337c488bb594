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

  /// What serves the role when no version of its own does (a rollback past the first activated
  /// version returns to it): the reward role's generative judge on the policy; nil when the role
  /// always needs an active version.
  var fallback: (name: String, description: String)? { get }
}

extension RoleRollout {
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

/// The policy role: load, tokenizer compatibility with the active policy, smoke forward.
struct PolicyRollout: RoleRollout {
  let models: ModelHost
  var role: CheckpointRole { .policy }
  var slots: RoleSlots<PolicySnapshot> { models.policies }

  func load(version: String?, path: String) async throws -> PolicySnapshot {
    if let serving = serving(version) { return serving }
    return try await models.loadPolicySnapshot(path: path, version: version)
  }

  func gated(version: String, path: String, gates: inout [GateOutcome]) async throws -> PolicySnapshot {
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

/// The reward role: load, smoke (finite rewards), and an eval on stored preference feedback the
/// candidate never trained on, against the serving reward model (or the judge).
struct RewardRollout: RoleRollout {
  let models: ModelHost
  let feedback: any FeedbackStore
  /// Largest accuracy drop a candidate may show against the serving reward model.
  let gateMargin: Double
  let logger: Logger
  var role: CheckpointRole { .reward }
  var slots: RoleSlots<RewardSnapshot> { models.rewards }

  /// Preference pairs evaluated by the reward gate (the most recent stored ones).
  static let gatePairs = 100

  /// Loads a reward model (reward-head folder on the active policy, or a sequence-classification
  /// folder) as a snapshot, without publishing it.
  func load(version: String?, path: String) async throws -> RewardSnapshot {
    if let serving = serving(version) { return serving }
    let policy = models.policy
    let (settings, batching) = (models.engineSettings, models.batching.reward)
    return try await Task.detached(priority: .userInitiated) {
      let manifest = URL(fileURLWithPath: path).appendingPathComponent("manifest.json").path
      let backend: any RewardBackend
      if FileManager.default.fileExists(atPath: manifest) {
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
    // Eval: accuracy on stored preference feedback must not drop below the serving model's by
    // more than the margin.
    let pairs = await storedPreferences()
    guard !pairs.isEmpty else {
      gates.append(GateOutcome(name: "eval", passed: true, detail: "skipped: no stored preference feedback"))
      return snapshot
    }
    do {
      let candidate = try await Self.accuracy(pairs, snapshot.scorer)
      let serving: RewardScorer? = models.rewards.active?.scorer ?? (try? models.policy?.judge())
      var baseline: Double? = nil
      if let serving { baseline = try await Self.accuracy(pairs, serving) }
      let passed = candidate + 1e-9 >= (baseline ?? 0) - gateMargin
      let detail =
        "accuracy \(String(format: "%.3f", candidate)) on \(pairs.count) stored preference pairs vs "
        + "\(String(format: "%.3f", baseline ?? 0)) for \(serving?.version ?? "none") (margin \(gateMargin))"
      gates.append(GateOutcome(name: "eval", passed: passed, detail: detail))
      if !passed { throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the eval gate: \(detail)") }
    } catch {
      throw gateFailure(error, gate: "eval", "eval gate", version: version, gates: &gates)
    }
    return snapshot
  }

  /// With no reward model active, the generative judge on the policy scores.
  var fallback: (name: String, description: String)? { ("judge", "the generative judge on the policy") }

  /// The most recent stored preference records (up to ``gatePairs``).
  private func storedPreferences() async -> [(prompt: String, chosen: String, rejected: String)] {
    var pairs: [(String, String, String)] = []
    let stream = feedback.exportPages(FeedbackFilter(kinds: [.preference]), pageSize: 512)
    do {
      for try await page in stream {
        for stored in page {
          if case .preference(let p) = stored.item.payload { pairs.append((p.prompt, p.chosen, p.rejected)) }
        }
      }
    } catch {
      logger.warning("the reward gate cannot read stored feedback", metadata: ["error": "\(error)"])
    }
    return Array(pairs.suffix(Self.gatePairs))
  }

  /// Fraction of pairs where the chosen response gets the higher reward.
  static func accuracy(_ pairs: [(prompt: String, chosen: String, rejected: String)], _ scorer: RewardScorer) async throws -> Double {
    var inputs: [RewardInput] = []
    for pair in pairs {
      inputs.append(RewardInput(prompt: pair.prompt, response: pair.chosen))
      inputs.append(RewardInput(prompt: pair.prompt, response: pair.rejected))
    }
    var rewards: [Double] = []
    for start in stride(from: 0, to: inputs.count, by: 32) {
      rewards += try await scorer.score(Array(inputs[start..<min(inputs.count, start + 32)]))
    }
    let right = pairs.indices.filter { rewards[2 * $0] > rewards[2 * $0 + 1] }.count
    return Double(right) / Double(pairs.count)
  }
}
