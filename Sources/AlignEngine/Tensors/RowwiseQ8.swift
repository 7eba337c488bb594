#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

// Batch-invariant integer products: one weight row against up to four tokens' Q8 activations at a
// time. The weight block is unpacked once and reused for every token, and each token's result is
// computed by exactly the same sequence of operations whatever the number of tokens (even blocks
// into one accumulator, odd blocks into another, then the same final reductions), so a sequence's
// logits do not depend on which other sequences share its batch.

extension PackedBlocks {
  /// `y[t * ldy + r] (+)= row r · token t` for t in `tokens`.
  @inline(__always)
  func dotTokens(
    row r: Int, _ a: QuantizedActivations, tokens: Range<Int>, _ y: UnsafeMutablePointer<Float>, ldy: Int,
    accumulate: Bool
  ) {
    var t = tokens.lowerBound
    while t < tokens.upperBound {
      let g = min(4, tokens.upperBound - t)
      var out = SIMD4<Float>()
      dotGroup(row: r, a, firstToken: t, count: g, &out)
      for j in 0..<g {
        let o = (t + j) * ldy + r
        y[o] = accumulate ? y[o] + out[j] : out[j]
      }
      t += g
    }
  }

  #if arch(x86_64)
  /// Results for tokens firstToken..<firstToken+count (count 1...4) into `out[0..<count]`.
  @inline(__always)
  func dotGroup(row r: Int, _ a: QuantizedActivations, firstToken t0: Int, count g: Int, _ out: inout SIMD4<Float>) {
    let nb = blocks
    let q = UnsafeRawPointer(quants + r * nb * quantBytes)
    let d = scales + r * nb
    let stride = nb * 32  // Int16 values per token
    let x0 = UnsafeRawPointer(a.values + t0 * stride)
    let xd0 = a.scale + t0 * nb
    var e0 = _mm_setzero_ps(), o0 = _mm_setzero_ps()
    var e1 = _mm_setzero_ps(), o1 = _mm_setzero_ps()
    var e2 = _mm_setzero_ps(), o2 = _mm_setzero_ps()
    var e3 = _mm_setzero_ps(), o3 = _mm_setzero_ps()
    let nibbles = quantBytes == 16
    let mask = _mm_set1_epi8(0x0f)
    let zero = _mm_setzero_si128()
    for b in 0..<nb {
      // Unpack the weight block to four vectors of 8 Int16.
      let w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i
      if nibbles {
        let packed = _mm_loadu_si128((q + 16 * b).assumingMemoryBound(to: __m128i.self))
        let lo = _mm_and_si128(packed, mask)
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask)
        w0 = _mm_unpacklo_epi8(lo, zero)
        w1 = _mm_unpackhi_epi8(lo, zero)
        w2 = _mm_unpacklo_epi8(hi, zero)
        w3 = _mm_unpackhi_epi8(hi, zero)
      } else {
        let p = (q + 32 * b).assumingMemoryBound(to: __m128i.self)
        let b0 = _mm_loadu_si128(p)
        let b1 = _mm_loadu_si128(p + 1)
        w0 = _mm_srai_epi16(_mm_unpacklo_epi8(b0, b0), 8)
        w1 = _mm_srai_epi16(_mm_unpackhi_epi8(b0, b0), 8)
        w2 = _mm_srai_epi16(_mm_unpacklo_epi8(b1, b1), 8)
        w3 = _mm_srai_epi16(_mm_unpackhi_epi8(b1, b1), 8)
      }
      let db = d[b]
      @inline(__always) func term(_ j: Int) -> __m128 {
        let xv = (x0 + 2 * j * stride + 64 * b).assumingMemoryBound(to: __m128i.self)
        let s = _mm_add_epi32(
          _mm_add_epi32(_mm_madd_epi16(w0, _mm_loadu_si128(xv)), _mm_madd_epi16(w1, _mm_loadu_si128(xv + 1))),
          _mm_add_epi32(_mm_madd_epi16(w2, _mm_loadu_si128(xv + 2)), _mm_madd_epi16(w3, _mm_loadu_si128(xv + 3))))
        return _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(db * xd0[j * nb + b]))
      }
      if b & 1 == 0 {
        e0 = _mm_add_ps(e0, term(0))
        if g > 1 { e1 = _mm_add_ps(e1, term(1)) }
        if g > 2 { e2 = _mm_add_ps(e2, term(2)) }
        if g > 3 { e3 = _mm_add_ps(e3, term(3)) }
      } else {
        o0 = _mm_add_ps(o0, term(0))
        if g > 1 { o1 = _mm_add_ps(o1, term(1)) }
        if g > 2 { o2 = _mm_add_ps(o2, term(2)) }
        if g > 3 { o3 = _mm_add_ps(o3, term(3)) }
      }
    }
    out[0] = hsum(_mm_add_ps(e0, o0)) + correction(row: r, a, token: t0)
    if g > 1 { out[1] = hsum(_mm_add_ps(e1, o1)) + correction(row: r, a, token: t0 + 1) }
    if g > 2 { out[2] = hsum(_mm_add_ps(e2, o2)) + correction(row: r, a, token: t0 + 2) }
    if g > 3 { out[3] = hsum(_mm_add_ps(e3, o3)) + correction(row: r, a, token: t0 + 3) }
  }
  #else
  @inline(__always)
  func dotGroup(row r: Int, _ a: QuantizedActivations, firstToken t0: Int, count g: Int, _ out: inout SIMD4<Float>) {
    let nb = blocks
    let q = UnsafeRawPointer(quants + r * nb * quantBytes)
    let d = scales + r * nb
    for j in 0..<g {
      let t = t0 + j
      let x = a.values + t * nb * 32
      var total: Float = 0
      for b in 0..<nb {
        var s: Int32 = 0
        if quantBytes == 16 {
          for k in 0..<16 {
            let v = q.load(fromByteOffset: 16 * b + k, as: UInt8.self)
            s += Int32(v & 0x0f) * Int32(x[32 * b + k]) + Int32(v >> 4) * Int32(x[32 * b + k + 16])
          }
        } else {
          for k in 0..<32 { s += Int32(q.load(fromByteOffset: 32 * b + k, as: Int8.self)) * Int32(x[32 * b + k]) }
        }
        total += Float(s) * (d[b] * a.scale[t * nb + b])
      }
      out[j] = total + correction(row: r, a, token: t)
    }
  }
  #endif

  /// The per-row term that does not depend on individual products: +Σ m·s (Q4_1), −8·Σ d·s (Q4_0).
  @inline(__always)
  func correction(row r: Int, _ a: QuantizedActivations, token t: Int) -> Float {
    let nb = blocks
    switch type {
    case .q4_1: return shortDot(mins! + r * nb, a.scaledSum + t * nb, nb)
    case .q4_0: return -8 * shortDot(scales + r * nb, a.scaledSum + t * nb, nb)
    default: return 0
    }
  }
}
