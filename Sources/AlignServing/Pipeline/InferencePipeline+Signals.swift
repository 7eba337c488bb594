import AlignEngine

/// Live signals of generation, per serving version, for the canary analysis (``LiveSignals``):
/// how each request ended, the output screen's flags, and a sampled share of completions queued
/// for judging off the token path (``CompletionSampler``).
extension InferencePipeline {
  /// Runs a generation served by `version`, counting how it ended: served, or failed by the
  /// server. A client's cancellation and bad input are not the version's doing and count neither.
  func counted<T>(_ version: String, _ body: () async throws -> T) async throws -> T {
    do {
      let value = try await body()
      models.signals.recordRequest(version: version, failed: false)
      return value
    } catch {
      if Self.isServerFailure(error) { models.signals.recordRequest(version: version, failed: true) }
      throw error
    }
  }

  /// Failures that count against the serving version.
  static func isServerFailure(_ error: any Error) -> Bool {
    switch error {
    case ServingError.cancelled, is InvalidRequest, is CancellationError: return false
    case ServingError.failedPrecondition, ServingError.unavailable: return false
    default: return true
    }
  }

  /// What a reward model reads before a completion of `request`.
  static func rewardContext(_ request: GenerationRequest) -> RewardInput.Context {
    switch request.input {
    case .chat(let messages, _): return .messages(messages)
    case .prompt(let prompt): return .prompt(prompt)
    case nil: return .prompt("")
    }
  }

  /// Records the ended completions of a generation served by `version`: the output screen's
  /// verdict when it ran, and, for a sampled request, the texts queued for judging.
  func observe(
    _ completions: [GeneratedCompletion], texts: [String]?, version: String, request: GenerationRequest, screened: Bool
  ) {
    if screened {
      for completion in completions {
        models.signals.recordSafety(
          version: version, flagged: completion.finishReason == .safety || !completion.flaggedCategories.isEmpty)
      }
    }
    guard let texts else { return }
    let context = Self.rewardContext(request)
    models.sampler.offer(
      texts.filter { !$0.isEmpty }.map {
        CompletionSampler.Job(version: version, context: context, text: $0, screened: screened)
      })
  }
}
