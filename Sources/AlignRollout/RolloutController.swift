import AlignEngine
import AlignServing
import AlignStore
import Foundation
import Logging

/// Checkpoint rollout: activation behind gates, canary, promotion and rollback, persisted in the
/// rollout state store. An actor, so admin operations run one at a time.
///
/// The operations are the same for every role (``RoleRollout``): what differs — how a version
/// loads, which gates it must pass, what serves when no version does — lives in the role's
/// conformance. Nothing here knows about gRPC: the Admin service maps requests onto it and its
/// errors (``RolloutError``) onto status codes.
public actor RolloutController {
  let models: ModelHost
  let registry: CheckpointRegistry
  let state: any RolloutStateStore
  let logger: Logger
  let policyRollout: PolicyRollout
  let rewardRollout: RewardRollout
  let safetyRollout: SafetyRollout
  /// Checkpoints served from the models folder rather than the registry (the startup policy),
  /// by version, so a rollback can return to them.
  private var builtin: [String: (role: CheckpointRole, path: String)] = [:]
  /// Admin operations running, and a count bumped when one ends. Actor methods interleave at
  /// every `await`, so a replica sync can straddle an operation: what it read from the store
  /// before the operation persisted its state is stale, and applying it would revert the
  /// operation. A sync applies nothing while an operation runs or once one ended since it began.
  var operationsInFlight = 0
  var operationEpoch: UInt64 = 0
  /// When the canary analysis promotes or rolls back on its own (``analyzeCanary()``).
  public nonisolated let canaryPolicy: CanaryPolicy
  /// The window the running comparison covers (nil while no policy canary serves).
  var canaryWindow: CanaryWindow?
  /// The latest comparison (GetStatus shows it).
  public internal(set) var lastComparison: CanaryComparison?

  /// - Parameters:
  ///   - state: where the serving versions, operation outcomes and gate failures persist.
  ///   - rewardGate: the held-out preference pairs (and the allowed accuracy drop) of the reward gate.
  ///   - safetyGate: the held-out labelled texts (and the allowed change) of the safety gate.
  ///   - policyGate: the evaluation prompts (and allowed margins) of the policy quality gate; nil
  ///     runs no quality gate.
  ///   - canary: when the canary analysis promotes or rolls back on its own.
  public init(
    models: ModelHost, registry: CheckpointRegistry, state: any RolloutStateStore, rewardGate: RewardGateSet,
    safetyGate: SafetyGateSet, policyGate: PolicyGateSet? = nil, canary: CanaryPolicy = CanaryPolicy(), logger: Logger
  ) {
    self.canaryPolicy = canary
    self.models = models
    self.registry = registry
    self.state = state
    self.logger = logger
    self.policyRollout = PolicyRollout(models: models, gateSet: policyGate)
    self.rewardRollout = RewardRollout(models: models, gateSet: rewardGate, logger: logger)
    self.safetyRollout = SafetyRollout(models: models, base: SafetyBase(), gateSet: safetyGate, logger: logger)
  }

  static func stateKey(_ role: CheckpointRole) -> String { "rollout.role.\(role.rawValue)" }
  static func operationKey(_ id: String) -> String { "rollout.operation.\(id)" }
  static func failureKey(_ version: String) -> String { "rollout.failed.\(version)" }
  static func evaluationKey(_ version: String) -> String { "rollout.evaluation.\(version)" }

  /// The rollout of a role that can be activated, or why it cannot.
  func rollout(for role: CheckpointRole) throws -> any RoleRollout {
    switch role {
    case .policy: return policyRollout
    case .reward: return rewardRollout
    case .safety: return safetyRollout
    }
  }

  // MARK: Startup and replica sync

  /// Loads the policy the store says is active (or, when none is recorded or it cannot load, the
  /// startup policy from the models folder) and any canary.
  public func startup(defaultPolicyPath: String) async throws {
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
    if persisted?.active == models.policy?.version { models.policies.restorePrevious(persisted?.previous) }
    if let canary = persisted?.canary, persisted?.canaryPercent ?? 0 > 0, let path = try? path(of: canary, role: .policy) {
      do {
        let snapshot = try await models.loadPolicySnapshot(path: path, version: canary)
        models.policies.startCanary(snapshot, percent: persisted?.canaryPercent ?? 0)
      } catch {
        logger.error("the recorded canary does not load; no canary", metadata: ["version": "\(canary)", "error": "\(error)"])
      }
    }
  }

  /// Restores the reward model the store says is active (or loads `configured` from the models
  /// folder); with neither, the generative judge on the policy scores.
  public func startReward(configured: String?) async {
    let persisted = (try? await loadState(.reward)) ?? nil
    let rewards = rewardRollout
    do {
      if let active = persisted?.active {
        models.rewards.activate(try await rewards.load(version: active, path: try path(of: active, role: .reward)))
        models.rewards.restorePrevious(persisted?.previous)
        if let canary = persisted?.canary, let percent = persisted?.canaryPercent, percent > 0 {
          models.rewards.startCanary(
            try await rewards.load(version: canary, path: try path(of: canary, role: .reward)), percent: percent)
        }
      } else if let configured {
        let snapshot = try await rewards.load(version: nil, path: configured)
        builtin[snapshot.version] = (.reward, configured)
        models.rewards.activate(snapshot)
      }
    } catch {
      logger.error("the reward model does not load; the generative judge scores instead", metadata: ["error": "\(error)"])
    }
  }

  /// Builds the startup safety checker — the policy file (or the built-in default) with the
  /// trained classifier at `classifierPath` (when the policy enables `classifier`), the ported
  /// classifiers it enables, the rules and, when configured, a guard model — and serves it, unless
  /// the store records an activated safety checkpoint, which is restored instead.
  public func startSafety(policyFile: String?, classifierPath: String?, guardPath: String?) async throws {
    let policy = try policyFile.map { try SafetyPolicy(contentsOf: $0) } ?? SafetyPolicy.builtInDefault()
    var guardBackend: GuardBackend? = nil
    if let guardPath {
      let configuration = GuardBackend.Configuration(batching: models.batching.safety)
      guardBackend = try await Task.detached { try GuardBackend(path: guardPath, configuration: configuration) }.value
    }
    safetyRollout.base.state.withLock {
      $0 = SafetyBase.State(
        policy: policy, policyFile: policyFile, policyStamp: policyFile.flatMap(SafetyBase.stamp), guardBackend: guardBackend)
    }
    let builtin = try await safetyRollout.load(version: nil, path: classifierPath ?? "")
    self.builtin[builtin.version] = (.safety, classifierPath ?? "")
    let persisted = (try? await loadState(.safety)) ?? nil
    if let active = persisted?.active, active != builtin.version {
      do {
        models.safety.activate(try await safetyRollout.load(version: active, path: try path(of: active, role: .safety)))
        models.safety.restorePrevious(persisted?.previous)
        if let canary = persisted?.canary, let percent = persisted?.canaryPercent, percent > 0 {
          models.safety.startCanary(
            try await safetyRollout.load(version: canary, path: try path(of: canary, role: .safety)), percent: percent)
        }
        logger.info("restored the active safety checker from the store", metadata: ["version": "\(active)"])
        return
      } catch {
        logger.error(
          "the recorded safety checkpoint does not load; serving the startup checker", metadata: ["version": "\(active)", "error": "\(error)"])
      }
    }
    models.safety.activate(builtin)
    logger.info("safety checker ready", metadata: ["version": "\(builtin.version)"])
  }

  /// Reads the startup policy file again when it changed on disk and, while the startup checker
  /// serves, replaces it with one under the new policy (no restart). A file that no longer parses
  /// is reported and the serving policy kept.
  public func reloadSafetyPolicyIfChanged() async {
    let (file, stamp) = safetyRollout.base.state.withLock { ($0.policyFile, $0.policyStamp) }
    guard let file, let now = SafetyBase.stamp(file), now != stamp else { return }
    let policy: SafetyPolicy
    do {
      policy = try SafetyPolicy(contentsOf: file)
    } catch {
      safetyRollout.base.state.withLock { $0.policyStamp = now }
      logger.error("the safety policy file changed but does not load; keeping the serving policy", metadata: ["error": "\(error)"])
      return
    }
    safetyRollout.base.state.withLock {
      $0.policy = policy
      $0.policyStamp = now
    }
    guard let active = models.safety.active, let known = builtin[active.version], known.role == .safety else {
      logger.info("the safety policy file changed; it applies when the startup checker serves again")
      return
    }
    do {
      let snapshot = try await safetyRollout.load(version: nil, path: known.path)
      builtin[snapshot.version] = known
      models.safety.activate(snapshot)
      try? await state.setState(key: Self.stateKey(.safety), value: Self.encode(currentState(.safety)))
      logger.info("safety policy reloaded", metadata: ["version": "\(snapshot.version)"])
    } catch {
      logger.error("the reloaded safety policy does not build a checker; keeping the serving one", metadata: ["error": "\(error)"])
    }
  }

  /// Applies the persisted state when another replica changed it.
  public func sync() async {
    let epoch = operationEpoch
    await sync(policyRollout, epoch: epoch)
    await sync(rewardRollout, epoch: epoch)
    await sync(safetyRollout, epoch: epoch)
    await reloadSafetyPolicyIfChanged()
  }

  /// Whether an admin operation runs now or ended since `epoch` was read.
  private func superseded(_ epoch: UInt64) -> Bool { operationsInFlight > 0 || operationEpoch != epoch }

  /// Converges one role on the store's versions (no active one = the role's fallback, for a role
  /// that has one).
  private func sync<R: RoleRollout>(_ rollout: R, epoch: UInt64) async {
    guard let persisted = try? await loadState(rollout.role), !superseded(epoch) else { return }
    let slots = rollout.slots
    let local = slots.assignment
    guard persisted.active != nil || rollout.fallback != nil else { return }
    guard persisted.active != local.activeVersion || persisted.canary != local.canaryVersion
      || (persisted.canary != nil && persisted.canaryPercent != local.canaryPercent)
    else { return }
    let swap = SwapMetrics(role: rollout.role, kind: .sync)
    do {
      if let active = persisted.active {
        if active != local.activeVersion {
          let snapshot = try await rollout.load(version: active, path: try path(of: active, role: rollout.role))
          guard !superseded(epoch) else { return }
          slots.activate(snapshot)
        }
      } else {
        slots.retireAll()
      }
      if let canary = persisted.canary, persisted.canaryPercent > 0 {
        let snapshot = try await rollout.load(version: canary, path: try path(of: canary, role: rollout.role))
        guard !superseded(epoch) else { return }
        slots.startCanary(snapshot, percent: persisted.canaryPercent)
      } else {
        slots.dropCanary()
      }
      swap.finish(.success)
      logger.info(
        "converged on the store's \(rollout.role.rawValue) versions",
        metadata: ["active": "\(persisted.active ?? rollout.fallback?.name ?? "")", "canary": "\(persisted.canary ?? "")"])
    } catch {
      swap.finish(.failure)
      logger.error("cannot apply the store's \(rollout.role.rawValue) versions", metadata: ["error": "\(error)"])
    }
  }

  // MARK: Operations

  /// Loads `version` beside the active checkpoint, runs the gates, then routes all traffic
  /// (`canaryPercent` 0) or that percentage of requests to it.
  public func activate(role: CheckpointRole, version: String, canaryPercent: Int, operationID: String) async throws -> RolloutOutcome {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    if let prior = try await priorOutcome(operationID) { return prior }
    guard (0...99).contains(canaryPercent) else {
      throw RolloutError(kind: .invalidArgument, description: "canary_percent must be 0..99, got \(canaryPercent)")
    }
    return try await activate(try rollout(for: role), version: version, canaryPercent: canaryPercent, operationID: operationID)
  }

  private func activate<R: RoleRollout>(
    _ rollout: R, version: String, canaryPercent: Int, operationID: String
  ) async throws -> RolloutOutcome {
    let role = rollout.role
    let current = rollout.slots.assignment
    if canaryPercent == 0, current.activeVersion == version, current.canaryVersion == nil {
      return try await finish(role: role, gates: [GateOutcome(name: "already-active", passed: true, detail: "\(version) already serves all traffic")], operationID: operationID)
    }
    let path = try path(of: version, role: role)
    let swap = SwapMetrics(role: role, kind: canaryPercent == 0 ? .activate : .canary)
    var swapped = false
    defer { swap.finish(swapped ? .success : .failure) }
    var gates: [GateOutcome] = []
    let snapshot: R.Snapshot
    do {
      snapshot = try await rollout.gated(version: version, path: path, gates: &gates)
      await recordEvaluation(version: version, gates: gates)
    } catch var error as RolloutError {
      error.gates = gates
      await recordEvaluation(version: version, gates: gates)
      try await recordFailure(error, role: role, version: version, operationID: operationID)
      throw error
    }
    if canaryPercent == 0 {
      rollout.slots.activate(snapshot)
    } else {
      rollout.slots.startCanary(snapshot, percent: canaryPercent)
    }
    swapped = true
    try? await state.setState(key: Self.failureKey(version), value: nil)
    logger.info("\(role.rawValue) activated", metadata: ["version": "\(version)", "canary_percent": "\(canaryPercent)"])
    return try await finish(role: role, gates: gates, operationID: operationID)
  }

  /// Makes the canary serve all traffic.
  public func promote(role: CheckpointRole, operationID: String) async throws -> RolloutOutcome {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    if let prior = try await priorOutcome(operationID) { return prior }
    var promoted = false
    if let rollout = try? rollout(for: role) { promoted = Self.promoteCanary(rollout) }
    guard promoted else {
      throw RolloutError(kind: .failedPrecondition, description: "no \(role.rawValue) canary to promote")
    }
    SwapMetrics(role: role, kind: .promote).finish(.success)
    return try await finish(role: role, gates: [], operationID: operationID)
  }

  private static func promoteCanary<R: RoleRollout>(_ rollout: R) -> Bool { rollout.slots.promoteCanary() }

  /// Drops the canary, or returns all traffic to `toVersion` (default: the previous active one,
  /// or the role's fallback when no earlier version was activated).
  public func rollback(role: CheckpointRole, toVersion: String, operationID: String) async throws -> RolloutOutcome {
    operationsInFlight += 1
    defer {
      operationsInFlight -= 1
      operationEpoch &+= 1
    }
    if let prior = try await priorOutcome(operationID) { return prior }
    let rollout: any RoleRollout
    do {
      rollout = try self.rollout(for: role)
    } catch {
      throw RolloutError(kind: .failedPrecondition, description: "\(role.rawValue) rollback is not supported by this build")
    }
    return try await rollback(rollout, toVersion: toVersion, operationID: operationID)
  }

  private func rollback<R: RoleRollout>(_ rollout: R, toVersion: String, operationID: String) async throws -> RolloutOutcome {
    let (role, slots) = (rollout.role, rollout.slots)
    if toVersion.isEmpty, slots.dropCanary() != nil {
      SwapMetrics(role: role, kind: .rollback).finish(.success)
      return try await finish(role: role, gates: [], operationID: operationID)
    }
    if let target = toVersion.isEmpty ? slots.assignment.previousVersion : toVersion {
      let swap = SwapMetrics(role: role, kind: .rollback)
      var swapped = false
      defer { swap.finish(swapped ? .success : .failure) }
      var gates: [GateOutcome] = []
      let snapshot = try await rollout.gatedForRollback(version: target, path: try path(of: target, role: role), gates: &gates)
      slots.activate(snapshot)
      swapped = true
      return try await finish(role: role, gates: gates, operationID: operationID)
    }
    guard let fallback = rollout.fallback else {
      throw RolloutError(kind: .failedPrecondition, description: "no canary to drop and no previous \(role.rawValue) version to return to")
    }
    guard slots.active != nil else {
      throw RolloutError(kind: .failedPrecondition, description: "no \(role.rawValue) model is active; \(fallback.description) already serves")
    }
    // Nothing earlier was activated: return to the fallback.
    slots.retireAll()
    SwapMetrics(role: role, kind: .rollback).finish(.success)
    return try await finish(
      role: role, gates: [GateOutcome(name: fallback.name, passed: true, detail: "\(fallback.description) serves again")],
      operationID: operationID)
  }

  /// The versions serving a role now.
  public func assignment(_ role: CheckpointRole) -> RoleAssignment {
    switch role {
    case .policy: return models.policies.assignment
    case .reward: return models.rewards.assignment
    case .safety: return models.safety.assignment
    }
  }

  /// The serving state of a role, as it is persisted.
  func currentState(_ role: CheckpointRole) -> PersistedRoleState {
    let assignment = self.assignment(role)
    return PersistedRoleState(
      active: assignment.activeVersion, canary: assignment.canaryVersion,
      canaryPercent: assignment.canaryPercent, previous: assignment.previousVersion)
  }

  /// What the held-out evaluation gate measured when `version` was last activated (JSON), if it ran.
  public func evaluation(of version: String) async -> String? {
    (try? await state.state(key: Self.evaluationKey(version))) ?? nil
  }

  /// Keeps the eval gate's figures with the checkpoint (ListCheckpoints shows them).
  private func recordEvaluation(version: String, gates: [GateOutcome]) async {
    guard let eval = gates.last(where: { $0.name == "eval" }), eval.detail.hasPrefix("{") else { return }
    try? await state.setState(key: Self.evaluationKey(version), value: eval.detail)
  }

  /// Why activating `version` failed last, if it did.
  public func failure(of version: String) async -> String? {
    (try? await state.state(key: Self.failureKey(version))) ?? nil
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
    guard let text = try await state.state(key: Self.stateKey(role)) else { return nil }
    return try JSONDecoder().decode(PersistedRoleState.self, from: Data(text.utf8))
  }

  private func priorOutcome(_ operationID: String) async throws -> RolloutOutcome? {
    guard !operationID.isEmpty, let text = try await state.state(key: Self.operationKey(operationID)) else { return nil }
    let outcome = try JSONDecoder().decode(RolloutOutcome.self, from: Data(text.utf8))
    if let failure = outcome.failure {
      throw RolloutError(kind: .failedPrecondition, description: failure, gates: outcome.gates)
    }
    return outcome
  }

  /// Remembers why `version` failed its gates (ListCheckpoints shows it) and, for an operation id,
  /// the failed outcome, so a repeated request gets the same answer.
  private func recordFailure(_ error: RolloutError, role: CheckpointRole, version: String, operationID: String) async throws {
    try? await state.setState(key: Self.failureKey(version), value: error.description)
    guard !operationID.isEmpty else { return }
    let outcome = RolloutOutcome(role: role, state: currentState(role), gates: error.gates, failure: error.description)
    try? await state.setState(key: Self.operationKey(operationID), value: Self.encode(outcome))
  }

  /// Persists the role's new state (and the operation's outcome) and returns it.
  func finish(role: CheckpointRole, gates: [GateOutcome], operationID: String) async throws -> RolloutOutcome {
    let current = currentState(role)
    do {
      try await state.setState(key: Self.stateKey(role), value: Self.encode(current))
      let outcome = RolloutOutcome(role: role, state: current, gates: gates, failure: nil)
      if !operationID.isEmpty { try await state.setState(key: Self.operationKey(operationID), value: Self.encode(outcome)) }
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
