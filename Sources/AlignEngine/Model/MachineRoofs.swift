#if arch(x86_64)
import AlignKernelsAVX2
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
///   core does more int8 work per instruction than this measures). nil on CPUs without the AVX2
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

  /// Multiply-adds per second of `kernel` on every thread of `pool` (median of `runs`), nil on CPUs
  /// without the AVX2 kernels (the chains are theirs: AlignKernelsAVX2).
  private static func computePeak(pool: ForkJoinPool, runs: Int, kernel: ComputeKernel) -> Double? {
    #if arch(x86_64)
    guard KernelSet.supported.contains(.avx2) else { return nil }
    let chunks = pool.threads * 8
    let iterations = 200_000
    let sink = UnsafeMutablePointer<Float>.allocate(capacity: chunks)
    defer { sink.deallocate() }
    var rates: [Double] = []
    for _ in 0..<max(runs, 1) {
      let start = DispatchTime.now().uptimeNanoseconds
      pool.run(chunks: chunks) { _, c in
        sink[c] =
          kernel == .f32
          ? AVX2Kernels.fmaChains(iterations, seed: Float(c)) : AVX2Kernels.maddChains(iterations, seed: Int8(c))
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

  @inline(never)
  private static func blackHole(_ x: UInt64) {
    if x == 0x5EED_5EED_5EED_5EED { print("", terminator: "") }
  }
}
