import Foundation

/// A small network on sentence embeddings: the `alignd.embedding-head` checkpoint format of the
/// trained judges (the default reward model, the safety classifiers). Written by
/// `Training/common/head_format.py`, whose docstring is the format's specification:
///
/// - `manifest.json`: `kind` (`reward` or `safety`), `name`, `version`, the `encoder` it was trained
///   on, the `features` (blocks concatenated in order), `heads` (MLPs over the features whose last
///   layer's rows are named outputs), `scores` (σ(output), σ(a)·σ(b), or for a reward the raw
///   output), optional `thresholds`;
/// - `weights.safetensors`: every tensor the manifest names, F32.
///
/// Immutable after loading, safe to share.
public final class EmbeddingHead: Sendable {
  /// What the head judges.
  public enum Kind: String, Sendable, Equatable {
    case reward
    case safety
  }

  /// One block of the input features.
  public enum FeatureBlock: String, Sendable, Equatable, Hashable {
    /// The prompt's embedding, the response's, their elementwise product, absolute difference, dot.
    case prompt = "p"
    case response = "r"
    case product = "p*r"
    case absoluteDifference = "|p-r|"
    case cosine = "cos"
    /// The embedding of the one text `prompt + "\n\n" + response` (``jointText(prompt:response:)``).
    case joint = "j"
    /// The judged text's embedding (safety).
    case text = "t"
    /// Scores of other classifiers on the judged text (safety stacking): tox-block's six labels,
    /// hatesonar's three classes, alt-profanity-check's P(offensive).
    case toxBlock = "toxblock"
    case hateSonar = "hatesonar"
    case lexical = "lexical"
    /// The same classifiers' scores of the response or of the prompt (reward heads).
    case toxBlockOfResponse = "toxblock(r)"
    case hateSonarOfResponse = "hatesonar(r)"
    case lexicalOfResponse = "lexical(r)"
    case toxBlockOfPrompt = "toxblock(p)"
    case hateSonarOfPrompt = "hatesonar(p)"
    case lexicalOfPrompt = "lexical(p)"

    /// Width of the block for embeddings of width `dimension`.
    public func width(dimension: Int) -> Int {
      switch self {
      case .prompt, .response, .product, .absoluteDifference, .joint, .text: dimension
      case .cosine, .lexical, .lexicalOfResponse, .lexicalOfPrompt: 1
      case .toxBlock, .toxBlockOfResponse, .toxBlockOfPrompt: 6
      case .hateSonar, .hateSonarOfResponse, .hateSonarOfPrompt: 3
      }
    }

    /// Blocks a reward head may read; the others are a safety head's.
    public var isRewardBlock: Bool {
      switch self {
      case .text, .toxBlock, .hateSonar, .lexical: false
      default: true
      }
    }
  }

  /// The text whose embedding is the ``FeatureBlock/joint`` block.
  public static func jointText(prompt: String, response: String) -> String { prompt + "\n\n" + response }

  /// The inputs of one row: embeddings and, for stacked safety heads, other classifiers' scores.
  public struct Inputs: Sendable {
    public var prompt: [Float]?
    public var response: [Float]?
    public var joint: [Float]?
    public var text: [Float]?
    /// Classifier-score blocks by block.
    public var extra: [FeatureBlock: [Float]]

    public init(
      prompt: [Float]? = nil, response: [Float]? = nil, joint: [Float]? = nil, text: [Float]? = nil,
      extra: [FeatureBlock: [Float]] = [:]
    ) {
      self.prompt = prompt
      self.response = response
      self.joint = joint
      self.text = text
      self.extra = extra
    }
  }

  struct Layer: Sendable {
    enum Activation: String, Sendable { case relu, tanh, none }
    var weight: [Float]  // (out, in)
    var bias: [Float]  // (out)
    var inputs: Int
    var outputs: Int
    var activation: Activation
  }

  struct Head: Sendable {
    var name: String
    var layers: [Layer]
    var outputs: [String]
  }

  public let kind: Kind
  public let name: String
  public let version: String
  /// The encoder's declared name (e.g. `all-MiniLM-L6-v2`).
  public let encoderName: String
  /// SHA-256 of the encoder's `model.safetensors` the head was trained on, when the manifest gives it.
  public let encoderSHA256: String?
  /// Embedding width the features assume.
  public let dimension: Int
  public let features: [FeatureBlock]
  /// Score names in the manifest's order.
  public let scoreNames: [String]
  /// Thresholds chosen on validation data, by score name (safety).
  public let thresholds: [String: Double]
  /// The manifest as parsed JSON, for fields this type does not interpret (metrics, data, training).
  public let manifestObject: [String: any Sendable]
  /// The folder it was loaded from.
  public let directory: String

  let heads: [Head]
  /// score name → indices of the outputs it multiplies (one or two), into the flattened outputs.
  let scoreOutputs: [[Int]]

  public static let formatName = "alignd.embedding-head"
  public static let formatVersion = 1

  /// Width of the feature vector.
  public var featureWidth: Int { features.reduce(0) { $0 + $1.width(dimension: dimension) } }

  /// Loads `manifest.json` and `weights.safetensors` from `directory`.
  /// - Parameter dimension: the encoder's embedding width (384 for MiniLM).
  /// - Throws: `EngineError` naming the file and the problem.
  public init(directory: String, dimension: Int = 384) throws {
    self.directory = directory
    let manifestPath = directory + "/manifest.json"
    func bad(_ reason: String) -> EngineError { .malformedFile(path: manifestPath, reason: reason) }
    guard let data = FileManager.default.contents(atPath: manifestPath) else {
      throw EngineError.cannotOpen(path: manifestPath, reason: "no manifest.json")
    }
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw bad("not a JSON object")
    }
    guard root["format"] as? String == Self.formatName else { throw bad("format is not \(Self.formatName)") }
    guard (root["format_version"] as? Int) == Self.formatVersion else {
      throw bad("format_version is not \(Self.formatVersion)")
    }
    guard let kindName = root["kind"] as? String, let kind = Kind(rawValue: kindName) else {
      throw bad("kind must be reward or safety")
    }
    self.kind = kind
    func text(_ key: String) throws -> String {
      guard let v = root[key] as? String, !v.isEmpty, v.count <= 128,
        v.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 && $0 != "@" && $0 != ";" })
      else { throw bad("\(key) must be 1-128 printable ASCII characters without spaces, @ or ;") }
      return v
    }
    name = try text("name")
    version = try text("version")
    guard let encoder = root["encoder"] as? [String: Any], let encoderName = encoder["name"] as? String else {
      throw bad("encoder.name missing")
    }
    self.encoderName = encoderName
    encoderSHA256 = encoder["sha256"] as? String
    if let pooling = encoder["pooling"] as? String, pooling != "mean" { throw bad("encoder.pooling \(pooling) (only mean)") }
    if let normalize = encoder["normalize"] as? Bool, !normalize { throw bad("encoder.normalize must be true") }
    self.dimension = dimension

    guard let blockNames = root["features"] as? [String], !blockNames.isEmpty else { throw bad("features missing") }
    var blocks: [FeatureBlock] = []
    for b in blockNames {
      guard let block = FeatureBlock(rawValue: b) else { throw bad("unknown feature block \(b)") }
      blocks.append(block)
    }
    switch kind {
    case .reward:
      guard blocks.allSatisfy(\.isRewardBlock) else {
        throw bad("a reward head reads only p, r, p*r, |p-r|, cos, j and classifier scores of p or r")
      }
    case .safety:
      guard blocks.allSatisfy({ !$0.isRewardBlock }), blocks.contains(.text) else {
        throw bad("a safety head reads t and optionally toxblock, hatesonar, lexical")
      }
    }
    features = blocks
    let width = blocks.reduce(0) { $0 + $1.width(dimension: dimension) }

    let weightsPath = directory + "/weights.safetensors"
    let file = try SafeTensorsFile(path: weightsPath)
    func tensor(_ name: String, _ shape: [Int]) throws -> [Float] {
      guard let info = file.tensors[name] else { throw EngineError.missingTensor(path: weightsPath, name: name) }
      guard info.dtype == "F32" else {
        throw EngineError.unsupported(path: weightsPath, reason: "tensor \(name) is \(info.dtype), not F32")
      }
      guard info.shape == shape else {
        throw EngineError.shapeMismatch(path: weightsPath, name: name, expected: shape, found: info.shape)
      }
      let p = try file.data(of: info).assumingMemoryBound(to: Float.self)
      let values = Array(UnsafeBufferPointer(start: p, count: shape.reduce(1, *)))
      guard values.allSatisfy(\.isFinite) else {
        throw EngineError.malformedFile(path: weightsPath, reason: "tensor \(name) holds NaN or infinite values")
      }
      return values
    }

    guard let headList = root["heads"] as? [[String: Any]], !headList.isEmpty else { throw bad("heads missing") }
    var heads: [Head] = []
    var outputIndex: [String: Int] = [:]
    for (h, head) in headList.enumerated() {
      guard let layerList = head["layers"] as? [[String: Any]], !layerList.isEmpty, layerList.count <= 8,
        let outputs = head["outputs"] as? [String], !outputs.isEmpty
      else { throw bad("head \(h) needs 1-8 layers and outputs") }
      var layers: [Layer] = []
      var inputs = width
      for (i, layer) in layerList.enumerated() {
        guard let w = layer["weight"] as? String, let b = layer["bias"] as? String,
          let a = layer["activation"] as? String, let activation = Layer.Activation(rawValue: a)
        else { throw bad("head \(h) layer \(i) needs weight, bias and activation relu, tanh or none") }
        guard let info = file.tensors[w], info.shape.count == 2, info.shape[1] == inputs, info.shape[0] > 0,
          info.shape[0] <= 65_536
        else { throw bad("head \(h) layer \(i): \(w) must be (out, \(inputs))") }
        let out = info.shape[0]
        layers.append(Layer(weight: try tensor(w, [out, inputs]), bias: try tensor(b, [out]), inputs: inputs, outputs: out, activation: activation))
        inputs = out
      }
      guard inputs == outputs.count else { throw bad("head \(h): last layer has \(inputs) rows for \(outputs.count) outputs") }
      for o in outputs {
        guard outputIndex[o] == nil else { throw bad("output \(o) named twice") }
        outputIndex[o] = outputIndex.count
      }
      heads.append(Head(name: head["name"] as? String ?? "head\(h)", layers: layers, outputs: outputs))
    }
    self.heads = heads

    guard let scores = root["scores"] as? [String: [String]], !scores.isEmpty else { throw bad("scores missing") }
    // A stable order: the manifest's JSON object order is not kept by JSONSerialization.
    let names = scores.keys.sorted()
    var scoreOutputs: [[Int]] = []
    for n in names {
      let refs = scores[n]!
      guard refs.count == 1 || refs.count == 2 else { throw bad("score \(n) must name one or two outputs") }
      var indices: [Int] = []
      for r in refs {
        guard let i = outputIndex[r] else { throw bad("score \(n) names unknown output \(r)") }
        indices.append(i)
      }
      scoreOutputs.append(indices)
    }
    if kind == .reward {
      guard let i = names.firstIndex(of: "reward"), scoreOutputs[i].count == 1 else {
        throw bad("a reward head needs the score reward naming one output")
      }
    }
    scoreNames = names
    self.scoreOutputs = scoreOutputs
    var thresholds: [String: Double] = [:]
    if let t = root["thresholds"] as? [String: Any] {
      for (k, v) in t {
        guard let x = (v as? NSNumber)?.doubleValue, x > 0, x <= 1, names.contains(k) else {
          throw bad("threshold of \(k) must be in (0, 1] and name a score")
        }
        thresholds[k] = x
      }
    }
    self.thresholds = thresholds
    manifestObject = Self.sendable(root) as? [String: any Sendable] ?? [:]
  }

  /// Scores of one row, in ``scoreNames`` order.
  /// - Precondition: the inputs hold every block ``features`` names, each of its width.
  public func scores(_ inputs: Inputs) -> [Double] {
    var x = [Float]()
    x.reserveCapacity(featureWidth)
    for block in features {
      switch block {
      case .prompt: x += inputs.prompt ?? []
      case .response: x += inputs.response ?? []
      case .text: x += inputs.text ?? []
      case .joint: x += inputs.joint ?? []
      case .product:
        if let p = inputs.prompt, let r = inputs.response { x += zip(p, r).map { $0 * $1 } }
      case .absoluteDifference:
        if let p = inputs.prompt, let r = inputs.response { x += zip(p, r).map { abs($0 - $1) } }
      case .cosine:
        if let p = inputs.prompt, let r = inputs.response { x.append(zip(p, r).reduce(0) { $0 + $1.0 * $1.1 }) }
      case .toxBlock, .hateSonar, .lexical, .toxBlockOfResponse, .hateSonarOfResponse, .lexicalOfResponse,
        .toxBlockOfPrompt, .hateSonarOfPrompt, .lexicalOfPrompt:
        x += inputs.extra[block] ?? []
      }
    }
    // A missing block (a caller bug) must not read out of bounds: pad and let the score show it.
    if x.count < featureWidth { x += [Float](repeating: 0, count: featureWidth - x.count) }
    var outputs: [Float] = []
    for head in heads {
      var h = x
      for layer in head.layers {
        var y = [Float](repeating: 0, count: layer.outputs)
        layer.weight.withUnsafeBufferPointer { w in
          h.withUnsafeBufferPointer { v in
            for o in 0..<layer.outputs {
              y[o] = dotF32(w.baseAddress! + o * layer.inputs, v.baseAddress!, layer.inputs) + layer.bias[o]
            }
          }
        }
        switch layer.activation {
        case .relu: for i in y.indices where y[i] < 0 { y[i] = 0 }
        case .tanh: for i in y.indices { y[i] = tanhf(y[i]) }
        case .none: break
        }
        h = y
      }
      outputs += h
    }
    return scoreOutputs.enumerated().map { s, refs in
      if kind == .reward && scoreNames[s] == "reward" { return Double(outputs[refs[0]]) }
      return refs.reduce(1.0) { $0 * Self.sigmoid(Double(outputs[$1])) }
    }
  }

  static func sigmoid(_ x: Double) -> Double {
    x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
  }

  /// JSON values (from JSONSerialization) as Sendable values.
  private static func sendable(_ value: Any) -> (any Sendable)? {
    switch value {
    case let d as [String: Any]: return d.compactMapValues { sendable($0) } as [String: any Sendable]
    case let a as [Any]: return a.compactMap { sendable($0) } as [any Sendable]
    case let s as String: return s
    case let n as NSNumber: return n.doubleValue
    default: return nil
    }
  }
}
