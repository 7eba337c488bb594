import AlignEngine
import Foundation

/// One thing to score: a context (a raw prompt or a conversation) and the response that follows it.
public struct RewardInput: Sendable, Equatable {
  /// What came before the response.
  public enum Context: Sendable, Equatable {
    /// A plain prompt string. How it is joined to the response depends on the backend: a
    /// sequence-classification model reads `prompt + response` as one text; a reward head follows
    /// its manifest's `input`; the judge quotes it in its rating prompt.
    case prompt(String)
    /// A conversation; the response becomes the next assistant turn, rendered with the model's
    /// chat template.
    case messages([ChatMessage])
  }

  /// What came before the response.
  public var context: Context
  /// The response to score.
  public var response: String

  /// A prompt string and a response.
  public init(prompt: String, response: String) {
    self.context = .prompt(prompt)
    self.response = response
  }

  /// A conversation and the assistant's next turn.
  public init(messages: [ChatMessage], response: String) {
    self.context = .messages(messages)
    self.response = response
  }

  /// A context and a response.
  public init(context: Context, response: String) {
    self.context = context
    self.response = response
  }

  /// The conversation this input stands for, with the response as the final assistant turn; a plain
  /// prompt becomes one user message.
  public var conversation: [ChatMessage] {
    switch context {
    case .prompt(let p): return [ChatMessage(role: "user", content: p), ChatMessage(role: "assistant", content: response)]
    case .messages(let m): return m + [ChatMessage(role: "assistant", content: response)]
    }
  }

  /// The last user turn (the question a judge is asked about), or the prompt itself.
  var question: String {
    switch context {
    case .prompt(let p): return p
    case .messages(let m): return m.last(where: { $0.role == "user" })?.content ?? ""
    }
  }
}

/// Which family of reward model answers.
public enum RewardBackendKind: String, Sendable, Equatable {
  /// A `*ForSequenceClassification` checkpoint with one label: the score logit at the last token.
  case sequenceClassification = "sequence-classification"
  /// A linear head (``RewardHeadCheckpoint``) on a base model's final hidden state.
  case rewardHead = "reward-head"
  /// The policy asked to rate the response (``GenerativeJudge``).
  case generativeJudge = "generative-judge"
  /// A small network on sentence embeddings of the prompt and the response (``EmbeddingRewardModel``).
  case embeddingHead = "embedding-head"
}

/// A reward model: turns (context, response) pairs into scalar rewards, many per forward pass.
///
/// Implementations are immutable after loading and safe to call from several threads (calls may
/// serialize internally). Calls block while the model runs: call them off the cooperative thread
/// pool (``RewardScorer`` does).
public protocol RewardBackend: Sendable {
  /// The exact model version answering, stamped on every score.
  var version: String { get }
  /// The backend family.
  var kind: RewardBackendKind { get }
  /// Scores every input, in one batched forward pass where they fit (more passes otherwise).
  /// - Returns: one reward per input, in input order.
  /// - Throws: ``InvalidRequest`` for an input the model cannot take (too long, a conversation the
  ///   chat template rejects, nothing to score); engine errors for internal failures.
  func rewards(_ inputs: [RewardInput]) throws -> [Double]
}

/// The probability that `chosen` is preferred to `rejected` under the Bradley–Terry model:
/// σ(r_chosen − r_rejected).
public func preferenceProbability(chosen: Double, rejected: Double) -> Double {
  let d = chosen - rejected
  // The two branches keep exp from overflowing for large |d|.
  if d >= 0 { return 1 / (1 + exp(-d)) }
  let e = exp(d)
  return e / (1 + e)
}
