/// A safety category: one of OpenAI's moderation categories, a rule category (`pii/…`,
/// `terms/<list>`) or a guard-model category without a moderation counterpart (`guard/…`).
///
/// Categories are plain strings on the wire; this type keeps the known names in one place and
/// validates names read from a policy file.
public struct SafetyCategory: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
  public let rawValue: String

  /// Wraps a name without validation; use ``isValid`` (or let the policy loader do it) for names
  /// from outside.
  public init(rawValue: String) { self.rawValue = rawValue }

  public var description: String { rawValue }

  public static func < (a: SafetyCategory, b: SafetyCategory) -> Bool { a.rawValue < b.rawValue }

  // MARK: OpenAI moderation taxonomy

  public static let harassment = SafetyCategory(rawValue: "harassment")
  public static let harassmentThreatening = SafetyCategory(rawValue: "harassment/threatening")
  public static let hate = SafetyCategory(rawValue: "hate")
  public static let hateThreatening = SafetyCategory(rawValue: "hate/threatening")
  public static let illicit = SafetyCategory(rawValue: "illicit")
  public static let illicitViolent = SafetyCategory(rawValue: "illicit/violent")
  public static let selfHarm = SafetyCategory(rawValue: "self-harm")
  public static let selfHarmIntent = SafetyCategory(rawValue: "self-harm/intent")
  public static let selfHarmInstructions = SafetyCategory(rawValue: "self-harm/instructions")
  public static let sexual = SafetyCategory(rawValue: "sexual")
  public static let sexualMinors = SafetyCategory(rawValue: "sexual/minors")
  public static let violence = SafetyCategory(rawValue: "violence")
  public static let violenceGraphic = SafetyCategory(rawValue: "violence/graphic")

  /// The thirteen categories of OpenAI's moderation endpoint (omni-moderation), in its order.
  public static let moderation: [SafetyCategory] = [
    .harassment, .harassmentThreatening, .hate, .hateThreatening, .illicit, .illicitViolent,
    .selfHarm, .selfHarmIntent, .selfHarmInstructions, .sexual, .sexualMinors, .violence,
    .violenceGraphic,
  ]

  // MARK: Rule categories

  public static let piiEmail = SafetyCategory(rawValue: "pii/email")
  public static let piiPhone = SafetyCategory(rawValue: "pii/phone")
  public static let piiCreditCard = SafetyCategory(rawValue: "pii/credit_card")
  public static let piiNationalID = SafetyCategory(rawValue: "pii/national_id")

  /// The PII categories the rules backend detects.
  public static let pii: [SafetyCategory] = [.piiEmail, .piiPhone, .piiCreditCard, .piiNationalID]

  /// The category of an operator term list: `terms/<name>`.
  public static func terms(_ listName: String) -> SafetyCategory {
    SafetyCategory(rawValue: "terms/" + listName)
  }

  // MARK: Guard categories without a moderation counterpart

  public static let guardSpecializedAdvice = SafetyCategory(rawValue: "guard/specialized_advice")
  public static let guardPrivacy = SafetyCategory(rawValue: "guard/privacy")
  public static let guardIntellectualProperty = SafetyCategory(rawValue: "guard/intellectual_property")
  public static let guardElections = SafetyCategory(rawValue: "guard/elections")
  public static let guardCodeInterpreterAbuse = SafetyCategory(rawValue: "guard/code_interpreter_abuse")
  /// A guard model answered "unsafe" but named no category code this mapping knows.
  public static let guardUnspecified = SafetyCategory(rawValue: "guard/unspecified")

  /// Every `guard/…` category.
  public static let guardOnly: [SafetyCategory] = [
    .guardSpecializedAdvice, .guardPrivacy, .guardIntellectualProperty, .guardElections,
    .guardCodeInterpreterAbuse, .guardUnspecified,
  ]

  /// True for a moderation, PII or guard category, or `terms/<name>` with a valid list name.
  public var isValid: Bool {
    if Self.moderation.contains(self) || Self.pii.contains(self) || Self.guardOnly.contains(self) {
      return true
    }
    if rawValue.hasPrefix("terms/") { return Self.isValidListName(String(rawValue.dropFirst(6))) }
    return false
  }

  /// A term list name: 1–64 characters of `a-z`, `0-9`, `_` and `-`.
  public static func isValidListName(_ name: String) -> Bool {
    guard !name.isEmpty, name.utf8.count <= 64 else { return false }
    return name.utf8.allSatisfy { c in
      (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x5F || c == 0x2D
    }
  }
}

/// The MLCommons AI Safety hazard taxonomy as Llama Guard 3 uses it (codes S1–S14), and the
/// moderation categories each code maps to. Docs/SAFETY.md explains each choice.
public enum HazardCode {
  /// One hazard: its code, Llama Guard 3's name for it, and the categories it maps to.
  public struct Entry: Sendable, Equatable {
    public var code: String
    public var name: String
    public var categories: [SafetyCategory]
  }

  /// S1–S14 in order; `name` is the text Llama Guard 3's prompt lists.
  public static let all: [Entry] = [
    Entry(code: "S1", name: "Violent Crimes", categories: [.violence, .illicitViolent]),
    Entry(code: "S2", name: "Non-Violent Crimes", categories: [.illicit]),
    Entry(code: "S3", name: "Sex Crimes", categories: [.sexual, .illicitViolent]),
    Entry(code: "S4", name: "Child Exploitation", categories: [.sexualMinors]),
    Entry(code: "S5", name: "Defamation", categories: [.harassment]),
    Entry(code: "S6", name: "Specialized Advice", categories: [.guardSpecializedAdvice]),
    Entry(code: "S7", name: "Privacy", categories: [.guardPrivacy]),
    Entry(code: "S8", name: "Intellectual Property", categories: [.guardIntellectualProperty]),
    Entry(code: "S9", name: "Indiscriminate Weapons", categories: [.illicitViolent]),
    Entry(code: "S10", name: "Hate", categories: [.hate]),
    Entry(code: "S11", name: "Self-Harm", categories: [.selfHarm]),
    Entry(code: "S12", name: "Sexual Content", categories: [.sexual]),
    Entry(code: "S13", name: "Elections", categories: [.guardElections]),
    Entry(code: "S14", name: "Code Interpreter Abuse", categories: [.guardCodeInterpreterAbuse]),
  ]

  /// The categories of one code (`"S10"`), or nil for a code outside S1–S14.
  public static func categories(of code: String) -> [SafetyCategory]? {
    all.first { $0.code == code }?.categories
  }

  /// Every category some code maps to, plus ``SafetyCategory/guardUnspecified``.
  public static var coveredCategories: [SafetyCategory] {
    var seen = Set<SafetyCategory>()
    var out: [SafetyCategory] = []
    for entry in all { for c in entry.categories where seen.insert(c).inserted { out.append(c) } }
    out.append(.guardUnspecified)
    return out
  }
}
