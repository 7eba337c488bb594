import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// A float16 KV cache (the server's default) stores each key and value rounded to IEEE half:
/// results stay within rounding of the float32 cache's (which matches transformers to 1e-4), and
/// everything a float32 cache guarantees beyond exactness (forks, copy on write, batch
/// invariance) holds.
@Suite("KV cache precision")
struct KVCachePrecisionTests {
  let engine: Engine
  let exp: EngineFixtures.Expected

  init() throws {
    (engine, exp) = try EngineFixtures.tinyQwen3()
  }

  /// Token-by-token logits of `sequence` through a fresh cache of `precision`.
  func decode(_ sequence: [Int32], _ precision: KVCachePrecision, blockSize: Int = 4) throws -> [Float] {
    let cache = try engine.makeCache(capacityTokens: 64, blockSize: blockSize, precision: precision)
    try cache.addSequence(0)
    var rows: [Float] = []
    for t in sequence { rows += try engine.forward([BatchItem(sequence: 0, tokens: [t])], cache: cache)[0].logits }
    return rows
  }

  @Test("float16 decoding stays within half rounding of transformers' logits, and differs from float32")
  func halfIsCloseNotExact() throws {
    for (sequence, want) in zip(exp.sequences, exp.logits) {
      let half = try decode(sequence, .float16)
      let full = try decode(sequence, .float32)
      #expect(engineRelativeError(full, want) < 1e-4)
      // Halves keep 11 significant bits: relative rounding 2^-11 ≈ 5e-4 per key and value.
      #expect(engineRelativeError(half, want) < 1e-2)
      // The cache really holds halves (a float32 cache behind the name would be exact).
      #expect(half != full)
    }
  }

  @Test("on a float16 cache, fork, copy on write of a shared block and batching give exactly the tokens run alone")
  func halfKeepsTheCacheGuarantees() throws {
    let sequence = exp.sequences[2]
    let alone = try decode(sequence, .float16)
    // The same tokens after a fork of a shared, partly filled block (copy on write at block size 4).
    let cache = try engine.makeCache(capacityTokens: 64, blockSize: 4, precision: .float16)
    try cache.addSequence(0)
    let split = 6
    var rows: [Float] = []
    for t in sequence.prefix(split) { rows += try engine.forward([BatchItem(sequence: 0, tokens: [t])], cache: cache)[0].logits }
    try cache.fork(0, into: 1)
    var forked = rows
    for t in sequence.dropFirst(split) {
      let out = try engine.forward(
        [BatchItem(sequence: 0, tokens: [t]), BatchItem(sequence: 1, tokens: [t])], cache: cache)
      rows += out[0].logits
      forked += out[1].logits
    }
    #expect(rows == alone)
    #expect(forked == alone)
  }

  @Test(
    "SmolLM2 on a float16 cache: a 60-token prompt's logits within 2% of the logit range, same top token almost everywhere",
    .enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func smolLM2Agrees() throws {
    let model = try TransformerModel(ggufPath: EngineFixtures.smolLM2)
    let engine = try Engine(model: model, settings: EngineSettings())
    let tokenizer = try Tokenizer(TokenizerDescription(gguf: try GGUFFile(path: EngineFixtures.smolLM2)))
    let prompt = tokenizer.encode(
      "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        + "movable metal type, oil-based inks and a screw press adapted from wine making. Within fifty years "
        + "presses were running in more than two hundred European cities.", addSpecialTokens: true)
    #expect(prompt.count >= 40)
    func logits(_ precision: KVCachePrecision) throws -> [Float] {
      let cache = try engine.makeCache(capacityTokens: 128, precision: precision)
      try cache.addSequence(0)
      return try engine.forward([BatchItem(sequence: 0, tokens: prompt, logits: .all)], cache: cache)[0].logits
    }
    let full = try logits(.float32), half = try logits(.float16)
    #expect(engineRelativeError(half, full) < 2e-2)
    let vocab = model.hyperparameters.vocabSize
    func argmax(_ row: ArraySlice<Float>) -> Int { row.indices.max { row[$0] < row[$1] }! - row.startIndex }
    let agree = (0..<prompt.count).filter { i in
      argmax(full[(i * vocab)..<((i + 1) * vocab)]) == argmax(half[(i * vocab)..<((i + 1) * vocab)])
    }.count
    #expect(Double(agree) >= 0.95 * Double(prompt.count), "top token agrees at \(agree) of \(prompt.count) positions")
  }
}
