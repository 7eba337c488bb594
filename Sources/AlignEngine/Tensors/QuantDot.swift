// Integer dot products of quantized weight rows with 8-bit quantized activations (the scheme of
// llama.cpp's vec_dot_q4_1_q8_1): activations are quantized once per matrix product to blocks of 32
// int8 with a float scale, then each weight block contributes d_w·d_x·Σ q_w·q_x (+ m_w·s_x for Q4).
// RowwiseQ8.swift has the kernels: AVX2 (the AlignKernelsAVX2 module, on CPUs with AVX2, FMA and
// F16C), SSE2 (the x86-64 baseline, on values widened to Int16) or portable Swift (other CPUs, or
// any CPU when forced); all three give the same bits (KernelDispatchTests checks).
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Activations of `tokens` rows quantized to Q8 blocks of 32.
final class QuantizedActivations: @unchecked Sendable {
  // Safety: written by the thread driving a forward pass before workers read it.
  let maxTokens: Int
  let maxCols: Int
  /// (tokens, cols) quantized values, 64-byte aligned.
  let bytes: UnsafeMutablePointer<Int8>
  /// (tokens, cols) the same values widened to Int16 (filled only for the SSE2 kernels).
  let values: UnsafeMutablePointer<Int16>
  /// (tokens, cols / 32) block scales.
  let scale: UnsafeMutablePointer<Float>
  /// (tokens, cols / 32) scale × sum of the block's quantized values.
  let scaledSum: UnsafeMutablePointer<Float>
  /// (tokens / 8, cols / 32, 8) `scale` with each group of 8 tokens side by side (AVX2 token tiles).
  let scaleT: UnsafeMutablePointer<Float>
  /// (tokens / 8, cols / 32, 8) `scaledSum` likewise.
  let sumT: UnsafeMutablePointer<Float>

  init(maxTokens: Int, maxCols: Int) {
    self.maxTokens = maxTokens
    self.maxCols = maxCols
    let count = maxTokens * maxCols + 64
    let blocks = maxTokens * (maxCols / 32) + 4
    let tiled = (maxTokens + 7) / 8 * 8 * (maxCols / 32) + 8
    bytes = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
      .bindMemory(to: Int8.self, capacity: count)
    values = UnsafeMutableRawPointer.allocate(byteCount: 2 * count, alignment: 64)
      .bindMemory(to: Int16.self, capacity: count)
    scale = .allocate(capacity: blocks)
    scaledSum = .allocate(capacity: blocks)
    scaleT = .allocate(capacity: tiled)
    sumT = .allocate(capacity: tiled)
    bytes.initialize(repeating: 0, count: count)
    values.initialize(repeating: 0, count: count)
    scale.initialize(repeating: 0, count: blocks)
    scaledSum.initialize(repeating: 0, count: blocks)
    scaleT.initialize(repeating: 0, count: tiled)
    sumT.initialize(repeating: 0, count: tiled)
  }

  deinit {
    UnsafeMutableRawPointer(bytes).deallocate()
    UnsafeMutableRawPointer(values).deallocate()
    scale.deallocate()
    scaledSum.deallocate()
    scaleT.deallocate()
    sumT.deallocate()
  }

  /// Quantizes `tokens` rows of `cols` floats (cols a multiple of 32) for the row kernels of `kernels`.
  func quantize(_ x: UnsafePointer<Float>, tokens: Int, cols: Int, kernels: KernelSet) {
    let nb = cols / 32
    for t in 0..<tokens {
      for b in 0..<nb {
        let src = x + t * cols + b * 32
        let i = t * nb + b
        let d32: Float, sum: Int32
        #if arch(x86_64)
        if kernels == .portable {
          (d32, sum) = quantizeBlockPortable(src, bytes + i * 32, values + i * 32)
        } else {
          (d32, sum) = quantizeBlockSSE2(src, bytes + i * 32, kernels == .sse2 ? values + i * 32 : nil)
        }
        #else
        (d32, sum) = quantizeBlockPortable(src, bytes + i * 32, values + i * 32)
        #endif
        // llama.cpp keeps Q8_1's d and s = d·Σq as halves; so do we, which keeps our rounding close
        // to its (greedy agreement with llama.cpp is tested).
        let d = Float(Float16(d32))
        let s = Float(Float16(d32 * Float(sum)))
        scale[i] = d
        scaledSum[i] = s
        let j = ((t >> 3) * nb + b) * 8 + (t & 7)
        scaleT[j] = d
        sumT[j] = s
      }
    }
  }
}

#if arch(x86_64)
/// Quantizes 32 floats to values in -127...127 (round to nearest even), as Int8 and, when `out` is
/// given (the SSE2 kernels), Int16; returns the scale and the sum of the quantized values. Non-finite
/// input gives garbage values, never a trap.
@inline(__always)
func quantizeBlockSSE2(
  _ src: UnsafePointer<Float>, _ out8: UnsafeMutablePointer<Int8>, _ out: UnsafeMutablePointer<Int16>?
) -> (Float, Int32) {
  let signMask = _mm_castsi128_ps(_mm_set1_epi32(0x7fff_ffff))
  let x0 = _mm_loadu_ps(src), x1 = _mm_loadu_ps(src + 4), x2 = _mm_loadu_ps(src + 8), x3 = _mm_loadu_ps(src + 12)
  let x4 = _mm_loadu_ps(src + 16), x5 = _mm_loadu_ps(src + 20), x6 = _mm_loadu_ps(src + 24), x7 = _mm_loadu_ps(src + 28)
  var m = _mm_max_ps(_mm_max_ps(_mm_and_ps(x0, signMask), _mm_and_ps(x1, signMask)),
                     _mm_max_ps(_mm_and_ps(x2, signMask), _mm_and_ps(x3, signMask)))
  m = _mm_max_ps(m, _mm_max_ps(_mm_max_ps(_mm_and_ps(x4, signMask), _mm_and_ps(x5, signMask)),
                               _mm_max_ps(_mm_and_ps(x6, signMask), _mm_and_ps(x7, signMask))))
  let amax = max(max(m[0], m[1]), max(m[2], m[3]))
  let d = amax / 127
  let id: Float = d > 0 ? 1 / d : 0
  let s = _mm_set1_ps(id)
  // cvtps rounds to nearest even; packs saturates to Int16. NaN becomes Int32.min → -32768, which
  // only produces garbage, as a corrupt checkpoint deserves.
  let q01 = _mm_packs_epi32(_mm_cvtps_epi32(_mm_mul_ps(x0, s)), _mm_cvtps_epi32(_mm_mul_ps(x1, s)))
  let q23 = _mm_packs_epi32(_mm_cvtps_epi32(_mm_mul_ps(x2, s)), _mm_cvtps_epi32(_mm_mul_ps(x3, s)))
  let q45 = _mm_packs_epi32(_mm_cvtps_epi32(_mm_mul_ps(x4, s)), _mm_cvtps_epi32(_mm_mul_ps(x5, s)))
  let q67 = _mm_packs_epi32(_mm_cvtps_epi32(_mm_mul_ps(x6, s)), _mm_cvtps_epi32(_mm_mul_ps(x7, s)))
  let o8 = UnsafeMutableRawPointer(out8).assumingMemoryBound(to: __m128i.self)
  _mm_storeu_si128(o8, _mm_packs_epi16(q01, q23))
  _mm_storeu_si128(o8 + 1, _mm_packs_epi16(q45, q67))
  if let out {
    let o = UnsafeMutableRawPointer(out).assumingMemoryBound(to: __m128i.self)
    _mm_storeu_si128(o, q01)
    _mm_storeu_si128(o + 1, q23)
    _mm_storeu_si128(o + 2, q45)
    _mm_storeu_si128(o + 3, q67)
  }
  let ones = _mm_set1_epi16(1)
  let sums = _mm_add_epi32(
    _mm_add_epi32(_mm_madd_epi16(q01, ones), _mm_madd_epi16(q23, ones)),
    _mm_add_epi32(_mm_madd_epi16(q45, ones), _mm_madd_epi16(q67, ones)))
  let si = unsafeBitCast(sums, to: SIMD4<Int32>.self)
  return (d, si[0] &+ si[1] &+ si[2] &+ si[3])
}
#endif

/// `quantizeBlockSSE2` in portable Swift (the same values and scale), filling both outputs.
@inline(__always)
func quantizeBlockPortable(
  _ src: UnsafePointer<Float>, _ out8: UnsafeMutablePointer<Int8>, _ out: UnsafeMutablePointer<Int16>
) -> (Float, Int32) {
  var amax: Float = 0
  for j in 0..<32 { amax = max(amax, abs(src[j])) }
  let d = amax / 127
  let id: Float = d > 0 ? 1 / d : 0
  var sum: Int32 = 0
  for j in 0..<32 {
    let r = (src[j] * id).rounded(.toNearestOrEven)
    let v = r.isNaN ? 0 : Int16(max(-127, min(127, r)))
    out[j] = v
    out8[j] = Int8(v)
    sum += Int32(v)
  }
  return (d, sum)
}
