import AlignEngine
import AlignShared
import Dispatch
import Foundation

/// The trained moderation classifier as a backend (`classifier`): an ``EmbeddingHead`` of kind
/// `safety` on all-MiniLM-L6-v2 sentence embeddings of the text, optionally stacked on the ported
/// classifiers' scores of the same text (feature blocks `lexical`, `toxblock`, `hatesonar`).
///
/// It scores every moderation category that the head names as a score; other scores of the head
/// (such as the harmful-vs-benign gate) are not categories and are not reported. Concurrent calls
/// share encoder passes through a ``DynamicBatcher``; the encoder runs on a serial dispatch queue of
/// the backend's own (a pass blocks for milliseconds, which must not happen on the cooperative pool
/// that serves RPCs).
public final class ClassifierBackend: BatchedSafetyBackend {
  /// Batch size, wait and queue bound of the encoder's batcher.
  public typealias Batching = DynamicBatcher<String, [Double]>.Configuration

  public var name: String { "classifier" }
  /// The head folder's ``ModelFingerprint`` version (`<folder>@<12 hex digits of its SHA-256>`).
  public let version: String
  public let categories: [SafetyCategory]
  public let head: EmbeddingHead
  /// Per category, the index of its score in the head's output.
  private let scoreIndex: [(category: SafetyCategory, index: Int)]
  private let batcher: DynamicBatcher<String, [Double]>

  /// - Parameters:
  ///   - headDirectory: an `alignd.embedding-head` folder of kind `safety`.
  ///   - encoder: the sentence encoder (shared with other judges); `encoderSHA256` is checked
  ///     against the head's manifest when both are known.
  ///   - stack: the classifiers the head's extra feature blocks need.
  ///   - threads: worker threads of the encoder session.
  /// - Throws: ``ModelLoadError`` naming the problem (a missing classifier for a feature block
  ///   included).
  public init(
    headDirectory: String, encoder: SentenceEncoder, encoderSHA256: String?, stack: PortedClassifiers = PortedClassifiers(),
    threads: Int = 2,
    batching: Batching = Batching(maxBatchSize: 64, maxDelay: .milliseconds(2), queueCapacity: 1024, name: "safety")
  ) throws {
    let head: EmbeddingHead
    do {
      head = try EmbeddingHead(directory: headDirectory, dimension: encoder.dimension)
    } catch {
      throw ModelLoadError("cannot load the safety classifier \(headDirectory): \(error)")
    }
    guard head.kind == .safety else {
      throw ModelLoadError("\(headDirectory) is a \(head.kind.rawValue) head, not a safety classifier")
    }
    if let expected = head.encoderSHA256, let actual = encoderSHA256, expected != actual {
      throw ModelLoadError(
        "\(headDirectory) was trained on the encoder with SHA-256 \(expected), but the loaded encoder's is \(actual)")
    }
    try stack.check(head, directory: headDirectory)
    // The one version format (ModelFingerprint): the head folder's name and digest.
    do {
      version = try ModelFingerprint(path: headDirectory).version
    } catch {
      throw ModelLoadError("\(error)")
    }
    self.head = head
    var index: [(SafetyCategory, Int)] = []
    for (i, name) in head.scoreNames.enumerated() {
      let category = SafetyCategory(rawValue: name)
      if SafetyCategory.moderation.contains(category) { index.append((category, i)) }
    }
    guard !index.isEmpty else { throw ModelLoadError("\(headDirectory) scores no moderation category") }
    scoreIndex = index
    categories = index.map(\.0).sorted()

    let session = EncoderSession(encoder: encoder, threads: threads)
    let queue = DispatchQueue(label: "alignd.safety.classifier")
    batcher = DynamicBatcher(configuration: batching) { texts in
      try await withCheckedThrowingContinuation { (c: CheckedContinuation<[[Double]], any Error>) in
        queue.async {
          c.resume(returning: Self.run(texts, head: head, session: session, stack: stack))
        }
      }
    }
  }

  /// The head's scores (in ``EmbeddingHead/scoreNames`` order) for each text.
  static func run(_ texts: [String], head: EmbeddingHead, session: EncoderSession, stack: PortedClassifiers) -> [[Double]] {
    let embeddings = session.embed(texts)
    let blocks = stack.blocks(for: head, rows: texts.count) { _ in texts }
    return texts.indices.map { i in head.scores(EmbeddingHead.Inputs(text: embeddings[i], extra: blocks[i])) }
  }

  /// Batches run and the largest batch so far.
  public var batchStats: DynamicBatcherStats { batcher.stats }

  public var batchQueue: (queued: Int, stats: DynamicBatcherStats) { (batcher.queued, batcher.stats) }

  public func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    let all = try await withThrowingTaskGroup(of: (Int, [Double]).self) { group in
      for (i, input) in inputs.enumerated() {
        group.addTask { (i, try await self.batcher.submit(input.text)) }
      }
      var results = [[Double]](repeating: [], count: inputs.count)
      for try await (i, r) in group { results[i] = r }
      return results
    }
    return all.map { scores in
      var out: [SafetyCategory: Double] = [:]
      for (category, i) in scoreIndex { out[category] = scores[i] }
      return out
    }
  }
}
