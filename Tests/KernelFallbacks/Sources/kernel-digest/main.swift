// Prints digests of the exact bits the engine's quantized row kernels produce, one line per case,
// so builds with different kernels (AVX2, SSE2, portable Swift) can be compared line by line: the
// engine promises the same bits from each (RowwiseQ8.swift). Also checks, in this build, that every
// token's row has the same bits alone and in any batch, and exits 1 if not.
//
//   kernel-digest [SmolLM2-135M-Instruct.Q4_1.gguf]
//
// Cases: random Q4_0 / Q4_1 / Q8_0 matrices (row counts that are not multiples of 8 included) against
// random activations for batches of 1…21 tokens, plain and accumulating; then, when the model path is
// given and exists, the logits of a few prefill and decode steps of SmolLM2.
@testable import AlignEngine
import Foundation

/// The engine's seeded generator, so every build sees the same inputs.
extension Xoshiro256 {
  /// Uniform in [0, 1).
  mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }
  mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// FNV-1a over the bit patterns of floats.
struct Digest {
  var hash: UInt64 = 0xcbf2_9ce4_8422_2325
  mutating func add<C: Collection>(_ values: C) where C.Element == Float {
    for v in values {
      var bits = v.bitPattern
      for _ in 0..<4 {
        hash = (hash ^ UInt64(bits & 0xff)) &* 0x100_0000_01b3
        bits >>= 8
      }
    }
  }
  var hex: String { String(hash, radix: 16) }
}

func fail(_ message: String) -> Never {
  FileHandle.standardError.write(Data("kernel-digest: \(message)\n".utf8))
  exit(1)
}

func half(_ x: Float) -> [UInt8] {
  let b = Float16(x).bitPattern
  return [UInt8(b & 0xff), UInt8(b >> 8)]
}

/// `rows × cols` weights in the file layout of `type`: random quants (Q8_0 includes −128), scales of
/// both signs (llama.cpp's Q4_0 and Q8_0 scales can be negative), Q4_1 minimums of both signs.
func randomWeights(_ type: GGMLType, rows: Int, cols: Int, _ rng: inout Xoshiro256) -> [UInt8] {
  var out: [UInt8] = []
  for _ in 0..<(rows * cols / 32) {
    let d = (0.5 + rng.unit()) * Float(1 << rng.below(7)) / 1024 * (rng.below(4) == 0 ? -1 : 1)
    out += half(d)
    switch type {
    case .q4_1:
      out += half((rng.unit() - 0.7) * 0.2)
      for _ in 0..<16 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
    case .q4_0:
      for _ in 0..<16 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
    default:
      for _ in 0..<32 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
    }
  }
  return out
}

/// Activations with a different magnitude per token, some all-zero blocks and some single outliers.
func randomActivations(tokens: Int, cols: Int, _ rng: inout Xoshiro256) -> [Float] {
  var x = [Float](repeating: 0, count: tokens * cols)
  for t in 0..<tokens {
    let scale = Float(pow(10, Double(rng.below(6)) - 3))
    for b in 0..<(cols / 32) {
      let kind = rng.below(16)
      if kind == 0 { continue }
      for j in 0..<32 { x[t * cols + 32 * b + j] = (rng.unit() * 2 - 1) * scale }
      if kind == 1 { x[t * cols + 32 * b + rng.below(32)] = 40 * scale }
    }
  }
  return x
}

/// `matmul` of `tokens` rows of `x` through the row-wise kernels only.
func rowwise(
  _ w: WeightMatrix, _ x: UnsafePointer<Float>, tokens: Int, into y: inout [Float], accumulate: Bool,
  _ scratch: MatmulScratch
) {
  y.withUnsafeMutableBufferPointer {
    matmul(w, x, tokens: tokens, $0.baseAddress!, accumulate: accumulate, scratch: scratch, rowwiseTokens: tokens)
  }
}

let tokenCounts = [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 21]
let maxTokens = tokenCounts.max()!
let shapes = [(rows: 3, cols: 64), (rows: 8, cols: 32), (rows: 37, cols: 96), (rows: 67, cols: 576)]
var rng = Xoshiro256(seed: 2026)

for type in [GGMLType.q4_0, .q4_1, .q8_0] {
  for shape in shapes {
    let (rows, cols) = shape
    let bytes = randomWeights(type, rows: rows, cols: cols, &rng)
    let x = randomActivations(tokens: maxTokens, cols: cols, &rng)
    let base = (0..<(maxTokens * rows)).map { _ in rng.unit() * 2 - 1 }  // what accumulating adds to
    let scratch = MatmulScratch(threads: 1, maxCols: cols, maxTokens: maxTokens)
    var digest = Digest()
    bytes.withUnsafeBytes { raw in
      let w = WeightMatrix(
        name: "w", type: type, rows: rows, cols: cols, data: raw.baseAddress!, rowBytes: cols / 32 * type.blockBytes
      ).withPackedLayout()
      guard w.packed != nil else { fail("\(type) did not pack") }
      x.withUnsafeBufferPointer { xp in
        // Each token alone: the reference every batch must reproduce bit for bit.
        var alone = [Float](repeating: 0, count: maxTokens * rows)
        for t in 0..<maxTokens {
          var y = [Float](repeating: 0, count: rows)
          rowwise(w, xp.baseAddress! + t * cols, tokens: 1, into: &y, accumulate: false, scratch)
          alone.replaceSubrange((t * rows)..<((t + 1) * rows), with: y)
        }
        for n in tokenCounts {
          var y = [Float](repeating: .nan, count: n * rows)
          rowwise(w, xp.baseAddress!, tokens: n, into: &y, accumulate: false, scratch)
          for i in y.indices where y[i].bitPattern != alone[i].bitPattern {
            fail("\(type) \(rows)x\(cols): token \(i / rows) row \(i % rows) of a batch of \(n) is \(y[i]), alone \(alone[i])")
          }
          digest.add(y)
        }
        var y = base
        rowwise(w, xp.baseAddress!, tokens: maxTokens, into: &y, accumulate: true, scratch)
        for i in y.indices where y[i].bitPattern != (base[i] + alone[i]).bitPattern {
          fail("\(type) \(rows)x\(cols): accumulated token \(i / rows) row \(i % rows) is \(y[i]), want \(base[i] + alone[i])")
        }
        digest.add(y)
      }
    }
    print("\(type) \(rows)x\(cols): \(digest.hex)")
  }
}

if CommandLine.arguments.count > 1, FileManager.default.fileExists(atPath: CommandLine.arguments[1]) {
  do {
    let engine = try Engine(model: TransformerModel(path: CommandLine.arguments[1]))
    let vocab = engine.model.hyperparameters.vocabSize
    func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.below(vocab)) } }
    let cache = try engine.makeCache(capacityTokens: 256)
    for s in 0..<3 { try cache.addSequence(SequenceID(s)) }
    var digest = Digest()
    // Prefill of one prompt, then prefill and decode mixed in one step, then a decode step of three.
    for step in [
      [BatchItem(sequence: 0, tokens: tokens(13), logits: .all)],
      [BatchItem(sequence: 1, tokens: tokens(9), logits: .all), BatchItem(sequence: 0, tokens: tokens(1))],
      [BatchItem(sequence: 2, tokens: tokens(1)), BatchItem(sequence: 0, tokens: tokens(1)),
       BatchItem(sequence: 1, tokens: tokens(1))],
    ] {
      for out in try engine.forward(step, cache: cache) { digest.add(out.logits) }
    }
    print("smollm2 logits: \(digest.hex)")
  } catch {
    fail("SmolLM2: \(error)")
  }
}
