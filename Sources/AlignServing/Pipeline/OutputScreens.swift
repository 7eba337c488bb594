import AlignEngine

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
