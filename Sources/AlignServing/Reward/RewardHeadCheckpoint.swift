import AlignEngine
import Foundation

/// How a reward head's input text is built from a ``RewardInput`` (the manifest's `input` field).
/// Training and scoring must agree, so the trainer writes it and the backend obeys it.
public enum RewardHeadInputFormat: String, Sendable, Codable, Equatable, CaseIterable {
  /// A prompt string becomes one user message; the conversation plus the response as the assistant's
  /// turn is rendered with the base model's chat template (no generation prompt) and tokenized with
  /// special tokens parsed and none added.
  case chatTemplate = "chat-template"
  /// A prompt string and the response are tokenized as the one text `prompt + response` (with the
  /// tokenizer's BOS when it adds one); conversations are still rendered with the chat template.
  case concatenate = "concatenate"
}

/// The JSON manifest beside a reward head's weights (`manifest.json`).
public struct RewardHeadManifest: Sendable, Codable, Equatable {
  /// The base model the head reads features from.
  public struct BaseModel: Sendable, Codable, Equatable {
    /// A human-readable name (e.g. the GGUF file name without extension).
    public var name: String
    /// Lower-case hex SHA-256 of the base model file; the loader refuses any other file.
    public var sha256: String

    /// Creates a value from its fields.
    public init(name: String, sha256: String) {
      self.name = name
      self.sha256 = sha256
    }
  }

  /// Quality figures measured when the head was trained.
  public struct Metrics: Sendable, Codable, Equatable {
    /// Fraction of held-out preference pairs ranked correctly (nil when nothing was held out).
    public var heldoutAccuracy: Double?
    /// Pairs the head was fitted on.
    public var trainPairs: Int
    /// Pairs held out for `heldoutAccuracy`.
    public var heldoutPairs: Int

    /// Creates a value from its fields.
    public init(heldoutAccuracy: Double?, trainPairs: Int, heldoutPairs: Int) {
      self.heldoutAccuracy = heldoutAccuracy
      self.trainPairs = trainPairs
      self.heldoutPairs = heldoutPairs
    }

    /// Writes every field, `heldout_accuracy` as null when nothing was held out.
    public func encode(to encoder: any Encoder) throws {
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(heldoutAccuracy, forKey: .heldoutAccuracy)
      try c.encode(trainPairs, forKey: .trainPairs)
      try c.encode(heldoutPairs, forKey: .heldoutPairs)
    }

    enum CodingKeys: String, CodingKey {
      case heldoutAccuracy = "heldout_accuracy"
      case trainPairs = "train_pairs"
      case heldoutPairs = "heldout_pairs"
    }
  }

  /// Always ``RewardHeadCheckpoint/formatName``.
  public var format: String
  /// Always ``RewardHeadCheckpoint/formatVersion``.
  public var formatVersion: Int
  /// The base model, named by its file's SHA-256.
  public var baseModel: BaseModel
  /// Width of the base model's hidden state (= length of `weight`).
  public var hiddenSize: Int
  /// Which feature the head reads; only ``RewardHeadCheckpoint/featureName`` exists.
  public var feature: String
  /// How text is rendered before tokenization.
  public var input: RewardHeadInputFormat
  /// Training results.
  public var metrics: Metrics
  /// ISO 8601 creation time.
  public var createdAt: String

  /// Creates a manifest for the current format.
  public init(
    baseModel: BaseModel, hiddenSize: Int, input: RewardHeadInputFormat, metrics: Metrics, createdAt: Date = Date()
  ) {
    self.format = RewardHeadCheckpoint.formatName
    self.formatVersion = RewardHeadCheckpoint.formatVersion
    self.baseModel = baseModel
    self.hiddenSize = hiddenSize
    self.feature = RewardHeadCheckpoint.featureName
    self.input = input
    self.metrics = metrics
    self.createdAt = ISO8601DateFormatter().string(from: createdAt)
  }

  enum CodingKeys: String, CodingKey {
    case format
    case formatVersion = "format_version"
    case baseModel = "base_model"
    case hiddenSize = "hidden_size"
    case feature, input, metrics
    case createdAt = "created_at"
  }
}

/// Why a reward-head checkpoint was refused. Every case names what is wrong in words an operator
/// can act on.
public enum RewardHeadError: Error, Equatable, CustomStringConvertible {
  /// A required file is missing or unreadable.
  case missingFile(path: String)
  /// manifest.json is not valid JSON or lacks a field.
  case malformedManifest(path: String, reason: String)
  /// The manifest names another format, version, or feature.
  case unsupported(path: String, reason: String)
  /// reward-head.safetensors is not a valid safetensors file.
  case malformedWeights(path: String, reason: String)
  /// A tensor the format needs is absent.
  case missingTensor(path: String, name: String)
  /// A tensor the format does not define is present.
  case unexpectedTensor(path: String, name: String)
  /// A tensor has the wrong dtype or shape.
  case badTensor(path: String, name: String, reason: String)
  /// A tensor holds NaN or infinity.
  case nonFinite(path: String, name: String)
  /// The base model given is not the one the head was trained on.
  case baseModelMismatch(expected: String, found: String)
  /// The base model's hidden size differs from the head's.
  case hiddenSizeMismatch(head: Int, baseModel: Int)
  /// The folder to write exists and is not empty.
  case outputExists(path: String)

  /// A human-readable description.
  public var description: String {
    switch self {
    case .missingFile(let path): return "reward head: missing or unreadable file \(path)"
    case .malformedManifest(let path, let reason): return "reward head: malformed manifest \(path): \(reason)"
    case .unsupported(let path, let reason): return "reward head: unsupported manifest \(path): \(reason)"
    case .malformedWeights(let path, let reason): return "reward head: malformed weights \(path): \(reason)"
    case .missingTensor(let path, let name): return "reward head: tensor \"\(name)\" missing from \(path)"
    case .unexpectedTensor(let path, let name):
      return "reward head: unexpected tensor \"\(name)\" in \(path) (the format has only \"weight\" and \"bias\")"
    case .badTensor(let path, let name, let reason): return "reward head: tensor \"\(name)\" in \(path): \(reason)"
    case .nonFinite(let path, let name): return "reward head: tensor \"\(name)\" in \(path) holds NaN or infinite values"
    case .baseModelMismatch(let expected, let found):
      return "reward head: trained on base model sha256 \(expected), but the base model given has sha256 \(found)"
    case .hiddenSizeMismatch(let head, let base):
      return "reward head: hidden size \(head) does not match the base model's \(base)"
    case .outputExists(let path): return "reward head: \(path) already exists and is not empty"
    }
  }
}

/// A linear reward head on a base model's final hidden state: reward = weight · feature + bias, where
/// the feature is the final normed hidden state at the input's last token.
///
/// On disk: a folder with `reward-head.safetensors` (F32 `weight` [hidden_size] and F32 `bias` [1],
/// nothing else) and `manifest.json` (see ``RewardHeadManifest``; Docs/REWARD.md has an example).
public struct RewardHeadCheckpoint: Sendable, Equatable {
  /// The manifest's `format`.
  public static let formatName = "alignd-reward-head"
  /// The manifest's `format_version` this code reads and writes.
  public static let formatVersion = 1
  /// The manifest's `feature`: final normed hidden state at the last token.
  public static let featureName = "final-norm-last-token"
  /// File name of the weights.
  public static let weightsFileName = "reward-head.safetensors"
  /// File name of the manifest.
  public static let manifestFileName = "manifest.json"

  /// The manifest.
  public var manifest: RewardHeadManifest
  /// (hidden_size)
  public var weight: [Float]
  /// The constant added to every reward.
  public var bias: Float

  /// Creates a checkpoint in memory.
  /// - Throws: ``RewardHeadError`` when the weights do not match the manifest or are not finite.
  public init(manifest: RewardHeadManifest, weight: [Float], bias: Float) throws {
    guard weight.count == manifest.hiddenSize else {
      throw RewardHeadError.badTensor(
        path: "(memory)", name: "weight", reason: "has \(weight.count) values, hidden_size is \(manifest.hiddenSize)")
    }
    guard weight.allSatisfy(\.isFinite) else { throw RewardHeadError.nonFinite(path: "(memory)", name: "weight") }
    guard bias.isFinite else { throw RewardHeadError.nonFinite(path: "(memory)", name: "bias") }
    self.manifest = manifest
    self.weight = weight
    self.bias = bias
  }

  /// Reads and validates a checkpoint folder.
  /// - Throws: ``RewardHeadError`` naming the file and the problem.
  public init(directory: String) throws {
    let folder = URL(fileURLWithPath: directory)
    let manifestPath = folder.appendingPathComponent(Self.manifestFileName).path
    let weightsPath = folder.appendingPathComponent(Self.weightsFileName).path
    guard let manifestData = FileManager.default.contents(atPath: manifestPath) else {
      throw RewardHeadError.missingFile(path: manifestPath)
    }
    let manifest = try Self.decodeManifest(manifestData, path: manifestPath)

    let file: SafeTensorsFile
    do {
      file = try SafeTensorsFile(path: weightsPath)
    } catch EngineError.cannotOpen {
      throw RewardHeadError.missingFile(path: weightsPath)
    } catch {
      throw RewardHeadError.malformedWeights(path: weightsPath, reason: "\(error)")
    }
    for name in file.tensors.keys.sorted() where name != "weight" && name != "bias" {
      throw RewardHeadError.unexpectedTensor(path: weightsPath, name: name)
    }
    guard let bytes = FileManager.default.contents(atPath: weightsPath) else {
      throw RewardHeadError.missingFile(path: weightsPath)
    }
    func read(_ name: String, count: Int) throws -> [Float] {
      guard let info = file.tensors[name] else { throw RewardHeadError.missingTensor(path: weightsPath, name: name) }
      guard info.dtype == "F32" else {
        throw RewardHeadError.badTensor(path: weightsPath, name: name, reason: "dtype \(info.dtype), expected F32")
      }
      guard info.shape == [count] else {
        throw RewardHeadError.badTensor(path: weightsPath, name: name, reason: "shape \(info.shape), expected [\(count)]")
      }
      var values = [Float](repeating: 0, count: count)
      values.withUnsafeMutableBytes { out in
        _ = bytes.copyBytes(to: out, from: info.fileOffset..<(info.fileOffset + info.byteCount))
      }
      // Little-endian on disk; every platform Swift runs this on is little-endian, but be exact.
      values = values.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) }
      guard values.allSatisfy(\.isFinite) else { throw RewardHeadError.nonFinite(path: weightsPath, name: name) }
      return values
    }
    let weight = try read("weight", count: manifest.hiddenSize)
    let bias = try read("bias", count: 1)[0]
    self.manifest = manifest
    self.weight = weight
    self.bias = bias
  }

  /// Parses and checks a manifest.
  static func decodeManifest(_ data: Data, path: String) throws -> RewardHeadManifest {
    let manifest: RewardHeadManifest
    do {
      manifest = try JSONDecoder().decode(RewardHeadManifest.self, from: data)
    } catch DecodingError.keyNotFound(let key, _) {
      throw RewardHeadError.malformedManifest(path: path, reason: "missing field \"\(key.stringValue)\"")
    } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
      let field = context.codingPath.map(\.stringValue).joined(separator: ".")
      throw RewardHeadError.malformedManifest(path: path, reason: "field \"\(field)\" has the wrong type")
    } catch DecodingError.dataCorrupted(let context) {
      let field = context.codingPath.map(\.stringValue).joined(separator: ".")
      let allowed = RewardHeadInputFormat.allCases.map(\.rawValue).joined(separator: ", ")
      throw RewardHeadError.malformedManifest(
        path: path,
        reason: field.isEmpty ? "not valid JSON" : "field \"\(field)\" has an invalid value (input is one of: \(allowed))")
    } catch {
      throw RewardHeadError.malformedManifest(path: path, reason: "\(error)")
    }
    guard manifest.format == formatName else {
      throw RewardHeadError.unsupported(path: path, reason: "format \"\(manifest.format)\", expected \"\(formatName)\"")
    }
    guard manifest.formatVersion == formatVersion else {
      throw RewardHeadError.unsupported(
        path: path, reason: "format_version \(manifest.formatVersion); this build reads \(formatVersion)")
    }
    guard manifest.feature == featureName else {
      throw RewardHeadError.unsupported(path: path, reason: "feature \"\(manifest.feature)\", expected \"\(featureName)\"")
    }
    guard manifest.hiddenSize > 0, manifest.hiddenSize <= 65_536 else {
      throw RewardHeadError.malformedManifest(path: path, reason: "hidden_size \(manifest.hiddenSize) is out of range")
    }
    let sha = manifest.baseModel.sha256
    guard sha.count == 64, sha.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
      throw RewardHeadError.malformedManifest(path: path, reason: "base_model.sha256 is not 64 lower-case hex digits")
    }
    return manifest
  }

  /// Writes the checkpoint folder. The files are written to a sibling staging folder first and moved
  /// into place, so a crash leaves either nothing or a complete checkpoint.
  /// - Throws: ``RewardHeadError/outputExists(path:)`` when `directory` exists and is not empty; file
  ///   system errors otherwise.
  public func write(to directory: String) throws {
    let fm = FileManager.default
    let target = URL(fileURLWithPath: directory).standardizedFileURL
    if let existing = try? fm.contentsOfDirectory(atPath: target.path) {
      guard existing.isEmpty else { throw RewardHeadError.outputExists(path: target.path) }
      try fm.removeItem(at: target)
    }
    try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
    let staging = target.deletingLastPathComponent()
      .appendingPathComponent(".\(target.lastPathComponent).staging-\(UUID().uuidString)")
    try fm.createDirectory(at: staging, withIntermediateDirectories: false)
    do {
      try safetensorsBytes().write(to: staging.appendingPathComponent(Self.weightsFileName), options: .atomic)
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      var json = try encoder.encode(manifest)
      json.append(0x0A)
      try json.write(to: staging.appendingPathComponent(Self.manifestFileName), options: .atomic)
      try fm.moveItem(at: staging, to: target)
    } catch {
      try? fm.removeItem(at: staging)
      throw error
    }
  }

  /// The weights as a safetensors file: 8-byte little-endian header length, JSON header (padded with
  /// spaces to a multiple of 8), then `weight` and `bias` as little-endian F32.
  func safetensorsBytes() -> Data {
    let n = weight.count
    var header =
      "{\"__metadata__\":{\"format\":\"\(Self.formatName)\"},"
      + "\"bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\(4 * n),\(4 * n + 4)]},"
      + "\"weight\":{\"dtype\":\"F32\",\"shape\":[\(n)],\"data_offsets\":[0,\(4 * n)]}}"
    while header.utf8.count % 8 != 0 { header += " " }
    var data = Data()
    withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: Array(header.utf8))
    for v in weight + [bias] {
      withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) }
    }
    return data
  }

  /// weight · feature + bias, accumulated in double precision.
  public func reward(feature: [Float]) -> Double {
    var s = Double(bias)
    for i in 0..<min(feature.count, weight.count) { s += Double(weight[i]) * Double(feature[i]) }
    return s
  }
}
