import AlignAPI
import AlignEngine
import AlignServing
import Foundation
import GRPCCore

/// Limits applied to every generation request.
struct GenerationLimits: Sendable {
  var defaultMaxTokens: Int
  var maxTokensLimit: Int
  var maxSamples: Int
  static let maxLogprobs = 20
  static let maxStopStrings = 16
  static let maxStopLength = 256
}

/// A generation request that passed validation: the scheduler accepts only this, never raw protobuf.
struct ValidatedGenerate: Sendable {
  /// `spec.samples` is the number of candidates generated (best_of when it exceeds n).
  var spec: GenerationSpec
  var returnTokenIDs: Bool
  var logprobs: Int
  /// Completions returned (n); fewer than `spec.samples` when best_of ranks candidates.
  var returnCount: Int
}

enum RequestValidation {
  static func invalid(_ message: String) -> RPCError { RPCError(code: .invalidArgument, message: message) }

  /// The prompt text of a request: the raw prompt, or the conversation rendered with the template.
  static func promptText(
    prompt: String?, chat: Alignd_V1_Conversation?, model: PolicyModel
  ) throws -> String {
    if let chat {
      guard !chat.messages.isEmpty else { throw invalid("chat.messages is empty") }
      for (i, message) in chat.messages.enumerated() where message.role.isEmpty {
        throw invalid("chat.messages[\(i)].role is empty")
      }
      do {
        return try model.renderChat(
          chat.messages.map { ChatMessage(role: $0.role, content: $0.content) },
          addGenerationPrompt: !chat.omitGenerationPrompt)
      } catch let error as InvalidRequest {
        throw invalid(error.description)
      }
    }
    guard let prompt, !prompt.isEmpty else { throw invalid("give a prompt or chat messages") }
    return prompt
  }

  static func priority(_ value: Alignd_V1_Priority) -> RequestPriority {
    switch value {
    case .low: return .low
    case .high: return .high
    default: return .normal
    }
  }

  static func generate(
    _ request: Alignd_V1_GenerateRequest, model: PolicyModel, limits: GenerationLimits,
    deadline: ContinuousClock.Instant?
  ) throws -> ValidatedGenerate {
    let tokens: [Int32]
    switch request.input {
    case .prompt(let prompt):
      tokens = model.encodePrompt(try promptText(prompt: prompt, chat: nil, model: model))
    case .chat(let chat):
      // The template writes any BOS itself; adding one again would double it (as transformers does not).
      tokens = model.encodeRendered(try promptText(prompt: nil, chat: chat, model: model))
    case nil:
      throw invalid("give a prompt or chat messages")
    }
    guard !tokens.isEmpty else { throw invalid("the prompt tokenizes to nothing") }
    guard tokens.count < model.contextLength else {
      throw invalid("the prompt has \(tokens.count) tokens; the context holds \(model.contextLength)")
    }

    let s = request.sampling
    if s.hasMaxTokens && s.maxTokens == 0 { throw invalid("max_tokens must be at least 1") }
    let requested = s.hasMaxTokens ? Int(s.maxTokens) : limits.defaultMaxTokens
    guard requested <= limits.maxTokensLimit else {
      throw invalid("max_tokens \(requested) exceeds the server limit of \(limits.maxTokensLimit)")
    }
    let maxTokens = min(requested, model.contextLength - tokens.count)

    let n = s.n == 0 ? 1 : Int(s.n)
    guard n <= limits.maxSamples else { throw invalid("n \(n) exceeds the limit of \(limits.maxSamples)") }
    if s.bestOf != 0 && Int(s.bestOf) < n { throw invalid("best_of (\(s.bestOf)) must be at least n (\(n))") }
    let candidates = max(n, Int(s.bestOf))
    guard candidates <= limits.maxSamples else {
      throw invalid("best_of \(candidates) exceeds the limit of \(limits.maxSamples)")
    }
    guard s.logprobs <= GenerationLimits.maxLogprobs else {
      throw invalid("logprobs \(s.logprobs) exceeds the limit of \(GenerationLimits.maxLogprobs)")
    }
    guard s.stop.count <= GenerationLimits.maxStopStrings else {
      throw invalid("at most \(GenerationLimits.maxStopStrings) stop strings")
    }
    for stop in s.stop where stop.isEmpty || stop.count > GenerationLimits.maxStopLength {
      throw invalid("stop strings must have 1...\(GenerationLimits.maxStopLength) characters")
    }
    let vocabulary = Int32(model.tokenizer.vocabularySize)
    for id in s.stopTokenIds where id < 0 || id >= vocabulary {
      throw invalid("stop_token_ids: \(id) is not a token id (vocabulary size \(vocabulary))")
    }
    if case .UNRECOGNIZED(let value) = request.safety.mode { throw invalid("safety.mode \(value) is not a mode") }

    var sampling = SamplingParameters()
    if s.hasTemperature { sampling.temperature = s.temperature }
    if s.hasTopK { sampling.topK = Int(s.topK) }
    if s.hasTopP { sampling.topP = s.topP }
    if s.hasMinP { sampling.minP = s.minP }
    if s.hasRepetitionPenalty { sampling.repetitionPenalty = s.repetitionPenalty }
    if s.hasFrequencyPenalty { sampling.frequencyPenalty = s.frequencyPenalty }
    if s.hasPresencePenalty { sampling.presencePenalty = s.presencePenalty }
    sampling.seed = s.hasSeed ? s.seed : UInt64.random(in: 0...UInt64.max)
    sampling.topLogprobs = Int(s.logprobs)
    do {
      try sampling.validate()
    } catch {
      throw invalid("\(error)")
    }

    let spec = GenerationSpec(
      promptTokens: tokens, maxTokens: maxTokens, samples: candidates, sampling: sampling, stopStrings: s.stop,
      extraStopTokenIDs: Set(s.stopTokenIds), ignoreEOS: s.ignoreEos, priority: priority(request.priority),
      deadline: deadline)
    return ValidatedGenerate(
      spec: spec, returnTokenIDs: request.returnTokenIds, logprobs: Int(s.logprobs), returnCount: n)
  }

  /// The deadline the client set, from the `grpc-timeout` header ("100m", "5S", …), less a margin.
  static func deadline(from metadata: Metadata) -> ContinuousClock.Instant? {
    guard let raw = metadata[stringValues: "grpc-timeout"].first(where: { _ in true }), raw.count >= 2,
      let amount = Int64(raw.dropLast())
    else { return nil }
    let duration: Duration
    switch raw.last {
    case "H": duration = .seconds(amount * 3600)
    case "M": duration = .seconds(amount * 60)
    case "S": duration = .seconds(amount)
    case "m": duration = .milliseconds(amount)
    case "u": duration = .microseconds(amount)
    case "n": duration = .nanoseconds(amount)
    default: return nil
    }
    // End a little before the client's deadline so the answer (a stream's final message with
    // finish reason DEADLINE) still reaches it: a tenth of the budget, at least 50 ms and at most
    // 1 s (a busy host delays the last step and the write), never more than a fifth of it.
    let margin = min(max(duration / 10, .milliseconds(50)), .seconds(1), duration / 5)
    return ContinuousClock.now + duration - margin
  }
}
