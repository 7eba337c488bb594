import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// Paths of the engine's committed fixtures.
enum EngineFixtures {
  static let root: String = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
  static func tiny(_ name: String) -> String { root + "/tiny-models/" + name }
  static let smolLM2: String = TestModels.defaultPolicy

  struct Expected: Decodable {
    let sequences: [[Int32]]
    let logits: [[Float]]
    let last_hidden: [[Float]]
  }

  static func expected(_ path: String) throws -> Expected {
    try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
  }

  /// The tiny Qwen3 (float32) on an engine that splits batches into steps of 8 tokens, with the
  /// transformers outputs it must reproduce: what the batching and cache suites run on.
  static func tinyQwen3() throws -> (engine: Engine, expected: Expected) {
    let dir = tiny("qwen3-f32")
    let engine = try Engine(model: TransformerModel(path: dir), settings: EngineSettings(maxBatchTokens: 8))
    return (engine, try expected(dir + "/expected.json"))
  }
}

/// Largest |a - b| divided by the range of `b`.
func engineRelativeError(_ a: [Float], _ b: [Float]) -> Float {
  precondition(a.count == b.count, "length mismatch \(a.count) vs \(b.count)")
  let range = (b.max() ?? 0) - (b.min() ?? 0)
  var worst: Float = 0
  for i in a.indices { worst = max(worst, abs(a[i] - b[i])) }
  return worst / max(range, 1e-12)
}

func engineRunAll(_ engine: Engine, _ tokens: [Int32]) throws -> [Float] {
  let cache = try engine.makeCache(capacityTokens: 256)
  try cache.addSequence(0)
  let out = try engine.forward([BatchItem(sequence: 0, tokens: tokens, logits: .all)], cache: cache)
  return out[0].logits
}

@Suite("Model logits vs transformers")
struct ModelLogitsTests {
  static let hfModels = ["llama-f32", "llama-bf16", "qwen2-f32", "qwen2-bf16", "qwen3-f32", "qwen3-bf16"]

  @Test("HF folder logits match transformers within 1e-4 of the logit range", arguments: hfModels)
  func hfLogits(name: String) throws {
    let dir = EngineFixtures.tiny(name)
    let model = try TransformerModel(path: dir)
    let engine = try Engine(model: model)
    let exp = try EngineFixtures.expected(dir + "/expected.json")
    for (i, seq) in exp.sequences.enumerated() {
      let got = try engineRunAll(engine, seq)
      #expect(engineRelativeError(got, exp.logits[i]) < 1e-4, "\(name) sequence \(i)")
    }
  }

  @Test("GGUF logits match transformers on the stored weights", arguments: [
    ("llama-f32", 0), ("llama-q8_0", 0), ("llama-q4_1", 0), ("qwen2-f32", 0), ("llama-q4_1", 1 << 30),
  ])
  func ggufLogits(name: String, denseLimit: Int) throws {
    let path = EngineFixtures.tiny("gguf/\(name).gguf")
    let model = try TransformerModel(path: path, options: ModelLoadOptions(denseCopyLimitBytes: denseLimit))
    let engine = try Engine(model: model)
    let exp = try EngineFixtures.expected(EngineFixtures.tiny("gguf/\(name).expected.json"))
    for (i, seq) in exp.sequences.enumerated() {
      let got = try engineRunAll(engine, seq)
      #expect(engineRelativeError(got, exp.logits[i]) < 1e-4, "\(name) sequence \(i)")
    }
  }

  @Test("Token-by-token decoding of quantized GGUF: exact with float activations, close with Q8 activations",
    arguments: ["llama-q8_0", "llama-q4_1"])
  func ggufDecode(name: String) throws {
    let model = try TransformerModel(path: EngineFixtures.tiny("gguf/\(name).gguf"))
    let exp = try EngineFixtures.expected(EngineFixtures.tiny("gguf/\(name).expected.json"))
    // Q8 activations (llama.cpp's scheme) round each activation block to 8 bits: ~0.4% relative
    // error per product, which after two layers stays well under 2% of the logit range.
    for (quantized, tolerance) in [(false, Float(1e-4)), (true, Float(2e-2))] {
      let engine = try Engine(model: model, settings: EngineSettings(quantizedActivations: quantized))
      let cache = try engine.makeCache(capacityTokens: 64)
      try cache.addSequence(0)
      var rows: [Float] = []
      for t in exp.sequences[2] {
        rows += try engine.forward([BatchItem(sequence: 0, tokens: [t])], cache: cache)[0].logits
      }
      let err = engineRelativeError(rows, exp.logits[2])
      #expect(err < tolerance, "\(name) quantized activations: \(quantized)")
      if quantized { #expect(err > 0) }
    }
  }

  @Test("Sequence classification score and last hidden state match transformers")
  func reward() throws {
    let dir = EngineFixtures.tiny("llama-reward")
    let model = try TransformerModel(path: dir)
    #expect(model.hyperparameters.head == .sequenceClassification(labels: 1))
    let engine = try Engine(model: model)
    let exp = try EngineFixtures.expected(dir + "/expected.json")
    let scores = try engine.classify(exp.sequences)
    for i in exp.sequences.indices {
      #expect(scores[i].count == 1)
      #expect(abs(scores[i][0] - exp.logits[i][0]) < 1e-4 * max(1, abs(exp.logits[i][0])))
    }
    let cache = try engine.makeCache(capacityTokens: 64)
    try cache.addSequence(7)
    let out = try engine.forward([BatchItem(sequence: 7, tokens: exp.sequences[0], wantHidden: true)], cache: cache)
    #expect(engineRelativeError(out[0].hidden ?? [], exp.last_hidden[0]) < 1e-4)
  }
}

@Suite("Batched forward and KV cache")
struct BatchingTests {
  let engine: Engine
  let exp: EngineFixtures.Expected

  init() throws {
    (engine, exp) = try EngineFixtures.tinyQwen3()
  }

  @Test("One batch of sequences at different positions equals each run alone")
  func batchEqualsSingle() throws {
    let cache = try engine.makeCache(capacityTokens: 256)
    // Prefill a prefix of each sequence, then run the rest of all of them in one call.
    for (i, s) in exp.sequences.enumerated() {
      try cache.addSequence(SequenceID(i))
      _ = try engine.forward([BatchItem(sequence: SequenceID(i), tokens: Array(s.prefix(i + 1)), logits: .none)], cache: cache)
    }
    let items = exp.sequences.enumerated().map { i, s in
      BatchItem(sequence: SequenceID(i), tokens: Array(s.dropFirst(i + 1)), logits: .all)
    }
    let out = try engine.forward(items, cache: cache)
    let vocab = engine.model.hyperparameters.vocabSize
    for (i, s) in exp.sequences.enumerated() {
      let want = Array(exp.logits[i][((i + 1) * vocab)...])
      #expect(out[i].rows == s.count - i - 1)
      #expect(engineRelativeError(out[i].logits, want) < 1e-4)
      #expect(cache.length(of: SequenceID(i)) == s.count)
    }
  }

  @Test("Token-by-token decoding equals the full forward")
  func incremental() throws {
    let cache = try engine.makeCache(capacityTokens: 64, blockSize: 4)
    try cache.addSequence(3)
    let seq = exp.sequences[2]
    var rows: [Float] = []
    for t in seq {
      let out = try engine.forward([BatchItem(sequence: 3, tokens: [t])], cache: cache)
      rows += out[0].logits
    }
    #expect(engineRelativeError(rows, exp.logits[2]) < 1e-4)
  }

  @Test("Forked sequences share the prefix and diverge independently; truncate rewinds")
  func forkAndTruncate() throws {
    let cache = try engine.makeCache(capacityTokens: 64, blockSize: 4)
    let seq = exp.sequences[2]
    let vocab = engine.model.hyperparameters.vocabSize
    try cache.addSequence(0)
    _ = try engine.forward([BatchItem(sequence: 0, tokens: Array(seq.prefix(6)), logits: .none)], cache: cache)
    let freeAfterPrefill = cache.freeTokens
    try cache.fork(0, into: 1)
    try cache.fork(0, into: 2)
    #expect(cache.freeTokens == freeAfterPrefill)
    // seq 1 continues with the true tokens; seq 2 with different ones; seq 0 with the true ones too.
    let out = try engine.forward([
      BatchItem(sequence: 1, tokens: Array(seq[6..<10]), logits: .all),
      BatchItem(sequence: 2, tokens: [9, 9, 9], logits: .last),
      BatchItem(sequence: 0, tokens: Array(seq[6..<8]), logits: .all),
    ], cache: cache)
    #expect(engineRelativeError(out[0].logits, Array(exp.logits[2][(6 * vocab)..<(10 * vocab)])) < 1e-4)
    #expect(engineRelativeError(out[2].logits, Array(exp.logits[2][(6 * vocab)..<(8 * vocab)])) < 1e-4)
    // Truncate seq 2 back to the shared prefix and continue with the true tokens.
    try cache.truncate(2, to: 6)
    let again = try engine.forward([BatchItem(sequence: 2, tokens: Array(seq[6..<9]), logits: .all)], cache: cache)
    #expect(engineRelativeError(again[0].logits, Array(exp.logits[2][(6 * vocab)..<(9 * vocab)])) < 1e-4)
    cache.removeAll()
    #expect(cache.freeTokens == cache.capacityTokens)
  }

  @Test("Decode rows are bitwise batch-invariant for quantized weights", arguments: ["llama-q4_1", "llama-q8_0"])
  func batchInvariance(name: String) throws {
    let engine = try Engine(model: TransformerModel(path: EngineFixtures.tiny("gguf/\(name).gguf")))
    let seq = exp.sequences[2]
    // Alone.
    let alone = try engine.makeCache(capacityTokens: 128)
    try alone.addSequence(0)
    _ = try engine.forward([BatchItem(sequence: 0, tokens: Array(seq.prefix(8)), logits: .none)], cache: alone)
    let ref = try engine.forward([BatchItem(sequence: 0, tokens: [seq[8]])], cache: alone)[0].logits
    // With other decoding sequences and a prompt being prefilled in the same call.
    let shared = try engine.makeCache(capacityTokens: 256)
    for s in 0..<6 { try shared.addSequence(SequenceID(s)) }
    _ = try engine.forward([BatchItem(sequence: 0, tokens: Array(seq.prefix(8)), logits: .none)], cache: shared)
    for s in 1..<5 {
      _ = try engine.forward([BatchItem(sequence: SequenceID(s), tokens: [Int32(s), 7, 9], logits: .none)], cache: shared)
    }
    var items = [BatchItem(sequence: 5, tokens: Array(exp.sequences[1]))]
    items += (1..<5).map { BatchItem(sequence: SequenceID($0), tokens: [Int32(40 + $0)]) }
    items.insert(BatchItem(sequence: 0, tokens: [seq[8]]), at: 2)
    let out = try engine.forward(items, cache: shared)
    #expect(out[2].sequence == 0)
    #expect(out[2].logits == ref)
  }

  @Test("A full cache throws and leaves the sequences unchanged")
  func cacheFull() throws {
    let cache = try engine.makeCache(capacityTokens: 8, blockSize: 4)
    try cache.addSequence(0)
    _ = try engine.forward([BatchItem(sequence: 0, tokens: [1, 2, 3, 4, 5], logits: .none)], cache: cache)
    #expect(throws: EngineError.self) {
      try engine.forward([BatchItem(sequence: 0, tokens: [1, 2, 3, 4])], cache: cache)
    }
    #expect(cache.length(of: 0) == 5)
    #expect(throws: EngineError.self) { try engine.forward([BatchItem(sequence: 9, tokens: [1])], cache: cache) }
    #expect(throws: EngineError.self) { try engine.forward([BatchItem(sequence: 0, tokens: [999])], cache: cache) }
  }
}

@Suite("SmolLM2 smoke", .enabled(if: FileManager.default.fileExists(atPath: EngineFixtures.smolLM2)))
struct SmolLM2SmokeTests {
  @Test("Loads and produces finite logits")
  func finite() throws {
    let model = try TransformerModel(path: EngineFixtures.smolLM2)
    let hp = model.hyperparameters
    #expect(hp.architecture == .llama && hp.layerCount == 30 && hp.hiddenSize == 576 && hp.vocabSize == 49152)
    #expect(model.metadata.eosTokenIDs.contains(2))
    #expect(model.gguf?.string("tokenizer.ggml.model") == "gpt2")
    let engine = try Engine(model: model)
    let logits = try engine.logits(tokens: [1, 504, 3458, 282, 4649, 314])
    #expect(logits.count == 6 * hp.vocabSize)
    #expect(logits.allSatisfy { $0.isFinite })
    let greedy = try engine.greedy(prompt: [1, 504, 3458, 282, 4649, 314], maxTokens: 4)
    #expect(greedy.count == 4)
    // Streaming teacher-forced rows agree with the all-at-once rows.
    var top: [Int] = []
    try engine.forEachLogitsRow(tokens: [1, 504, 3458, 282, 4649, 314]) { _, row in top.append(argmax(row)) }
    #expect(top == (0..<6).map { argmax(logits[($0 * hp.vocabSize)..<(($0 + 1) * hp.vocabSize)]) })
  }
}

@Suite("Machine roofs", .enabled(if: FileManager.default.fileExists(atPath: EngineFixtures.smolLM2)))
struct MachineRoofsTests {
  @Test("weights per token come from the model's shapes, and the roofs divide the measured peaks by them")
  func roofsOfSmolLM2() throws {
    let model = try TransformerModel(path: EngineFixtures.smolLM2)
    let hp = model.hyperparameters
    let h = hp.hiddenSize, kv = hp.kvDim, ff = hp.intermediateSize
    // q, o: h×h; k, v: kv×h; gate, up, down: ff×h; the tied output head: vocab×h.
    #expect(model.matrixParameters == hp.layerCount * (2 * h * h + 2 * kv * h + 3 * ff * h) + hp.vocabSize * h)
    // Q4_1 matrices: 20 bytes per 32 weights; the Q8_0 output head: 34 bytes per 32.
    #expect(model.weightBytes == hp.layerCount * (2 * h * h + 2 * kv * h + 3 * ff * h) / 32 * 20 + hp.vocabSize * h / 32 * 34)

    let roofs = MachineRoofs.measure(threads: 2, bufferBytes: 64 << 20, runs: 1)
    #expect(roofs.readBytesPerSecond > 1e8 && roofs.readBytesPerSecond.isFinite)
    #expect(roofs.readBytesPerSecondOneThread > 1e8 && roofs.readBytesPerSecondOneThread.isFinite)
    #expect(roofs.decodeRoof(weightBytes: model.weightBytes) == roofs.readBytesPerSecond / Double(model.weightBytes))
    let peaks = [roofs.int8MultiplyAddsPerSecond, roofs.f32MultiplyAddsPerSecond].compactMap { $0 }
    #expect(peaks.allSatisfy { $0 > 1e8 && $0.isFinite })
    #expect(roofs.computeRoof(matrixParameters: model.matrixParameters) == peaks.max().map { $0 / Double(model.matrixParameters) })
  }
}

