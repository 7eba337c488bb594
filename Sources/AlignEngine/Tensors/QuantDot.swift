// Integer dot products of quantized weight rows with 8-bit quantized activations (the scheme of
// llama.cpp's vec_dot_q4_1_q8_1): activations are quantized once per matrix product to blocks of 32
// int8 with a float scale (stored widened to Int16), then each weight block contributes
// d_w·d_x·Σ q_w·q_x (+ m_w·s_x for Q4_1).
//
// On x86-64 the kernels use SSE2 intrinsics (baseline for the architecture, so no build flags are
// needed): weights are widened to Int16 and multiplied with pmaddwd, which yields exact Int32 pair
// sums. Swift's generic SIMD width conversions are not reliably inlined, hence intrinsics.
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Activations of `tokens` rows quantized to Q8 blocks of 32, split into even and odd elements.
final class QuantizedActivations: @unchecked Sendable {
  // Safety: written by the thread driving a forward pass before workers read it.
  let maxTokens: Int
  let maxCols: Int
  /// (tokens, cols) quantized values widened to Int16, 16-byte aligned.
  let values: UnsafeMutablePointer<Int16>
  /// (tokens, cols / 32) block scales.
  let scale: UnsafeMutablePointer<Float>
  /// (tokens, cols / 32) scale × sum of the block's quantized values.
  let scaledSum: UnsafeMutablePointer<Float>

  init(maxTokens: Int, maxCols: Int) {
    self.maxTokens = maxTokens
    self.maxCols = maxCols
    let count = maxTokens * maxCols + 64
    let blocks = maxTokens * (maxCols / 32) + 4
    values = UnsafeMutableRawPointer.allocate(byteCount: 2 * count, alignment: 64)
      .bindMemory(to: Int16.self, capacity: count)
    scale = .allocate(capacity: blocks)
    scaledSum = .allocate(capacity: blocks)
    values.initialize(repeating: 0, count: count)
    scale.initialize(repeating: 0, count: blocks)
    scaledSum.initialize(repeating: 0, count: blocks)
  }

  deinit {
    UnsafeMutableRawPointer(values).deallocate()
    scale.deallocate()
    scaledSum.deallocate()
  }

  /// Quantizes `tokens` rows of `cols` floats (cols a multiple of 32).
  func quantize(_ x: UnsafePointer<Float>, tokens: Int, cols: Int) {
    let nb = cols / 32
    for t in 0..<tokens {
      for b in 0..<nb {
        let src = x + t * cols + b * 32
        let out = values + (t * nb + b) * 32
        let (d, sum) = quantizeBlock(src, out)
        scale[t * nb + b] = d
        scaledSum[t * nb + b] = d * Float(sum)
      }
    }
  }
}

#if arch(x86_64)
/// Quantizes 32 floats to Int16 values in -127...127 (round to nearest even); returns the scale and
/// the sum of the quantized values. Non-finite input gives garbage values, never a trap.
@inline(__always)
func quantizeBlock(_ src: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Int16>) -> (Float, Int32) {
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
  let o = UnsafeMutableRawPointer(out).assumingMemoryBound(to: __m128i.self)
  _mm_storeu_si128(o, q01)
  _mm_storeu_si128(o + 1, q23)
  _mm_storeu_si128(o + 2, q45)
  _mm_storeu_si128(o + 3, q67)
  let ones = _mm_set1_epi16(1)
  let sums = _mm_add_epi32(
    _mm_add_epi32(_mm_madd_epi16(q01, ones), _mm_madd_epi16(q23, ones)),
    _mm_add_epi32(_mm_madd_epi16(q45, ones), _mm_madd_epi16(q67, ones)))
  let si = unsafeBitCast(sums, to: SIMD4<Int32>.self)
  return (d, si[0] &+ si[1] &+ si[2] &+ si[3])
}
#else
@inline(__always)
func quantizeBlock(_ src: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Int16>) -> (Float, Int32) {
  var amax: Float = 0
  for j in 0..<32 { amax = max(amax, abs(src[j])) }
  let d = amax / 127
  let id: Float = d > 0 ? 1 / d : 0
  var sum: Int32 = 0
  for j in 0..<32 {
    let r = (src[j] * id).rounded(.toNearestOrEven)
    let v = r.isNaN ? 0 : Int16(max(-127, min(127, r)))
    out[j] = v
    sum += Int32(v)
  }
  return (d, sum)
}
#endif

#if arch(x86_64)
/// Horizontal sum of four floats.
@inline(__always)
func hsum(_ v: __m128) -> Float {
  return (v[0] + v[2]) + (v[1] + v[3])
}

/// Σ over one block of 32 4-bit weights (16 packed bytes at `q`: element j is the low nibble of byte
/// j, element j+16 the high nibble) times 32 Int16 activations at `x`, as four Int32 partial sums.
@inline(__always)
func nibbleBlockDot(_ q: UnsafeRawPointer, _ x: UnsafeRawPointer) -> __m128i {
  let packed = _mm_loadu_si128(q.assumingMemoryBound(to: __m128i.self))
  let mask = _mm_set1_epi8(0x0f)
  let zero = _mm_setzero_si128()
  let lo = _mm_and_si128(packed, mask)
  let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask)
  let xv = x.assumingMemoryBound(to: __m128i.self)
  let p0 = _mm_madd_epi16(_mm_unpacklo_epi8(lo, zero), _mm_loadu_si128(xv))
  let p1 = _mm_madd_epi16(_mm_unpackhi_epi8(lo, zero), _mm_loadu_si128(xv + 1))
  let p2 = _mm_madd_epi16(_mm_unpacklo_epi8(hi, zero), _mm_loadu_si128(xv + 2))
  let p3 = _mm_madd_epi16(_mm_unpackhi_epi8(hi, zero), _mm_loadu_si128(xv + 3))
  return _mm_add_epi32(_mm_add_epi32(p0, p1), _mm_add_epi32(p2, p3))
}

@inline(__always)
func dotQ4_1Q8(_ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int) -> Float {
  var acc = _mm_setzero_ps()
  var mins: Float = 0
  let x = UnsafeRawPointer(a.values + t * nb * 32)
  let xd = a.scale + t * nb
  let xs = a.scaledSum + t * nb
  for b in 0..<nb {
    let blk = row + 20 * b
    let d = loadFiniteHalf(blk, 0)
    let m = loadFiniteHalf(blk, 2)
    let s = nibbleBlockDot(blk + 4, x + 64 * b)
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(d * xd[b])))
    mins += m * xs[b]
  }
  return hsum(acc) + mins
}

@inline(__always)
func dotQ4_0Q8(_ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int) -> Float {
  var acc = _mm_setzero_ps()
  var offs: Float = 0
  let x = UnsafeRawPointer(a.values + t * nb * 32)
  let xd = a.scale + t * nb
  let xs = a.scaledSum + t * nb
  for b in 0..<nb {
    let blk = row + 18 * b
    let d = loadFiniteHalf(blk, 0)
    let s = nibbleBlockDot(blk + 2, x + 64 * b)
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(d * xd[b])))
    offs += d * xs[b]
  }
  return hsum(acc) - 8 * offs
}

@inline(__always)
func dotQ8_0Q8(_ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int) -> Float {
  var acc = _mm_setzero_ps()
  let x = UnsafeRawPointer(a.values + t * nb * 32)
  let xd = a.scale + t * nb
  for b in 0..<nb {
    let blk = row + 34 * b
    let d = loadFiniteHalf(blk, 0)
    let w0 = _mm_loadu_si128((blk + 2).assumingMemoryBound(to: __m128i.self))
    let w1 = _mm_loadu_si128((blk + 18).assumingMemoryBound(to: __m128i.self))
    // Sign-extend bytes to Int16: interleave each byte with itself, then shift right arithmetically.
    let xv = (x + 64 * b).assumingMemoryBound(to: __m128i.self)
    let p0 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(w0, w0), 8), _mm_loadu_si128(xv))
    let p1 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(w0, w0), 8), _mm_loadu_si128(xv + 1))
    let p2 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(w1, w1), 8), _mm_loadu_si128(xv + 2))
    let p3 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(w1, w1), 8), _mm_loadu_si128(xv + 3))
    let s = _mm_add_epi32(_mm_add_epi32(p0, p1), _mm_add_epi32(p2, p3))
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(d * xd[b])))
  }
  return hsum(acc)
}
#else
/// Portable fallback: Σ q_w·q_x per block in Int32, scalar.
@inline(__always)
func dotQ4Q8Generic(
  _ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int, blockBytes: Int, hasMin: Bool
) -> Float {
  var total: Float = 0
  let x = a.values + t * nb * 32
  for b in 0..<nb {
    let blk = row + blockBytes * b
    let d = loadFiniteHalf(blk, 0)
    let qs = blk + (hasMin ? 4 : 2)
    var s: Int32 = 0
    for j in 0..<16 {
      let v = qs.load(fromByteOffset: j, as: UInt8.self)
      s += Int32(v & 0x0f) * Int32(x[32 * b + j]) + Int32(v >> 4) * Int32(x[32 * b + j + 16])
    }
    if hasMin {
      total += d * a.scale[t * nb + b] * Float(s) + loadFiniteHalf(blk, 2) * a.scaledSum[t * nb + b]
    } else {
      total += d * (a.scale[t * nb + b] * Float(s) - 8 * a.scaledSum[t * nb + b])
    }
  }
  return total
}

func dotQ4_1Q8(_ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int) -> Float {
  dotQ4Q8Generic(row, a, token: t, nb, blockBytes: 20, hasMin: true)
}

func dotQ4_0Q8(_ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int) -> Float {
  dotQ4Q8Generic(row, a, token: t, nb, blockBytes: 18, hasMin: false)
}

func dotQ8_0Q8(_ row: UnsafeRawPointer, _ a: QuantizedActivations, token t: Int, _ nb: Int) -> Float {
  var total: Float = 0
  let x = a.values + t * nb * 32
  for b in 0..<nb {
    let blk = row + 34 * b
    var s: Int32 = 0
    for j in 0..<32 { s += Int32(blk.load(fromByteOffset: 2 + j, as: Int8.self)) * Int32(x[32 * b + j]) }
    total += loadFiniteHalf(blk, 0) * a.scale[t * nb + b] * Float(s)
  }
  return total
}
#endif
