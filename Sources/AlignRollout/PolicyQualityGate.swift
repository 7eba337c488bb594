import AlignEngine
import AlignServing
import Foundation
import Synchronization

/// The fixed evaluation prompts of the policy quality gate (JSONL, one `{"prompt": …}` per line;
/// by default `eval/policy-eval-prompts.jsonl` in the models folder, committed under Models/eval),
/// and how much worse than the active policy a candidate may do on them.
public struct PolicyGateSet: Sendable {
  public var path: String
  /// Most prompts of the file used (spread evenly over it; 0 = all).
  public var limit: Int
  /// Tokens generated per prompt (greedy).
  public var maxTokens: Int
  /// Largest drop in mean reward (serving reward model) against the active policy.
  public var rewardMargin: Double
  /// Largest rise in the share of completions the serving safety checker flags.
  public var safetyMargin: Double

  public init(path: String, limit: Int = 0, maxTokens: Int = 32, rewardMargin: Double, safetyMargin: Double) {
    self.path = path
    self.limit = limit
    self.maxTokens = maxTokens
    self.rewardMargin = rewardMargin
    self.safetyMargin = safetyMargin
  }

  /// The prompts, read on each activation (an operator may replace the file).
  /// - Throws: ``RolloutError`` (failed precondition) naming the file when it is absent or broken.
  func prompts() throws -> [String] {
    do {
      guard let data = FileManager.default.contents(atPath: path) else {
        throw PreferenceFileError("cannot read \(path)")
      }
      struct Line: Decodable { var prompt: String }
      var prompts: [String] = []
      for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated()
      where !line.trimmingCharacters(in: .whitespaces).isEmpty {
        do {
          prompts.append(try JSONDecoder().decode(Line.self, from: Data(line.utf8)).prompt)
        } catch {
          throw PreferenceFileError("\(path) line \(number + 1): expected {\"prompt\": \"…\"}")
        }
      }
      guard !prompts.isEmpty else { throw PreferenceFileError("\(path) holds no prompts") }
      return PreferenceFile.evenlySpaced(prompts, limit: limit)
    } catch {
      throw RolloutError(
        kind: .failedPrecondition, description: "the policy gate has no evaluation prompts: \(error) (policy_gate_file)")
    }
  }
}

/// What a policy generated on the gate's prompts, judged by the serving reward model and safety
/// checker.
struct PolicyEvaluation: Codable, Sendable, Equatable {
  var prompts: Int
  /// Nil when no reward model serves (only the generative judge, which ranks at chance).
  var meanReward: Double?
  var rewardModel: String?
  var flagged: Int
  var safetyFlagRate: Double
  var safetyChecker: String
  /// The first completions, to read what changed.
  var examples: [String]

  enum CodingKeys: String, CodingKey {
    case prompts, flagged, examples
    case meanReward = "mean_reward"
    case rewardModel = "reward_model"
    case safetyFlagRate = "safety_flag_rate"
    case safetyChecker = "safety_checker"
  }

  var summary: String {
    let reward = meanReward.map { "mean reward \(CanaryAnalysis.format($0))" } ?? "no reward model"
    return "\(reward), safety-flag rate \(CanaryAnalysis.format(safetyFlagRate)) (\(flagged)/\(prompts))"
  }
}

/// Runs the policy quality gate: greedy completions of the evaluation prompts from the candidate
/// and from the active policy, scored by the serving reward model and safety checker. The active
/// policy's figures are cached per (version, judges, file), so repeated activations pay once.
final class PolicyQualityGate: Sendable {
  let gateSet: PolicyGateSet
  private let cache = Mutex<[String: PolicyEvaluation]>([:])

  init(gateSet: PolicyGateSet) { self.gateSet = gateSet }

  /// Appends the `eval` gate's record; throws when the candidate is worse than the active policy
  /// by more than a margin.
  func run(candidate: PolicySnapshot, version: String, models: ModelHost, gates: inout [GateOutcome]) async throws {
    let prompts = try gateSet.prompts()
    let reward = models.rewards.active?.scorer
    guard let safety = models.safety.active?.checker else {
      throw RolloutError(kind: .failedPrecondition, description: "the policy gate needs the safety checker, which is not loaded yet")
    }
    let evaluation = try await evaluate(candidate, prompts: prompts, reward: reward, safety: safety)
    let serving = models.policy.flatMap { $0 === candidate ? nil : $0 }
    var baseline: PolicyEvaluation? = nil
    if let serving { baseline = try await evaluate(serving, prompts: prompts, reward: reward, safety: safety) }
    var passed = true
    if let baseline {
      if let mine = evaluation.meanReward, let theirs = baseline.meanReward, mine + gateSet.rewardMargin + 1e-9 < theirs {
        passed = false
      }
      if evaluation.safetyFlagRate > baseline.safetyFlagRate + gateSet.safetyMargin + 1e-9 { passed = false }
    }
    try GateRecord(
      file: gateSet.path, candidate: evaluation, serving: serving?.version, servingEvaluation: baseline,
      margin: gateSet.rewardMargin, passed: passed
    ).conclude(&gates) {
      "\(version) failed the policy quality gate on \(prompts.count) prompts of \(gateSet.path): \(evaluation.summary) "
        + "against \(serving?.version ?? "none")'s \(baseline?.summary ?? "-") (allowed reward drop \(gateSet.rewardMargin), "
        + "flag-rate rise \(gateSet.safetyMargin))"
    }
  }

  private func evaluate(
    _ policy: PolicySnapshot, prompts: [String], reward: RewardScorer?, safety: SafetyChecker
  ) async throws -> PolicyEvaluation {
    let key = [policy.version, reward?.version ?? "", safety.version, gateSet.path, "\(prompts.count)", "\(gateSet.maxTokens)"]
      .joined(separator: "|")
    if let cached = cache.withLock({ $0[key] }) { return cached }
    let completions = try await Self.generate(policy, prompts: prompts, maxTokens: gateSet.maxTokens)
    var meanReward: Double? = nil
    if let reward {
      let rewards = try await reward.score(zip(prompts, completions).map {
        RewardInput(messages: [ChatMessage(role: "user", content: $0)], response: $1)
      })
      meanReward = rewards.reduce(0, +) / Double(max(1, rewards.count))
    }
    let verdicts = try await safety.check(
      zip(prompts, completions).map { SafetyInput(text: $1, context: $0, role: .assistant) })
    let flagged = verdicts.filter { !$0.flaggedCategories.isEmpty }.count
    let evaluation = PolicyEvaluation(
      prompts: prompts.count, meanReward: meanReward, rewardModel: reward?.version, flagged: flagged,
      safetyFlagRate: Double(flagged) / Double(max(1, prompts.count)), safetyChecker: safety.version,
      examples: Array(completions.prefix(3)))
    cache.withLock { $0[key] = evaluation }
    return evaluation
  }

  /// Greedy completions of every prompt, submitted together so the engine batches them.
  static func generate(_ policy: PolicySnapshot, prompts: [String], maxTokens: Int) async throws -> [String] {
    let model = policy.model
    return try await withThrowingTaskGroup(of: (Int, String).self) { group in
      for (index, prompt) in prompts.enumerated() {
        let text =
          (try? model.renderChat([ChatMessage(role: "user", content: prompt)], addGenerationPrompt: true)) ?? prompt
        var spec = GenerationSpec(
          promptTokens: model.encodePrompt(text), maxTokens: maxTokens, sampling: SamplingParameters(temperature: 0))
        spec.isInternal = true
        let (_, events) = try policy.loop.submit(spec)
        group.addTask {
          var completion = ""
          for await event in events {
            switch event {
            case .token(_, let piece, _): completion += piece
            case .finished: break
            case .failed(let message): throw ModelLoadError("generation failed: \(message)")
            }
          }
          return (index, completion)
        }
      }
      var completions = [String](repeating: "", count: prompts.count)
      for try await (index, completion) in group { completions[index] = completion }
      return completions
    }
  }
}
