import AlignEngine
import Foundation

/// What a response answers, as a transport received it: a raw prompt, or a conversation (which
/// wins when both are given).
public struct PromptContext: Sendable, Equatable {
  public var prompt: String
  public var messages: [ChatMessage]

  public init(prompt: String = "", messages: [ChatMessage] = []) {
    self.prompt = prompt
    self.messages = messages
  }
}

/// A text that follows a context: a response to score (``ScoreItem``), or a continuation whose
/// log-probabilities are asked for (``LogprobsItem``).
public struct ContextualText: Sendable, Equatable {
  public var context: PromptContext
  public var text: String

  public init(_ context: PromptContext, _ text: String) {
    self.context = context
    self.text = text
  }
}

/// One response to score.
public typealias ScoreItem = ContextualText

/// A preference pair to score: two responses to one context.
public struct ScorePair: Sendable, Equatable {
  public var context: PromptContext
  public var chosen: String
  public var rejected: String

  public init(_ context: PromptContext, chosen: String, rejected: String) {
    (self.context, self.chosen, self.rejected) = (context, chosen, rejected)
  }
}

/// A Score request: rewards for items, rewards and P(chosen ≻ rejected) for pairs.
public struct ScoreRequest: Sendable {
  public var items: [ScoreItem] = []
  public var pairs: [ScorePair] = []
  public var priority: RequestPriority = .normal
  public var deadline: ContinuousClock.Instant?

  public init() {}
}

/// The answer to a Score request.
public struct ScoreResult: Sendable, Equatable {
  public var responseID: String
  /// One per item, in order.
  public var rewards: [Double] = []
  /// One per pair, in order.
  public var pairs: [PairwiseScore] = []
  public var versions: ModelVersions
}

/// A CheckSafety request: texts (each judged as a user turn), or a prompt and/or a response
/// (the response judged as the assistant's answer to the prompt).
public struct SafetyCheckRequest: Sendable {
  public var texts: [String] = []
  public var prompt = ""
  public var response = ""
  /// A profile of the safety policy; nil for its default.
  public var profile: String?
  public var priority: RequestPriority = .normal
  public var deadline: ContinuousClock.Instant?

  public init(texts: [String] = []) { self.texts = texts }
}

/// The answer to a CheckSafety request: one verdict per text judged.
public struct SafetyCheckResult: Sendable, Equatable {
  public var responseID: String
  public var verdicts: [SafetyVerdict] = []
  public var versions: ModelVersions
}

extension ScoreResult {
  /// An answer to fill in (the pipeline fills every field).
  public init(responseID: String, versions: ModelVersions) {
    self.responseID = responseID
    self.versions = versions
  }
}

extension SafetyCheckResult {
  /// An answer to fill in (the pipeline fills every field).
  public init(responseID: String, versions: ModelVersions) {
    self.responseID = responseID
    self.versions = versions
  }
}

/// Score, CheckSafety and the safety screen of generation.
extension InferencePipeline {
  // MARK: Score

  /// The reward model serving a request: an activated one (canary-routed), else the generative
  /// judge on the request's policy snapshot. `hold` keeps the snapshots loaded while it scores.
  func rewardScorer(routingKey: String?) throws -> (scorer: RewardScorer, versions: ModelVersions, hold: [AnyObject]) {
    let policyLease = try policy(routingKey: routingKey)
    if let lease = models.rewards.lease(routingKey: routingKey) {
      return (lease.snapshot.scorer, versions(policy: policyLease.snapshot, reward: lease.snapshot.version), [lease, policyLease])
    }
    do {
      let judge = try policyLease.snapshot.judge()
      return (judge, versions(policy: policyLease.snapshot, reward: judge.version), [policyLease])
    } catch {
      throw ServingError.failedPrecondition("the generative judge cannot run on this policy: \(error)")
    }
  }

  static func rewardContext(_ context: PromptContext, field: String) throws(InvalidRequest) -> RewardInput.Context {
    if !context.messages.isEmpty {
      for (i, message) in context.messages.enumerated() where message.role.isEmpty {
        throw InvalidRequest("\(field).messages[\(i)].role is empty")
      }
      return .messages(context.messages)
    }
    guard !context.prompt.isEmpty else { throw InvalidRequest("\(field) needs a prompt or messages") }
    return .prompt(context.prompt)
  }

  /// Runs inputs through a reward scorer and records the rewards returned.
  static func rewards(_ inputs: [RewardInput], on scorer: RewardScorer) async throws -> [Double] {
    let rewards = try await scorer.score(inputs)
    scorer.metrics.recordReturned(rewards)
    return rewards
  }

  /// Scores items and pairs on the serving reward model (or the judge).
  /// - Throws: ``InvalidRequest`` for bad input; ``ServingError``; ``DynamicBatcherError`` when the
  ///   reward queue is full or the deadline passes while the work waits.
  public func score(_ request: ScoreRequest) async throws -> ScoreResult {
    guard !request.items.isEmpty || !request.pairs.isEmpty else {
      throw InvalidRequest("give items or pairs to score")
    }
    guard request.items.count + 2 * request.pairs.count <= Self.maxScoreInputs else {
      throw InvalidRequest("at most \(Self.maxScoreInputs) responses per request (a pair counts two)")
    }
    var inputs: [RewardInput] = []
    for (i, item) in request.items.enumerated() {
      inputs.append(RewardInput(context: try Self.rewardContext(item.context, field: "items[\(i)]"), response: item.text))
    }
    for (i, pair) in request.pairs.enumerated() {
      let context = try Self.rewardContext(pair.context, field: "pairs[\(i)]")
      inputs.append(RewardInput(context: context, response: pair.chosen))
      inputs.append(RewardInput(context: context, response: pair.rejected))
    }
    let (scorer, versions, hold) = try rewardScorer(routingKey: nil)
    defer { withExtendedLifetime(hold) {} }
    let rewards = try await RequestScheduling(priority: request.priority, deadline: request.deadline).run {
      try await Self.rewards(inputs, on: scorer)
    }
    let items = request.items.count
    var result = ScoreResult(responseID: Self.responseID("score"), versions: versions)
    result.rewards = Array(rewards[0..<items])
    result.pairs = request.pairs.indices.map { k in
      PairwiseScore(chosen: rewards[items + 2 * k], rejected: rewards[items + 2 * k + 1])
    }
    return result
  }

  // MARK: CheckSafety

  /// Checks texts against the safety policy.
  /// - Throws: ``InvalidRequest`` for bad input or an unknown profile; ``ServingError``;
  ///   ``DynamicBatcherError`` when a safety model's queue is full or the deadline passes.
  public func checkSafety(_ request: SafetyCheckRequest) async throws -> SafetyCheckResult {
    var inputs: [SafetyInput] = []
    if !request.texts.isEmpty {
      guard request.prompt.isEmpty, request.response.isEmpty else {
        throw InvalidRequest("give texts, or a prompt and a response, not both")
      }
      guard request.texts.count <= Self.maxSafetyTexts else {
        throw InvalidRequest("at most \(Self.maxSafetyTexts) texts per request")
      }
      inputs = request.texts.map { SafetyInput(text: $0, role: .user) }
    } else {
      // Role-aware: the prompt as the user's turn, the response judged as the assistant's answer to it.
      if !request.prompt.isEmpty { inputs.append(SafetyInput(text: request.prompt, role: .user)) }
      if !request.response.isEmpty {
        inputs.append(
          SafetyInput(text: request.response, context: request.prompt.isEmpty ? nil : request.prompt, role: .assistant))
      }
      guard !inputs.isEmpty else { throw InvalidRequest("give texts, or a prompt and/or a response") }
    }
    let lease = try safetyChecker()
    let checker = lease.snapshot.checker
    let verdicts = try await RequestScheduling(priority: request.priority, deadline: request.deadline).run {
      try await checker.check(inputs, profile: request.profile)
    }
    SafetyMetrics.record(verdicts, policyVersion: checker.policy.versionString, stage: .check)
    var result = SafetyCheckResult(
      responseID: Self.responseID("safety"),
      versions: ModelVersions(policy: models.policy?.version ?? "", safety: lease.snapshot.version))
    result.verdicts = verdicts
    return result
  }

  // MARK: Guarded generation

  /// What the safety screen of one generation request does.
  struct Screening: Sendable {
    var prompt: Bool
    var output: Bool
    var profile: String?
    /// The user's text (a raw prompt, or the conversation's user turns).
    var promptText: String
  }

  /// The screen a request asks for (or the server default when it leaves the mode unspecified).
  func screening(_ request: GenerationRequest) -> Screening? {
    let mode = request.safetyMode ?? defaultSafetyMode
    guard mode != .off else { return nil }
    return Screening(
      prompt: mode.screensPrompt, output: mode.screensOutput, profile: request.safetyProfile,
      promptText: request.userText)
  }

  /// Screens the prompt; returns the verdict when the policy blocks it (generation must not start).
  func blockedPrompt(_ screening: Screening, checker: SafetyChecker) async throws -> SafetyVerdict? {
    guard screening.prompt else { return nil }
    let verdict = try await checker.check(
      [SafetyInput(text: screening.promptText, role: .user)], profile: screening.profile)[0]
    SafetyMetrics.record([verdict], policyVersion: checker.policy.versionString, stage: .prompt)
    return verdict.action == .block ? verdict : nil
  }

  /// The output screens of a request that screens its output (nil otherwise).
  func outputScreens(
    _ screening: Screening?, _ safety: SnapshotLease<SafetySnapshot>?, _ validated: ValidatedGenerate
  ) -> OutputScreens? {
    guard let screening, screening.output, let safety else { return nil }
    return OutputScreens(
      count: validated.spec.samples, checker: safety.snapshot.checker, profile: screening.profile,
      prompt: screening.promptText)
  }
}
