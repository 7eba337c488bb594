import Foundation

/// The hate-speech classifier of the PyPI package `hatesonar` 0.1.0 (MIT): TF-IDF over words and
/// a multinomial logistic regression trained on Davidson et al.'s tweets, shipped as an ONNX
/// graph and converted by `scripts/convert-safety-ports.py` into one JSON file.
///
/// `probabilities(_:)` reproduces what `hatesonar.Sonar().ping(text)` gets from onnxruntime,
/// within float rounding (the graph computes in float32, this in double):
///
/// - `StringNormalizer(LOWER)`: onnxruntime's `towlower` in the en_US.UTF-8 locale, one code
///   point to one (from the table the converter took from onnxruntime itself).
/// - `Tokenizer`: the runs of ASCII `[a-zA-Z0-9_]` (so `fück` gives `f` and `ck`, and a
///   single letter is a token, though no vocabulary term is that short).
/// - `TfIdfVectorizer` (counts) × idf, then L2-normalised (a row without a known word stays
///   zero), then softmax(coef · x + intercept) over the classes.
public struct HateSonarClassifier: Sendable {
  /// The file `scripts/fetch-safety-ports.sh` writes into the models folder.
  public static let defaultFileName = "hatesonar-0.1.0.json"

  /// The model's version, stamped on answers (`hatesonar-0.1.0`).
  public let version: String
  /// The classes, in the order of every probability row: hate_speech, offensive_language,
  /// neither.
  public let classes: [String]
  /// The number of vocabulary terms.
  public let termCount: Int

  private let lower: LowercaseTable
  private let terms: ScalarTable
  private let idf: [Double]  // (terms)
  private let coefficients: [Double]  // (terms, classes)
  private let intercepts: [Double]  // (classes)

  /// Loads a file written by `scripts/convert-safety-ports.py hatesonar`.
  /// - Throws: ``SafetyModelFileError`` when the file cannot be read, is malformed, or asks for
  ///   a setting that is not implemented.
  public init(contentsOf path: String) throws(SafetyModelFileError) {
    let file: HateSonarFile = try decodeJSON(HateSonarFile.self, at: path)
    func malformed(_ detail: String) -> SafetyModelFileError { .malformed(path: path, detail: detail) }
    func unsupported(_ detail: String) -> SafetyModelFileError { .unsupported(path: path, detail: detail) }
    guard file.format == "alignd.hatesonar" else { throw malformed("format is \(file.format), expected alignd.hatesonar") }
    guard file.formatVersion == 1 else { throw unsupported("format_version \(file.formatVersion)") }
    guard file.tokenPattern == "[a-zA-Z0-9_]+" else { throw unsupported("token_pattern \(file.tokenPattern)") }
    guard file.minChars == 1 else { throw unsupported("min_chars \(file.minChars)") }
    guard file.norm == "L2" else { throw unsupported("norm \(file.norm)") }
    guard file.postTransform == "SOFTMAX" else { throw unsupported("post_transform \(file.postTransform)") }
    let n = file.terms.count
    let k = file.classes.count
    guard n > 0, k >= 2 else { throw malformed("\(n) terms and \(k) classes") }
    guard file.idf.count == n else { throw malformed("idf has \(file.idf.count) values for \(n) terms") }
    guard file.intercepts.count == k, file.coefficients.count == k, file.coefficients.allSatisfy({ $0.count == n })
    else { throw malformed("coefficients or intercepts are not \(k) classes × \(n) terms") }
    guard let terms = ScalarTable(file.terms) else { throw malformed("duplicate vocabulary term") }
    do {
      lower = try LowercaseTable(file.lowerMap.map { LowerMapEntry(key: $0.key, value: [$0.value]) }, sigma: nil)
    } catch {
      throw malformed(error.message)
    }
    var coefficients = [Double](repeating: 0, count: n * k)
    for c in 0..<k {
      for j in 0..<n { coefficients[j * k + c] = file.coefficients[c][j] }
    }
    version = file.version
    classes = file.classes
    termCount = n
    self.terms = terms
    idf = file.idf
    self.coefficients = coefficients
    intercepts = file.intercepts
  }

  /// P(class) per text, each row in ``classes`` order and summing to 1.
  public func probabilities(_ texts: [String]) -> [[Double]] {
    var scratch = Scratch()
    return texts.map { probabilities($0, scratch: &scratch) }
  }

  private func probabilities(_ text: String, scratch: inout Scratch) -> [Double] {
    scratch.source.removeAll(keepingCapacity: true)
    for scalar in text.unicodeScalars { scratch.source.append(scalar.value) }
    lower.lowercase(scratch.source, into: &scratch.lowered)

    // The vocabulary columns of the runs of [a-zA-Z0-9_], then counts by sorting them.
    scratch.hits.removeAll(keepingCapacity: true)
    let s = scratch.lowered
    var start = -1
    for i in 0...s.count {
      if i < s.count, Self.isTokenCharacter(s[i]) {
        if start < 0 { start = i }
      } else if start >= 0 {
        if let j = terms.index(of: s, start..<i) { scratch.hits.append(j) }
        start = -1
      }
    }
    scratch.hits.sort()

    // tf * idf of each distinct column, L2-normalised unless zero, then the linear scores.
    scratch.columns.removeAll(keepingCapacity: true)
    scratch.values.removeAll(keepingCapacity: true)
    var squares = 0.0
    var run = 0
    while run < scratch.hits.count {
      let j = scratch.hits[run]
      var end = run + 1
      while end < scratch.hits.count, scratch.hits[end] == j { end += 1 }
      let value = Double(end - run) * idf[j]
      scratch.columns.append(j)
      scratch.values.append(value)
      squares += value * value
      run = end
    }
    let norm = squares > 0 ? squares.squareRoot() : 1
    let k = classes.count
    var scores = intercepts
    for (j, value) in zip(scratch.columns, scratch.values) {
      let x = value / norm
      for c in 0..<k { scores[c] += x * coefficients[j * k + c] }
    }
    // Softmax.
    let top = scores.max() ?? 0
    var sum = 0.0
    for c in 0..<k {
      scores[c] = exp(scores[c] - top)
      sum += scores[c]
    }
    return scores.map { $0 / sum }
  }

  @inline(__always) private static func isTokenCharacter(_ v: UInt32) -> Bool {
    (v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A) || (v >= 0x30 && v <= 0x39) || v == 0x5F
  }
}

/// Per-call working memory, reused across the texts of one `probabilities` call.
private struct Scratch {
  var source: [UInt32] = []  // (scalars) the text as given
  var lowered: [UInt32] = []  // (scalars) after towlower
  var hits: [Int] = []  // (known tokens) their columns, sorted
  var columns: [Int] = []  // (distinct known terms) ascending
  var values: [Double] = []  // (distinct known terms) tf * idf of `columns`
}

// MARK: - File layout

/// The JSON document written by scripts/convert-safety-ports.py (format version 1).
private struct HateSonarFile: Decodable {
  struct LowerPair: Decodable {
    let key: UInt32
    let value: UInt32

    init(from decoder: any Decoder) throws {
      var container = try decoder.unkeyedContainer()
      key = try container.decode(UInt32.self)
      value = try container.decode(UInt32.self)
    }
  }

  let format: String
  let formatVersion: Int
  let version: String
  let lowerMap: [LowerPair]
  let tokenPattern: String
  let minChars: Int
  let terms: [String]
  let idf: [Double]
  let norm: String
  let classes: [String]
  let coefficients: [[Double]]
  let intercepts: [Double]
  let postTransform: String

  enum CodingKeys: String, CodingKey {
    case format, version, terms, idf, norm, classes, coefficients, intercepts
    case formatVersion = "format_version"
    case lowerMap = "lower_map"
    case tokenPattern = "token_pattern"
    case minChars = "min_chars"
    case postTransform = "post_transform"
  }
}
