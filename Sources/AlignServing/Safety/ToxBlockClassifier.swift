import AlignEngine
import CBLAS
import Foundation

/// The Jigsaw toxic-comment BiLSTM of the PyPI package `tox-block` 0.1.2 (MIT), converted by
/// `scripts/convert-safety-ports.py` into a safetensors file and a tokenizer JSON file.
///
/// `scores(_:)` reproduces the package's `make_predictions` (rescaled scores, its default) and
/// `scores(_:rescaled: false)` the Keras model's sigmoid outputs, within float rounding:
///
/// - Keras `Tokenizer.texts_to_sequences`: Python's `str.lower()` (tables from the converter),
///   every filter character becomes the split character (a space), words are the non-empty
///   pieces between split characters, and words outside the 19,999 most frequent are dropped;
///   `pad_sequences`: the last 100 ids, zeros in front.
/// - Embedding (20000, 50) → bidirectional LSTM (50 units each way, Keras 2's
///   `hard_sigmoid` = clip(0.2x + 0.5, 0, 1) on the input, forget and output gates) over all
///   100 steps, padding included (the model has no mask) → max over time of [forward, backward]
///   → dense 50 relu → dense 6 sigmoid.
/// - Rescaled: `abs((p - lo) / (hi - lo))` per label in float32, with the package's constants.
///   This can exceed 1 ("I will kill you" has threat 1.02): ``ToxBlockBackend`` clamps.
///
/// Unlike the package, the empty string is accepted (it is all padding).
///
/// The forward pass runs texts in batches of up to ``maxBatch``: one matrix product per batch
/// gives both directions' input projections for every step, then each step adds one
/// (batch, 50) × (50, 200) product per direction (OpenBLAS) to its gate block and updates the
/// cells eight units at a time (SIMD, Eigen's rational tanh). The forward direction starts
/// after the padding every text of the batch has, from states computed once at load time.
public struct ToxBlockClassifier: Sendable {
  /// The files `scripts/fetch-safety-ports.sh` writes into the models folder.
  public static let defaultWeightsFileName = "tox-block-0.1.2.safetensors"
  public static let defaultTokenizerFileName = "tox-block-0.1.2.tokenizer.json"
  /// The labels, in the order of every score row.
  public static let labels = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
  /// Texts per forward pass; larger inputs are split.
  public static let maxBatch = 64

  /// The model's version, stamped on answers (`tox-block-0.1.2`).
  public let version: String
  /// The hyperparameters read from the files.
  public let shape: Shape

  private let tokenizer: KerasTokenizer
  private let weights: Weights
  private let rescaleLow: [Float]  // (labels)
  private let rescaleSpan: [Float]  // (labels) hi - lo, computed in double then rounded, as numpy does
  private let forwardPadding: [Float]  // (steps + 1, 3, units) forward state, cell, max after k padding steps

  /// Sizes of the network.
  public struct Shape: Sendable, Equatable {
    /// Rows of the embedding (ids 0..<vocabulary; 0 is padding).
    public let vocabulary: Int
    public let embedding: Int
    /// LSTM units per direction.
    public let units: Int
    public let dense: Int
    public let labels: Int
    /// Tokens per text after padding or truncation.
    public let steps: Int
  }

  /// Loads the converted model.
  /// - Parameters:
  ///   - weightsPath: `tox-block-0.1.2.safetensors`.
  ///   - tokenizerPath: `tox-block-0.1.2.tokenizer.json`.
  /// - Throws: ``SafetyModelFileError`` naming the file that cannot be read, is malformed, or asks
  ///   for a tokenizer setting that is not implemented.
  public init(weightsPath: String, tokenizerPath: String) throws(SafetyModelFileError) {
    let file: TokenizerFile = try decodeJSON(TokenizerFile.self, at: tokenizerPath)
    func malformed(_ detail: String) -> SafetyModelFileError { .malformed(path: tokenizerPath, detail: detail) }
    guard file.format == "alignd.toxblock-tokenizer" else {
      throw malformed("format is \(file.format), expected alignd.toxblock-tokenizer")
    }
    guard file.formatVersion == 1 else {
      throw .unsupported(path: tokenizerPath, detail: "format_version \(file.formatVersion)")
    }
    let t = file.tokenizer
    let s = file.sequence
    for (ok, setting) in [
      (!t.charLevel, "char_level"), (t.oovToken == nil, "oov_token"), (s.padding == "pre", "padding \(s.padding)"),
      (s.truncating == "pre", "truncating \(s.truncating)"), (s.value == 0, "padding value \(s.value)"),
      (t.split.unicodeScalars.count == 1, "split \(t.split.debugDescription)"),
    ] where !ok {
      throw .unsupported(path: tokenizerPath, detail: setting)
    }
    guard s.maxlen > 0, s.maxlen <= 10_000 else { throw malformed("maxlen \(s.maxlen)") }
    guard t.numWords >= 2, file.words.count == t.numWords - 1 else {
      throw malformed("\(file.words.count) words for num_words \(t.numWords)")
    }
    guard file.labels == Self.labels else { throw malformed("labels \(file.labels)") }
    guard file.rescale.count == file.labels.count, file.rescale.allSatisfy({ $0.count == 2 && $0[1] > $0[0] }) else {
      throw malformed("rescale is not one [lo, hi] with hi > lo per label")
    }
    do {
      tokenizer = try KerasTokenizer(file, steps: s.maxlen)
    } catch let error as TextTableError {
      throw malformed(error.message)
    } catch {
      throw malformed("\(error)")
    }
    version = file.version
    rescaleLow = file.rescale.map { Float($0[0]) }
    rescaleSpan = file.rescale.map { Float($0[1] - $0[0]) }

    weights = try Weights(path: weightsPath, steps: s.maxlen, labels: file.labels.count)
    shape = weights.shape
    guard shape.vocabulary >= t.numWords else {
      throw .malformed(path: weightsPath, detail: "embedding has \(shape.vocabulary) rows for num_words \(t.numWords)")
    }
    forwardPadding = Self.paddingPrefix(weights)
  }

  /// Loads `tox-block-0.1.2.safetensors` and `tox-block-0.1.2.tokenizer.json` from a folder.
  public init(modelsDirectory: String) throws(SafetyModelFileError) {
    let folder = URL(fileURLWithPath: modelsDirectory)
    try self.init(
      weightsPath: folder.appendingPathComponent(Self.defaultWeightsFileName).path,
      tokenizerPath: folder.appendingPathComponent(Self.defaultTokenizerFileName).path)
  }

  /// The token ids the package's encoder gives: ``Shape/steps`` values, zeros in front.
  public func tokenIDs(_ text: String) -> [Int32] {
    var scratch = TokenScratch()
    var ids = [Int32](repeating: 0, count: shape.steps)
    ids.withUnsafeMutableBufferPointer { tokenizer.encode(text, scratch: &scratch, into: $0) }
    return ids
  }

  /// Scores per text, each in ``labels`` order: the package's rescaled scores by default, the
  /// model's sigmoid outputs with `rescaled: false`.
  public func scores(_ texts: [String], rescaled: Bool = true) -> [[Float]] {
    var out: [[Float]] = []
    out.reserveCapacity(texts.count)
    let workspace = Workspace(shape: shape, batch: min(Self.maxBatch, max(texts.count, 1)))
    var start = 0
    while start < texts.count {
      let batch = min(Self.maxBatch, texts.count - start)
      forward(texts[start..<(start + batch)], workspace)
      for b in 0..<batch {
        var row = Array(UnsafeBufferPointer(start: workspace.probabilities + b * shape.labels, count: shape.labels))
        if rescaled {
          for k in row.indices { row[k] = abs((row[k] - rescaleLow[k]) / rescaleSpan[k]) }
        }
        out.append(row)
      }
      start += batch
    }
    return out
  }

  // MARK: - Forward pass

  /// Runs one batch; leaves the sigmoid outputs in `w.probabilities`.
  private func forward(_ texts: ArraySlice<String>, _ w: Workspace) {
    let (steps, e, h, d, l) = (shape.steps, shape.embedding, shape.units, shape.dense, shape.labels)
    let batch = texts.count
    let gateWidth = 8 * h  // forward i,f,c,o then backward i,f,c,o
    for (b, text) in texts.enumerated() {
      tokenizer.encode(text, scratch: &w.tokens, into: UnsafeMutableBufferPointer(start: w.ids + b * steps, count: steps))
    }
    // (steps, batch, e): time-major, so that one step's rows are contiguous.
    for t in 0..<steps {
      for b in 0..<batch {
        (w.inputs + (t * batch + b) * e).update(from: weights.embedding + Int(w.ids[b * steps + t]) * e, count: e)
      }
    }
    // Both directions' input projections for every step: (steps * batch, 8h) = bias + x . kernel.
    for r in 0..<(steps * batch) {
      (w.gates + r * gateWidth).update(from: weights.inputBias, count: gateWidth)
    }
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(steps * batch), Int32(gateWidth), Int32(e),
      1, w.inputs, Int32(e), weights.inputKernel, Int32(gateWidth), 1, w.gates, Int32(gateWidth))
    w.resetStates(batch: batch, units: h)
    // Every text starts with padding: the forward LSTM starts after the padding all rows share,
    // from the state it would have reached there.
    var skip = steps
    for b in 0..<batch {
      var pad = 0
      while pad < skip, w.ids[b * steps + pad] == 0 { pad += 1 }
      skip = pad
    }
    if skip > 0 {
      for b in 0..<batch {
        let prefix = forwardPadding[(skip * 3 * h)..<((skip + 1) * 3 * h)]  // state, cell, max
        (w.forwardState + b * h).update(from: Array(prefix.prefix(h)), count: h)
        (w.forwardCell + b * h).update(from: Array(prefix.dropFirst(h).prefix(h)), count: h)
        (w.pooled + b * 2 * h).update(from: Array(prefix.suffix(h)), count: h)
      }
    }
    for s in 0..<steps {
      // The forward LSTM reads step s, the backward one step steps-1-s; both pool into their
      // half of `pooled` (the max over time does not depend on the order).
      if s >= skip {
        Self.lstmStep(
          gates: w.gates + s * batch * gateWidth, rowStride: gateWidth, batch: batch, units: h,
          recurrent: weights.recurrentForward, first: s == 0, state: w.forwardState, cell: w.forwardCell,
          pooled: w.pooled)
      }
      Self.lstmStep(
        gates: w.gates + (steps - 1 - s) * batch * gateWidth + 4 * h, rowStride: gateWidth, batch: batch, units: h,
        recurrent: weights.recurrentBackward, first: s == 0, state: w.backwardState, cell: w.backwardCell,
        pooled: w.pooled + h)
    }
    Self.dense(w.pooled, rows: batch, inputs: 2 * h, weights: weights.dense, bias: weights.denseBias, outputs: d, into: w.hidden)
    for k in 0..<(batch * d) { w.hidden[k] = max(w.hidden[k], 0) }
    Self.dense(w.hidden, rows: batch, inputs: d, weights: weights.output, bias: weights.outputBias, outputs: l, into: w.probabilities)
    for k in 0..<(batch * l) { w.probabilities[k] = 1 / (1 + exp(-w.probabilities[k])) }
  }

  /// The forward LSTM's state, cell and running max after k = 0...steps steps of padding (id 0),
  /// laid out (steps + 1, 3, units); the max after 0 steps is -infinity.
  private static func paddingPrefix(_ weights: Weights) -> [Float] {
    let (steps, e, h) = (weights.shape.steps, weights.shape.embedding, weights.shape.units)
    var out = [Float](repeating: 0, count: (steps + 1) * 3 * h)
    for j in 0..<h { out[2 * h + j] = -.infinity }
    var padding = [Float](repeating: 0, count: 4 * h)  // forward bias + embedding[0] . kernel
    padding.withUnsafeMutableBufferPointer { padding in
      padding.baseAddress!.update(from: weights.inputBias, count: 4 * h)
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, Int32(4 * h), Int32(e),
        1, weights.embedding, Int32(e), weights.inputKernel, Int32(8 * h), 1, padding.baseAddress, Int32(4 * h))
    }
    var state = Array(out[0..<(3 * h)])  // state, cell, max
    for k in 0..<steps {
      var gates = padding
      gates.withUnsafeMutableBufferPointer { g in
        state.withUnsafeMutableBufferPointer { s in
          lstmStep(
            gates: g.baseAddress!, rowStride: 4 * h, batch: 1, units: h, recurrent: weights.recurrentForward,
            first: k == 0, state: s.baseAddress!, cell: s.baseAddress! + h, pooled: s.baseAddress! + 2 * h)
        }
      }
      out.replaceSubrange(((k + 1) * 3 * h)..<((k + 2) * 3 * h), with: state)
    }
    return out
  }

  /// One LSTM step for a batch: adds h . recurrent to the step's gate rows (which already hold
  /// x . kernel + bias), then updates cell and state and the running max.
  /// - Parameter pooled: this direction's first column of `(batch, 2 * units)`.
  private static func lstmStep(
    gates: UnsafeMutablePointer<Float>, rowStride: Int, batch: Int, units h: Int,
    recurrent: UnsafeMutablePointer<Float>, first: Bool,
    state: UnsafeMutablePointer<Float>, cell: UnsafeMutablePointer<Float>, pooled: UnsafeMutablePointer<Float>
  ) {
    if !first {  // the state starts at zero: nothing to add on the first step
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(batch), Int32(4 * h), Int32(h),
        1, state, Int32(h), recurrent, Int32(4 * h), 1, gates, Int32(rowStride))
    }
    for b in 0..<batch {
      let z = gates + b * rowStride
      let c = cell + b * h
      let hb = state + b * h
      let m = pooled + b * 2 * h
      var j = 0
      while j < h {  // eight units at a time; the last group may be partial
        let n = min(8, h - j)
        let i = hardSigmoid(load(z + j, n))
        let f = hardSigmoid(load(z + h + j, n))
        let g = tanh(load(z + 2 * h + j, n))
        let o = hardSigmoid(load(z + 3 * h + j, n))
        let cNew = f * load(c + j, n) + i * g
        store(cNew, c + j, n)
        let hNew = o * tanh(cNew)
        store(hNew, hb + j, n)
        let best = load(m + j, n)
        store(best.replacing(with: hNew, where: hNew .> best), m + j, n)
        j += 8
      }
    }
  }

  /// Keras 2's `hard_sigmoid`: clip(0.2x + 0.5, 0, 1). (Keras 3 changed it to relu6(x+3)/6.)
  @inline(__always) private static func hardSigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> {
    clamp(x * 0.2 + 0.5, 0, 1)
  }

  /// min(max(x, lo), hi) lane by lane (`clamped(lowerBound:upperBound:)` was not inlined).
  @inline(__always) private static func clamp(_ x: SIMD8<Float>, _ lo: Float, _ hi: Float) -> SIMD8<Float> {
    var r = x
    r.replace(with: lo, where: x .< lo)
    r.replace(with: hi, where: x .> hi)
    return r
  }

  /// tanh by Eigen's rational approximation (`generic_fast_tanh_float`, what TensorFlow's CPU
  /// kernels evaluate). Within 3.6e-7 of glibc's `tanhf` over all inputs, and several times
  /// faster: `tanhf` took half of the run time.
  @inline(__always) static func tanh(_ a: SIMD8<Float>) -> SIMD8<Float> {
    let x = clamp(a, -7.90531110763549805, 7.90531110763549805)
    let x2 = x * x
    var p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = x2 * p + -8.60467152213735e-11
    p = x2 * p + 5.12229709037114e-08
    p = x2 * p + 1.48572235717979e-05
    p = x2 * p + 6.37261928875436e-04
    p = x2 * p + 4.89352455891786e-03
    p = x * p
    var q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = x2 * q + 2.26843463243900e-03
    q = x2 * q + 4.89352518554385e-03
    return (p / q).replacing(with: a, where: (a .< 0.0004) .& (a .> -0.0004))
  }

  /// `n` (1...8) floats at `p`, zeros after them.
  @inline(__always) private static func load(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> SIMD8<Float> {
    if n == 8 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    var v = SIMD8<Float>()
    for k in 0..<n { v[k] = p[k] }
    return v
  }

  /// Writes the first `n` (1...8) lanes of `v` to `p`.
  @inline(__always) private static func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
    if n == 8 {
      UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    } else {
      for k in 0..<n { p[k] = v[k] }
    }
  }

  /// out (rows, outputs) = input (rows, inputs) . weights (inputs, outputs) + bias.
  private static func dense(
    _ input: UnsafeMutablePointer<Float>, rows: Int, inputs: Int, weights: UnsafeMutablePointer<Float>,
    bias: UnsafeMutablePointer<Float>, outputs: Int, into out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows { (out + r * outputs).update(from: bias, count: outputs) }
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(outputs), Int32(inputs),
      1, input, Int32(inputs), weights, Int32(outputs), 1, out, Int32(outputs))
  }
}

// MARK: - Buffers

/// Activation buffers for one batch size, allocated once per `scores` call.
private final class Workspace {
  var tokens = TokenScratch()
  let ids: UnsafeMutablePointer<Int32>  // (batch, steps)
  let inputs: UnsafeMutablePointer<Float>  // (steps, batch, embedding) embedding rows, time-major
  let gates: UnsafeMutablePointer<Float>  // (steps, batch, 8 * units) forward then backward i,f,c,o
  let forwardState: UnsafeMutablePointer<Float>  // (batch, units)
  let forwardCell: UnsafeMutablePointer<Float>  // (batch, units)
  let backwardState: UnsafeMutablePointer<Float>  // (batch, units)
  let backwardCell: UnsafeMutablePointer<Float>  // (batch, units)
  let pooled: UnsafeMutablePointer<Float>  // (batch, 2 * units) max over time of [forward, backward]
  let hidden: UnsafeMutablePointer<Float>  // (batch, dense)
  let probabilities: UnsafeMutablePointer<Float>  // (batch, labels)
  private let floats: [UnsafeMutablePointer<Float>]

  init(shape: ToxBlockClassifier.Shape, batch: Int) {
    func make(_ count: Int) -> UnsafeMutablePointer<Float> {
      let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
      p.initialize(repeating: 0, count: count)
      return p
    }
    ids = .allocate(capacity: batch * shape.steps)
    ids.initialize(repeating: 0, count: batch * shape.steps)
    inputs = make(shape.steps * batch * shape.embedding)
    gates = make(shape.steps * batch * 8 * shape.units)
    forwardState = make(batch * shape.units)
    forwardCell = make(batch * shape.units)
    backwardState = make(batch * shape.units)
    backwardCell = make(batch * shape.units)
    pooled = make(batch * 2 * shape.units)
    hidden = make(batch * shape.dense)
    probabilities = make(batch * shape.labels)
    floats = [inputs, gates, forwardState, forwardCell, backwardState, backwardCell, pooled, hidden, probabilities]
  }

  deinit {
    ids.deallocate()
    for p in floats { p.deallocate() }
  }

  /// Zero states and cells, and pooled maxima at -infinity, for a batch.
  func resetStates(batch: Int, units: Int) {
    for p in [forwardState, forwardCell, backwardState, backwardCell] { p.update(repeating: 0, count: batch * units) }
    pooled.update(repeating: -.infinity, count: batch * 2 * units)
  }
}

/// Per-text tokenizer memory.
private struct TokenScratch {
  var source: [UInt32] = []  // (scalars) the text as given
  var lowered: [UInt32] = []  // (scalars) after str.lower()
  var ids: [Int32] = []  // (words in the vocabulary) before truncation
}

/// The network's weights, as float32 in the layouts the forward pass reads. Immutable after
/// init (hence Sendable); freed with the last reference.
private final class Weights: @unchecked Sendable {
  let embedding: UnsafeMutablePointer<Float>  // (vocabulary, embedding)
  let inputKernel: UnsafeMutablePointer<Float>  // (embedding, 8 * units) [forward i,f,c,o | backward i,f,c,o]
  let inputBias: UnsafeMutablePointer<Float>  // (8 * units)
  let recurrentForward: UnsafeMutablePointer<Float>  // (units, 4 * units)
  let recurrentBackward: UnsafeMutablePointer<Float>  // (units, 4 * units)
  let dense: UnsafeMutablePointer<Float>  // (2 * units, dense)
  let denseBias: UnsafeMutablePointer<Float>  // (dense)
  let output: UnsafeMutablePointer<Float>  // (dense, labels)
  let outputBias: UnsafeMutablePointer<Float>  // (labels)
  let shape: ToxBlockClassifier.Shape

  /// Reads and checks the converted safetensors file.
  init(path: String, steps: Int, labels: Int) throws(SafetyModelFileError) {
    let file: SafeTensorsFile
    let data: Data
    do {
      file = try SafeTensorsFile(path: path)
      data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    } catch EngineError.cannotOpen(_, let reason) {
      throw .unreadable(path: path, reason: reason)
    } catch {
      throw .malformed(path: path, detail: "\(error)")
    }
    guard file.metadata["format"] == "alignd.toxblock" else {
      throw .malformed(path: path, detail: "__metadata__.format is not alignd.toxblock")
    }
    guard file.metadata["format_version"] == "1" else {
      throw .unsupported(path: path, detail: "format_version \(file.metadata["format_version"] ?? "(none)")")
    }
    func dimensions(_ name: String) throws(SafetyModelFileError) -> [Int] {
      guard let info = file.tensors[name], info.dtype == "F32", info.shape.count == 2, info.shape.allSatisfy({ $0 > 0 })
      else { throw .malformed(path: path, detail: "\(name) is missing or not a non-empty F32 matrix") }
      return info.shape
    }
    func read(_ name: String, _ expected: [Int]) throws(SafetyModelFileError) -> [Float] {
      guard let info = file.tensors[name], info.dtype == "F32", info.shape == expected else {
        let found = file.tensors[name].map { "\($0.dtype) \($0.shape)" } ?? "missing"
        throw .malformed(path: path, detail: "\(name) is \(found), expected F32 \(expected)")
      }
      let values = data.withUnsafeBytes { raw in
        (0..<(info.byteCount / 4)).map {
          Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: info.fileOffset + 4 * $0, as: UInt32.self)))
        }
      }
      guard values.allSatisfy(\.isFinite) else { throw .malformed(path: path, detail: "\(name) holds a non-finite value") }
      return values
    }
    let table = try dimensions("embedding")
    let recurrent = try dimensions("lstm_forward.recurrent_kernel")
    let denseShape = try dimensions("dense.kernel")
    let (v, e, h, d) = (table[0], table[1], recurrent[0], denseShape[1])
    let forwardKernel = try read("lstm_forward.kernel", [e, 4 * h])
    let backwardKernel = try read("lstm_backward.kernel", [e, 4 * h])
    var combinedKernel = [Float](repeating: 0, count: e * 8 * h)  // (e, 8h)
    for r in 0..<e {
      for j in 0..<(4 * h) {
        combinedKernel[r * 8 * h + j] = forwardKernel[r * 4 * h + j]
        combinedKernel[r * 8 * h + 4 * h + j] = backwardKernel[r * 4 * h + j]
      }
    }
    let arrays = [
      try read("embedding", [v, e]), combinedKernel,
      try read("lstm_forward.bias", [4 * h]) + read("lstm_backward.bias", [4 * h]),
      try read("lstm_forward.recurrent_kernel", [h, 4 * h]), try read("lstm_backward.recurrent_kernel", [h, 4 * h]),
      try read("dense.kernel", [2 * h, d]), try read("dense.bias", [d]),
      try read("output.kernel", [d, labels]), try read("output.bias", [labels]),
    ]
    let pointers = arrays.map { array in
      let p = UnsafeMutablePointer<Float>.allocate(capacity: array.count)
      p.initialize(from: array, count: array.count)
      return p
    }
    embedding = pointers[0]
    inputKernel = pointers[1]
    inputBias = pointers[2]
    recurrentForward = pointers[3]
    recurrentBackward = pointers[4]
    dense = pointers[5]
    denseBias = pointers[6]
    output = pointers[7]
    outputBias = pointers[8]
    shape = ToxBlockClassifier.Shape(vocabulary: v, embedding: e, units: h, dense: d, labels: labels, steps: steps)
  }

  deinit {
    for p in [embedding, inputKernel, inputBias, recurrentForward, recurrentBackward, dense, denseBias, output, outputBias] {
      p.deallocate()
    }
  }
}

// MARK: - Tokenizer

/// Keras' `Tokenizer.texts_to_sequences` with `pad_sequences(maxlen, padding="pre",
/// truncating="pre")`, no oov token.
private struct KerasTokenizer: Sendable {
  let lower: LowercaseTable?
  let asciiBoundary: [Bool]  // (128) a filter character or the split character
  let otherBoundaries: Set<UInt32>
  let words: ScalarTable  // word of id k + 1 at index k
  let steps: Int

  init(_ file: TokenizerFile, steps: Int) throws {
    lower = file.tokenizer.lower ? try LowercaseTable(python: file.text) : nil
    var ascii = [Bool](repeating: false, count: 128)
    var other = Set<UInt32>()
    for scalar in file.tokenizer.filters.unicodeScalars + file.tokenizer.split.unicodeScalars {
      if scalar.value < 128 { ascii[Int(scalar.value)] = true } else { other.insert(scalar.value) }
    }
    asciiBoundary = ascii
    otherBoundaries = other
    guard let words = ScalarTable(file.words) else { throw TextTableError(message: "duplicate vocabulary word") }
    self.words = words
    self.steps = steps
  }

  @inline(__always) func isBoundary(_ v: UInt32) -> Bool {
    v < 128 ? asciiBoundary[Int(v)] : otherBoundaries.contains(v)
  }

  /// Writes `steps` ids into `out`: the last `steps` known words' ids, zeros in front.
  func encode(_ text: String, scratch: inout TokenScratch, into out: UnsafeMutableBufferPointer<Int32>) {
    scratch.source.removeAll(keepingCapacity: true)
    for scalar in text.unicodeScalars { scratch.source.append(scalar.value) }
    if let lower {
      lower.lowercase(scratch.source, into: &scratch.lowered)
    } else {
      swap(&scratch.source, &scratch.lowered)
    }
    scratch.ids.removeAll(keepingCapacity: true)
    let s = scratch.lowered
    var start = -1
    for i in 0...s.count {
      if i < s.count, !isBoundary(s[i]) {
        if start < 0 { start = i }
      } else if start >= 0 {
        if let k = words.index(of: s, start..<i) { scratch.ids.append(Int32(k + 1)) }
        start = -1
      }
    }
    let kept = scratch.ids.suffix(steps)
    let pad = steps - kept.count
    for k in 0..<pad { out[k] = 0 }
    for (k, id) in kept.enumerated() { out[pad + k] = id }
  }
}

// MARK: - File layout

/// The JSON document written by scripts/convert-safety-ports.py (format version 1).
private struct TokenizerFile: Decodable {
  struct Tokenizer: Decodable {
    let lower: Bool
    let filters: String
    let split: String
    let numWords: Int
    let oovToken: String?
    let charLevel: Bool

    enum CodingKeys: String, CodingKey {
      case lower, filters, split
      case numWords = "num_words"
      case oovToken = "oov_token"
      case charLevel = "char_level"
    }
  }

  struct Sequence: Decodable {
    let maxlen: Int
    let padding: String
    let truncating: String
    let value: Int
  }

  let format: String
  let formatVersion: Int
  let version: String
  let tokenizer: Tokenizer
  let sequence: Sequence
  let words: [String]
  let labels: [String]
  let rescale: [[Double]]
  let text: PythonLowerTables

  enum CodingKeys: String, CodingKey {
    case format, version, tokenizer, sequence, words, labels, rescale, text
    case formatVersion = "format_version"
  }
}
