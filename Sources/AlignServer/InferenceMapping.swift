import AlignAPI
import AlignEngine
import AlignServing
import AlignShared
import Foundation

/// Conversions between the alignd.v1.Inference messages and the serving pipeline's values, both
/// ways. No logic beyond the wire format: what a field means is the pipeline's business.
public enum InferenceMapping {
  // MARK: Requests

  public static func priority(_ value: Alignd_V1_Priority) -> RequestPriority {
    switch value {
    case .low: return .low
    case .high: return .high
    default: return .normal
    }
  }

  static func messages(_ messages: [Alignd_V1_ChatMessage]) -> [ChatMessage] {
    messages.map { ChatMessage(role: $0.role, content: $0.content) }
  }

  /// - Throws: ``InvalidRequest`` for an unknown safety mode or response format type (what the
  ///   enums can say that the pipeline cannot), or a response format schema that is not JSON.
  public static func generateRequest(
    _ message: Alignd_V1_GenerateRequest, deadline: ContinuousClock.Instant?
  ) throws(InvalidRequest) -> GenerationRequest {
    var request = GenerationRequest()
    switch message.input {
    case .prompt(let prompt): request.input = .prompt(prompt)
    case .chat(let chat): request.input = .chat(messages(chat.messages), addGenerationPrompt: !chat.omitGenerationPrompt)
    case nil: request.input = nil
    }
    let s = message.sampling
    if s.hasMaxTokens { request.maxTokens = Int(s.maxTokens) }
    if s.hasTemperature { request.temperature = s.temperature }
    if s.hasTopK { request.topK = Int(s.topK) }
    if s.hasTopP { request.topP = s.topP }
    if s.hasMinP { request.minP = s.minP }
    if s.hasRepetitionPenalty { request.repetitionPenalty = s.repetitionPenalty }
    if s.hasFrequencyPenalty { request.frequencyPenalty = s.frequencyPenalty }
    if s.hasPresencePenalty { request.presencePenalty = s.presencePenalty }
    if s.hasSeed { request.seed = s.seed }
    request.n = s.n == 0 ? 1 : Int(s.n)
    request.bestOf = Int(s.bestOf)
    request.logprobs = Int(s.logprobs)
    request.stop = s.stop
    request.stopTokenIDs = s.stopTokenIds
    request.ignoreEOS = s.ignoreEos
    request.returnTokenIDs = message.returnTokenIds
    request.logitBias = message.logitBias
    if message.hasPromptLogprobs { request.promptLogprobs = Int(message.promptLogprobs) }
    switch message.comparison {
    case .none: request.comparison = .none
    case .samples: request.comparison = .samples
    case .policies: request.comparison = .policies
    case .UNRECOGNIZED(let value): throw InvalidRequest("comparison \(value) is not a comparison")
    }
    switch message.responseFormat.type {
    case .text: request.responseFormat = .text
    case .jsonObject: request.responseFormat = .jsonObject
    case .jsonSchema:
      guard let schema = try? JSONDecoder().decode(JSONValue.self, from: Data(message.responseFormat.schema.utf8)) else {
        throw InvalidRequest("response_format.schema is not valid JSON")
      }
      request.responseFormat = .jsonSchema(schema)
    case .UNRECOGNIZED(let value): throw InvalidRequest("response_format.type \(value) is not a type")
    }
    switch message.safety.mode {
    case .unspecified: request.safetyMode = nil
    case .off: request.safetyMode = .off
    case .prompt: request.safetyMode = .prompt
    case .output: request.safetyMode = .output
    case .promptAndOutput: request.safetyMode = .promptAndOutput
    case .UNRECOGNIZED(let value): throw InvalidRequest("safety.mode \(value) is not a mode")
    }
    request.safetyProfile = message.safety.profile.isEmpty ? nil : message.safety.profile
    request.priority = priority(message.priority)
    request.clientRequestID = message.clientRequestID.isEmpty ? nil : message.clientRequestID
    request.deadline = deadline
    return request
  }

  static func context(_ prompt: String, _ chat: [Alignd_V1_ChatMessage]) -> PromptContext {
    PromptContext(prompt: prompt, messages: messages(chat))
  }

  public static func scoreRequest(_ message: Alignd_V1_ScoreRequest, deadline: ContinuousClock.Instant?) -> ScoreRequest {
    var request = ScoreRequest()
    request.items = message.items.map { ScoreItem(context($0.prompt, $0.messages), $0.response) }
    request.pairs = message.pairs.map { ScorePair(context($0.prompt, $0.messages), chosen: $0.chosen, rejected: $0.rejected) }
    request.priority = priority(message.priority)
    request.deadline = deadline
    return request
  }

  public static func safetyRequest(
    _ message: Alignd_V1_CheckSafetyRequest, deadline: ContinuousClock.Instant?
  ) -> SafetyCheckRequest {
    var request = SafetyCheckRequest(texts: message.texts)
    (request.prompt, request.response) = (message.prompt, message.response)
    request.profile = message.profile.isEmpty ? nil : message.profile
    request.deadline = deadline
    return request
  }

  public static func tokenizeInput(_ message: Alignd_V1_TokenizeRequest) -> TokenizeInput? {
    switch message.input {
    case .text(let text): return .text(text)
    case .chat(let chat): return .chat(messages(chat.messages), addGenerationPrompt: !chat.omitGenerationPrompt)
    case nil: return nil
    }
  }

  public static func logprobsRequest(_ message: Alignd_V1_LogprobsRequest, deadline: ContinuousClock.Instant?) -> LogprobsRequest {
    var request = LogprobsRequest(
      items: message.items.map { LogprobsItem(context($0.context, $0.messages), $0.continuation) })
    request.topLogprobs = Int(message.topLogprobs)
    request.priority = priority(message.priority)
    request.deadline = deadline
    return request
  }

  // MARK: Answers

  public static func versions(_ versions: ModelVersions) -> Alignd_V1_ModelVersions {
    .with {
      $0.policy = versions.policy
      $0.reward = versions.reward
      $0.safety = versions.safety
    }
  }

  public static func finishReason(_ reason: FinishReason?) -> Alignd_V1_FinishReason {
    switch reason {
    case .stop: return .stop
    case .length: return .length
    case .cancelled: return .cancelled
    case .deadline: return .deadline
    case .safety: return .safety
    case nil: return .unspecified
    }
  }

  public static func tokenLogprobs(_ tokens: [DecodedLogprob]) -> [Alignd_V1_TokenLogprob] {
    tokens.map { token in
      .with { entry in
        entry.tokenID = token.tokenID
        entry.token = token.token
        entry.logprob = token.logprob
        entry.top = token.top.map { alternative in
          .with {
            $0.tokenID = alternative.tokenID
            $0.token = alternative.token
            $0.logprob = alternative.logprob
          }
        }
      }
    }
  }

  /// A prompt's tokens and log-probabilities (sent only when the request asked for them).
  public static func promptLogprobs(_ prompt: PromptLogprobs) -> Alignd_V1_PromptLogprobs {
    .with {
      $0.firstTokenID = prompt.firstTokenID
      $0.firstToken = prompt.firstToken
      $0.tokens = tokenLogprobs(prompt.tokens)
      $0.totalLogprob = prompt.totalLogprob
    }
  }

  /// `policyVersion`: the answer's (a completion of a comparison of two policies names its own).
  public static func completion(_ completion: GeneratedCompletion, policyVersion: String) -> Alignd_V1_Completion {
    .with {
      $0.index = UInt32(completion.index)
      $0.policyVersion = completion.policyVersion.isEmpty ? policyVersion : completion.policyVersion
      $0.completionID = completion.completionID
      $0.text = completion.text
      $0.tokenIds = completion.tokenIDs
      $0.finishReason = finishReason(completion.finishReason)
      $0.logprobs = tokenLogprobs(completion.logprobs)
      if let reward = completion.reward { $0.reward = reward }
      $0.flaggedCategories = completion.flaggedCategories.map(\.rawValue)
    }
  }

  public static func usage(_ usage: TokenUsage) -> Alignd_V1_Usage {
    .with {
      $0.promptTokens = UInt32(usage.promptTokens)
      $0.completionTokens = UInt32(usage.completionTokens)
      $0.totalTokens = UInt32(usage.totalTokens)
      $0.cachedPromptTokens = UInt32(usage.cachedPromptTokens)
    }
  }

  public static func generateResponse(_ result: GenerationResult) -> Alignd_V1_GenerateResponse {
    .with {
      $0.responseID = result.responseID
      $0.completions = result.completions.map { completion($0, policyVersion: result.versions.policy) }
      $0.usage = usage(result.usage)
      $0.versions = versions(result.versions)
      $0.candidateRewards = result.candidateRewards
      if let prompt = result.promptLogprobs { $0.promptLogprobs = promptLogprobs(prompt) }
    }
  }

  public static func streamChunk(_ chunk: GenerationChunk, responseID: String) -> Alignd_V1_GenerateStreamResponse {
    .with {
      $0.responseID = responseID
      $0.chunk = .with {
        $0.index = UInt32(chunk.sample)
        $0.completionID = chunk.completionID
        $0.text = chunk.text
        $0.tokenIds = chunk.tokenIDs
        $0.logprobs = tokenLogprobs(chunk.logprobs)
      }
    }
  }

  public static func streamEnd(_ result: GenerationResult) -> Alignd_V1_GenerateStreamResponse {
    .with {
      $0.responseID = result.responseID
      $0.end = .with {
        $0.completions = result.completions.map { completion($0, policyVersion: result.versions.policy) }
        $0.usage = usage(result.usage)
        $0.versions = versions(result.versions)
        if let prompt = result.promptLogprobs { $0.promptLogprobs = promptLogprobs(prompt) }
      }
    }
  }

  public static func scoreResponse(_ result: ScoreResult) -> Alignd_V1_ScoreResponse {
    .with { response in
      response.responseID = result.responseID
      response.rewards = result.rewards
      response.pairScores = result.pairs.map { pair in
        .with {
          $0.chosenReward = pair.chosen
          $0.rejectedReward = pair.rejected
          $0.pChosenPreferred = pair.probabilityChosenPreferred
        }
      }
      response.versions = versions(result.versions)
    }
  }

  public static func safetyAction(_ action: SafetyAction) -> Alignd_V1_SafetyAction {
    switch action {
    case .allow: return .allow
    case .flag: return .flag
    case .block: return .block
    }
  }

  public static func safetyResponse(_ result: SafetyCheckResult) -> Alignd_V1_CheckSafetyResponse {
    .with { response in
      response.responseID = result.responseID
      response.results = result.verdicts.enumerated().map { index, verdict in
        .with { entry in
          entry.index = UInt32(index)
          entry.categories = verdict.scores.map { score in
            .with {
              $0.category = score.category.rawValue
              $0.score = score.score
              $0.flagged = score.flagged
              $0.source = score.source
            }
          }
          entry.flaggedCategories = verdict.flaggedCategories.map(\.rawValue)
          entry.action = safetyAction(verdict.action)
        }
      }
      response.versions = versions(result.versions)
    }
  }

  public static func tokenizeResponse(_ result: TokenizeResult) -> Alignd_V1_TokenizeResponse {
    .with {
      $0.tokenIds = result.tokenIDs
      $0.tokens = result.tokens
      $0.rendered = result.rendered
      $0.versions = versions(result.versions)
    }
  }

  public static func logprobsResponse(_ result: LogprobsResult) -> Alignd_V1_LogprobsResponse {
    .with { response in
      response.responseID = result.responseID
      response.versions = versions(result.versions)
      response.items = result.items.map { item in
        .with {
          $0.contextTokens = UInt32(item.contextTokens)
          $0.tokens = tokenLogprobs(item.tokens)
          $0.totalLogprob = item.totalLogprob
        }
      }
    }
  }
}
