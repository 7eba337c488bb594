import Foundation

/// Why a lexical classifier file could not be loaded.
public enum LexicalClassifierError: Error, Equatable, CustomStringConvertible {
  /// The file could not be read.
  case unreadable(path: String, reason: String)
  /// The file is not a well-formed `alignd.lexical-classifier` document.
  case malformed(String)
  /// The file is well formed but asks for a setting this implementation does not reproduce.
  case unsupported(String)

  /// A one-line explanation for logs and error messages.
  public var description: String {
    switch self {
    case .unreadable(let path, let reason): "cannot read lexical classifier \(path): \(reason)"
    case .malformed(let detail): "malformed lexical classifier file: \(detail)"
    case .unsupported(let detail): "unsupported lexical classifier setting: \(detail)"
    }
  }
}

/// A trained offensive-language classifier: scikit-learn's `TfidfVectorizer` followed by a
/// sigmoid-calibrated linear SVM ensemble (`CalibratedClassifierCV` over `LinearSVC` folds), as
/// shipped in the PyPI package `alt-profanity-check` and converted by
/// `scripts/convert-profanity-model.py` into one JSON file.
///
/// `probability(_:)` reproduces the package's `predict_prob` (P(offensive)) exactly, up to the
/// rounding of float additions: Python's `str.lower()` (including the Final_Sigma rule), the
/// token pattern `(?u)\b\w\w+\b` with Python's `\w` (both from tables the converter took from
/// the Python that ran it, so they do not depend on this Swift's Unicode version), English stop
/// words, word n-grams, raw or sublinear term counts, idf weighting, l1/l2 row normalisation,
/// each fold's decision function and sigmoid calibration, and the mean over folds.
public struct LexicalClassifier: Sendable {
  /// The classifier's version, stamped on answers (e.g. `alt-profanity-check-1.9.1`).
  public let version: String
  /// The number of vocabulary terms (feature columns).
  public let featureCount: Int

  /// The file name `scripts/fetch-safety-model.sh` writes into the models folder.
  public static let defaultFileName = "alt-profanity-check-1.9.1.lexical.json"

  private let text: TextRules
  private let vocabulary: ScalarTable
  private let stopWords: ScalarTable?
  private let ngramRange: ClosedRange<Int>
  private let binary: Bool
  private let sublinearTF: Bool
  private let norm: Norm
  private let idf: [Double]?  // (featureCount)
  private let foldCount: Int
  private let coefficients: [Double]  // (featureCount, foldCount)
  private let intercepts: [Double]  // (foldCount)
  private let sigmoidA: [Double]  // (foldCount)
  private let sigmoidB: [Double]  // (foldCount)

  /// Loads a classifier written by `scripts/convert-profanity-model.py`.
  /// - Parameter path: the converted JSON file.
  /// - Throws: `LexicalClassifierError` when the file cannot be read, is malformed, or asks for
  ///   a vectorizer setting that is not implemented.
  public init(contentsOf path: String) throws(LexicalClassifierError) {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw .unreadable(path: path, reason: "\(error)")
    }
    let file: LexicalFile
    do {
      file = try JSONDecoder().decode(LexicalFile.self, from: data)
    } catch {
      throw .malformed("\(error)")
    }
    try self.init(file: file)
  }

  private init(file: LexicalFile) throws(LexicalClassifierError) {
    guard file.format == "alignd.lexical-classifier" else {
      throw .malformed("format is \(file.format), expected alignd.lexical-classifier")
    }
    guard file.formatVersion == 1 else {
      throw .unsupported("format_version \(file.formatVersion)")
    }
    let v = file.vectorizer
    guard v.analyzer == "word" else { throw .unsupported("analyzer \(v.analyzer)") }
    guard v.tokenPattern == #"(?u)\b\w\w+\b"# else {
      throw .unsupported("token_pattern \(v.tokenPattern)")
    }
    guard v.stripAccents == nil else { throw .unsupported("strip_accents \(v.stripAccents ?? "")") }
    guard v.ngramRange.count == 2, v.ngramRange[0] >= 1, v.ngramRange[0] <= v.ngramRange[1],
      v.ngramRange[1] <= 16
    else { throw .unsupported("ngram_range \(v.ngramRange)") }
    switch v.norm {
    case nil: norm = .none
    case "l2": norm = .l2
    case "l1": norm = .l1
    case let other?: throw .unsupported("norm \(other)")
    }
    guard file.classes == [0, 1] else { throw .unsupported("classes \(file.classes)") }
    guard file.model.kind == "calibrated_linear_svc", file.model.method == "sigmoid" else {
      throw .unsupported("model \(file.model.kind) with method \(file.model.method)")
    }

    let n = file.terms.count
    guard n > 0 else { throw .malformed("empty vocabulary") }
    if v.useIDF {
      guard let idf = file.idf, idf.count == n else {
        throw .malformed("idf has \(file.idf?.count ?? 0) values for \(n) terms")
      }
      self.idf = idf
    } else {
      self.idf = nil
    }
    let folds = file.model.folds
    guard !folds.isEmpty else { throw .malformed("no folds") }
    var coefficients = [Double](repeating: 0, count: n * folds.count)  // (featureCount, foldCount)
    for (f, fold) in folds.enumerated() {
      guard fold.coef.count == n else {
        throw .malformed("fold \(f) has \(fold.coef.count) coefficients for \(n) terms")
      }
      for j in 0..<n { coefficients[j * folds.count + f] = fold.coef[j] }
    }

    guard let vocabulary = ScalarTable(file.terms) else {
      throw .malformed("duplicate vocabulary term")
    }
    if let stop = v.stopWords {
      guard let table = ScalarTable(stop) else { throw .malformed("duplicate stop word") }
      stopWords = table
    } else {
      stopWords = nil
    }
    text = try TextRules(file.text, lowercase: v.lowercase)

    version = file.version
    featureCount = n
    self.vocabulary = vocabulary
    ngramRange = v.ngramRange[0]...v.ngramRange[1]
    binary = v.binary
    sublinearTF = v.sublinearTF
    foldCount = folds.count
    self.coefficients = coefficients
    intercepts = folds.map(\.intercept)
    sigmoidA = folds.map(\.sigmoidA)
    sigmoidB = folds.map(\.sigmoidB)
  }

  /// P(offensive) for one text, equal to `profanity_check.predict_prob([text])[0]`.
  public func probability(_ text: String) -> Double {
    var scratch = Scratch(featureCount: featureCount)
    return probability(text, scratch: &scratch)
  }

  /// P(offensive) for each text, in order.
  public func probabilities(_ texts: [String]) -> [Double] {
    var scratch = Scratch(featureCount: featureCount)
    return texts.map { probability($0, scratch: &scratch) }
  }

  // MARK: - Inference

  private func probability(_ input: String, scratch: inout Scratch) -> Double {
    text.lowercase(input, source: &scratch.source, into: &scratch.lowered)
    text.tokenize(scratch.lowered, into: &scratch.tokens)
    if let stopWords {
      scratch.lowered.withUnsafeBufferPointer { buffer in
        scratch.tokens.removeAll { token in
          stopWords.index(of: UnsafeBufferPointer(rebasing: buffer[token])) != nil
        }
      }
    }
    countFeatures(&scratch)

    // The sparse tf-idf row, columns ascending as scipy stores them after sort_indices().
    scratch.columns.sort()
    scratch.values.removeAll(keepingCapacity: true)
    for column in scratch.columns {
      var tf = Double(scratch.counts[column])
      scratch.counts[column] = 0
      if binary { tf = 1 }
      if sublinearTF { tf = log(tf) + 1 }
      if let idf { tf *= idf[column] }
      scratch.values.append(tf)
    }
    normalize(&scratch.values)

    // Each fold: decision = x . coef + intercept; P(1) = expit(-(a * decision + b)).
    var sum = 0.0
    for f in 0..<foldCount {
      var decision = 0.0
      for (column, value) in zip(scratch.columns, scratch.values) {
        decision += value * coefficients[column * foldCount + f]
      }
      decision += intercepts[f]
      var p = expit(-(sigmoidA[f] * decision + sigmoidB[f]))
      if p > 1, p <= 1 + 1e-5 { p = 1 }
      sum += p
    }
    return sum / Double(foldCount)
  }

  /// Counts vocabulary hits of every n-gram into `scratch.counts`, listing touched columns.
  private func countFeatures(_ scratch: inout Scratch) {
    scratch.columns.removeAll(keepingCapacity: true)
    let tokens = scratch.tokens
    for n in ngramRange where n <= tokens.count {
      for i in 0...(tokens.count - n) {
        let column: Int?
        if n == 1 {
          column = scratch.lowered.withUnsafeBufferPointer {
            vocabulary.index(of: UnsafeBufferPointer(rebasing: $0[tokens[i]]))
          }
        } else {
          // scikit-learn joins the n tokens with one space.
          scratch.joined.removeAll(keepingCapacity: true)
          for k in i..<(i + n) {
            if k > i { scratch.joined.append(0x20) }
            scratch.joined.append(contentsOf: scratch.lowered[tokens[k]])
          }
          column = scratch.joined.withUnsafeBufferPointer { vocabulary.index(of: $0) }
        }
        guard let column else { continue }
        if scratch.counts[column] == 0 { scratch.columns.append(column) }
        scratch.counts[column] += 1
      }
    }
  }

  /// sklearn's in-place CSR row normalisation: divide by the norm unless it is zero.
  private func normalize(_ values: inout [Double]) {
    var sum = 0.0
    switch norm {
    case .none: return
    case .l1: for value in values { sum += abs(value) }
    case .l2:
      for value in values { sum += value * value }
      if sum != 0 { sum = sum.squareRoot() }
    }
    guard sum != 0 else { return }
    for i in values.indices { values[i] /= sum }
  }

  private func expit(_ x: Double) -> Double { 1 / (1 + exp(-x)) }
}

// MARK: - Scratch buffers

/// Per-call working memory, reused across the texts of one `probabilities` call.
private struct Scratch {
  var source: [UInt32] = []  // (scalars) the text as given
  var lowered: [UInt32] = []  // (scalars) after str.lower()
  var tokens: [Range<Int>] = []  // (tokens) ranges into `lowered`
  var joined: [UInt32] = []  // (scalars) one n-gram, tokens joined by U+0020
  var counts: [Int32]  // (featureCount) zero outside `columns`
  var columns: [Int] = []  // (nnz) touched columns
  var values: [Double] = []  // (nnz) tf-idf values of `columns`

  init(featureCount: Int) {
    counts = [Int32](repeating: 0, count: featureCount)
  }
}

private enum Norm: Sendable { case none, l1, l2 }

// MARK: - Python str semantics

/// Python's `str.lower()` and the `re` class `\w`, from tables recorded by the converter.
private struct TextRules: Sendable {
  let lowercase: Bool
  let asciiWord: [Bool]  // (128)
  let word: RangeSet32
  let lower: LowercaseTable

  init(_ tables: LexicalFile.Text, lowercase: Bool) throws(LexicalClassifierError) {
    self.lowercase = lowercase
    do {
      word = try RangeSet32(tables.wordRanges, name: "word_ranges")
      lower = try LowercaseTable(python: tables.lower)
    } catch {
      throw .malformed(error.message)
    }
    var asciiWord = [Bool](repeating: false, count: 128)
    for c in 0..<128 { asciiWord[c] = word.contains(UInt32(c)) }
    self.asciiWord = asciiWord
  }

  @inline(__always) func isWord(_ v: UInt32) -> Bool {
    v < 128 ? asciiWord[Int(v)] : word.contains(v)
  }

  /// `str.lower()` of `text` into `lowered`; `source` receives the original scalars.
  func lowercase(_ text: String, source: inout [UInt32], into lowered: inout [UInt32]) {
    source.removeAll(keepingCapacity: true)
    for scalar in text.unicodeScalars { source.append(scalar.value) }
    if lowercase {
      lower.lowercase(source, into: &lowered)
    } else {
      lowered.removeAll(keepingCapacity: true)
      lowered.append(contentsOf: source)
    }
  }

  /// Matches of `(?u)\b\w\w+\b`: the maximal runs of `\w` at least two scalars long.
  func tokenize(_ s: [UInt32], into tokens: inout [Range<Int>]) {
    tokens.removeAll(keepingCapacity: true)
    var start = -1
    for i in s.indices {
      if isWord(s[i]) {
        if start < 0 { start = i }
      } else if start >= 0 {
        if i - start >= 2 { tokens.append(start..<i) }
        start = -1
      }
    }
    if start >= 0, s.count - start >= 2 { tokens.append(start..<s.count) }
  }
}

// MARK: - File layout

/// The JSON document written by scripts/convert-profanity-model.py (format version 1).
private struct LexicalFile: Decodable {
  struct Vectorizer: Decodable {
    let analyzer: String
    let lowercase: Bool
    let stripAccents: String?
    let tokenPattern: String
    let ngramRange: [Int]
    let stopWords: [String]?
    let binary: Bool
    let sublinearTF: Bool
    let useIDF: Bool
    let norm: String?

    enum CodingKeys: String, CodingKey {
      case analyzer, lowercase, binary, norm
      case stripAccents = "strip_accents"
      case tokenPattern = "token_pattern"
      case ngramRange = "ngram_range"
      case stopWords = "stop_words"
      case sublinearTF = "sublinear_tf"
      case useIDF = "use_idf"
    }
  }

  struct Text: Decodable {
    let wordRanges: [[UInt32]]
    /// `lower_map`, `sigma_cased` and `sigma_case_ignorable`, beside `word_ranges`.
    let lower: PythonLowerTables

    enum CodingKeys: String, CodingKey {
      case wordRanges = "word_ranges"
    }

    init(from decoder: any Decoder) throws {
      wordRanges = try decoder.container(keyedBy: CodingKeys.self).decode([[UInt32]].self, forKey: .wordRanges)
      lower = try PythonLowerTables(from: decoder)
    }
  }

  struct Fold: Decodable {
    let coef: [Double]
    let intercept: Double
    let sigmoidA: Double
    let sigmoidB: Double

    enum CodingKeys: String, CodingKey {
      case coef, intercept
      case sigmoidA = "sigmoid_a"
      case sigmoidB = "sigmoid_b"
    }
  }

  struct Model: Decodable {
    let kind: String
    let method: String
    let folds: [Fold]
  }

  let format: String
  let formatVersion: Int
  let version: String
  let vectorizer: Vectorizer
  let text: Text
  let terms: [String]
  let idf: [Double]?
  let classes: [Int]
  let model: Model

  enum CodingKeys: String, CodingKey {
    case format, version, vectorizer, text, terms, idf, classes, model
    case formatVersion = "format_version"
  }
}
