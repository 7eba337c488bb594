import AlignEngine
import AlignServing
import AlignStore
import Foundation
import Logging

/// One activation gate's verdict.
struct GateOutcome: Codable, Sendable, Equatable {
  var name: String
  var passed: Bool
  var detail: String
}

/// The versions serving a role, as persisted in the store (so a restart, and every replica on a
/// shared PostgreSQL store, serves the same versions).
struct PersistedRoleState: Codable, Sendable, Equatable {
  var active: String?
  var canary: String?
  var canaryPercent: Int = 0
  var previous: String?
}

/// The outcome of an admin operation, kept by operation id so a repeated request returns it.
struct RolloutOutcome: Codable, Sendable {
  var role: CheckpointRole
  var state: PersistedRoleState
  var gates: [GateOutcome]
  /// Set when the operation failed (its gates say why).
  var failure: String?
}

/// Why an admin operation was refused; the Admin service maps the kind to a gRPC status.
struct RolloutError: Error, CustomStringConvertible {
  enum Kind { case notFound, invalidArgument, failedPrecondition, unavailable }
  var kind: Kind
  var description: String
  var gates: [GateOutcome] = []
}

/// Checkpoint rollout: activation behind gates, canary, promotion and rollback, persisted in the
/// store. An actor, so admin operations run one at a time.
actor RolloutController {
  let models: ModelHost
  let registry: CheckpointRegistry
  let store: any FeedbackStore
  let logger: Logger
  /// Largest accuracy drop a reward candidate may show against the serving reward model.
  let rewardGateMargin: Double
  /// Checkpoints served from the models folder rather than the registry (the startup policy),
  /// by version, so a rollback can return to them.
  private var builtin: [String: (role: CheckpointRole, path: String)] = [:]
  /// Admin operations running, and a count bumped when one ends. Actor methods interleave at
  /// every `await`, so a replica sync can straddle an operation: what it read from the store
  /// before the operation persisted its state is stale, and applying it would revert the
  /// operation. A sync applies nothing while an operation runs or once one ended since it began.
  private var operationsInFlight = 0
  private var operationEpoch: UInt64 = 0

  init(models: ModelHost, registry: CheckpointRegistry, store: any FeedbackStore, rewardGateMargin: Double, logger: Logger) {
    self.models = models
    self.registry = registry
    self.store = store
    self.rewardGateMargin = rewardGateMargin
    self.logger = logger
  }

  static func stateKey(_ role: CheckpointRole) -> String { "rollout.role.\(role.rawValue)" }
  static func operationKey(_ id: String) -> String { "rollout.operation.\(id)" }
  static func failureKey(_ version: String) -> String { "rollout.failed.\(version)" }

  // MARK: Startup and replica sync

  /// Loads the policy the store says is active (or, when none is recorded or it cannot load, the
  /// startup policy from the models folder) and any canary.
  func startup(defaultPolicyPath: String) async throws {
    let persisted = (try? await loadState(.policy)) ?? nil
    if let active = persisted?.active, let path = try? path(of: active, role: .policy) {
      do {
        try await models.loadPolicy(path: path, version: active)
        logger.info("restored the active policy from the store", metadata: ["version": "\(active)"])
      } catch {
        logger.error(
          "the recorded active policy does not load; serving the startup policy instead",
          metadata: ["version": "\(active)", "error": "\(error)"])
      }
    }
    if models.policy == nil {
      try await models.loadPolicy(path: defaultPolicyPath)
    }
    if let policy = models.policy, policy.path == defaultPolicyPath {
      builtin[policy.version] = (.policy, policy.path)
    }
    if let canary = persisted?.canary, persisted?.canaryPercent ?? 0 > 0, let path = try? path(of: canary, role: .policy) {
      do {
        let snapshot = try await models.loadPolicySnapshot(path: path, version: canary)
        models.policies.startCanary(snapshot, percent: persisted?.canaryPercent ?? 0)
      } catch {
        logger.error("the recorded canary does not load; no canary", metadata: ["version": "\(canary)", "error": "\(error)"])
      }
    }
  }

  /// Applies the persisted state when another replica changed it.
  func sync() async {
    let epoch = operationEpoch
    await syncPolicy(epoch: epoch)
    await syncReward(epoch: epoch)
  }

  /// Whether an admin operation runs now or ended since `epoch` was read.
  private func superseded(_ epoch: UInt64) -> Bool { operationsInFlight > 0 || operationEpoch != epoch }

  private func syncPolicy(epoch: UInt64) async {
    guard let persisted = try? await loadState(.policy), !superseded(epoch) else { return }
    let local = models.policies.assignment
    guard persisted.active != nil, persisted.active != local.activeVersion
      || persisted.canary != local.canaryVersion
      || (persisted.canary != nil && persisted.canaryPercent != local.canaryPercent)
    else { return }
    let swap = SwapMetrics(role: .policy, kind: .sync)
    do {
      guard try await apply(persisted, role: .policy, epoch: epoch) else { return }
      swap.finish(.success)
      logger.info("converged on the store's policy versions", metadata: ["active": "\(persisted.active ?? "")", "canary": "\(persisted.canary ?? "")"])
    } catch {
      swap.finish(.failure)
      logger.error("cannot apply the store's policy versions", metadata: ["error": "\(error)"])
    }
  }

  /// The reward role: the store's active model and canary (no active one = the judge).
  private func syncReward(epoch: UInt64) async {
    guard let persisted = try? await loadState(.reward), !superseded(epoch) else { return }
    let slots = models.rewards
    let local = slots.assignment
    guard persisted.active != local.activeVersion || persisted.canary != local.canaryVersion
      || (persisted.canary != nil && persisted.canaryPercent != local.canaryPercent)
    else { return }
    let swap = SwapMetrics(role: .reward, kind: .sync)
    do {
      if let active = persisted.active {
        if active != local.activeVersion {
          let snapshot = try await loadReward(version: active, path: try path(of: active, role: .reward))
          guard !superseded(epoch) else { return }
          slots.activate(snapshot)
        }
      } else {
        slots.retireAll()
      }
      if let canary = persisted.canary, persisted.canaryPercent > 0 {
        let snapshot: RewardSnapshot
        if let current = slots.canary, current.version == canary {
          snapshot = current
        } else {
          snapshot = try await loadReward(version: canary, path: try path(of: canary, role: .reward))
        }
        guard !superseded(epoch) else { return }
        slots.startCanary(snapshot, percent: persisted.canaryPercent)
      } else {
        slots.dropCanary()
      }
      swap.finish(.success)
      logger.info("converged on the store's reward versions", metadata: ["active": "\(persisted.active ?? "judge")", "canary": "\(persisted.canary ?? "")"])
    } catch {
      swap.finish(.failure)
      logger.error("cannot apply the store's reward versions", metadata: ["error": "\(error)"])
    }
  }

  /// Applies a persisted policy state read at `epoch`; false (nothing more changed) when an admin
  /// operation superseded it while a snapshot loaded.
  private func apply(_ state: PersistedRoleState, role: CheckpointRole, epoch: UInt64) async throws -> Bool {
    let slots = models.policies
    if let active = state.active, active != slots.assignment.activeVersion {
      let snapshot = try await loadPolicy(version: active)
      guard !superseded(epoch) else { return false }
      slots.activate(snapshot)
    }
    if let canary = state.canary, state.canaryPercent > 0 {
      let snapshot = slots.canary?.version == canary ? slots.canary! : try await loadPolicy(version: canary)
      guard !superseded(epoch) else { return false }
      slots.startCanary(snapshot, percent: state.canaryPercent)
    } else {
      slots.dropCanary()
    }
    return true
  }

  // MARK: Operations

  /// Loads `version` beside the active checkpoint, runs the gates, then routes all traffic
  /// (`canaryPercent` 0) or that percentage of requests to it.
  func activate(role: CheckpointRole, version: String, canaryPercent: Int, operationID: String) async throws -> RolloutOutcome {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    if let prior = try await priorOutcome(operationID) { return prior }
    guard (0...99).contains(canaryPercent) else {
      throw RolloutError(kind: .invalidArgument, description: "canary_percent must be 0..99, got \(canaryPercent)")
    }
    if role == .reward {
      return try await activateReward(version: version, canaryPercent: canaryPercent, operationID: operationID)
    }
    guard role == .policy else {
      throw RolloutError(
        kind: .failedPrecondition,
        description: "safety checkpoints (guard models) are configured with guard_model at startup in this build; activation covers policy and reward")
    }
    let path = try path(of: version, role: role)
    let current = models.policies.assignment
    if canaryPercent == 0, current.activeVersion == version, current.canaryVersion == nil {
      return try await finish(role: role, gates: [GateOutcome(name: "already-active", passed: true, detail: "\(version) already serves all traffic")], operationID: operationID)
    }
    let swap = SwapMetrics(role: .policy, kind: canaryPercent == 0 ? .activate : .canary)
    var swapped = false
    defer { swap.finish(swapped ? .success : .failure) }
    var gates: [GateOutcome] = []
    let snapshot: PolicySnapshot
    do {
      snapshot = try await gatedPolicy(version: version, path: path, gates: &gates)
    } catch var error as RolloutError {
      error.gates = gates
      try await recordFailure(error, role: role, version: version, operationID: operationID)
      throw error
    }
    if canaryPercent == 0 {
      models.policies.activate(snapshot)
    } else {
      models.policies.startCanary(snapshot, percent: canaryPercent)
    }
    swapped = true
    try? await store.setState(key: Self.failureKey(version), value: nil)
    logger.info(
      "policy activated", metadata: ["version": "\(version)", "canary_percent": "\(canaryPercent)"])
    return try await finish(role: role, gates: gates, operationID: operationID)
  }

  /// Makes the canary serve all traffic.
  func promote(role: CheckpointRole, operationID: String) async throws -> RolloutOutcome {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    if let prior = try await priorOutcome(operationID) { return prior }
    let promoted = role == .policy ? models.policies.promoteCanary() : role == .reward ? models.rewards.promoteCanary() : false
    guard promoted else {
      throw RolloutError(kind: .failedPrecondition, description: "no \(role.rawValue) canary to promote")
    }
    SwapMetrics(role: role, kind: .promote).finish(.success)
    return try await finish(role: role, gates: [], operationID: operationID)
  }

  /// Drops the canary, or returns all traffic to `toVersion` (default: the previous active one).
  func rollback(role: CheckpointRole, toVersion: String, operationID: String) async throws -> RolloutOutcome {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    if let prior = try await priorOutcome(operationID) { return prior }
    if role == .reward { return try await rollbackReward(toVersion: toVersion, operationID: operationID) }
    guard role == .policy else {
      throw RolloutError(kind: .failedPrecondition, description: "\(role.rawValue) rollback is not supported by this build")
    }
    let slots = models.policies
    if toVersion.isEmpty, slots.dropCanary() != nil {
      SwapMetrics(role: role, kind: .rollback).finish(.success)
      return try await finish(role: role, gates: [], operationID: operationID)
    }
    let target = toVersion.isEmpty ? slots.assignment.previousVersion : toVersion
    guard let target else {
      throw RolloutError(kind: .failedPrecondition, description: "no canary to drop and no previous \(role.rawValue) version to return to")
    }
    let swap = SwapMetrics(role: role, kind: .rollback)
    var swapped = false
    defer { swap.finish(swapped ? .success : .failure) }
    var gates: [GateOutcome] = []
    let snapshot = try await gatedPolicy(version: target, path: try path(of: target, role: role), gates: &gates)
    slots.activate(snapshot)
    swapped = true
    return try await finish(role: role, gates: gates, operationID: operationID)
  }

  /// The persisted state of a role, or the serving one when none was persisted.
  func currentState(_ role: CheckpointRole) async throws -> PersistedRoleState {
    let assignment = self.assignment(role)
    return PersistedRoleState(
      active: assignment.activeVersion, canary: assignment.canaryVersion,
      canaryPercent: assignment.canaryPercent, previous: assignment.previousVersion)
  }

  /// The versions serving a role now.
  func assignment(_ role: CheckpointRole) -> RoleAssignment {
    switch role {
    case .policy: return models.policies.assignment
    case .reward: return models.rewards.assignment
    case .safety: return models.safety.assignment
    }
  }

  /// Why activating `version` failed last, if it did.
  func failure(of version: String) async -> String? {
    (try? await store.state(key: Self.failureKey(version))) ?? nil
  }

  // MARK: Reward role

  /// Loads a reward checkpoint beside the active reward model, runs its gates (load, smoke, eval
  /// on stored preference feedback), then routes all traffic or a canary share to it.
  private func activateReward(version: String, canaryPercent: Int, operationID: String) async throws -> RolloutOutcome {
    let current = models.rewards.assignment
    if canaryPercent == 0, current.activeVersion == version, current.canaryVersion == nil {
      return try await finish(role: .reward, gates: [GateOutcome(name: "already-active", passed: true, detail: "\(version) already serves all traffic")], operationID: operationID)
    }
    let path = try path(of: version, role: .reward)
    let swap = SwapMetrics(role: .reward, kind: canaryPercent == 0 ? .activate : .canary)
    var swapped = false
    defer { swap.finish(swapped ? .success : .failure) }
    var gates: [GateOutcome] = []
    let snapshot: RewardSnapshot
    do {
      snapshot = try await gatedReward(version: version, path: path, gates: &gates)
    } catch var error as RolloutError {
      error.gates = gates
      try await recordFailure(error, role: .reward, version: version, operationID: operationID)
      throw error
    }
    if canaryPercent == 0 {
      models.rewards.activate(snapshot)
    } else {
      models.rewards.startCanary(snapshot, percent: canaryPercent)
    }
    swapped = true
    try? await store.setState(key: Self.failureKey(version), value: nil)
    logger.info("reward model activated", metadata: ["version": "\(version)", "canary_percent": "\(canaryPercent)"])
    return try await finish(role: .reward, gates: gates, operationID: operationID)
  }

  private func rollbackReward(toVersion: String, operationID: String) async throws -> RolloutOutcome {
    let slots = models.rewards
    if toVersion.isEmpty, slots.dropCanary() != nil {
      SwapMetrics(role: .reward, kind: .rollback).finish(.success)
      return try await finish(role: .reward, gates: [], operationID: operationID)
    }
    if let target = toVersion.isEmpty ? slots.assignment.previousVersion : toVersion {
      let swap = SwapMetrics(role: .reward, kind: .rollback)
      var swapped = false
      defer { swap.finish(swapped ? .success : .failure) }
      var gates: [GateOutcome] = []
      let snapshot = try await gatedReward(version: target, path: try path(of: target, role: .reward), gates: &gates)
      slots.activate(snapshot)
      swapped = true
      return try await finish(role: .reward, gates: gates, operationID: operationID)
    }
    guard slots.active != nil else {
      throw RolloutError(kind: .failedPrecondition, description: "no reward model is active; the generative judge already scores")
    }
    // Nothing earlier was activated: return to the generative judge on the policy.
    slots.retireAll()
    SwapMetrics(role: .reward, kind: .rollback).finish(.success)
    return try await finish(role: .reward, gates: [GateOutcome(name: "judge", passed: true, detail: "the generative judge on the policy scores again")], operationID: operationID)
  }

  /// Loads a reward model (reward-head folder on the active policy, or a sequence-classification
  /// folder) as a snapshot, without publishing it.
  func loadReward(version: String?, path: String) async throws -> RewardSnapshot {
    if let serving = [models.rewards.active, models.rewards.canary].compactMap({ $0 }).first(where: { $0.version == version }) {
      return serving
    }
    let policy = models.policy
    let settings = models.engineSettings
    return try await Task.detached(priority: .userInitiated) {
      let manifest = URL(fileURLWithPath: path).appendingPathComponent("manifest.json").path
      let backend: any RewardBackend
      if FileManager.default.fileExists(atPath: manifest) {
        guard let policy else { throw ModelLoadError("a reward head needs its base policy loaded") }
        var name = URL(fileURLWithPath: policy.path).lastPathComponent
        if name.hasSuffix(".gguf") { name.removeLast(5) }
        let base = try RewardBaseModel(policy: policy.model, name: name, sha256: policy.sha256)
        backend = try RewardHeadModel(directory: path, base: base, version: version)
      } else {
        backend = try SequenceClassificationRewardModel(directory: path, version: version, settings: settings)
      }
      let size = ModelHost.diskSize(path: path)
      return RewardSnapshot(scorer: RewardScorer(backend: backend), sizeBytes: size)
    }.value
  }

  /// Preference pairs evaluated by the reward gate (the most recent stored ones).
  static let gatePairs = 100

  private func gatedReward(version: String, path: String, gates: inout [GateOutcome]) async throws -> RewardSnapshot {
    let snapshot: RewardSnapshot
    do {
      snapshot = try await loadReward(version: version, path: path)
      gates.append(GateOutcome(name: "load", passed: true, detail: "loaded \(snapshot.scorer.backend.kind.rawValue)"))
    } catch {
      gates.append(GateOutcome(name: "load", passed: false, detail: "\(error)"))
      throw RolloutError(kind: .failedPrecondition, description: "\(version) does not load as a reward model: \(error)")
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
    } catch let error as RolloutError {
      throw error
    } catch {
      gates.append(GateOutcome(name: "smoke", passed: false, detail: "\(error)"))
      throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the smoke test: \(error)")
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
      let passed = candidate + 1e-9 >= (baseline ?? 0) - rewardGateMargin
      let detail =
        "accuracy \(String(format: "%.3f", candidate)) on \(pairs.count) stored preference pairs vs "
        + "\(String(format: "%.3f", baseline ?? 0)) for \(serving?.version ?? "none") (margin \(rewardGateMargin))"
      gates.append(GateOutcome(name: "eval", passed: passed, detail: detail))
      if !passed { throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the eval gate: \(detail)") }
    } catch let error as RolloutError {
      throw error
    } catch {
      gates.append(GateOutcome(name: "eval", passed: false, detail: "\(error)"))
      throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the eval gate: \(error)")
    }
    return snapshot
  }

  /// The most recent stored preference records (up to ``gatePairs``).
  private func storedPreferences() async -> [(prompt: String, chosen: String, rejected: String)] {
    var pairs: [(String, String, String)] = []
    let stream = store.exportPages(FeedbackFilter(kinds: [.preference]), pageSize: 512)
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

  /// Restores the reward model the store says is active (or loads `configured` from the models
  /// folder); with neither, the generative judge on the policy scores.
  func startReward(configured: String?) async {
    let persisted = (try? await loadState(.reward)) ?? nil
    do {
      if let active = persisted?.active {
        models.rewards.activate(try await loadReward(version: active, path: try path(of: active, role: .reward)))
        if let canary = persisted?.canary, let percent = persisted?.canaryPercent, percent > 0 {
          models.rewards.startCanary(try await loadReward(version: canary, path: try path(of: canary, role: .reward)), percent: percent)
        }
      } else if let configured {
        let snapshot = try await loadReward(version: nil, path: configured)
        builtin[snapshot.version] = (.reward, configured)
        models.rewards.activate(snapshot)
      }
    } catch {
      logger.error("the reward model does not load; the generative judge scores instead", metadata: ["error": "\(error)"])
    }
  }

  // MARK: Safety

  /// Builds the safety checker: the policy file (or the built-in default), the lexical model, the
  /// ported classifiers (tox-block, hatesonar) when the policy enables them and their converted
  /// files are in `modelsDir`, the rules and, when configured, a guard model.
  func startSafety(policyFile: String?, lexicalPath: String, modelsDir: String, guardPath: String?) async throws {
    let policy = try policyFile.map { try SafetyPolicy(contentsOf: $0) } ?? SafetyPolicy.builtInDefault()
    var backends: [any SafetyBackend] = [RulesBackend(termLists: policy.termLists)]
    if policy.enabledBackends.contains("lexical") {
      do {
        backends.append(LexicalBackend(classifier: try LexicalClassifier(contentsOf: lexicalPath)))
      } catch {
        throw ModelLoadError("the lexical safety model: \(error) (run scripts/fetch-safety-model.sh)")
      }
    }
    let folder = URL(fileURLWithPath: modelsDir)
    if policy.enabledBackends.contains("toxblock") {
      let weights = folder.appendingPathComponent(ToxBlockClassifier.defaultWeightsFileName).path
      let tokenizer = folder.appendingPathComponent(ToxBlockClassifier.defaultTokenizerFileName).path
      try loadPorted("toxblock", files: [weights, tokenizer], into: &backends) {
        ToxBlockBackend(classifier: try ToxBlockClassifier(weightsPath: weights, tokenizerPath: tokenizer))
      }
    }
    if policy.enabledBackends.contains("hatesonar") {
      let path = folder.appendingPathComponent(HateSonarClassifier.defaultFileName).path
      try loadPorted("hatesonar", files: [path], into: &backends) {
        HateSonarBackend(classifier: try HateSonarClassifier(contentsOf: path))
      }
    }
    var size: UInt64 = 0
    if let guardPath {
      backends.append(try await Task.detached { try GuardBackend(path: guardPath) }.value)
      size = ModelHost.diskSize(path: guardPath)
    }
    let checker = try SafetyChecker(policy: policy, backends: backends)
    models.safety.activate(SafetySnapshot(checker: checker, sizeBytes: size))
    logger.info("safety checker ready", metadata: ["version": "\(checker.version)"])
  }

  /// Adds a ported classifier's backend when its converted files are all present. An absent
  /// file leaves the backend out (like an unconfigured guard), with a warning; a file that does
  /// not load stops the start.
  private func loadPorted(
    _ name: String, files: [String], into backends: inout [any SafetyBackend], load: () throws -> any SafetyBackend
  ) throws {
    if let missing = files.first(where: { !FileManager.default.fileExists(atPath: $0) }) {
      logger.warning(
        "the safety policy enables \(name) but its model is absent: not used (run scripts/fetch-safety-ports.sh)",
        metadata: ["missing": "\(missing)"])
      return
    }
    do {
      backends.append(try load())
    } catch {
      throw ModelLoadError("the \(name) safety model: \(error) (run scripts/fetch-safety-ports.sh)")
    }
  }

  // MARK: Gates

  /// Loads a policy fully, beside the active one, and checks it before it may serve.
  private func gatedPolicy(version: String, path: String, gates: inout [GateOutcome]) async throws -> PolicySnapshot {
    let snapshot: PolicySnapshot
    do {
      snapshot = try await loadPolicy(version: version, path: path)
      gates.append(GateOutcome(name: "load", passed: true, detail: "loaded \(snapshot.model.engine.model.hyperparameters.architecture.rawValue), \(snapshot.sizeBytes) bytes"))
    } catch {
      gates.append(GateOutcome(name: "load", passed: false, detail: "\(error)"))
      throw RolloutError(kind: .failedPrecondition, description: "\(version) does not load as a policy: \(error)")
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
      snapshot.stop()
      throw error
    }
    return snapshot
  }

  private func loadPolicy(version: String, path: String? = nil) async throws -> PolicySnapshot {
    // Reuse only a snapshot that still serves (active or canary); a replaced one is stopping.
    if let serving = [models.policies.active, models.policies.canary].compactMap({ $0 }).first(where: { $0.version == version }) {
      return serving
    }
    let path = try path ?? self.path(of: version, role: .policy)
    return try await models.loadPolicySnapshot(path: path, version: version)
  }

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

  // MARK: Helpers

  /// The model path of a version from the registry or the models folder.
  private func path(of version: String, role: CheckpointRole) throws -> String {
    if let known = builtin[version] {
      guard known.role == role else {
        throw RolloutError(kind: .invalidArgument, description: "\(version) is a \(known.role.rawValue) checkpoint, not \(role.rawValue)")
      }
      return known.path
    }
    let record: CheckpointRecord?
    do {
      record = try registry.record(role: role, version: version)
      if record == nil, let other = CheckpointRole.allCases.first(where: { $0 != role && ((try? registry.record(role: $0, version: version)) ?? nil) != nil }) {
        throw RolloutError(kind: .invalidArgument, description: "\(version) is a \(other.rawValue) checkpoint, not \(role.rawValue)")
      }
    } catch let error as CheckpointRegistryError {
      throw RolloutError(kind: error.category == .invalidArgument ? .invalidArgument : .unavailable, description: "\(error)")
    }
    guard let record else {
      throw RolloutError(kind: .notFound, description: "no \(role.rawValue) checkpoint \(version) in the registry (see ListCheckpoints)")
    }
    return record.modelPath
  }

  private func loadState(_ role: CheckpointRole) async throws -> PersistedRoleState? {
    guard let text = try await store.state(key: Self.stateKey(role)) else { return nil }
    return try JSONDecoder().decode(PersistedRoleState.self, from: Data(text.utf8))
  }

  private func priorOutcome(_ operationID: String) async throws -> RolloutOutcome? {
    guard !operationID.isEmpty, let text = try await store.state(key: Self.operationKey(operationID)) else { return nil }
    let outcome = try JSONDecoder().decode(RolloutOutcome.self, from: Data(text.utf8))
    if let failure = outcome.failure {
      throw RolloutError(kind: .failedPrecondition, description: failure, gates: outcome.gates)
    }
    return outcome
  }

  /// Remembers why `version` failed its gates (ListCheckpoints shows it) and, for an operation id,
  /// the failed outcome, so a repeated request gets the same answer.
  private func recordFailure(_ error: RolloutError, role: CheckpointRole, version: String, operationID: String) async throws {
    try? await store.setState(key: Self.failureKey(version), value: error.description)
    guard !operationID.isEmpty else { return }
    let outcome = RolloutOutcome(role: role, state: try await currentState(role), gates: error.gates, failure: error.description)
    try? await store.setState(key: Self.operationKey(operationID), value: Self.encode(outcome))
  }

  /// Persists the role's new state (and the operation's outcome) and returns it.
  private func finish(role: CheckpointRole, gates: [GateOutcome], operationID: String) async throws -> RolloutOutcome {
    let state = try await currentState(role)
    do {
      try await store.setState(key: Self.stateKey(role), value: Self.encode(state))
      let outcome = RolloutOutcome(role: role, state: state, gates: gates, failure: nil)
      if !operationID.isEmpty { try await store.setState(key: Self.operationKey(operationID), value: Self.encode(outcome)) }
      return outcome
    } catch {
      throw RolloutError(kind: .unavailable, description: "the new state serves but could not be persisted: \(error)")
    }
  }

  static func encode(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
  }
}
