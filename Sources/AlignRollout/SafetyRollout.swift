import AlignEngine
import AlignServing
import AlignStore
import Foundation
import Logging
import Synchronization

/// What every safety checker of the process shares: the startup policy (file or built-in), the
/// guard model when one is configured, and the file the policy came from (reloaded when it
/// changes, ``SafetyRollout/reloadPolicyIfChanged(builtin:)``).
final class SafetyBase: Sendable {
  struct State {
    /// Nil until ``RolloutController/startSafety(policyFile:classifierPath:guardPath:)``.
    var policy: SafetyPolicy?
    var policyFile: String?
    /// The policy file's modification time and size when read.
    var policyStamp: String?
    var guardBackend: GuardBackend?
  }

  let state: Mutex<State>

  init() {
    state = Mutex(State(policy: nil, policyFile: nil, policyStamp: nil, guardBackend: nil))
  }

  /// The startup policy.
  /// - Throws: ``ModelLoadError`` before the safety checker was started.
  func policy() throws -> SafetyPolicy {
    guard let policy = state.withLock({ $0.policy }) else { throw ModelLoadError("the safety policy is not loaded yet") }
    return policy
  }
  var guardBackend: GuardBackend? { state.withLock { $0.guardBackend } }

  /// Modification time and size of a file, to notice an edit without reading it.
  static func stamp(_ path: String) -> String? {
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
    let date = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
    return "\(date):\((attributes[.size] as? NSNumber)?.intValue ?? -1)"
  }
}

/// Held-out labelled texts a safety candidate is evaluated on before it may serve (JSONL `text`,
/// `labels`, `topic`; by default the validation split shipped with the default classifier,
/// `eval/safety-validation.jsonl` in the models folder), at most `limit` of them spread evenly
/// over the file.
public struct SafetyGateSet: Sendable {
  public var path: String
  /// Most texts of the file evaluated, spread evenly over it (0 = all).
  public var limit: Int
  /// Largest drop in harmful texts flagged, or rise in benign texts flagged, against the serving checker.
  public var margin: Double

  public init(path: String, limit: Int = 0, margin: Double) {
    self.path = path
    self.limit = limit
    self.margin = margin
  }

  func texts() throws -> [LabelledText] {
    do {
      let texts = try LabelledText.read(path: path)
      guard texts.contains(where: { $0.labels.isEmpty }), texts.contains(where: { !$0.labels.isEmpty }) else {
        throw PreferenceFileError("\(path) needs both harmful and benign texts")
      }
      return PreferenceFile.evenlySpaced(texts, limit: limit)
    } catch {
      throw RolloutError(
        kind: .failedPrecondition, description: "the safety gate has no held-out evaluation set: \(error) (safety_gate_file)")
    }
  }
}

/// The safety role: a version is a trained classifier folder (`alignd.embedding-head` of kind
/// safety), optionally with its own `safety-policy.json`; without one it runs under the startup
/// policy. Gates: load, smoke (a verdict for sample texts), and an eval on the held-out gate set
/// against the serving checker. The startup checker (policy file + configured classifier) is the
/// built-in version a rollback can return to.
struct SafetyRollout: RoleRollout {
  let models: ModelHost
  let base: SafetyBase
  let gateSet: SafetyGateSet
  let logger: Logger
  var role: CheckpointRole { .safety }
  var slots: RoleSlots<SafetySnapshot> { models.safety }

  /// The policy file a safety checkpoint may carry.
  static let policyFileName = "safety-policy.json"

  func load(version: String?, path: String) async throws -> SafetySnapshot {
    if let serving = serving(version) { return serving }
    let checkpointPolicy = path.isEmpty ? nil : URL(fileURLWithPath: path).appendingPathComponent(Self.policyFileName).path
    let policy: SafetyPolicy
    if let checkpointPolicy, FileManager.default.fileExists(atPath: checkpointPolicy) {
      policy = try SafetyPolicy(contentsOf: checkpointPolicy)
    } else {
      policy = try base.policy()
    }
    let checker = try await Task.detached(priority: .userInitiated) { [models, base] in
      try Self.checker(policy: policy, classifier: path.isEmpty ? nil : path, models: models, guardBackend: base.guardBackend)
    }.value
    let size = path.isEmpty ? 0 : ModelHost.diskSize(path: path)
    return SafetySnapshot(checker: checker, sizeBytes: size, version: version)
  }

  /// A checker for `policy`: the rules, the trained classifier at `classifier` and the ported
  /// classifiers the policy enables (sharing the judges' loaded models), and the guard model.
  static func checker(
    policy: SafetyPolicy, classifier: String?, models: ModelHost, guardBackend: GuardBackend?
  ) throws -> SafetyChecker {
    let enabled = policy.enabledBackends
    var backends: [any SafetyBackend] = [RulesBackend(termLists: policy.termLists)]
    let judges = models.judges
    if enabled.contains("classifier"), let classifier {
      guard let judges else { throw ModelLoadError("\(classifier) is a trained classifier, but the judges' shared models are not loaded") }
      let batching = ClassifierBackend.Batching(
        maxBatchSize: max(64, models.batching.safety.maxBatchSize), maxDelay: models.batching.safety.maxDelay,
        queueCapacity: 1024, agingInterval: models.batching.safety.agingInterval, name: "safety-classifier")
      backends.append(try judges.safetyClassifier(headDirectory: classifier, batching: batching))
    }
    let ported = judges?.ported ?? PortedClassifiers()
    func need(_ name: String, _ present: Bool, _ fetch: String) throws {
      if enabled.contains(name) && !present {
        throw ModelLoadError("the safety policy enables \(name), but its model is not in the models folder (run \(fetch))")
      }
    }
    try need("lexical", ported.lexical != nil, "scripts/fetch-safety-model.sh")
    try need("toxblock", ported.toxBlock != nil, "scripts/fetch-safety-ports.sh")
    try need("hatesonar", ported.hateSonar != nil, "scripts/fetch-safety-ports.sh")
    if let lexical = ported.lexical, enabled.contains("lexical") { backends.append(LexicalBackend(classifier: lexical)) }
    if let toxBlock = ported.toxBlock, enabled.contains("toxblock") { backends.append(ToxBlockBackend(classifier: toxBlock)) }
    if let hateSonar = ported.hateSonar, enabled.contains("hatesonar") { backends.append(HateSonarBackend(classifier: hateSonar)) }
    if let guardBackend { backends.append(guardBackend) }
    return try SafetyChecker(policy: policy, backends: backends)
  }

  func gated(version: String, path: String, gates: inout [GateOutcome]) async throws -> SafetySnapshot {
    let snapshot = try await loadGate(version: version, path: path, gates: &gates) { snapshot in
      "loaded \(snapshot.checker.version)"
    }
    // Smoke: a verdict with finite scores for a benign and a harmful sample.
    do {
      let verdicts = try await snapshot.checker.check([
        SafetyInput(text: "What is a good recipe for banana bread?"),
        SafetyInput(text: "I will kill you and your whole family tomorrow."),
      ])
      let finite = verdicts.count == 2 && verdicts.allSatisfy { $0.scores.allSatisfy { $0.score.isFinite } }
      gates.append(GateOutcome(name: "smoke", passed: finite, detail: finite ? "finite scores on two sample texts" : "non-finite scores"))
      if !finite { throw RolloutError(kind: .failedPrecondition, description: "\(version) failed the smoke test: non-finite scores") }
    } catch {
      throw gateFailure(error, gate: "smoke", "smoke test", version: version, gates: &gates)
    }
    // Eval: on the held-out texts, the share of harmful texts flagged may not drop, nor the share
    // of benign texts flagged rise, by more than the margin against the serving checker.
    do {
      let texts = try gateSet.texts()
      let candidate = try await SafetyEvaluation.evaluate(texts, checker: snapshot.checker)
      let serving = models.safety.active
      var baseline: SafetyEvaluation? = nil
      if let serving { baseline = try await SafetyEvaluation.evaluate(texts, checker: serving.checker) }
      let recallFloor = (baseline?.harmfulRecall.rate ?? 0) - gateSet.margin
      let falsePositiveCeiling = (baseline?.benignFalsePositives.rate ?? 1) + gateSet.margin
      let passed =
        candidate.harmfulRecall.rate + 1e-9 >= recallFloor
        && candidate.benignFalsePositives.rate <= falsePositiveCeiling + 1e-9
      try GateRecord(
        file: gateSet.path, candidate: candidate, serving: serving?.version, servingEvaluation: baseline,
        margin: gateSet.margin, passed: passed
      ).conclude(&gates) {
        "\(version) failed the eval gate on \(texts.count) held-out texts of \(gateSet.path): \(candidate.summary) "
          + "against \(serving?.version ?? "none")'s \(baseline?.summary ?? "-") (allowed change \(gateSet.margin))"
      }
    } catch {
      throw gateFailure(error, gate: "eval", "eval gate", version: version, gates: &gates)
    }
    return snapshot
  }

  /// The safety role always has an active checker (the startup one at least).
  var fallback: (name: String, description: String)? { nil }
}
