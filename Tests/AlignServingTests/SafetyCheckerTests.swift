import AlignServing
import Foundation
import Testing

@Suite("SafetyChecker")
struct SafetyCheckerTests {
  struct Case: Decodable {
    let text: String
    let rules: [String]
    let lexical_prob: Double
    let lexical_label: Int
    let expected_flagged: [String]
    let expected_action: String
  }

  struct Cases: Decodable {
    let policy: String
    let profile: String
    let alt_profanity_check: String
    let cases: [Case]
  }

  static func loadCases() throws -> Cases {
    try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: SafetyFixtures.casesPath)))
  }

  static func checker(policy: SafetyPolicy, lexical: Bool) throws -> SafetyChecker {
    var backends: [any SafetyBackend] = [RulesBackend(termLists: policy.termLists)]
    if lexical {
      backends.insert(LexicalBackend(classifier: try LexicalClassifier(contentsOf: SafetyFixtures.lexicalModelPath)), at: 0)
    }
    return try SafetyChecker(policy: policy, backends: backends)
  }

  @Test("the committed CheckSafety set mixes benign, PII, term-list and offensive texts")
  func caseShape() throws {
    let cases = try Self.loadCases().cases
    #expect(cases.count >= 50)
    #expect(cases.contains { $0.expected_flagged.isEmpty })
    #expect(cases.contains { $0.lexical_label == 1 })
    for category in ["pii/email", "pii/phone", "pii/credit_card", "pii/national_id", "terms/competitors", "terms/project-codenames"] {
      #expect(cases.contains { $0.rules.contains(category) }, "\(category)")
    }
  }

  @Test(
    "every case gets the expected flags and action; the lexical classifier agrees with the Python package",
    .enabled(if: SafetyFixtures.lexicalModelPresent, "converted model absent: run scripts/fetch-safety-model.sh")
  )
  func committedCases() async throws {
    let fixture = try Self.loadCases()
    let policy = try SafetyPolicy(contentsOf: SafetyFixtures.path("Tests/Fixtures/safety/\(fixture.policy)"))
    let checker = try Self.checker(policy: policy, lexical: true)
    #expect(checker.version == "policy=test-terms@3;lexical=alt-profanity-check-\(fixture.alt_profanity_check);rules=1")
    let verdicts = try await checker.check(fixture.cases.map { SafetyInput(text: $0.text) }, profile: fixture.profile)
    #expect(verdicts.count == fixture.cases.count)
    for (c, verdict) in zip(fixture.cases, verdicts) {
      let harassment = try #require(verdict.score(.harassment))
      #expect(abs(harassment - c.lexical_prob) <= 1e-9, "\(c.text)")
      #expect((harassment > 0.5) == (c.lexical_label == 1), "\(c.text)")
      #expect(verdict.flaggedCategories.map(\.rawValue) == c.expected_flagged, "\(c.text)")
      #expect(verdict.action.rawValue == c.expected_action, "\(c.text)")
      #expect(verdict.scores.filter(\.flagged).map(\.category) == verdict.flaggedCategories)
    }
  }

  @Test("rule expectations hold without the lexical model too")
  func rulesOnly() async throws {
    let fixture = try Self.loadCases()
    let policy = try SafetyPolicy(contentsOf: SafetyFixtures.termsPolicyPath)
    let checker = try Self.checker(policy: policy, lexical: false)
    let verdicts = try await checker.check(fixture.cases.map { SafetyInput(text: $0.text) })
    for (c, verdict) in zip(fixture.cases, verdicts) {
      #expect(verdict.flaggedCategories.map(\.rawValue) == c.rules, "\(c.text)")
      #expect(verdict.scores.allSatisfy { $0.source == "rules" })
      #expect(verdict.score(.harassment) == nil)
    }
  }

  /// Two fixed backends under a policy with three profiles.
  static func fixedChecker(_ a: [SafetyCategory: Double], _ b: [SafetyCategory: Double]) throws -> SafetyChecker {
    let policy = try SafetyFixtures.policy(
      """
      {"format": "alignd.safety-policy", "format_version": 1, "name": "p", "version": "7",
       "backends": ["lexical", "rules"], "default_profile": "base",
       "profiles": {
         "base": {"categories": {"harassment": {"threshold": 0.5, "action": "flag"},
                                 "hate": {"threshold": 0.8, "action": "block"}}},
         "tight": {"extends": "base", "categories": {"harassment": {"threshold": 0.3, "action": "block"}}},
         "hate-only": {"categories": {"hate": {"threshold": 0.5, "action": "flag"}}}
       }}
      """)
    return try SafetyChecker(policy: policy, backends: [
      FixedScoresBackend(name: "lexical", categories: [.harassment, .hate], scores: a),
      FixedScoresBackend(name: "rules", categories: [.hate, .piiEmail], scores: b),
      FixedScoresBackend(name: "guard", categories: [.violence], scores: [.violence: 1]),
    ])
  }

  @Test("thresholds are inclusive; the strongest flagged action wins; profiles change both")
  func thresholdsAndActions() async throws {
    let checker = try Self.fixedChecker([.harassment: 0.5, .hate: 0.4], [.hate: 0.79])
    #expect(checker.version == "policy=p@7;lexical=test;rules=test")  // guard not enabled by the policy
    #expect(checker.categories == [.harassment, .hate, .piiEmail])
    let input = [SafetyInput(text: "x")]

    let base = try await checker.check(input)[0]
    #expect(base.flaggedCategories == [.harassment])
    #expect(base.action == .flag)
    #expect(base.score(.hate) == 0.79)
    #expect(base.scores.first { $0.category == .hate }?.source == "rules")  // the higher score's backend
    #expect(base.score(.piiEmail) == 0)
    #expect(base.score(.violence) == nil)

    let tight = try await checker.check(input, profile: "tight")[0]
    #expect(tight.flaggedCategories == [.harassment])
    #expect(tight.action == .block)

    let hateOnly = try await checker.check(input, profile: "hate-only")[0]
    #expect(hateOnly.flaggedCategories == [.hate])
    #expect(hateOnly.action == .flag)

    let both = try await Self.fixedChecker([.harassment: 0.9], [.hate: 0.8]).check(input)[0]
    #expect(both.flaggedCategories == [.harassment, .hate])
    #expect(both.action == .block)

    let none = try await Self.fixedChecker([.harassment: 0.49], [:]).check(input)[0]
    #expect(none.flaggedCategories.isEmpty)
    #expect(none.action == .allow)
    #expect(none.scores.map(\.category) == [.harassment, .hate, .piiEmail])
  }

  @Test("an unknown profile throws InvalidRequest; no inputs gives no verdicts")
  func unknownProfile() async throws {
    let checker = try Self.fixedChecker([:], [:])
    await #expect(throws: InvalidRequest.self) {
      try await checker.check([SafetyInput(text: "x")], profile: "nope")
    }
    #expect(try await checker.check([]).isEmpty)
  }

  @Test("a backend answering the wrong number of results is an error, not a silent gap")
  func wrongResultCount() async throws {
    struct Short: SafetyBackend {
      var name = "rules"
      var version = "x"
      var categories: [SafetyCategory] = [.piiEmail]
      func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] { [] }
    }
    let checker = try SafetyChecker(policy: .builtInDefault(), backends: [Short()])
    await #expect(throws: SafetyConfigurationError.self) {
      try await checker.check([SafetyInput(text: "x")])
    }
  }

  @Test("two backends with one name are refused")
  func duplicateBackends() {
    #expect(throws: SafetyConfigurationError.self) {
      try SafetyChecker(policy: .builtInDefault(), backends: [
        RulesBackend(termLists: []), RulesBackend(termLists: []),
      ])
    }
  }

  @Test("the default policy blocks card numbers and national ids and flags e-mail and phone")
  func defaultPolicyRules() async throws {
    let checker = try SafetyChecker(policy: .builtInDefault(), backends: [RulesBackend(termLists: [])])
    #expect(checker.version == "policy=default@2;rules=1")
    let verdicts = try await checker.check([
      SafetyInput(text: "write to a@example.com"), SafetyInput(text: "card 4111 1111 1111 1111"),
      SafetyInput(text: "SSN 123-45-6789"), SafetyInput(text: "hello"),
    ])
    #expect(verdicts.map(\.action) == [.flag, .block, .block, .allow])
    let strict = try await checker.check([SafetyInput(text: "write to a@example.com")], profile: "strict")
    #expect(strict[0].action == .block)
  }
}
