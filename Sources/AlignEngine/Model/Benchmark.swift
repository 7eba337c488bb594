import Foundation

/// Throughput figures measured by `Engine.benchmark`.
public struct BenchmarkResult: Sendable, Equatable, CustomStringConvertible {
  /// Threads used by the forward pass.
  public var threads: Int
  /// Prompt length of the prefill measurement.
  public var promptTokens: Int
  /// Tokens per second for one prompt prefilled in one forward call.
  public var prefillTokensPerSecond: Double
  /// Tokens generated in the batch-1 measurement.
  public var decodeTokens: Int
  /// Tokens per second decoding one sequence (one token per forward call).
  public var decodeTokensPerSecond: Double
  /// Sequences in the batched measurement.
  public var batchSequences: Int
  /// Prompt length of each sequence in the batched measurement (llama-batched-bench's npp): the
  /// decode steps attend over it, so it must match the peer's.
  public var batchPromptTokens: Int
  /// Total tokens per second decoding `batchSequences` sequences, one token each per forward call.
  public var batchedDecodeTokensPerSecond: Double

  /// A human-readable description.
  public var description: String {
    String(
      format: "threads %d | prefill %d tok: %.1f tok/s | decode batch 1: %.1f tok/s | decode %d seqs (%d-token prompts): %.1f tok/s total",
      threads, promptTokens, prefillTokensPerSecond, decodeTokensPerSecond, batchSequences, batchPromptTokens,
      batchedDecodeTokensPerSecond)
  }
}

extension Engine {
  /// Measures prefill, batch-1 decode and batched decode throughput on synthetic token ids.
  /// - Parameters:
  ///   - promptTokens: prompt length for the prefill measurement (llama-bench's pp).
  ///   - decodeTokens: tokens generated at batch 1 from an empty context (llama-bench's tg).
  ///   - batchSequences: sequences decoded together in the batched measurement.
  ///   - batchPromptTokens: prompt length of each of those sequences (llama-batched-bench's npp).
  ///   - batchSteps: forward calls timed in the batched measurement.
  ///   - repetitions: each figure is the median of this many runs.
  ///   - kvCachePrecision: how the cache stores keys and values.
  public func benchmark(
    promptTokens: Int = 128, decodeTokens: Int = 64, batchSequences: Int = 32, batchPromptTokens: Int = 128,
    batchSteps: Int = 16, repetitions: Int = 3, kvCachePrecision: KVCachePrecision = .float32
  ) throws -> BenchmarkResult {
    let vocab = model.hyperparameters.vocabSize
    var rng = Xoshiro256(seed: 1234)
    func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(vocab)) } }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    let now = { DispatchTime.now().uptimeNanoseconds }
    let capacity = max(promptTokens + decodeTokens, batchSequences * (batchPromptTokens + batchSteps + 16)) + 64
    let cache = try makeCache(capacityTokens: capacity, precision: kvCachePrecision)

    var prefill: [Double] = []
    var decode: [Double] = []
    var batched: [Double] = []
    for _ in 0..<max(1, repetitions) {
      cache.removeAll()
      try cache.addSequence(0)
      let prompt = tokens(promptTokens)
      var t0 = now()
      var out = try forward([BatchItem(sequence: 0, tokens: prompt)], cache: cache)
      prefill.append(Double(promptTokens) / (Double(now() - t0) / 1e9))

      // Decode from an empty context, as llama-bench's tg test does (its peer figure).
      cache.removeAll()
      try cache.addSequence(0)
      var next = Int32(argmax(out[0].logits))
      t0 = now()
      for _ in 0..<decodeTokens {
        out = try forward([BatchItem(sequence: 0, tokens: [next])], cache: cache)
        next = Int32(argmax(out[0].logits))
      }
      decode.append(Double(decodeTokens) / (Double(now() - t0) / 1e9))

      cache.removeAll()
      var items: [BatchItem] = []
      for s in 0..<batchSequences {
        try cache.addSequence(SequenceID(s))
        items.append(BatchItem(sequence: SequenceID(s), tokens: tokens(batchPromptTokens)))
      }
      out = try forward(items, cache: cache)
      t0 = now()
      for _ in 0..<batchSteps {
        items = out.map { BatchItem(sequence: $0.sequence, tokens: [Int32(argmax($0.logits))]) }
        out = try forward(items, cache: cache)
      }
      batched.append(Double(batchSteps * batchSequences) / (Double(now() - t0) / 1e9))
    }
    return BenchmarkResult(
      threads: settings.threads, promptTokens: promptTokens, prefillTokensPerSecond: median(prefill),
      decodeTokens: decodeTokens, decodeTokensPerSecond: median(decode), batchSequences: batchSequences,
      batchPromptTokens: batchPromptTokens, batchedDecodeTokensPerSecond: median(batched))
  }
}
