import AlignEngine
import AlignShared
import Foundation

/// The trained default reward model: a small network (``EmbeddingHead`` of kind `reward`) on
/// sentence embeddings of the prompt and of the response (a bi-encoder: all-MiniLM-L6-v2, see
/// Docs/REWARD.md).
///
/// The prompt is the raw prompt string, or a conversation's last user turn (earlier turns and the
/// system prompt are not read). Identical prompts and responses in one call are embedded once, so
/// a pair, or best-of-n candidates for one prompt, embed the prompt a single time. A head may also
/// read the ported classifiers' scores of the response or the prompt (``PortedClassifiers``) and
/// the joint embedding of prompt and response.
public final class EmbeddingRewardModel: RewardBackend {
  /// The head folder's ``ModelFingerprint`` version, e.g. `alignd-reward-minilm@3f2a…` (12 hex digits).
  public let version: String
  public var kind: RewardBackendKind { .embeddingHead }
  public let head: EmbeddingHead
  public let encoder: SentenceEncoder
  private let session: EncoderSession
  private let stack: PortedClassifiers

  /// - Parameters:
  ///   - headDirectory: an `alignd.embedding-head` folder of kind `reward`.
  ///   - encoder: the sentence encoder it was trained on (shared with other judges).
  ///   - encoderSHA256: the SHA-256 of the encoder's `model.safetensors`; when the head's manifest
  ///     names another, loading fails (the head would read embeddings it was not trained on).
  ///   - stack: the classifiers whose scores the head reads (its manifest's feature blocks).
  ///   - threads: worker threads of this model's encoder session.
  ///   - version: the registry version; nil stamps the folder's ``ModelFingerprint`` version.
  /// - Throws: ``ModelLoadError`` naming the problem (a classifier the head needs and lacks included).
  public init(
    headDirectory: String, encoder: SentenceEncoder, encoderSHA256: String?, stack: PortedClassifiers = PortedClassifiers(),
    threads: Int = 2, version: String? = nil
  ) throws {
    let head: EmbeddingHead
    do {
      head = try EmbeddingHead(directory: headDirectory, dimension: encoder.dimension)
    } catch {
      throw ModelLoadError("cannot load the reward head \(headDirectory): \(error)")
    }
    guard head.kind == .reward else {
      throw ModelLoadError("\(headDirectory) is a \(head.kind.rawValue) head, not a reward head")
    }
    if let expected = head.encoderSHA256, let actual = encoderSHA256, expected != actual {
      throw ModelLoadError(
        "\(headDirectory) was trained on the encoder with SHA-256 \(expected), but the loaded encoder's is \(actual)")
    }
    try stack.check(head, directory: headDirectory)
    self.head = head
    self.encoder = encoder
    self.stack = stack
    // The one version format (ModelFingerprint): the head folder's name and digest.
    do {
      self.version = try version ?? ModelFingerprint(path: headDirectory).version
    } catch {
      throw ModelLoadError("\(error)")
    }
    session = EncoderSession(encoder: encoder, threads: threads)
  }

  public func rewards(_ inputs: [RewardInput]) throws -> [Double] {
    if inputs.isEmpty { return [] }
    // Unique texts, embedded in one call.
    var index: [String: Int] = [:]
    var texts: [String] = []
    func slot(_ text: String) -> Int {
      if let i = index[text] { return i }
      index[text] = texts.count
      texts.append(text)
      return texts.count - 1
    }
    let joint = head.features.contains(.joint)
    let rows = inputs.map {
      (prompt: slot($0.question), response: slot($0.response),
       joint: joint ? slot(EmbeddingHead.jointText(prompt: $0.question, response: $0.response)) : -1)
    }
    let vectors = session.embed(texts)
    let blocks = stack.blocks(for: head, rows: inputs.count) { side in
      switch side {
      case .prompt, .text: inputs.map(\.question)
      case .response: inputs.map(\.response)
      }
    }
    return rows.enumerated().map { i, row in
      head.scores(
        EmbeddingHead.Inputs(
          prompt: vectors[row.prompt], response: vectors[row.response], joint: joint ? vectors[row.joint] : nil,
          extra: blocks[i]))[0]
    }
  }
}
