#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif
import Foundation

/// The ceilings this machine puts on the engine, measured in the same run as the benchmark they
/// judge (a figure means little without the roof it sits under, and machines here differ).
///
/// - Read bandwidth: a STREAM-style read of a buffer far larger than the last-level cache, on one
///   thread and on `threads` threads. Batch-1 decode reads every weight once per token, so
///   bandwidth ÷ ``TransformerModel/weightBytes`` is its roof.
/// - Compute peaks: register-resident chains of the instructions the engine's kernels are built
///   from (AVX2 `vpmaddubsw`+`vpmaddwd` for the integer products, `vfmadd` on 8 floats), with
///   enough independent accumulators to hide latency. Prefill and batched decode do about one
///   multiply-add per weight per token, so the faster peak ÷ ``TransformerModel/matrixParameters``
///   bounds them.
///   These are the peaks of the instruction mix the engine uses, not of the CPU (an AVX-512 VNNI
///   core does more int8 work per instruction than this measures). nil in builds without the AVX2
///   kernels.
public struct MachineRoofs: Sendable, Equatable {
  /// Threads of the multi-threaded measurements.
  public var threads: Int
  /// Bytes of the buffer read (the median run's).
  public var bufferBytes: Int
  /// Read bandwidth on one thread, bytes/s (median of the runs).
  public var readBytesPerSecondOneThread: Double
  /// Read bandwidth on `threads` threads, bytes/s (median of the runs).
  public var readBytesPerSecond: Double
  /// Float multiply-adds per second on `threads` threads (8-wide FMA), if measured.
  public var f32MultiplyAddsPerSecond: Double?
  /// Int8 multiply-adds per second on `threads` threads (32 per maddubs/madd pair), if measured.
  public var int8MultiplyAddsPerSecond: Double?

  /// Measures the roofs; takes a few seconds (the buffer is allocated, touched, then read `runs` times).
  public static func measure(threads: Int, bufferBytes: Int = 1 << 30, runs: Int = 5) -> MachineRoofs {
    let pool = ForkJoinPool(threads: threads)
    let one = ForkJoinPool(threads: 1)
    let bytes = max(bufferBytes / 4096 * 4096, 1 << 20)
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
    defer { buffer.deallocate() }
    // Touch every page with data that cannot be folded away (first-touch faults stay out of the timing).
    let words = buffer.bindMemory(to: UInt64.self, capacity: bytes / 8)
    for i in 0..<(bytes / 8) { words[i] = UInt64(truncatingIfNeeded: i) &* 0x9E37_79B9_7F4A_7C15 }

    let oneThread = median((0..<runs).map { _ in readBandwidth(buffer, bytes: bytes, pool: one) })
    let all = median((0..<runs).map { _ in readBandwidth(buffer, bytes: bytes, pool: pool) })
    return MachineRoofs(
      threads: pool.threads, bufferBytes: bytes, readBytesPerSecondOneThread: oneThread, readBytesPerSecond: all,
      f32MultiplyAddsPerSecond: computePeak(pool: pool, runs: runs, kernel: .f32),
      int8MultiplyAddsPerSecond: computePeak(pool: pool, runs: runs, kernel: .int8))
  }

  /// Tokens/s batch-1 decode cannot exceed: every weight byte read once per token at the measured
  /// multi-threaded bandwidth.
  public func decodeRoof(weightBytes: Int) -> Double { readBytesPerSecond / Double(max(weightBytes, 1)) }

  /// Tokens/s that prefill or batched decode cannot exceed: one multiply-add per matrix weight per
  /// token at the faster of the two measured peaks (the engine runs batches through the integer
  /// products or through sgemm depending on its settings; attention's own products are left out, a
  /// few percent at these lengths). nil when no peak was measured.
  public func computeRoof(matrixParameters: Int) -> Double? {
    let peaks = [int8MultiplyAddsPerSecond, f32MultiplyAddsPerSecond].compactMap { $0 }
    return peaks.max().map { $0 / Double(max(matrixParameters, 1)) }
  }

  private static func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

  /// One timed read of the whole buffer, split into chunks the pool's threads claim.
  private static func readBandwidth(_ buffer: UnsafeMutableRawPointer, bytes: Int, pool: ForkJoinPool) -> Double {
    let chunkBytes = 1 << 22
    let chunks = bytes / chunkBytes
    let sums = UnsafeMutablePointer<UInt64>.allocate(capacity: chunks)
    defer { sums.deallocate() }
    let base = UnsafeRawPointer(buffer)
    let start = DispatchTime.now().uptimeNanoseconds
    pool.run(chunks: chunks) { _, c in
      sums[c] = sumWords(base + c * chunkBytes, count: chunkBytes / 8)
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    var total: UInt64 = 0
    for c in 0..<chunks { total &+= sums[c] }
    blackHole(total)
    return Double(chunks * chunkBytes) / seconds
  }

  /// Sum of `count` words with four independent vector accumulators (loads, not latency, bound it).
  @inline(never)
  private static func sumWords(_ p: UnsafeRawPointer, count: Int) -> UInt64 {
    let v = p.assumingMemoryBound(to: SIMD4<UInt64>.self)
    var a = SIMD4<UInt64>(), b = a, c = a, d = a
    var i = 0
    let n = count / 4
    while i + 4 <= n {
      a &+= v[i]
      b &+= v[i + 1]
      c &+= v[i + 2]
      d &+= v[i + 3]
      i += 4
    }
    let s = a &+ b &+ c &+ d
    return s[0] &+ s[1] &+ s[2] &+ s[3]
  }

  private enum ComputeKernel { case f32, int8 }

  /// Multiply-adds per second of `kernel` on every thread of `pool` (median of `runs`), nil without
  /// the AVX2 kernels.
  private static func computePeak(pool: ForkJoinPool, runs: Int, kernel: ComputeKernel) -> Double? {
    #if arch(x86_64) && ALIGN_AVX2 && !ALIGN_PORTABLE_KERNELS
    let chunks = pool.threads * 8
    let iterations = 200_000
    let sink = UnsafeMutablePointer<Float>.allocate(capacity: chunks)
    defer { sink.deallocate() }
    var rates: [Double] = []
    for _ in 0..<max(runs, 1) {
      let start = DispatchTime.now().uptimeNanoseconds
      pool.run(chunks: chunks) { _, c in
        sink[c] = kernel == .f32 ? fmaChains(iterations, seed: Float(c)) : maddChains(iterations, seed: Int8(c))
      }
      let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      // Per iteration: 10 chains × 8 lanes (f32) or 10 chains × 32 byte products (int8).
      let perIteration = kernel == .f32 ? 80.0 : 320.0
      rates.append(Double(chunks) * Double(iterations) * perIteration / seconds)
    }
    var kept: Float = 0
    for c in 0..<chunks { kept += sink[c] }
    blackHole(UInt64(kept.bitPattern))
    return median(rates)
    #else
    return nil
    #endif
  }

  #if arch(x86_64) && ALIGN_AVX2 && !ALIGN_PORTABLE_KERNELS
  /// Ten independent 8-wide FMA chains (FMA latency 4–5 cycles × 2 ports).
  @inline(never)
  private static func fmaChains(_ iterations: Int, seed: Float) -> Float {
    let m = _mm256_set1_ps(0.999_999), k = _mm256_set1_ps(1e-7)
    func start(_ k: Float) -> __m256 { _mm256_set1_ps(seed + k) }
    var a0 = start(0), a1 = start(1), a2 = start(2), a3 = start(3), a4 = start(4)
    var a5 = start(5), a6 = start(6), a7 = start(7), a8 = start(8), a9 = start(9)
    for _ in 0..<iterations {
      a0 = _mm256_fmadd_ps(a0, m, k); a1 = _mm256_fmadd_ps(a1, m, k)
      a2 = _mm256_fmadd_ps(a2, m, k); a3 = _mm256_fmadd_ps(a3, m, k)
      a4 = _mm256_fmadd_ps(a4, m, k); a5 = _mm256_fmadd_ps(a5, m, k)
      a6 = _mm256_fmadd_ps(a6, m, k); a7 = _mm256_fmadd_ps(a7, m, k)
      a8 = _mm256_fmadd_ps(a8, m, k); a9 = _mm256_fmadd_ps(a9, m, k)
    }
    var s = _mm256_setzero_ps()
    for a in [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] { s = _mm256_add_ps(s, a) }
    return s.sum()
  }

  /// Ten independent chains of the engine's block product: `vpmaddubsw` (32 u8×i8 products into 16
  /// pairs), `vpmaddwd` with ones (into 8 Int32), `vpaddd` into the accumulator. The activations are
  /// loaded from a 512-byte table that stays in L1, as the kernels load them, so nothing is hoisted.
  @inline(never)
  private static func maddChains(_ iterations: Int, seed: Int8) -> Float {
    let ones = _mm256_set1_epi16(1)
    let w = _mm256_set1_epi8(CChar(truncatingIfNeeded: 3 &+ seed))
    let table = UnsafeMutablePointer<Int8>.allocate(capacity: 16 * 32)
    defer { table.deallocate() }
    for i in 0..<(16 * 32) { table[i] = Int8(truncatingIfNeeded: i &* 7 &+ Int(seed)) }
    let x = UnsafeRawPointer(table)
    @inline(__always) func step(_ c: __m256i, _ slot: Int) -> __m256i {
      let v = _mm256_loadu_si256((x + 32 * (slot & 15)).assumingMemoryBound(to: __m256i.self))
      return _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), ones))
    }
    var c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0
    var c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0
    for i in 0..<iterations {
      c0 = step(c0, i); c1 = step(c1, i &+ 1); c2 = step(c2, i &+ 2); c3 = step(c3, i &+ 3)
      c4 = step(c4, i &+ 4); c5 = step(c5, i &+ 5); c6 = step(c6, i &+ 6); c7 = step(c7, i &+ 7)
      c8 = step(c8, i &+ 8); c9 = step(c9, i &+ 9)
    }
    var s = _mm256_setzero_si256()
    for a in [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9] { s = _mm256_add_epi32(s, a) }
    return Float(unsafeBitCast(s, to: SIMD8<Int32>.self).wrappedSum())
  }
  #endif

  @inline(never)
  private static func blackHole(_ x: UInt64) {
    if x == 0x5EED_5EED_5EED_5EED { print("", terminator: "") }
  }
}
