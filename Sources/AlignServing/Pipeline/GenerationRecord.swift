import AlignEngine
import Foundation

/// Everything the generation log keeps about one answered generation request: what was asked
/// (as rendered for the model), how it was sampled, what came out (every returned completion with
/// its own id, text, token ids, logprobs when computed, finish reason, reward and safety verdict),
/// the versions and the timing.
public struct GenerationRecord: Sendable {
  /// The request as the transport mapped it (input, n, best_of, stop, client id, key, endpoint).
  public var request: GenerationRequest
  /// The prompt as the model saw it (a conversation rendered with the chat template).
  public var renderedPrompt: String
  /// The sampling parameters in force, with the seed actually used.
  public var sampling: SamplingParameters
  /// max_tokens after clamping to the context.
  public var maxTokens: Int
  /// The answer, with every returned completion's text and token ids (whatever the client asked
  /// to see).
  public var result: GenerationResult
  /// From the request's arrival to its first released token; nil when none was.
  public var timeToFirstToken: Duration?
  /// From the request's arrival to its end.
  public var duration: Duration
  /// When it ended.
  public var finishedAt: Date

  public init(
    request: GenerationRequest, renderedPrompt: String, sampling: SamplingParameters, maxTokens: Int,
    result: GenerationResult, timeToFirstToken: Duration?, duration: Duration, finishedAt: Date
  ) {
    self.request = request
    self.renderedPrompt = renderedPrompt
    self.sampling = sampling
    self.maxTokens = maxTokens
    self.result = result
    self.timeToFirstToken = timeToFirstToken
    self.duration = duration
    self.finishedAt = finishedAt
  }
}

/// Receives a record of every answered generation request (the generation log).
///
/// `record` is called on the request's own task as it ends, before the answer goes out: it must
/// return at once, never block, throw or wait on I/O (queue the record and write it elsewhere).
public protocol GenerationRecorder: Sendable {
  func record(_ record: GenerationRecord)
}

extension GenerationResult {
  /// The answer as the client asked to see it: token ids only when requested (the pipeline
  /// collects them for the log either way).
  func forClient(returnTokenIDs: Bool) -> GenerationResult {
    guard !returnTokenIDs else { return self }
    var result = self
    for index in result.completions.indices { result.completions[index].tokenIDs = [] }
    return result
  }
}
