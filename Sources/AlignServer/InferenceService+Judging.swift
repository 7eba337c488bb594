import AlignAPI
import AlignEngine
import AlignServing
import Foundation
import GRPCCore

/// Score, CheckSafety and the safety screen of generation.
extension InferenceService {
  static let maxScoreInputs = 64
  static let maxSafetyTexts = 64

  // MARK: Score

  /// The reward model serving a request: an activated one (canary-routed), else the generative
  /// judge on the request's policy snapshot.
  func rewardScorer(routingKey: String? = nil) throws -> (scorer: RewardScorer, versions: Alignd_V1_ModelVersions, hold: [AnyObject]) {
    let policyLease = try policy(routingKey: routingKey)
    if let lease = models.rewards.lease(routingKey: routingKey) {
      return (lease.snapshot.scorer, versions(policy: policyLease.snapshot, reward: lease.snapshot.version), [lease, policyLease])
    }
    do {
      let judge = try policyLease.snapshot.judge()
      return (judge, versions(policy: policyLease.snapshot, reward: judge.version), [policyLease])
    } catch {
      throw RPCError(code: .failedPrecondition, message: "the generative judge cannot run on this policy: \(error)")
    }
  }

  func versions(policy: PolicySnapshot, reward: String? = nil) -> Alignd_V1_ModelVersions {
    .with {
      $0.policy = policy.version
      $0.reward = reward ?? models.rewards.active?.version ?? "judge:\(policy.version)"
      $0.safety = models.safety.active?.version ?? ""
    }
  }

  static func rewardContext(prompt: String, messages: [Alignd_V1_ChatMessage], field: String) throws -> RewardInput.Context {
    if !messages.isEmpty {
      for (i, message) in messages.enumerated() where message.role.isEmpty {
        throw RequestValidation.invalid("\(field).messages[\(i)].role is empty")
      }
      return .messages(messages.map { ChatMessage(role: $0.role, content: $0.content) })
    }
    guard !prompt.isEmpty else { throw RequestValidation.invalid("\(field) needs a prompt or messages") }
    return .prompt(prompt)
  }

  /// Runs inputs through a reward scorer, mapping its errors to statuses.
  static func rewards(_ inputs: [RewardInput], on scorer: RewardScorer) async throws -> [Double] {
    do {
      let rewards = try await scorer.score(inputs)
      scorer.metrics.recordReturned(rewards)
      return rewards
    } catch let error as InvalidRequest {
      throw RequestValidation.invalid(error.description)
    } catch DynamicBatcherError.queueFull(let capacity) {
      throw RPCError(
        code: .resourceExhausted, message: "the reward queue is full (\(capacity) waiting); retry shortly",
        metadata: ["retry-after-ms": "100"])
    }
  }

  func score(
    request: ServerRequest<Alignd_V1_ScoreRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_ScoreResponse> {
    let message = request.message
    guard !message.items.isEmpty || !message.pairs.isEmpty else {
      throw RequestValidation.invalid("give items or pairs to score")
    }
    guard message.items.count + 2 * message.pairs.count <= Self.maxScoreInputs else {
      throw RequestValidation.invalid("at most \(Self.maxScoreInputs) responses per request (a pair counts two)")
    }
    var inputs: [RewardInput] = []
    for (i, item) in message.items.enumerated() {
      let context = try Self.rewardContext(prompt: item.prompt, messages: item.messages, field: "items[\(i)]")
      inputs.append(RewardInput(context: context, response: item.response))
    }
    for (i, pair) in message.pairs.enumerated() {
      let context = try Self.rewardContext(prompt: pair.prompt, messages: pair.messages, field: "pairs[\(i)]")
      inputs.append(RewardInput(context: context, response: pair.chosen))
      inputs.append(RewardInput(context: context, response: pair.rejected))
    }
    let (scorer, versions, hold) = try rewardScorer()
    defer { withExtendedLifetime(hold) {} }
    let rewards = try await Self.rewards(inputs, on: scorer)
    let items = message.items.count
    return ServerResponse(
      message: .with { response in
        response.responseID = Self.responseID("score")
        response.rewards = Array(rewards[0..<items])
        response.pairScores = message.pairs.indices.map { k in
          let (chosen, rejected) = (rewards[items + 2 * k], rewards[items + 2 * k + 1])
          return .with {
            $0.chosenReward = chosen
            $0.rejectedReward = rejected
            $0.pChosenPreferred = preferenceProbability(chosen: chosen, rejected: rejected)
          }
        }
        response.versions = versions
      })
  }

  // MARK: CheckSafety

  func safetyChecker() throws -> SnapshotLease<SafetySnapshot> {
    guard let lease = models.safety.lease() else {
      throw RPCError(code: .unavailable, message: "the safety checker is not loaded yet")
    }
    return lease
  }

  /// Runs a safety check, mapping its errors to statuses.
  static func check(_ inputs: [SafetyInput], profile: String?, on checker: SafetyChecker) async throws -> [SafetyVerdict] {
    do {
      return try await checker.check(inputs, profile: profile)
    } catch let error as InvalidRequest {
      throw RequestValidation.invalid(error.description)
    } catch DynamicBatcherError.queueFull(let capacity) {
      throw RPCError(
        code: .resourceExhausted, message: "the safety queue is full (\(capacity) waiting); retry shortly",
        metadata: ["retry-after-ms": "100"])
    }
  }

  static func safetyAction(_ action: SafetyAction) -> Alignd_V1_SafetyAction {
    switch action {
    case .allow: return .allow
    case .flag: return .flag
    case .block: return .block
    }
  }

  func checkSafety(
    request: ServerRequest<Alignd_V1_CheckSafetyRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_CheckSafetyResponse> {
    let message = request.message
    var inputs: [SafetyInput] = []
    if !message.texts.isEmpty {
      guard message.prompt.isEmpty, message.response.isEmpty else {
        throw RequestValidation.invalid("give texts, or a prompt and a response, not both")
      }
      guard message.texts.count <= Self.maxSafetyTexts else {
        throw RequestValidation.invalid("at most \(Self.maxSafetyTexts) texts per request")
      }
      inputs = message.texts.map { SafetyInput(text: $0, role: .user) }
    } else {
      // Role-aware: the prompt as the user's turn, the response judged as the assistant's answer to it.
      if !message.prompt.isEmpty { inputs.append(SafetyInput(text: message.prompt, role: .user)) }
      if !message.response.isEmpty {
        inputs.append(SafetyInput(text: message.response, context: message.prompt.isEmpty ? nil : message.prompt, role: .assistant))
      }
      guard !inputs.isEmpty else { throw RequestValidation.invalid("give texts, or a prompt and/or a response") }
    }
    let lease = try safetyChecker()
    let verdicts = try await Self.check(
      inputs, profile: message.profile.isEmpty ? nil : message.profile, on: lease.snapshot.checker)
    SafetyMetrics.record(verdicts, policyVersion: lease.snapshot.checker.policy.versionString, stage: .check)
    let policyVersion = models.policy?.version ?? ""
    return ServerResponse(
      message: .with { response in
        response.responseID = Self.responseID("safety")
        response.results = verdicts.enumerated().map { index, verdict in
          .with { result in
            result.index = UInt32(index)
            result.categories = verdict.scores.map { score in
              .with {
                $0.category = score.category.rawValue
                $0.score = score.score
                $0.flagged = score.flagged
                $0.source = score.source
              }
            }
            result.flaggedCategories = verdict.flaggedCategories.map(\.rawValue)
            result.action = Self.safetyAction(verdict.action)
          }
        }
        response.versions = .with {
          $0.policy = policyVersion
          $0.safety = lease.snapshot.version
        }
      })
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
  func screening(_ request: Alignd_V1_GenerateRequest) -> Screening? {
    let mode: String
    switch request.safety.mode {
    case .off: return nil
    case .prompt: mode = "prompt"
    case .output: mode = "output"
    case .promptAndOutput: mode = "prompt_and_output"
    case .unspecified, .UNRECOGNIZED: mode = defaultSafetyMode
    }
    guard mode != "off" else { return nil }
    let text: String
    switch request.input {
    case .prompt(let prompt): text = prompt
    case .chat(let chat): text = chat.messages.filter { $0.role == "user" }.map(\.content).joined(separator: "\n")
    case nil: text = ""
    }
    return Screening(
      prompt: mode == "prompt" || mode == "prompt_and_output",
      output: mode == "output" || mode == "prompt_and_output",
      profile: request.safety.profile.isEmpty ? nil : request.safety.profile, promptText: text)
  }

  /// Screens the prompt; returns the verdict when the policy blocks it (generation must not start).
  func blockedPrompt(_ screening: Screening, checker: SafetyChecker) async throws -> SafetyVerdict? {
    guard screening.prompt else { return nil }
    let verdict = try await Self.check(
      [SafetyInput(text: screening.promptText, role: .user)], profile: screening.profile, on: checker)[0]
    SafetyMetrics.record([verdict], policyVersion: checker.policy.versionString, stage: .prompt)
    return verdict.action == .block ? verdict : nil
  }
}

/// Per-sample output screens of one request, holding back token ids and log-probabilities with
/// the text they belong to, so nothing of a blocked window is ever sent.
struct OutputScreens {
  struct Sample {
    var screen: OutputScreen
    var pendingIDs: [Int32] = []
    var pendingLogprobs: [ScoredToken] = []
    var blocked: SafetyVerdict? = nil
  }

  /// What may be sent for a sample after a token event or at its end.
  struct Release {
    var text: String
    var ids: [Int32]
    var logprobs: [ScoredToken]
    /// Set when the screen blocked: the sample ends with finish reason SAFETY.
    var blocked: SafetyVerdict?

    /// Nothing to send yet (text held back, or the sample already ended).
    static let nothing = Release(text: "", ids: [], logprobs: [], blocked: nil)
  }

  var samples: [Sample]

  init(count: Int, checker: SafetyChecker, profile: String?, prompt: String) {
    samples = (0..<count).map { _ in
      Sample(screen: OutputScreen(checker: checker, profile: profile, prompt: prompt, chunkCharacters: 24, overlapCharacters: 96))
    }
  }

  var allBlocked: Bool { samples.allSatisfy { $0.blocked != nil } }

  func isBlocked(_ sample: Int) -> Bool { samples[sample].blocked != nil }

  /// Feeds a token event's text; returns what may be sent now.
  mutating func feed(_ sample: Int, text: String, tokens: [SampledToken]) async throws -> Release {
    guard samples[sample].blocked == nil else { return .nothing }
    samples[sample].pendingIDs += tokens.map(\.token)
    samples[sample].pendingLogprobs += tokens.map(ScoredToken.init)
    return settle(sample, try await samples[sample].screen.feed(text))
  }

  /// Screens whatever the sample still holds back (at its end).
  mutating func finish(_ sample: Int) async throws -> Release {
    guard samples[sample].blocked == nil else { return .nothing }
    let release = settle(sample, try await samples[sample].screen.finish())
    if release.blocked == nil { recordFlags(sample, blocking: []) }
    return release
  }

  /// Counts the categories a sample's screen flagged, once per sample, when the sample ends.
  private func recordFlags(_ sample: Int, blocking: [SafetyCategory]) {
    let screen = samples[sample].screen
    SafetyMetrics.record(
      [screen.flaggedCategories + blocking], policyVersion: screen.checker.policy.versionString, stage: .output)
  }

  private mutating func settle(_ sample: Int, _ decision: OutputScreen.Decision) -> Release {
    switch decision {
    case .release(let text):
      guard !text.isEmpty else { return .nothing }
      defer {
        samples[sample].pendingIDs = []
        samples[sample].pendingLogprobs = []
      }
      return Release(text: text, ids: samples[sample].pendingIDs, logprobs: samples[sample].pendingLogprobs, blocked: nil)
    case .block(let verdict):
      samples[sample].blocked = verdict
      recordFlags(sample, blocking: verdict.flaggedCategories)
      samples[sample].pendingIDs = []
      samples[sample].pendingLogprobs = []
      return Release(text: "", ids: [], logprobs: [], blocked: verdict)
    }
  }
}
