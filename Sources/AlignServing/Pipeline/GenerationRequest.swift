import AlignEngine
import Foundation

/// Limits applied to every generation request.
public struct GenerationLimits: Sendable {
  public var defaultMaxTokens: Int
  public var maxTokensLimit: Int
  public var maxSamples: Int
  public static let maxLogprobs = 20
  public static let maxStopStrings = 16
  public static let maxStopLength = 256

  public init(defaultMaxTokens: Int = 256, maxTokensLimit: Int = 2048, maxSamples: Int = 16) {
    self.defaultMaxTokens = defaultMaxTokens
    self.maxTokensLimit = maxTokensLimit
    self.maxSamples = maxSamples
  }
}

/// Safety screening of a generation request (config `safety_mode` for requests that do not choose).
public enum SafetyMode: String, Sendable, CaseIterable {
  case off
  case prompt
  case output
  case promptAndOutput = "prompt_and_output"

  var screensPrompt: Bool { self == .prompt || self == .promptAndOutput }
  var screensOutput: Bool { self == .output || self == .promptAndOutput }
}

/// A generation request as a transport received it, before validation: the gRPC service and the
/// HTTP gateway each map their message onto this, and ``InferencePipeline`` validates it against
/// the policy snapshot that will serve it.
public struct GenerationRequest: Sendable {
  /// What to continue: a raw prompt, or a conversation rendered with the chat template.
  public enum Input: Sendable, Equatable {
    case prompt(String)
    case chat([ChatMessage], addGenerationPrompt: Bool = true)
  }

  public var input: Input?
  /// nil: the server's `default_max_tokens`; 0 is refused.
  public var maxTokens: Int?
  public var temperature: Float?
  public var topK: Int?
  public var topP: Float?
  public var minP: Float?
  public var repetitionPenalty: Float?
  public var frequencyPenalty: Float?
  public var presencePenalty: Float?
  /// nil: a random seed.
  public var seed: UInt64?
  /// Completions returned.
  public var n = 1
  /// Candidates generated and ranked by reward (0: n, no ranking).
  public var bestOf = 0
  /// Alternatives per token to return (0: none).
  public var logprobs = 0
  public var stop: [String] = []
  public var stopTokenIDs: [Int32] = []
  public var ignoreEOS = false
  /// Constrained decoding: JSON output (OpenAI's `response_format`).
  public var responseFormat: ResponseFormat = .text
  /// Token id → bias added to its logit (OpenAI's `logit_bias`, −100...100).
  public var logitBias: [Int32: Float] = [:]
  public var returnTokenIDs = false
  /// nil: the server's `safety_mode`.
  public var safetyMode: SafetyMode?
  /// The safety policy profile; nil for its default.
  public var safetyProfile: String?
  public var priority: RequestPriority = .normal
  /// The client's request id: the canary routing key (sticky per id).
  public var clientRequestID: String?
  /// The API key that asks (its name), for the generation log and feedback ownership; "" when
  /// authentication is off.
  public var apiKeyID = ""
  /// Where the request came in (`grpc.Generate`, `http.chat.completions`, ...), for the log.
  public var endpoint = ""
  public var deadline: ContinuousClock.Instant?
  /// Two completions for a person to rank (see ``GenerationComparison``).
  public var comparison: GenerationComparison = .none
  /// Also score the prompt: its tokens' log-probabilities under the policy with this many
  /// alternatives each (0...20); nil: not scored. With it, `maxTokens` may be 0 (only the prompt
  /// is scored, as OpenAI's echo with max_tokens 0).
  public var promptLogprobs: Int?

  public init(_ input: Input? = nil) { self.input = input }

  /// The user's text, as the prompt screen judges it (a raw prompt, or the conversation's user turns).
  var userText: String {
    switch input {
    case .prompt(let prompt): return prompt
    case .chat(let messages, _): return messages.filter { $0.role == "user" }.map(\.content).joined(separator: "\n")
    case nil: return ""
    }
  }
}

/// A request for two completions that a person ranks; a preference naming both completion ids is
/// stored with both completions' policy versions.
public enum GenerationComparison: String, Sendable, CaseIterable {
  case none
  /// Two samples of the policy that serves the request (n = 2).
  case samples
  /// One completion from the active policy and one from the canary, in random order, each naming
  /// its policy version (two samples of the active policy while no canary serves). Unary only.
  case policies
}

/// A generation request that passed validation: the scheduler accepts only this.
public struct ValidatedGenerate: Sendable {
  /// `spec.samples` is the number of candidates generated (best_of when it exceeds n).
  public var spec: GenerationSpec
  public var returnTokenIDs: Bool
  public var logprobs: Int
  /// Completions returned (n); fewer than `spec.samples` when best_of ranks candidates.
  public var returnCount: Int
  /// The prompt as the model sees it (a conversation rendered with the chat template).
  public var renderedPrompt: String
  /// Alternatives per prompt token when the prompt is scored too; nil: it is not.
  public var promptLogprobs: Int?
}

extension GenerationRequest {
  /// The prompt text of a request: the raw prompt, or the conversation rendered with the template.
  static func promptText(_ input: Input?, model: PolicyModel) throws(InvalidRequest) -> String {
    switch input {
    case .chat(let messages, let addGenerationPrompt):
      guard !messages.isEmpty else { throw InvalidRequest("chat.messages is empty") }
      for (i, message) in messages.enumerated() where message.role.isEmpty {
        throw InvalidRequest("chat.messages[\(i)].role is empty")
      }
      do {
        return try model.renderChat(messages, addGenerationPrompt: addGenerationPrompt)
      } catch let error as InvalidRequest {
        throw error
      } catch {
        throw InvalidRequest("\(error)")
      }
    case .prompt(let prompt) where !prompt.isEmpty:
      return prompt
    default:
      throw InvalidRequest("give a prompt or chat messages")
    }
  }

  /// Checks the request against `model` and the server's limits.
  /// - Throws: ``InvalidRequest`` naming the field and the problem.
  public func validated(model: PolicyModel, limits: GenerationLimits) throws(InvalidRequest) -> ValidatedGenerate {
    let tokens: [Int32]
    let rendered = try Self.promptText(input, model: model)
    switch input {
    case .prompt:
      tokens = model.encodePrompt(rendered)
    case .chat:
      // The template writes any BOS itself; adding one again would double it (as transformers does not).
      tokens = model.encodeRendered(rendered)
    case nil:
      throw InvalidRequest("give a prompt or chat messages")
    }
    guard !tokens.isEmpty else { throw InvalidRequest("the prompt tokenizes to nothing") }
    guard tokens.count < model.contextLength else {
      throw InvalidRequest("the prompt has \(tokens.count) tokens; the context holds \(model.contextLength)")
    }

    if let promptLogprobs, promptLogprobs < 0 || promptLogprobs > GenerationLimits.maxLogprobs {
      throw InvalidRequest("prompt_logprobs \(promptLogprobs) is outside 0...\(GenerationLimits.maxLogprobs)")
    }
    if maxTokens == 0 && promptLogprobs == nil {
      throw InvalidRequest("max_tokens must be at least 1 (0 only when the prompt is scored: prompt_logprobs, or echo)")
    }
    let requested = maxTokens ?? limits.defaultMaxTokens
    guard requested <= limits.maxTokensLimit else {
      throw InvalidRequest("max_tokens \(requested) exceeds the server limit of \(limits.maxTokensLimit)")
    }
    let maxTokens = min(requested, model.contextLength - tokens.count)

    if comparison != .none {
      guard self.n <= 1 || (comparison == .samples && self.n == 2) else {
        throw InvalidRequest("a comparison returns two completions; leave n unset")
      }
      guard bestOf == 0 else { throw InvalidRequest("a comparison cannot rank candidates with best_of") }
    }
    let n = comparison == .samples ? 2 : max(1, self.n)
    guard n <= limits.maxSamples else { throw InvalidRequest("n \(n) exceeds the limit of \(limits.maxSamples)") }
    if bestOf != 0 && bestOf < n { throw InvalidRequest("best_of (\(bestOf)) must be at least n (\(n))") }
    let candidates = max(n, bestOf)
    guard candidates <= limits.maxSamples else {
      throw InvalidRequest("best_of \(candidates) exceeds the limit of \(limits.maxSamples)")
    }
    guard logprobs <= GenerationLimits.maxLogprobs else {
      throw InvalidRequest("logprobs \(logprobs) exceeds the limit of \(GenerationLimits.maxLogprobs)")
    }
    guard stop.count <= GenerationLimits.maxStopStrings else {
      throw InvalidRequest("at most \(GenerationLimits.maxStopStrings) stop strings")
    }
    for stop in stop where stop.isEmpty || stop.count > GenerationLimits.maxStopLength {
      throw InvalidRequest("stop strings must have 1...\(GenerationLimits.maxStopLength) characters")
    }
    let vocabulary = Int32(model.tokenizer.vocabularySize)
    for id in stopTokenIDs where id < 0 || id >= vocabulary {
      throw InvalidRequest("stop_token_ids: \(id) is not a token id (vocabulary size \(vocabulary))")
    }

    for (id, bias) in logitBias.sorted(by: { $0.key < $1.key }) {
      guard id >= 0 && id < vocabulary else {
        throw InvalidRequest("logit_bias: \(id) is not a token id (vocabulary size \(vocabulary))")
      }
      guard bias >= -100 && bias <= 100 else {
        throw InvalidRequest("logit_bias: the bias of token \(id) is \(bias); it must be in -100...100")
      }
    }
    let constraint = try model.outputConstraints.constraint(for: responseFormat)
    if constraint != nil && ignoreEOS {
      throw InvalidRequest("ignore_eos cannot be combined with a JSON response_format: the document must end")
    }

    var sampling = SamplingParameters()
    if let temperature { sampling.temperature = temperature }
    if let topK { sampling.topK = topK }
    if let topP { sampling.topP = topP }
    if let minP { sampling.minP = minP }
    if let repetitionPenalty { sampling.repetitionPenalty = repetitionPenalty }
    if let frequencyPenalty { sampling.frequencyPenalty = frequencyPenalty }
    if let presencePenalty { sampling.presencePenalty = presencePenalty }
    sampling.seed = seed ?? UInt64.random(in: 0...UInt64.max)
    sampling.topLogprobs = logprobs
    sampling.logitBias = logitBias
    do {
      try sampling.validate()
    } catch {
      throw InvalidRequest("\(error)")
    }

    let spec = GenerationSpec(
      promptTokens: tokens, maxTokens: maxTokens, samples: candidates, sampling: sampling, stopStrings: stop,
      extraStopTokenIDs: Set(stopTokenIDs), ignoreEOS: ignoreEOS, constraint: constraint, priority: priority,
      deadline: deadline)
    return ValidatedGenerate(
      spec: spec, returnTokenIDs: returnTokenIDs, logprobs: logprobs, returnCount: n, renderedPrompt: rendered,
      promptLogprobs: promptLogprobs)
  }
}

/// Deadlines: when a request must end, from the time a client allows it.
public enum RequestDeadline {
  /// The instant a request given `timeout` should end, less a margin so the answer (a stream's
  /// final message with finish reason DEADLINE) still reaches the client in time: a tenth of the
  /// budget, at least 50 ms and at most 1 s (a busy host delays the last step and the write),
  /// never more than a fifth of it.
  public static func ending(after timeout: Duration, from now: ContinuousClock.Instant = .now) -> ContinuousClock.Instant {
    let margin = min(max(timeout / 10, .milliseconds(50)), .seconds(1), timeout / 5)
    return now + timeout - margin
  }
}
