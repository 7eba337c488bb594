import AlignEngine

/// A token with its log-probability and the most likely alternatives, each with its text.
public struct DecodedLogprob: Sendable, Equatable {
  public struct Alternative: Sendable, Equatable {
    public var tokenID: Int32
    public var token: String
    public var logprob: Float
  }

  public var tokenID: Int32
  public var token: String
  public var logprob: Float
  public var top: [Alternative]

  /// Decodes scored tokens' text with `tokenizer`.
  static func decode(_ tokens: some Sequence<ScoredToken>, tokenizer: Tokenizer) -> [DecodedLogprob] {
    tokens.map { token in
      DecodedLogprob(
        tokenID: token.token, token: tokenizer.decode([token.token]), logprob: token.logprob,
        top: token.top.map { Alternative(tokenID: $0.token, token: tokenizer.decode([$0.token]), logprob: $0.logprob) })
    }
  }
}

/// A prompt's tokens with their teacher-forced log-probabilities under the policy that served
/// the request (``GenerationRequest/promptLogprobs``).
public struct PromptLogprobs: Sendable, Equatable {
  /// The first prompt token: nothing precedes it, so it has no log-probability.
  public var firstTokenID: Int32
  public var firstToken: String
  /// Every later prompt token, in order.
  public var tokens: [DecodedLogprob]
  public var totalLogprob: Double { tokens.reduce(0) { $0 + Double($1.logprob) } }
}

/// One completion of a generation request.
public struct GeneratedCompletion: Sendable, Equatable {
  /// Its place in the answer (after best_of ranking: its rank).
  public var index: Int
  /// Its own id (each of n completions has one); feedback names it.
  public var completionID = ""
  public var text = ""
  /// Filled when the request asked for token ids.
  public var tokenIDs: [Int32] = []
  /// Filled when the request asked for log-probabilities.
  public var logprobs: [DecodedLogprob] = []
  /// nil only while the completion is running.
  public var finishReason: FinishReason?
  /// Categories the safety screen flagged when it stopped this completion.
  public var flaggedCategories: [SafetyCategory] = []
  /// The reward model's score (best_of only).
  public var reward: Double?
  /// The policy version that generated it, when it is not the answer's (`versions.policy`): the
  /// two completions of a comparison between the active and the canary policy. Empty otherwise.
  public var policyVersion = ""

  public init(index: Int) { self.index = index }
}

/// Prompt and completion token counts.
public struct TokenUsage: Sendable, Equatable {
  public var promptTokens: Int
  public var completionTokens: Int
  /// Prompt tokens the prefix cache supplied (not prefilled again).
  public var cachedPromptTokens = 0
  public var totalTokens: Int { promptTokens + completionTokens }

  public init(promptTokens: Int = 0, completionTokens: Int = 0) {
    self.promptTokens = promptTokens
    self.completionTokens = completionTokens
  }
}

/// The answer to a generation request, stamped with the versions that produced it.
public struct GenerationResult: Sendable, Equatable {
  public var responseID: String
  public var completions: [GeneratedCompletion]
  public var usage: TokenUsage
  public var versions: ModelVersions
  /// Every candidate's reward, in generation order (best_of only).
  public var candidateRewards: [Double] = []
  /// The prompt's tokens and log-probabilities, when the request asked for them.
  public var promptLogprobs: PromptLogprobs?
}

extension GenerationResult {
  /// An answer to fill in (the pipeline fills every field).
  public init(responseID: String, versions: ModelVersions) {
    self.init(responseID: responseID, completions: [], usage: TokenUsage(), versions: versions)
  }
}

/// A piece of streamed output: text released for one sample, with its token ids and
/// log-probabilities (those only when the request asked for them).
public struct GenerationChunk: Sendable, Equatable {
  public var sample: Int
  /// The id of completion `sample`.
  public var completionID: String
  public var text: String
  public var tokenIDs: [Int32]
  public var logprobs: [DecodedLogprob]
}
