@_spi(KernelTesting) import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// One binary, kernels picked at run time: every kernel set this CPU supports (on an AVX2 x86-64
/// machine all three: avx2, sse2, portable) must give exactly the bits of the others — row products
/// of random Q4_0/Q4_1/Q8_0 matrices alone and in batches, half conversions, and whole models'
/// logits on float32 and float16 caches. Bit patterns are compared, not values within a tolerance.
@Suite("Kernel dispatch")
struct KernelDispatchTests {
  /// FNV-1a over the bit patterns of floats: a short, exact fingerprint for messages.
  static func digest(_ values: [Float]) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for v in values {
      var bits = v.bitPattern
      for _ in 0..<4 {
        hash = (hash ^ UInt64(bits & 0xff)) &* 0x100_0000_01b3
        bits >>= 8
      }
    }
    return String(hash, radix: 16)
  }

  /// Index of the first element whose bits differ, nil when all are equal.
  static func firstDifference(_ a: [Float], _ b: [Float]) -> Int? {
    if a.count != b.count { return min(a.count, b.count) }
    return a.indices.first { a[$0].bitPattern != b[$0].bitPattern }
  }

  struct Generator {
    var rng = Xoshiro256(seed: 2026)
    /// Uniform in [0, 1).
    mutating func unit() -> Float { Float(rng.next() >> 40) / Float(1 << 24) }
    mutating func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

    static func half(_ x: Float) -> [UInt8] {
      let b = Float16(x).bitPattern
      return [UInt8(b & 0xff), UInt8(b >> 8)]
    }

    /// `rows × cols` weights in the file layout of `type`: random quants (Q8_0 includes −128),
    /// scales of both signs (llama.cpp's Q4_0 and Q8_0 scales can be negative), Q4_1 minimums of
    /// both signs.
    mutating func weights(_ type: GGMLType, rows: Int, cols: Int) -> [UInt8] {
      var out: [UInt8] = []
      for _ in 0..<(rows * cols / 32) {
        let d = (0.5 + unit()) * Float(1 << below(7)) / 1024 * (below(4) == 0 ? -1 : 1)
        out += Self.half(d)
        switch type {
        case .q4_1:
          out += Self.half((unit() - 0.7) * 0.2)
          for _ in 0..<16 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
        case .q4_0:
          for _ in 0..<16 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
        default:
          for _ in 0..<32 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
        }
      }
      return out
    }

    /// Activations with a different magnitude per token, some all-zero blocks and single outliers.
    mutating func activations(tokens: Int, cols: Int) -> [Float] {
      var x = [Float](repeating: 0, count: tokens * cols)
      for t in 0..<tokens {
        let scale = Float(pow(10, Double(below(6)) - 3))
        for b in 0..<(cols / 32) {
          let kind = below(16)
          if kind == 0 { continue }
          for j in 0..<32 { x[t * cols + 32 * b + j] = (unit() * 2 - 1) * scale }
          if kind == 1 { x[t * cols + 32 * b + below(32)] = 40 * scale }
        }
      }
      return x
    }
  }

  @Test("this machine runs at least the portable and (x86-64) SSE2 sets; the detected set is the first supported")
  func supportedSets() {
    #expect(KernelSet.supported.contains(.portable))
    #if arch(x86_64)
    #expect(KernelSet.supported.contains(.sse2))
    #expect(KernelSet.supported.contains(.avx2) == CPUFeatures.current.hasAVX2Set)
    #endif
    #expect(KernelSet.detected == KernelSet.supported[0])
    let current = CPUFeatures.current
    #expect(current.summary.contains("SIMD flags"))
  }

  @Test("row products: every supported set gives the same bits, alone and in batches of 1…21, plain and accumulating")
  func rowProductsAgree() throws {
    let tokenCounts = [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 21]
    let maxTokens = tokenCounts.max()!
    let shapes = [(rows: 3, cols: 64), (rows: 8, cols: 32), (rows: 37, cols: 96), (rows: 67, cols: 576)]
    var gen = Generator()
    var compared = 0
    for type in [GGMLType.q4_0, .q4_1, .q8_0] {
      for (rows, cols) in shapes {
        let w = gen.weights(type, rows: rows, cols: cols)
        let x = gen.activations(tokens: maxTokens, cols: cols)
        let base = (0..<(maxTokens * rows)).map { _ in gen.unit() * 2 - 1 }
        var reference: [Int: [Float]] = [:]  // token count -> the first set's output
        var referenceAccumulated: [Float]? = nil
        for set in KernelSet.supported {
          // Each token alone: what every batch of this set must reproduce bit for bit.
          var alone: [Float] = []
          for t in 0..<maxTokens {
            alone += try KernelProbe.rowProducts(
              type: type, rows: rows, cols: cols, weights: w, activations: Array(x[(t * cols)..<((t + 1) * cols)]),
              tokens: 1, kernels: set)
          }
          for n in tokenCounts {
            let y = try KernelProbe.rowProducts(
              type: type, rows: rows, cols: cols, weights: w, activations: x, tokens: n, kernels: set)
            let label = "\(set) \(type) \(rows)x\(cols) batch \(n)"
            if let i = Self.firstDifference(y, Array(alone.prefix(n * rows))) {
              Issue.record("\(label): token \(i / rows) row \(i % rows) is \(y[i]) in the batch, \(alone[i]) alone")
            }
            if let want = reference[n] {
              if let i = Self.firstDifference(y, want) {
                Issue.record("\(label): element \(i) is \(y[i]), \(KernelSet.supported[0]) gives \(want[i]) (digests \(Self.digest(y)) vs \(Self.digest(want)))")
              }
              compared += 1
            } else {
              reference[n] = y
            }
          }
          let accumulated = try KernelProbe.rowProducts(
            type: type, rows: rows, cols: cols, weights: w, activations: x, tokens: maxTokens, kernels: set,
            accumulate: base)
          let sums = zip(base, alone).map { $0 + $1 }
          if let i = Self.firstDifference(accumulated, sums) {
            Issue.record("\(set) \(type) \(rows)x\(cols): accumulated element \(i) is \(accumulated[i]), want \(sums[i])")
          }
          if let want = referenceAccumulated, let i = Self.firstDifference(accumulated, want) {
            Issue.record("\(set) \(type) \(rows)x\(cols): accumulated element \(i) differs from \(KernelSet.supported[0])")
          }
          referenceAccumulated = referenceAccumulated ?? accumulated
        }
      }
    }
    #expect(compared == 3 * shapes.count * tokenCounts.count * (KernelSet.supported.count - 1))
  }

  @Test("half conversion: every supported set converts all 63,488 finite halves and ±inf exactly")
  func halvesConvertExactly() throws {
    let bits = (0...UInt16.max).filter { !Float16(bitPattern: $0).isNaN }
    let want = bits.map { Float(Float16(bitPattern: $0)) }
    for set in KernelSet.supported {
      let got = try KernelProbe.halvesToFloats(bits, kernels: set)
      if let i = Self.firstDifference(got, want) {
        Issue.record("\(set): half 0x\(String(bits[i], radix: 16)) became \(got[i]), want \(want[i])")
      }
    }
    // NaNs stay NaNs.
    for set in KernelSet.supported {
      let nan = try KernelProbe.halvesToFloats([0x7e00, 0xfe00, 0x7c01], kernels: set)
      #expect(nan.allSatisfy { $0.isNaN }, "\(set)")
    }
  }

  /// Logits of a prefill, a step mixing prefill and decode, and a decode step of three sequences.
  static func modelSteps(_ path: String, kernels: KernelSet, precision: KVCachePrecision) throws -> [Float] {
    let engine = try Engine(model: TransformerModel(path: path), settings: EngineSettings(kernels: kernels))
    #expect(engine.kernels == kernels)
    let vocab = engine.model.hyperparameters.vocabSize
    var gen = Generator()
    func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(gen.below(vocab)) } }
    let cache = try engine.makeCache(capacityTokens: 512, precision: precision)
    for s in 0..<3 { try cache.addSequence(SequenceID(s)) }
    var logits: [Float] = []
    // Long enough that a float16 cache is read in more than one span of positions.
    for step in [
      [BatchItem(sequence: 0, tokens: tokens(150), logits: .all)],
      [BatchItem(sequence: 1, tokens: tokens(9), logits: .all), BatchItem(sequence: 0, tokens: tokens(1))],
      [BatchItem(sequence: 2, tokens: tokens(1)), BatchItem(sequence: 0, tokens: tokens(1)),
       BatchItem(sequence: 1, tokens: tokens(1))],
    ] {
      for out in try engine.forward(step, cache: cache) { logits += out.logits }
    }
    return logits
  }

  static var models: [String] {
    var paths = ["llama-q4_1.gguf", "llama-q8_0.gguf", "llama-f32.gguf"].map { EngineFixtures.tiny("gguf/" + $0) }
    if FileManager.default.fileExists(atPath: EngineFixtures.smolLM2) { paths.append(EngineFixtures.smolLM2) }
    return paths
  }

  @Test("model logits: every supported set gives the same bits on float32 and float16 caches", arguments: models)
  func modelLogitsAgree(path: String) throws {
    for precision in KVCachePrecision.allCases {
      var reference: [Float]? = nil
      for set in KernelSet.supported {
        let logits = try Self.modelSteps(path, kernels: set, precision: precision)
        #expect(logits.allSatisfy { $0.isFinite })
        if let want = reference {
          let i = Self.firstDifference(logits, want)
          #expect(
            i == nil,
            "\((path as NSString).lastPathComponent) \(precision) \(set): logit \(i ?? -1) differs from \(KernelSet.supported[0]) (digests \(Self.digest(logits)) vs \(Self.digest(want)))")
        } else {
          reference = logits
        }
      }
    }
  }

  @Test("ALIGND_KERNELS: unset gives the detected set; a name picks it; an unknown name or a set the CPU lacks is refused")
  func environmentOverride() throws {
    let unset = try KernelSet.preferred(environment: [:])
    let named = try KernelSet.preferred(environment: ["ALIGND_KERNELS": "portable"])
    let upper = try KernelSet.preferred(environment: ["ALIGND_KERNELS": "PORTABLE"])
    #expect(unset == KernelSet.detected)
    #expect(named == .portable && upper == .portable)
    #expect(throws: EngineError.self) { try KernelSet.preferred(environment: ["ALIGND_KERNELS": "avx9"]) }
    for set in KernelSet.allCases where !KernelSet.supported.contains(set) {
      #expect(throws: EngineError.self) { try KernelSet.preferred(environment: ["ALIGND_KERNELS": set.rawValue]) }
      #expect(throws: EngineError.self) {
        try Engine(model: TransformerModel(path: EngineFixtures.tiny("gguf/llama-f32.gguf")), settings: EngineSettings(kernels: set))
      }
    }
  }

  @Test("CPU features: /proc/cpuinfo flags decide whether the AVX2 set can run")
  func cpuinfoParsing() {
    let haswell = CPUFeatures.parse(cpuinfo: """
      processor\t: 0
      model name\t: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
      flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2

      processor\t: 1
      flags\t\t: fpu
      """)
    #expect(haswell.model == "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz")
    #expect(haswell.hasAVX2Set)
    #expect(haswell.summary.contains("avx2 fma f16c"))
    let sandyBridge = CPUFeatures.parse(cpuinfo: "model name\t: Intel(R) Xeon(R) CPU E5-2670\nflags\t\t: fpu sse sse2 avx\n")
    #expect(!sandyBridge.hasAVX2Set)
    let graviton = CPUFeatures.parse(cpuinfo: "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n")
    #expect(graviton.flags.contains("asimd") && !graviton.hasAVX2Set)
    // Both must say so: CPUID without AVX2 under an emulator that shows the host's /proc/cpuinfo…
    let emulated = CPUFeatures(model: haswell.model, flags: haswell.flags, cpuid: [])
    #expect(!emulated.hasAVX2Set)
    #expect(emulated.summary.contains("CPUID: none"))
    // …and the OS hiding AVX2 (booted without AVX state) although CPUID has it.
    #expect(!CPUFeatures(model: "", flags: sandyBridge.flags, cpuid: .avx2Set).hasAVX2Set)
    #expect(CPUFeatures(model: "", flags: [], cpuid: .avx2Set).hasAVX2Set)
  }
}
