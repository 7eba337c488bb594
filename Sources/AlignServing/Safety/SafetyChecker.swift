/// One category's result for one text.
public struct CategoryScore: Sendable, Equatable {
  public var category: SafetyCategory
  /// 0...1; the highest score any backend gave.
  public var score: Double
  /// Whether the profile has a rule for the category and the score reached its threshold.
  public var flagged: Bool
  /// The backend that gave the score (`lexical`, `rules`, `guard`).
  public var source: String

  public init(category: SafetyCategory, score: Double, flagged: Bool, source: String) {
    self.category = category
    self.score = score
    self.flagged = flagged
    self.source = source
  }
}

/// The result for one text: a score for every category the enabled backends cover, the flagged
/// categories, and the strongest action among them.
public struct SafetyVerdict: Sendable, Equatable {
  /// Sorted by category name.
  public var scores: [CategoryScore]
  /// Sorted by category name.
  public var flaggedCategories: [SafetyCategory]
  /// `allow` when nothing is flagged, else the strongest action of the flagged categories.
  public var action: SafetyAction

  public init(scores: [CategoryScore], flaggedCategories: [SafetyCategory], action: SafetyAction) {
    self.scores = scores
    self.flaggedCategories = flaggedCategories
    self.action = action
  }

  /// The score of one category, or nil when no enabled backend covers it.
  public func score(_ category: SafetyCategory) -> Double? {
    scores.first { $0.category == category }?.score
  }
}

/// A backend set that cannot work together (two backends with one name).
public struct SafetyConfigurationError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Checks texts against a safety policy with layered backends (lexical classifier, PII and term
/// rules, an optional guard model) and turns their scores into flags and an action.
///
/// Immutable and `Sendable`: share one checker between requests; to change the policy, build a
/// new checker and publish it. Backends that run a model batch concurrent calls themselves.
public final class SafetyChecker: Sendable {
  public let policy: SafetyPolicy
  /// The backends in use: those given that the policy enables, in the order given.
  public let backends: [any SafetyBackend]
  /// `policy=<name@version>;<backend>=<version>;…`, e.g.
  /// `policy=default@1;lexical=alt-profanity-check-1.9.1;rules=1`.
  public let version: String
  /// Every category some backend in use covers, sorted.
  public let categories: [SafetyCategory]

  /// - Parameters:
  ///   - policy: thresholds, actions, term lists and enabled backends.
  ///   - backends: the configured backends; those the policy does not enable are left out.
  /// - Throws: ``SafetyConfigurationError`` when two backends share a name.
  public init(policy: SafetyPolicy, backends: [any SafetyBackend]) throws(SafetyConfigurationError) {
    var names = Set<String>()
    for backend in backends where !names.insert(backend.name).inserted {
      throw SafetyConfigurationError("two safety backends are named \"\(backend.name)\"")
    }
    let used = backends.filter { policy.enabledBackends.contains($0.name) }
    self.policy = policy
    self.backends = used
    version = (["policy=\(policy.versionString)"] + used.map { "\($0.name)=\($0.version)" })
      .joined(separator: ";")
    categories = Set(used.flatMap(\.categories)).sorted()
  }

  /// Checks each input under a profile.
  /// - Parameters:
  ///   - inputs: the texts; the answer has one verdict per input, in order.
  ///   - profile: a profile of the policy, or nil for its default profile.
  /// - Throws: ``InvalidRequest`` for an unknown profile or a text too long for the guard model;
  ///   ``DynamicBatcherError/queueFull(capacity:)`` when the guard's queue is full;
  ///   ``SafetyConfigurationError`` when a backend answers the wrong number of results; engine errors.
  public func check(_ inputs: [SafetyInput], profile: String? = nil) async throws -> [SafetyVerdict] {
    let profile = try policy.profile(named: profile)
    guard !inputs.isEmpty else { return [] }
    let results = try await withThrowingTaskGroup(of: (Int, [[SafetyCategory: Double]]).self) { group in
      for (index, backend) in backends.enumerated() {
        group.addTask { (index, try await backend.scores(inputs, profile: profile)) }
      }
      var all = [[[SafetyCategory: Double]]](repeating: [], count: backends.count)
      for try await (index, scores) in group {
        guard scores.count == inputs.count else {
          throw SafetyConfigurationError(
            "safety backend \(backends[index].name) answered \(scores.count) results for \(inputs.count) texts")
        }
        all[index] = scores
      }
      return all
    }
    return inputs.indices.map { i in
      var best: [SafetyCategory: (score: Double, source: String)] = [:]
      for (b, backend) in backends.enumerated() {
        let scores = results[b][i]
        for category in backend.categories {
          let score = min(1, max(0, scores[category] ?? 0))
          if let current = best[category], current.score >= score { continue }
          best[category] = (score, backend.name)
        }
      }
      return Self.verdict(best, profile: profile)
    }
  }

  /// Applies a profile's thresholds and actions to merged scores.
  static func verdict(
    _ best: [SafetyCategory: (score: Double, source: String)], profile: SafetyProfile
  ) -> SafetyVerdict {
    var scores: [CategoryScore] = []
    var flagged: [SafetyCategory] = []
    var action = SafetyAction.allow
    for category in best.keys.sorted() {
      let (score, source) = best[category]!
      var isFlagged = false
      if let rule = profile.rules[category], score >= rule.threshold {
        isFlagged = true
        flagged.append(category)
        action = max(action, rule.action)
      }
      scores.append(CategoryScore(category: category, score: score, flagged: isFlagged, source: source))
    }
    return SafetyVerdict(scores: scores, flaggedCategories: flagged, action: action)
  }
}
