import AlignEngine
import AlignShared
import Foundation

/// What the trained judges share, loaded once per process: the sentence encoder their heads read
/// (all-MiniLM-L6-v2) and the cheap classifiers they stack (alt-profanity-check, tox-block,
/// hatesonar). The default reward model, the safety classifier and any judge activated later
/// (``EmbeddingRewardModel``, ``ClassifierBackend``) each run their own encoder session over the
/// one set of weights.
public final class JudgeModels: Sendable {
  /// Nil when the encoder folder is absent: judges that need it then fail to load, saying so.
  public let encoder: SentenceEncoder?
  /// The encoder's `model.safetensors` SHA-256, checked against a head's manifest.
  public let encoderSHA256: String?
  public let ported: PortedClassifiers
  /// Worker threads of each judge's encoder session.
  public let threads: Int

  public init(encoder: SentenceEncoder?, encoderSHA256: String?, ported: PortedClassifiers, threads: Int) {
    self.encoder = encoder
    self.encoderSHA256 = encoderSHA256
    self.ported = ported
    self.threads = threads
  }

  /// Loads what is present in `modelsDirectory`: the encoder folder `encoderPath` (resolved there
  /// when relative) and the converted classifiers under their default file names.
  /// - Throws: ``ModelLoadError`` when a file is present but does not load.
  public static func load(modelsDirectory: String, encoderPath: String, threads: Int) throws -> JudgeModels {
    let folder = URL(fileURLWithPath: modelsDirectory)
    func path(_ name: String) -> String { name.hasPrefix("/") ? name : folder.appendingPathComponent(name).path }
    func exists(_ p: String) -> Bool { FileManager.default.fileExists(atPath: p) }
    do {
      let encoderFolder = path(encoderPath)
      let weights = encoderFolder + "/model.safetensors"
      let encoder = exists(weights) ? try SentenceEncoder(directory: encoderFolder) : nil
      let sha = encoder == nil ? nil : try ModelFingerprint(path: weights).sha256
      let lexical = path(LexicalClassifier.defaultFileName)
      let toxWeights = path(ToxBlockClassifier.defaultWeightsFileName)
      let toxTokenizer = path(ToxBlockClassifier.defaultTokenizerFileName)
      let sonar = path(HateSonarClassifier.defaultFileName)
      let ported = PortedClassifiers(
        lexical: exists(lexical) ? try LexicalClassifier(contentsOf: lexical) : nil,
        toxBlock: exists(toxWeights) && exists(toxTokenizer)
          ? try ToxBlockClassifier(weightsPath: toxWeights, tokenizerPath: toxTokenizer) : nil,
        hateSonar: exists(sonar) ? try HateSonarClassifier(contentsOf: sonar) : nil)
      return JudgeModels(encoder: encoder, encoderSHA256: sha, ported: ported, threads: threads)
    } catch let error as ModelLoadError {
      throw error
    } catch {
      throw ModelLoadError("the judges' shared models in \(modelsDirectory): \(error)")
    }
  }

  /// Whether `path` holds a trained judge (an `alignd.embedding-head` folder).
  public static func isEmbeddingHead(_ path: String) -> Bool {
    let manifest = URL(fileURLWithPath: path).appendingPathComponent("manifest.json")
    guard let data = try? Data(contentsOf: manifest),
      let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    else { return false }
    return object["format"] as? String == EmbeddingHead.formatName
  }

  /// The encoder, or why a judge cannot load without it.
  func requireEncoder(for path: String) throws -> SentenceEncoder {
    guard let encoder else {
      throw ModelLoadError("\(path) needs the sentence encoder all-MiniLM-L6-v2 (run scripts/fetch-encoder.sh)")
    }
    return encoder
  }

  /// The reward model of a trained head folder.
  /// - Parameter version: the registry version; nil stamps the folder's fingerprint.
  public func rewardModel(headDirectory: String, version: String? = nil) throws -> EmbeddingRewardModel {
    try EmbeddingRewardModel(
      headDirectory: headDirectory, encoder: try requireEncoder(for: headDirectory), encoderSHA256: encoderSHA256,
      stack: ported, threads: threads, version: version)
  }

  /// The safety backend of a trained classifier folder.
  public func safetyClassifier(headDirectory: String, batching: ClassifierBackend.Batching) throws -> ClassifierBackend {
    try ClassifierBackend(
      headDirectory: headDirectory, encoder: try requireEncoder(for: headDirectory), encoderSHA256: encoderSHA256,
      stack: ported, threads: threads, batching: batching)
  }
}
