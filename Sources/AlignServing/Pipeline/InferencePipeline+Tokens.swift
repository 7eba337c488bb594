import AlignEngine
import Foundation

/// What Tokenize reads: a text, or a conversation rendered with the chat template.
public enum TokenizeInput: Sendable, Equatable {
  case text(String)
  case chat([ChatMessage], addGenerationPrompt: Bool = true)
}

/// The answer to Tokenize.
public struct TokenizeResult: Sendable, Equatable {
  public var tokenIDs: [Int32]
  /// Each token's text in the vocabulary.
  public var tokens: [String]
  /// The rendered conversation (empty for a text).
  public var rendered: String
  public var versions: ModelVersions
}

/// One text whose log-probabilities are asked for: a continuation after a context (a text, or a
/// conversation rendered with the chat template; the text may be empty).
public typealias LogprobsItem = ContextualText

/// A Logprobs request.
public struct LogprobsRequest: Sendable {
  public var items: [LogprobsItem] = []
  /// Alternatives per position (0...20).
  public var topLogprobs = 0
  public var priority: RequestPriority = .normal
  public var deadline: ContinuousClock.Instant?

  public init(items: [LogprobsItem] = []) { self.items = items }
}

/// The log-probabilities of one item's continuation.
public struct ItemLogprobs: Sendable, Equatable {
  public var contextTokens: Int
  public var tokens: [DecodedLogprob]
  public var totalLogprob: Double
}

/// The answer to Logprobs.
public struct LogprobsResult: Sendable, Equatable {
  public var responseID: String
  public var items: [ItemLogprobs]
  public var versions: ModelVersions
}

/// Tokenize and Logprobs on the serving policy.
extension InferencePipeline {
  /// Tokenizes a text or a rendered conversation with the serving policy's tokenizer.
  public func tokenize(_ input: TokenizeInput?, addSpecialTokens: Bool) throws -> TokenizeResult {
    let lease = try policy()
    let policy = lease.snapshot
    defer { withExtendedLifetime(lease) {} }
    let model = policy.model
    var rendered = ""
    let ids: [Int32]
    switch input {
    case .text(let text):
      ids = model.tokenizer.encode(text, addSpecialTokens: addSpecialTokens, parseSpecial: true)
    case .chat(let messages, let addGenerationPrompt):
      rendered = try GenerationRequest.promptText(.chat(messages, addGenerationPrompt: addGenerationPrompt), model: model)
      ids = model.tokenizer.encode(rendered, addSpecialTokens: addSpecialTokens, parseSpecial: true)
    case nil:
      throw InvalidRequest("give text or chat messages")
    }
    return TokenizeResult(
      tokenIDs: ids, tokens: ids.map { model.tokenizer.tokenText($0) ?? "" }, rendered: rendered,
      versions: versions(policy: policy))
  }

  /// Teacher-forced log-probabilities of each item's continuation, batched with concurrent
  /// requests between generation steps.
  /// - Throws: ``InvalidRequest`` for bad input; ``ServingError``; ``DynamicBatcherError`` when
  ///   the queue is full or the deadline passes while the work waits.
  public func logprobs(_ request: LogprobsRequest) async throws -> LogprobsResult {
    let lease = try policy()
    let policy = lease.snapshot
    defer { withExtendedLifetime(lease) {} }
    let model = policy.model
    guard !request.items.isEmpty else { throw InvalidRequest("items is empty") }
    guard request.topLogprobs <= GenerationLimits.maxLogprobs else {
      throw InvalidRequest("top_logprobs must be at most \(GenerationLimits.maxLogprobs)")
    }
    // Tokenize context and continuation separately so the scored span is exact.
    var sequences: [[Int32]] = []
    var contextLengths: [Int] = []
    for (i, item) in request.items.enumerated() {
      let messages = item.context.messages
      let contextText = messages.isEmpty ? item.context.prompt : try GenerationRequest.promptText(.chat(messages), model: model)
      guard !item.text.isEmpty || !contextText.isEmpty else {
        throw InvalidRequest("items[\(i)] has no text")
      }
      let input = model.teacherForcingInput(
        context: contextText, contextIsRendered: !messages.isEmpty, continuation: item.text)
      sequences.append(input.tokens)
      contextLengths.append(input.contextLength)
    }
    let scored = try await RequestScheduling(priority: request.priority, deadline: request.deadline).run {
      try await policy.teacherForcing.submit(
        TeacherForcingRequest(sequences: sequences, topLogprobs: request.topLogprobs))
    }
    let tokenizer = model.tokenizer
    return LogprobsResult(
      responseID: Self.responseID("lp"),
      items: scored.enumerated().map { k, tokens in
        let kept = PolicyModel.continuationScores(tokens, contextLength: contextLengths[k])
        return ItemLogprobs(
          contextTokens: contextLengths[k], tokens: DecodedLogprob.decode(kept, tokenizer: tokenizer),
          totalLogprob: kept.reduce(0) { $0 + Double($1.logprob) })
      },
      versions: versions(policy: policy))
  }

  /// The prompt's teacher-forced log-probabilities for a generation that asked for them (nil when
  /// it did not), batched with Logprobs work on the same policy.
  static func scorePrompt(_ validated: ValidatedGenerate, on policy: PolicySnapshot) async throws -> PromptLogprobs? {
    guard let top = validated.promptLogprobs else { return nil }
    let tokens = validated.spec.promptTokens
    let tokenizer = policy.model.tokenizer
    let scored = try await policy.teacherForcing.submit(TeacherForcingRequest(sequences: [tokens], topLogprobs: top))
    return PromptLogprobs(
      firstTokenID: tokens[0], firstToken: tokenizer.decode([tokens[0]]),
      tokens: DecodedLogprob.decode(scored[0], tokenizer: tokenizer))
  }
}
