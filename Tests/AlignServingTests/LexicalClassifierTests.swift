import AlignServing
import Foundation
import Testing

/// The lexical classifier against alt-profanity-check's own predictions
/// (Tests/Fixtures/safety/lexical_cases.json, made by make_lexical_fixtures.py).
@Suite("LexicalClassifier")
struct LexicalClassifierTests {
  static let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // AlignServingTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()

  static let fixturePath = root.appendingPathComponent("Tests/Fixtures/safety/lexical_cases.json").path

  /// The converted model (scripts/fetch-safety-model.sh); ALIGND_MODELS_DIR as in the script.
  static let modelPath: String = {
    let directory =
      ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"]
      ?? root.appendingPathComponent("models").path
    return URL(fileURLWithPath: directory)
      .appendingPathComponent(LexicalClassifier.defaultFileName).path
  }()

  static let modelPresent = FileManager.default.fileExists(atPath: modelPath)

  struct Case: Decodable {
    let text: String
    let prob: Double
    let label: Int
  }

  struct Fixture: Decodable {
    let alt_profanity_check: String
    let cases: [Case]
  }

  static func loadFixture() throws -> Fixture {
    try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: fixturePath)))
  }

  @Test("the committed test set is large and mixed")
  func fixtureShape() throws {
    let fixture = try Self.loadFixture()
    #expect(fixture.cases.count >= 300)
    #expect(fixture.cases.contains { $0.label == 1 })
    #expect(fixture.cases.contains { $0.label == 0 })
    #expect(fixture.cases.contains { $0.text.isEmpty })
    #expect(fixture.cases.contains { $0.text.unicodeScalars.contains { $0.value > 0xFFFF } })
  }

  @Test(
    "probabilities and labels equal profanity_check.predict_prob / predict on every case",
    .enabled(
      if: modelPresent,
      "converted model absent: run scripts/fetch-safety-model.sh (writes models/\(LexicalClassifier.defaultFileName))"
    )
  )
  func agreesWithPythonPackage() throws {
    let classifier = try LexicalClassifier(contentsOf: Self.modelPath)
    let fixture = try Self.loadFixture()
    #expect(classifier.version == "alt-profanity-check-\(fixture.alt_profanity_check)")

    let batch = classifier.probabilities(fixture.cases.map(\.text))
    #expect(batch.count == fixture.cases.count)
    var maxError = 0.0
    for (item, p) in zip(fixture.cases, batch) {
      // Only the order of float additions may differ from numpy/scipy: errors ~1e-16.
      #expect(abs(p - item.prob) <= 1e-9, "text \(item.text.debugDescription): \(p) vs \(item.prob)")
      #expect((p > 0.5) == (item.label == 1), "label of \(item.text.debugDescription)")
      maxError = max(maxError, abs(p - item.prob))
    }
    // Scratch reuse across a batch must not leak state between texts.
    for item in fixture.cases.prefix(40) {
      #expect(classifier.probability(item.text) == classifier.probabilities([item.text])[0])
    }
    #expect(classifier.probabilities(fixture.cases.map(\.text).reversed()) == batch.reversed())
    print("lexical classifier: \(fixture.cases.count) cases, max |error| \(maxError)")
  }

  // MARK: - Malformed files: typed errors, no crash

  /// A tiny structurally valid document, changed by each test below.
  static func tinyDocument() -> [String: Any] {
    [
      "format": "alignd.lexical-classifier",
      "format_version": 1,
      "version": "tiny",
      "vectorizer": [
        "analyzer": "word", "lowercase": true, "strip_accents": NSNull(),
        "token_pattern": #"(?u)\b\w\w+\b"#, "ngram_range": [1, 1], "stop_words": ["the"],
        "binary": false, "sublinear_tf": false, "use_idf": true, "smooth_idf": true, "norm": "l2",
      ] as [String: Any],
      "text": [
        "word_ranges": [[48, 57], [65, 90], [95, 95], [97, 122]],
        "lower_map": [[65, [97]]],
        "sigma_cased": [[65, 90], [97, 122]],
        "sigma_case_ignorable": [[39, 39]],
      ] as [String: Any],
      "terms": ["alpha", "beta"],
      "idf": [1.5, 2.0],
      "classes": [0, 1],
      "model": [
        "kind": "calibrated_linear_svc", "method": "sigmoid",
        "folds": [["coef": [0.5, -0.5], "intercept": 0.1, "sigmoid_a": -2.0, "sigmoid_b": 0.3]],
      ] as [String: Any],
    ]
  }

  static func load(_ document: Any) throws(LexicalClassifierError) -> LexicalClassifier {
    let path = FileManager.default.temporaryDirectory
      .appendingPathComponent("lexical-\(UUID().uuidString).json").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let data = (try? JSONSerialization.data(withJSONObject: document)) ?? Data()
    try? data.write(to: URL(fileURLWithPath: path))
    return try LexicalClassifier(contentsOf: path)
  }

  static func edited(_ edit: (inout [String: Any]) -> Void) -> [String: Any] {
    var document = tinyDocument()
    edit(&document)
    return document
  }

  static func editedVectorizer(_ key: String, _ value: Any) -> [String: Any] {
    edited { document in
      var vectorizer = document["vectorizer"] as? [String: Any] ?? [:]
      vectorizer[key] = value
      document["vectorizer"] = vectorizer
    }
  }

  @Test("the tiny document loads")
  func tinyDocumentLoads() throws {
    let classifier = try Self.load(Self.tinyDocument())
    #expect(classifier.version == "tiny")
    #expect(classifier.featureCount == 2)
    let p = classifier.probability("Alpha beta THE")
    #expect(p > 0 && p < 1)
  }

  @Test("a missing file is unreadable")
  func missingFile() {
    #expect(throws: LexicalClassifierError.self) {
      try LexicalClassifier(contentsOf: "/nonexistent/lexical.json")
    }
    do {
      _ = try LexicalClassifier(contentsOf: "/nonexistent/lexical.json")
    } catch {
      guard case .unreadable = error else {
        Issue.record("expected .unreadable, got \(error)")
        return
      }
    }
  }

  static func emptyText(wordRanges: [[Int]]) -> [String: Any] {
    ["word_ranges": wordRanges, "lower_map": [Any](), "sigma_cased": [Any](), "sigma_case_ignorable": [Any]()]
  }

  static func model(folds: [Any]) -> [String: Any] {
    ["kind": "calibrated_linear_svc", "method": "sigmoid", "folds": folds]
  }

  static func malformedDocument(_ name: String) -> Any {
    switch name {
    case "not an object": [1, 2, 3]
    case "wrong format": edited { $0["format"] = "something-else" }
    case "missing terms": edited { $0["terms"] = nil }
    case "idf count": edited { $0["idf"] = [1.0] }
    case "coef count":
      edited {
        $0["model"] = model(folds: [["coef": [1.0], "intercept": 0.0, "sigmoid_a": -1.0, "sigmoid_b": 0.0]])
      }
    case "no folds": edited { $0["model"] = model(folds: []) }
    case "duplicate terms": edited { $0["terms"] = ["alpha", "alpha"] }
    case "empty vocabulary": edited { $0["terms"] = [String](); $0["idf"] = [Double]() }
    case "unsorted ranges": edited { $0["text"] = emptyText(wordRanges: [[97, 122], [48, 57]]) }
    case "range beyond Unicode": edited { $0["text"] = emptyText(wordRanges: [[97, 0x110000]]) }
    case "negative scalar": edited { $0["text"] = emptyText(wordRanges: [[-5, 3]]) }
    case "string for number": edited { $0["idf"] = ["1.5", "2.0"] }
    default: [String: Any]()
    }
  }

  @Test(
    "malformed documents throw .malformed",
    arguments: [
      "not an object", "wrong format", "missing terms", "idf count", "coef count", "no folds",
      "duplicate terms", "empty vocabulary", "unsorted ranges", "range beyond Unicode",
      "negative scalar", "string for number",
    ]
  )
  func malformed(_ name: String) {
    do {
      _ = try Self.load(Self.malformedDocument(name))
      Issue.record("\(name): loaded")
    } catch {
      guard case .malformed = error else {
        Issue.record("\(name): expected .malformed, got \(error)")
        return
      }
    }
  }

  static func unsupportedDocument(_ name: String) -> [String: Any] {
    switch name {
    case "token pattern": editedVectorizer("token_pattern", #"(?u)\b\w+\b"#)
    case "char analyzer": editedVectorizer("analyzer", "char")
    case "strip accents": editedVectorizer("strip_accents", "unicode")
    case "norm": editedVectorizer("norm", "max")
    case "ngram_range": editedVectorizer("ngram_range", [2, 1])
    case "format version": edited { $0["format_version"] = 2 }
    case "classes": edited { $0["classes"] = [0, 1, 2] }
    default: [:]
    }
  }

  @Test(
    "unsupported settings throw .unsupported",
    arguments: ["token pattern", "char analyzer", "strip accents", "norm", "ngram_range", "format version", "classes"]
  )
  func unsupported(_ name: String) {
    do {
      _ = try Self.load(Self.unsupportedDocument(name))
      Issue.record("\(name): loaded")
    } catch {
      guard case .unsupported = error else {
        Issue.record("\(name): expected .unsupported, got \(error)")
        return
      }
    }
  }

  @Test(
    "a truncated model file throws .malformed",
    .enabled(if: modelPresent, "converted model absent: run scripts/fetch-safety-model.sh")
  )
  func truncatedModel() throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: Self.modelPath))
    let path = FileManager.default.temporaryDirectory
      .appendingPathComponent("lexical-truncated-\(UUID().uuidString).json").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
    #expect {
      try LexicalClassifier(contentsOf: path)
    } throws: { error in
      guard let error = error as? LexicalClassifierError, case .malformed = error else { return false }
      return true
    }
  }
}
