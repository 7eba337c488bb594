import Foundation

/// What a verdict asks the caller to do, ordered from weakest to strongest.
public enum SafetyAction: String, Sendable, Comparable, CaseIterable {
  /// Nothing flagged: pass the text on.
  case allow
  /// Pass the text on, but report the flagged categories.
  case flag
  /// Do not pass the text on.
  case block

  public static func < (a: SafetyAction, b: SafetyAction) -> Bool { a.rank < b.rank }
  private var rank: Int {
    switch self {
    case .allow: 0
    case .flag: 1
    case .block: 2
    }
  }
}

/// How one category is judged in a profile: flagged when its score is at least `threshold`,
/// and then `action` applies.
public struct CategoryRule: Sendable, Equatable {
  public var threshold: Double
  public var action: SafetyAction

  public init(threshold: Double, action: SafetyAction) {
    self.threshold = threshold
    self.action = action
  }
}

/// A named set of category rules. Categories without a rule are scored but never flagged.
public struct SafetyProfile: Sendable, Equatable {
  public var name: String
  public var rules: [SafetyCategory: CategoryRule]

  public init(name: String, rules: [SafetyCategory: CategoryRule]) {
    self.name = name
    self.rules = rules
  }
}

/// An operator-defined list of words or phrases, matched case-insensitively on word boundaries.
/// A match scores 1.0 in the list's category, `terms/<name>`.
public struct TermList: Sendable, Equatable {
  public var name: String
  /// The action in profiles that do not set their own rule for ``category``.
  public var action: SafetyAction
  /// The terms, lowercased and trimmed.
  public var terms: [String]

  public var category: SafetyCategory { .terms(name) }

  public init(name: String, action: SafetyAction, terms: [String]) {
    self.name = name
    self.action = action
    self.terms = terms
  }
}

/// Why a safety policy could not be loaded: the file (or `built-in`) and the problem.
public struct SafetyPolicyError: Error, CustomStringConvertible, Equatable {
  /// The policy file's path, or `built-in`.
  public var source: String
  /// What is wrong, naming the key where possible (`profiles.strict.categories.hate.threshold`).
  public var problem: String

  public init(source: String, problem: String) {
    self.source = source
    self.problem = problem
  }

  public var description: String { "safety policy \(source): \(problem)" }
}

/// A versioned safety policy: per-profile category thresholds and actions, operator term lists,
/// and which backends are enabled. Loaded from a JSON file (format in Docs/SAFETY.md); every
/// answer carries ``versionString`` (`name@version`).
public struct SafetyPolicy: Sendable, Equatable {
  /// The backend names a policy may enable.
  public static let backendNames: Set<String> = ["classifier", "lexical", "toxblock", "hatesonar", "rules", "guard"]

  public var name: String
  public var version: String
  /// Backends the policy uses when they are configured (`lexical`, `toxblock`, `hatesonar`,
  /// `rules`, `guard`).
  public var enabledBackends: Set<String>
  public var defaultProfile: String
  /// Profiles by name, with `extends` and term-list defaults already applied.
  public var profiles: [String: SafetyProfile]
  public var termLists: [TermList]

  /// `name@version`, e.g. `default@1`.
  public var versionString: String { "\(name)@\(version)" }

  /// The profile a request names, or the default profile for nil or an empty name.
  /// - Throws: ``InvalidRequest`` for a name the policy does not define.
  public func profile(named requested: String?) throws(InvalidRequest) -> SafetyProfile {
    let name = requested.flatMap { $0.isEmpty ? nil : $0 } ?? defaultProfile
    guard let profile = profiles[name] else {
      let known = profiles.keys.sorted().joined(separator: ", ")
      throw InvalidRequest("unknown safety profile \"\(name)\" (policy \(versionString) has: \(known))")
    }
    return profile
  }

  /// Loads and validates a policy file.
  /// - Throws: ``SafetyPolicyError`` naming the file and the problem.
  public init(contentsOf path: String) throws(SafetyPolicyError) {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw SafetyPolicyError(source: path, problem: "cannot read the file: \(error.localizedDescription)")
    }
    try self.init(data: data, source: path)
  }

  /// Parses and validates a policy document.
  /// - Parameters:
  ///   - data: the JSON document.
  ///   - source: where it came from, for error messages.
  /// - Throws: ``SafetyPolicyError``.
  public init(data: Data, source: String) throws(SafetyPolicyError) {
    let file: PolicyFile
    do {
      file = try JSONDecoder().decode(PolicyFile.self, from: data)
    } catch let error as DecodingError {
      throw SafetyPolicyError(source: source, problem: Self.describe(error))
    } catch {
      throw SafetyPolicyError(source: source, problem: "not valid JSON: \(error)")
    }
    do {
      try Self.rejectUnknownKeys(data)
      self = try Self.validate(file)
    } catch let problem {
      throw SafetyPolicyError(source: source, problem: problem.message)
    }
  }

  /// The policy compiled into the binary, for a server started without a policy file; its
  /// content equals `Config/safety-policy.json` (a test keeps the two equal, and loads it).
  /// - Throws: ``SafetyPolicyError`` only if the built-in document were edited into an invalid one.
  public static func builtInDefault() throws(SafetyPolicyError) -> SafetyPolicy {
    try SafetyPolicy(data: Data(builtInDefaultJSON.utf8), source: "built-in")
  }

  // MARK: - Validation

  private struct Problem: Error { var message: String }

  private static func validate(_ file: PolicyFile) throws(Problem) -> SafetyPolicy {
    guard file.format == "alignd.safety-policy" else {
      throw Problem(message: "format is \"\(file.format)\", expected \"alignd.safety-policy\"")
    }
    guard file.formatVersion == 1 else {
      throw Problem(message: "format_version \(file.formatVersion) is not supported (expected 1)")
    }
    for (key, value) in [("name", file.name), ("version", file.version)] {
      guard !value.isEmpty, value.utf8.count <= 64,
        value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && $0 != "@" && $0 != ";" })
      else {
        throw Problem(message: "\(key) must be 1–64 printable ASCII characters without spaces, '@' or ';'")
      }
    }
    for backend in file.backends where !backendNames.contains(backend) {
      throw Problem(
        message: "backends: unknown backend \"\(backend)\" (known: \(backendNames.sorted().joined(separator: ", ")))")
    }

    var termLists: [TermList] = []
    for name in (file.termLists ?? [:]).keys.sorted() {
      let list = file.termLists![name]!
      let at = "term_lists.\(name)"
      guard SafetyCategory.isValidListName(name) else {
        throw Problem(message: "\(at): a list name is 1–64 characters of a-z, 0-9, '_' and '-'")
      }
      let action = try parseAction(list.action, at: "\(at).action")
      var terms: [String] = []
      for (i, term) in list.terms.enumerated() {
        let cleaned = term.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        guard !cleaned.isEmpty, cleaned.count <= 200 else {
          throw Problem(message: "\(at).terms[\(i)]: a term is 1–200 characters, not blank")
        }
        terms.append(cleaned)
      }
      guard !terms.isEmpty else { throw Problem(message: "\(at).terms: the list is empty") }
      termLists.append(TermList(name: name, action: action, terms: terms))
    }

    // Resolve `extends` chains, then add term-list defaults where a profile has no rule.
    var resolved: [String: [SafetyCategory: CategoryRule]] = [:]
    func resolve(_ name: String, chain: [String]) throws(Problem) -> [SafetyCategory: CategoryRule] {
      if let done = resolved[name] { return done }
      guard let profile = file.profiles[name] else {
        throw Problem(message: "profiles.\(chain.last ?? name).extends: no profile named \"\(name)\"")
      }
      guard !chain.contains(name) else {
        throw Problem(message: "profiles: extends forms a cycle: \((chain + [name]).joined(separator: " -> "))")
      }
      var rules = try profile.extends.map { (parent) throws(Problem) in try resolve(parent, chain: chain + [name]) } ?? [:]
      for (key, rule) in profile.categories ?? [:] {
        let at = "profiles.\(name).categories.\(key)"
        let category = SafetyCategory(rawValue: key)
        guard category.isValid else { throw Problem(message: "\(at): unknown category") }
        if key.hasPrefix("terms/"), !termLists.contains(where: { $0.category == category }) {
          throw Problem(message: "\(at): no term list named \"\(key.dropFirst(6))\"")
        }
        guard rule.threshold.isFinite, rule.threshold > 0, rule.threshold <= 1 else {
          throw Problem(message: "\(at).threshold: \(rule.threshold) is outside (0, 1]")
        }
        let action = try parseAction(rule.action, at: "\(at).action")
        rules[category] = CategoryRule(threshold: rule.threshold, action: action)
      }
      resolved[name] = rules
      return rules
    }
    guard !file.profiles.isEmpty else { throw Problem(message: "profiles: at least one profile is needed") }
    var profiles: [String: SafetyProfile] = [:]
    for name in file.profiles.keys.sorted() {
      guard SafetyCategory.isValidListName(name) else {
        throw Problem(message: "profiles.\(name): a profile name is 1–64 characters of a-z, 0-9, '_' and '-'")
      }
      var rules = try resolve(name, chain: [])
      for list in termLists where rules[list.category] == nil {
        rules[list.category] = CategoryRule(threshold: 0.5, action: list.action)
      }
      profiles[name] = SafetyProfile(name: name, rules: rules)
    }
    guard profiles[file.defaultProfile] != nil else {
      throw Problem(message: "default_profile: no profile named \"\(file.defaultProfile)\"")
    }
    return SafetyPolicy(
      name: file.name, version: file.version, enabledBackends: Set(file.backends),
      defaultProfile: file.defaultProfile, profiles: profiles, termLists: termLists)
  }

  private init(
    name: String, version: String, enabledBackends: Set<String>, defaultProfile: String,
    profiles: [String: SafetyProfile], termLists: [TermList]
  ) {
    self.name = name
    self.version = version
    self.enabledBackends = enabledBackends
    self.defaultProfile = defaultProfile
    self.profiles = profiles
    self.termLists = termLists
  }

  /// A misspelt key would otherwise be ignored silently (a `treshold` would leave the rule without
  /// its threshold only by luck of being required), so every object's keys are checked.
  private static func rejectUnknownKeys(_ data: Data) throws(Problem) {
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return }
    func check(_ object: Any?, _ allowed: Set<String>, at path: String) throws(Problem) {
      guard let object = object as? [String: Any] else { return }
      for key in object.keys.sorted() where !allowed.contains(key) {
        throw Problem(message: "\(path.isEmpty ? "" : path + ".")\(key): unknown key (expected one of: \(allowed.sorted().joined(separator: ", ")))")
      }
    }
    try check(root, ["format", "format_version", "name", "version", "backends", "default_profile", "profiles", "term_lists", "description"], at: "")
    for (name, profile) in (root["profiles"] as? [String: Any]) ?? [:] {
      try check(profile, ["extends", "categories", "description"], at: "profiles.\(name)")
      for (category, rule) in ((profile as? [String: Any])?["categories"] as? [String: Any]) ?? [:] {
        try check(rule, ["threshold", "action"], at: "profiles.\(name).categories.\(category)")
      }
    }
    for (name, list) in (root["term_lists"] as? [String: Any]) ?? [:] {
      try check(list, ["action", "terms"], at: "term_lists.\(name)")
    }
  }

  private static func parseAction(_ text: String, at: String) throws(Problem) -> SafetyAction {
    switch text {
    case "flag": return .flag
    case "block": return .block
    default: throw Problem(message: "\(at): \"\(text)\" is not an action (flag or block)")
    }
  }

  private static func describe(_ error: DecodingError) -> String {
    func path(_ keys: [any CodingKey]) -> String {
      let parts = keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
      return parts.isEmpty ? "the document" : parts.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }
    switch error {
    case .keyNotFound(let key, let context):
      return "\(path(context.codingPath + [key])): missing"
    case .typeMismatch(let type, let context):
      return "\(path(context.codingPath)): expected \(type)"
    case .valueNotFound(let type, let context):
      return "\(path(context.codingPath)): expected \(type), found null"
    case .dataCorrupted(let context):
      if let underlying = context.underlyingError as NSError? {
        return "not valid JSON: \(underlying.userInfo[NSDebugDescriptionErrorKey] ?? underlying.localizedDescription)"
      }
      return "\(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
      return "\(error)"
    }
  }
}

// MARK: - File format

private struct PolicyFile: Decodable {
  var format: String
  var formatVersion: Int
  var name: String
  var version: String
  var backends: [String]
  var defaultProfile: String
  var profiles: [String: Profile]
  var termLists: [String: List]?

  struct Profile: Decodable {
    var extends: String?
    var categories: [String: Rule]?
  }
  struct Rule: Decodable {
    var threshold: Double
    var action: String
  }
  struct List: Decodable {
    var action: String
    var terms: [String]
  }

  enum CodingKeys: String, CodingKey {
    case format, name, version, backends, profiles
    case formatVersion = "format_version"
    case defaultProfile = "default_profile"
    case termLists = "term_lists"
  }
}
