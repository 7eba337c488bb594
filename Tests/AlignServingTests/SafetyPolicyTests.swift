import AlignServing
import Foundation
import Testing

@Suite("SafetyPolicy")
struct SafetyPolicyTests {
  @Test("Config/safety-policy.json loads and equals the built-in default")
  func defaultFile() throws {
    let file = try SafetyPolicy(contentsOf: SafetyFixtures.defaultPolicyPath)
    #expect(try file == SafetyPolicy.builtInDefault())
    #expect(file.versionString == "default@2")
    #expect(file.defaultProfile == "default")
    #expect(Set(file.profiles.keys) == ["default", "strict", "permissive"])
    #expect(file.enabledBackends == ["classifier", "rules", "guard"])
    // Every moderation category has a rule in the default profile.
    let rules = try file.profile(named: nil).rules
    for category in SafetyCategory.moderation + SafetyCategory.pii {
      #expect(rules[category] != nil, "\(category)")
    }
  }

  @Test("extends inherits rules and overrides them; term lists add their default action")
  func profilesResolve() throws {
    let policy = try SafetyPolicy(contentsOf: SafetyFixtures.termsPolicyPath)
    #expect(policy.versionString == "test-terms@3")
    let base = try policy.profile(named: "default")
    let strict = try policy.profile(named: "strict")
    let piiOnly = try policy.profile(named: "pii-only")
    #expect(base.rules[.harassment] == CategoryRule(threshold: 0.5, action: .flag))
    #expect(strict.rules[.harassment] == CategoryRule(threshold: 0.2, action: .block))
    #expect(strict.rules[.piiCreditCard] == CategoryRule(threshold: 0.5, action: .block))  // inherited
    #expect(base.rules[.terms("competitors")]?.action == .flag)  // list default
    #expect(strict.rules[.terms("competitors")]?.action == .block)  // profile override
    #expect(piiOnly.rules[.terms("project-codenames")]?.action == .block)
    #expect(piiOnly.rules[.harassment] == nil)
    #expect(policy.termLists.map(\.name) == ["competitors", "project-codenames"])
    #expect(policy.termLists[0].terms == ["acme corp", "globex", "initech"])
    #expect(try policy.profile(named: "") == base)
  }

  @Test("an unknown profile is an InvalidRequest naming the known ones")
  func unknownProfile() throws {
    let policy = try SafetyPolicy.builtInDefault()
    #expect {
      try policy.profile(named: "lenient")
    } throws: { error in
      guard let error = error as? InvalidRequest else { return false }
      return error.description.contains("\"lenient\"") && error.description.contains("permissive, strict")
    }
  }

  @Test("a missing file names the path")
  func missingFile() {
    #expect {
      try SafetyPolicy(contentsOf: "/nonexistent/policy.json")
    } throws: { error in
      guard let error = error as? SafetyPolicyError else { return false }
      return error.source == "/nonexistent/policy.json" && error.description.contains("cannot read")
    }
  }

  static func valid() -> [String: Any] {
    [
    "format": "alignd.safety-policy", "format_version": 1, "name": "t", "version": "1",
    "backends": ["rules"], "default_profile": "p",
    "profiles": ["p": ["categories": ["hate": ["threshold": 0.5, "action": "block"]]]],
    "term_lists": ["words": ["action": "flag", "terms": ["x"]]],
    ]
  }

  static func edited(_ edit: (inout [String: Any]) -> Void) -> String {
    var doc = valid()
    edit(&doc)
    let data = try! JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
  }

  /// Broken documents and a fragment the error must contain.
  static let broken: [(String, String, String)] = [
    ("not JSON", "{\"format\": ", "not valid JSON"),
    ("wrong format", edited { $0["format"] = "other" }, "format is \"other\""),
    ("format version", edited { $0["format_version"] = 2 }, "format_version 2"),
    ("missing name", edited { $0["name"] = nil }, "name: missing"),
    ("name with @", edited { $0["name"] = "a@b" }, "name must be"),
    ("empty version", edited { $0["version"] = "" }, "version must be"),
    ("unknown backend", edited { $0["backends"] = ["rules", "gpt"] }, "unknown backend \"gpt\""),
    ("no default profile", edited { $0["default_profile"] = "q" }, "default_profile: no profile named \"q\""),
    ("no profiles", edited { $0["profiles"] = [String: Any]() }, "at least one profile"),
    ("unknown category",
     edited { $0["profiles"] = ["p": ["categories": ["hateful": ["threshold": 0.5, "action": "flag"]]]] },
     "profiles.p.categories.hateful: unknown category"),
    ("threshold above 1",
     edited { $0["profiles"] = ["p": ["categories": ["hate": ["threshold": 1.5, "action": "flag"]]]] },
     "profiles.p.categories.hate.threshold: 1.5 is outside"),
    ("zero threshold",
     edited { $0["profiles"] = ["p": ["categories": ["hate": ["threshold": 0, "action": "flag"]]]] },
     "threshold: 0.0 is outside"),
    ("threshold as string",
     edited { $0["profiles"] = ["p": ["categories": ["hate": ["threshold": "high", "action": "flag"]]]] },
     "profiles.p.categories.hate.threshold: expected Double"),
    ("bad action",
     edited { $0["profiles"] = ["p": ["categories": ["hate": ["threshold": 0.5, "action": "allow"]]]] },
     "profiles.p.categories.hate.action: \"allow\" is not an action"),
    ("missing action",
     edited { $0["profiles"] = ["p": ["categories": ["hate": ["threshold": 0.5]]]] },
     "profiles.p.categories.hate.action: missing"),
    ("extends unknown", edited { $0["profiles"] = ["p": ["extends": "base"]] }, "no profile named \"base\""),
    ("extends cycle",
     edited { $0["profiles"] = ["p": ["extends": "q"], "q": ["extends": "p"]] }, "extends forms a cycle"),
    ("term list for unknown list",
     edited { $0["profiles"] = ["p": ["categories": ["terms/other": ["threshold": 0.5, "action": "flag"]]]] },
     "no term list named \"other\""),
    ("bad list name", edited { $0["term_lists"] = ["Bad Name": ["action": "flag", "terms": ["x"]]] }, "a list name is"),
    ("empty list", edited { $0["term_lists"] = ["w": ["action": "flag", "terms": [String]()]] }, "term_lists.w.terms: the list is empty"),
    ("blank term", edited { $0["term_lists"] = ["w": ["action": "flag", "terms": ["ok", "  "]]] }, "term_lists.w.terms[1]"),
    ("unknown top-level key", edited { $0["term_list"] = [String: Any]() }, "term_list: unknown key"),
    ("misspelt rule key",
     edited { $0["profiles"] = ["p": ["categories": ["hate": ["threshold": 0.5, "action": "flag", "treshold": 0.2]]]] },
     "profiles.p.categories.hate.treshold: unknown key"),
    ("list action", edited { $0["term_lists"] = ["w": ["action": "warn", "terms": ["x"]]] }, "term_lists.w.action"),
  ]

  @Test("the valid base document loads")
  func validBase() throws {
    let policy = try SafetyFixtures.policy(Self.edited { _ in })
    #expect(policy.versionString == "t@1")
    #expect(try policy.profile(named: "p").rules[.hate] == CategoryRule(threshold: 0.5, action: .block))
  }

  @Test("broken documents fail with the source and the problem", arguments: broken.indices)
  func brokenDocuments(_ index: Int) {
    let (name, json, fragment) = Self.broken[index]
    do {
      _ = try SafetyFixtures.policy(json)
      Issue.record("\(name): loaded")
    } catch {
      #expect(error.source == "inline", "\(name)")
      #expect(error.description.contains(fragment), "\(name): \(error.description)")
    }
  }
}

/// Paths shared by the safety suites.
enum SafetyFixtures {
  static let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // AlignServingTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()

  static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

  static let defaultPolicyPath = path("Config/safety-policy.json")
  static let termsPolicyPath = path("Tests/Fixtures/safety/policy-with-terms.json")
  static let casesPath = path("Tests/Fixtures/safety/checksafety_cases.json")
  static let tinyGuardPath = path("Tests/Fixtures/safety/tiny-guard")

  /// The converted lexical model (scripts/fetch-safety-model.sh); ALIGND_MODELS_DIR as in the script.
  static let lexicalModelPath: String = {
    let directory = ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"] ?? path("models")
    return URL(fileURLWithPath: directory).appendingPathComponent(LexicalClassifier.defaultFileName).path
  }()

  static let lexicalModelPresent = FileManager.default.fileExists(atPath: lexicalModelPath)

  /// A policy from an inline JSON document.
  static func policy(_ json: String) throws(SafetyPolicyError) -> SafetyPolicy {
    try SafetyPolicy(data: Data(json.utf8), source: "inline")
  }
}

/// A backend that returns fixed scores, to exercise thresholds and actions exactly.
struct FixedScoresBackend: SafetyBackend {
  var name: String
  var version = "test"
  var categories: [SafetyCategory]
  var scores: [SafetyCategory: Double]

  func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    inputs.map { _ in scores }
  }
}
