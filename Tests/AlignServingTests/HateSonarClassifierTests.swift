import AlignServing
import Foundation
import Testing

/// hatesonar's TF-IDF model against onnxruntime's outputs of the package's graph, and on tiny
/// hand-made documents.
@Suite("HateSonarClassifier")
struct HateSonarClassifierTests {
  static func classifier() throws -> HateSonarClassifier {
    try HateSonarClassifier(contentsOf: PortFixture.model(HateSonarClassifier.defaultFileName))
  }

  @Test(
    "probabilities equal Sonar().ping within 1e-5, and the top class its top_class",
    .enabled(if: PortFixture.hateSonarPresent, PortFixture.absent)
  )
  func agreesWithPackage() throws {
    let classifier = try Self.classifier()
    let fixture = try PortFixture.load()
    #expect(classifier.version == "hatesonar-\(fixture.hatesonar)")
    #expect(classifier.classes == fixture.classes)
    let rows = classifier.probabilities(fixture.cases.map(\.text))
    var maxError = 0.0
    for (c, row) in zip(fixture.cases, rows) {
      for k in 0..<3 {
        let error = abs(row[k] - c.hatesonar.probabilities[k])
        #expect(error <= 1e-5, "\(c.text.debugDescription) \(fixture.classes[k]): \(row[k]) vs \(c.hatesonar.probabilities[k])")
        maxError = max(maxError, error)
      }
      #expect(abs(row.reduce(0, +) - 1) <= 1e-12)
      let top = row.indices.max { row[$0] < row[$1] } ?? 0
      #expect(fixture.classes[top] == c.hatesonar.top_class, "\(c.text.debugDescription)")
    }
    print("hatesonar: max |Swift - onnxruntime| over \(rows.count) texts x 3 classes = \(maxError)")
  }

  @Test("the backend reports hate_speech as hate and offensive_language as harassment",
        .enabled(if: PortFixture.hateSonarPresent, PortFixture.absent))
  func backendMapping() async throws {
    let classifier = try Self.classifier()
    let backend = HateSonarBackend(classifier: classifier)
    #expect(backend.name == "hatesonar" && backend.version == "hatesonar-0.1.0")
    let texts = ["that bitch stole my phone", "Have a nice day", ""]
    let policy = try SafetyPolicy(data: Data(SafetyPortPolicy.json.utf8), source: "inline")
    let scores = try await backend.scores(texts.map { SafetyInput(text: $0) }, profile: policy.profile(named: nil))
    for (row, s) in zip(classifier.probabilities(texts), scores) {
      #expect(s == [.hate: row[0], .harassment: row[1]])
    }
    #expect(scores[0][.harassment]! > 0.9)
  }

  @Test("throughput (ALIGND_BENCH_SAFETY=1)", .enabled(if: PortFixture.hateSonarPresent && PortFixture.benchmark))
  func throughput() throws {
    let classifier = try Self.classifier()
    let texts = Array(try PortFixture.load().cases.map(\.text).prefix(128))
    var count = 0
    let one = PortFixture.throughput(texts + texts, perCall: 1) { count += classifier.probabilities($0).count }
    let many = PortFixture.throughput(Array(repeating: texts, count: 8).flatMap { $0 }, perCall: 64) {
      count += classifier.probabilities($0).count
    }
    print("hatesonar: \(Int(one)) texts/s one per call, \(Int(many)) texts/s 64 per call")
    #expect(count == texts.count * 10 + 1 + 64)
  }

  // MARK: - Tiny documents

  /// Two terms, three classes; `A`, `B` and the Kelvin sign lower-case like towlower.
  static func tinyDocument() -> [String: Any] {
    [
      "format": "alignd.hatesonar", "format_version": 1, "version": "tiny",
      "lower_map": [[65, 97], [66, 98], [75, 107], [0x212A, 107]],
      "token_pattern": "[a-zA-Z0-9_]+", "min_chars": 1,
      "terms": ["aa", "bb", "ck", "kk"], "idf": [1.0, 2.0, 1.0, 3.0], "norm": "L2",
      "classes": ["hate_speech", "offensive_language", "neither"],
      "coefficients": [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]],
      "intercepts": [0.1, 0.2, 0.3], "post_transform": "SOFTMAX",
    ]
  }

  static func load(_ document: Any) throws(SafetyModelFileError) -> HateSonarClassifier {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("hatesonar-\(UUID().uuidString).json").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let data = (try? JSONSerialization.data(withJSONObject: document)) ?? Data()
    try? data.write(to: URL(fileURLWithPath: path))
    return try HateSonarClassifier(contentsOf: path)
  }

  static func softmax(_ scores: [Double]) -> [Double] {
    let e = scores.map { exp($0 - scores.max()!) }
    return e.map { $0 / e.reduce(0, +) }
  }

  @Test("tiny document: counts x idf, L2, softmax; ASCII tokens after towlower")
  func tinyDocumentScores() throws {
    let classifier = try Self.load(Self.tinyDocument())
    #expect(classifier.termCount == 4)
    let rows = classifier.probabilities(["AA bb,BB", "", "!!!", "fück \u{212A}K", "aab aa_bb"])
    // "AA bb,BB": aa once, bb twice -> (1, 4) / sqrt(17).
    let x = [1 / 17.0.squareRoot(), 4 / 17.0.squareRoot()]
    let expected = Self.softmax([0.1 + x[0], 0.2 + x[1], 0.3])
    for k in 0..<3 { #expect(abs(rows[0][k] - expected[k]) <= 1e-12) }
    // No known token: the intercepts alone.
    let empty = Self.softmax([0.1, 0.2, 0.3])
    for k in 0..<3 { #expect(abs(rows[1][k] - empty[k]) <= 1e-12 && abs(rows[2][k] - empty[k]) <= 1e-12) }
    // "fück KK" lower-cases to "fück kk": tokens f, ck, kk -> ck (idf 1) and kk (idf 3).
    let y = [1 / 10.0.squareRoot(), 3 / 10.0.squareRoot()]
    let fueck = Self.softmax([0.1 + 0.5 * y[0], 0.2, 0.3 - y[1]])
    for k in 0..<3 { #expect(abs(rows[3][k] - fueck[k]) <= 1e-12) }
    // "aab" and "aa_bb" are single tokens outside the vocabulary.
    for k in 0..<3 { #expect(abs(rows[4][k] - empty[k]) <= 1e-12) }
  }

  static func edited(_ edit: (inout [String: Any]) -> Void) -> [String: Any] {
    var document = tinyDocument()
    edit(&document)
    return document
  }

  @Test(
    "malformed documents throw .malformed naming the file",
    arguments: ["not an object", "wrong format", "idf count", "coefficient rows", "coefficient count", "intercepts",
                "duplicate terms", "no terms", "unsorted lower map", "several scalars"]
  )
  func malformed(_ name: String) {
    let document: Any =
      switch name {
      case "not an object": [1, 2, 3]
      case "wrong format": Self.edited { $0["format"] = "alignd.lexical-classifier" }
      case "idf count": Self.edited { $0["idf"] = [1.0] }
      case "coefficient rows": Self.edited { $0["coefficients"] = [[1.0, 0.0, 0.0, 0.0]] }
      case "coefficient count": Self.edited { $0["coefficients"] = [[1.0], [0.0], [0.0]] }
      case "intercepts": Self.edited { $0["intercepts"] = [0.0] }
      case "duplicate terms": Self.edited { $0["terms"] = ["aa", "aa", "ck", "kk"] }
      case "no terms": Self.edited { $0["terms"] = [String](); $0["idf"] = [Double](); $0["coefficients"] = [[], [], []] as [[Double]] }
      case "unsorted lower map": Self.edited { $0["lower_map"] = [[66, 98], [65, 97]] }
      default: Self.edited { $0["lower_map"] = [[65, [97, 98]]] }
      }
    do {
      _ = try Self.load(document)
      Issue.record("\(name): loaded")
    } catch {
      guard case .malformed(let path, _) = error else {
        Issue.record("\(name): expected .malformed, got \(error)")
        return
      }
      #expect(path.contains("hatesonar-") && error.description.contains(path))
    }
  }

  @Test(
    "settings the port does not implement throw .unsupported",
    arguments: ["format_version", "token_pattern", "min_chars", "norm", "post_transform"]
  )
  func unsupported(_ key: String) {
    let value: Any =
      switch key {
      case "format_version": 2
      case "token_pattern": #"\w+"#
      case "min_chars": 2
      case "norm": "L1"
      default: "LOGISTIC"
      }
    do {
      _ = try Self.load(Self.edited { $0[key] = value })
      Issue.record("\(key): loaded")
    } catch {
      guard case .unsupported = error else {
        Issue.record("\(key): expected .unsupported, got \(error)")
        return
      }
    }
  }

  @Test("a missing file is unreadable")
  func missingFile() {
    do {
      _ = try HateSonarClassifier(contentsOf: "/nonexistent/h.json")
      Issue.record("loaded")
    } catch {
      #expect(error == .unreadable(path: "/nonexistent/h.json", reason: error.reason))
    }
  }
}

extension SafetyModelFileError {
  /// The reason of an `.unreadable` error, else "".
  var reason: String {
    if case .unreadable(_, let reason) = self { return reason }
    return ""
  }
}
