/// One text to check.
public struct SafetyInput: Sendable, Equatable {
  /// Who wrote ``text``: a user prompt, or an assistant response.
  public enum Role: String, Sendable, Equatable {
    case user
    case assistant
  }

  /// The text judged.
  public var text: String
  /// For an assistant response, the prompt it answers (the guard model judges the response in
  /// this context; the other backends look at ``text`` only). Ignored for `user`.
  public var context: String?
  public var role: Role

  public init(text: String, context: String? = nil, role: Role = .user) {
    self.text = text
    self.context = context
    self.role = role
  }
}

/// A classifier layer of the safety checker: scores texts in the categories it covers.
public protocol SafetyBackend: Sendable {
  /// The name the policy enables it by: `lexical`, `toxblock`, `hatesonar`, `rules` or `guard`.
  var name: String { get }
  /// Stamped on answers (`lexical=<version>`).
  var version: String { get }
  /// The categories this backend can score.
  var categories: [SafetyCategory] { get }
  /// Scores for each input, in order: category → score in 0...1. A category the backend covers
  /// but leaves out scores 0.
  /// - Parameter profile: the profile being applied (a backend may spend extra work only where a
  ///   score can reach a threshold).
  func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]]
}

/// A backend that queues its work in a ``DynamicBatcher`` (a model shared by concurrent checks):
/// GetStatus reports its queue, and its queue honours each request's priority and deadline
/// (``RequestScheduling``).
public protocol BatchedSafetyBackend: SafetyBackend {
  /// Requests waiting, and the batcher's counters.
  var batchQueue: (queued: Int, stats: DynamicBatcherStats) { get }
}

/// The offensive-language classifier (alt-profanity-check) as a backend. It detects profane and
/// insulting language, which this service reports as `harassment` (Docs/SAFETY.md says why and
/// what it misses).
public struct LexicalBackend: SafetyBackend {
  public let classifier: LexicalClassifier
  public var name: String { "lexical" }
  public var version: String { classifier.version }
  public var categories: [SafetyCategory] { [.harassment] }

  public init(classifier: LexicalClassifier) {
    self.classifier = classifier
  }

  public func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    classifier.probabilities(inputs.map(\.text)).map { [.harassment: $0] }
  }
}

/// The Jigsaw toxic-comment BiLSTM (tox-block) as a backend. Its six labels map into the
/// moderation categories as follows (Docs/SAFETY.md says why and what it misses); scores are the
/// package's rescaled scores, clamped into 0...1:
///
/// | category | score |
/// |---|---|
/// | `harassment` | insult |
/// | `harassment/threatening` | threat |
/// | `violence` | threat |
/// | `hate` | identity_hate |
/// | `hate/threatening` | min(identity_hate, threat) |
///
/// `toxic`, `severe_toxic` and `obscene` (rudeness and swearing, with or without a target) have
/// no moderation category and are not reported; ``ToxBlockClassifier`` gives them.
public struct ToxBlockBackend: SafetyBackend {
  public let classifier: ToxBlockClassifier
  public var name: String { "toxblock" }
  public var version: String { classifier.version }
  public var categories: [SafetyCategory] {
    [.harassment, .harassmentThreatening, .violence, .hate, .hateThreatening]
  }

  public init(classifier: ToxBlockClassifier) {
    self.classifier = classifier
  }

  public func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    classifier.scores(inputs.map(\.text)).map { row in
      // toxic, severe_toxic, obscene, threat, insult, identity_hate
      let score = row.map { Double(min(max($0, 0), 1)) }
      let (threat, insult, identityHate) = (score[3], score[4], score[5])
      return [
        .harassment: insult, .harassmentThreatening: threat, .violence: threat, .hate: identityHate,
        .hateThreatening: min(identityHate, threat),
      ]
    }
  }
}

/// The Davidson hate-speech / offensive-language model (hatesonar) as a backend:
/// `hate_speech` → `hate`, `offensive_language` → `harassment` (as for the lexical backend);
/// `neither` is not reported.
public struct HateSonarBackend: SafetyBackend {
  public let classifier: HateSonarClassifier
  public var name: String { "hatesonar" }
  public var version: String { classifier.version }
  public var categories: [SafetyCategory] { [.hate, .harassment] }

  public init(classifier: HateSonarClassifier) {
    self.classifier = classifier
  }

  public func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    classifier.probabilities(inputs.map(\.text)).map { row in
      [.hate: row[0], .harassment: row[1]]  // hate_speech, offensive_language, neither
    }
  }
}

/// PII patterns (``PIIScanner``) and operator term lists (``TermMatcher``). A match scores 1.0.
public struct RulesBackend: SafetyBackend {
  /// Bumped whenever a pattern changes what it matches.
  public static let rulesVersion = "1"

  public let termLists: [TermList]
  private let matcher: TermMatcher

  public var name: String { "rules" }
  public var version: String { Self.rulesVersion }
  public var categories: [SafetyCategory] { SafetyCategory.pii + termLists.map(\.category) }

  /// - Parameter termLists: usually the policy's ``SafetyPolicy/termLists``.
  public init(termLists: [TermList]) {
    self.termLists = termLists
    matcher = TermMatcher(termLists.map(\.terms))
  }

  public func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    inputs.map { input in
      var scores: [SafetyCategory: Double] = [:]
      for match in PIIScanner.scan(input.text) { scores[match.category] = 1 }
      for list in matcher.matchingLists(in: input.text) { scores[termLists[list].category] = 1 }
      return scores
    }
  }
}
