#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

// Batch-invariant integer products of packed weight rows with Q8 activations.
//
// Every output element y[t, r] is computed by the same scalar recipe, whatever else is in the batch:
// for each block b in order, with the exact integer sum isum = Σ q_w·q_x of the block,
//   acc = acc + (Float(isum) · dx[t, b]) · dw[r, b]
//   acc = acc + m[r, b] · s[t, b]          (Q4_0 / Q4_1: m = block minimum, −8·d for Q4_0)
// then y = acc (or y + acc). Integer sums are exact, so how products are grouped into vector lanes
// does not matter; the float operations are the same IEEE operations per element, applied lane-wise.
// Kernels are therefore free to tile rows × tokens as suits the batch: 1 row × 8 tokens (weights
// unpacked once per 8 tokens) when many tokens share a step, 8 rows × 1 token for the rest, and a
// token's result does not change with the tiling.

extension PackedBlocks {
  /// `y[t * ldy + r] (+)= row r · token t` for the rows of 8-row groups `groups` and tokens
  /// 0..<tokens of `a`.
  @inline(__always)
  func dotRowGroups(
    _ groups: Range<Int>, _ a: QuantizedActivations, tokens: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
    accumulate: Bool
  ) {
    #if arch(x86_64) && ALIGN_AVX2 && !ALIGN_PORTABLE_KERNELS
    switch type {
    case .q8_0: dotRowGroupsAVX2(groups, a, tokens: tokens, y, ldy: ldy, accumulate: accumulate, kind: .q8_0)
    case .q4_0: dotRowGroupsAVX2(groups, a, tokens: tokens, y, ldy: ldy, accumulate: accumulate, kind: .q4_0)
    default: dotRowGroupsAVX2(groups, a, tokens: tokens, y, ldy: ldy, accumulate: accumulate, kind: .q4_1)
    }
    #else
    for g in groups {
      for r in (8 * g)..<min(8 * g + 8, rows) {
        var t = 0
        while t < tokens {
          let n = min(4, tokens - t)
          dotGroupPortable(row: r, a, firstToken: t, count: n, y, ldy: ldy, accumulate: accumulate)
          t += n
        }
      }
    }
    #endif
  }

  #if arch(x86_64) && ALIGN_AVX2 && !ALIGN_PORTABLE_KERNELS
  @inline(__always)
  private func dotRowGroupsAVX2(
    _ groups: Range<Int>, _ a: QuantizedActivations, tokens: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
    accumulate: Bool, kind: GGMLType
  ) {
    let signed = kind == .q8_0
    let full = tokens / 8 * 8
    for g in groups {
      for r in (8 * g)..<min(8 * g + 8, rows) {
        var t = 0
        while t < full {
          tokenTile(row: r, a, firstToken: t, y, ldy: ldy, accumulate: accumulate, signed: signed)
          t += 8
        }
      }
      for t in full..<tokens {
        rowTile(group: g, a, token: t, y, ldy: ldy, accumulate: accumulate, kind: kind)
      }
    }
  }

  /// The 32 weights of the block at `q` as bytes for `maddubs`: unsigned 0...15 for Q4, signed for Q8_0.
  @inline(__always)
  private func weightBlock(_ q: UnsafeRawPointer, signed: Bool) -> __m256i {
    if signed {
      return _mm256_loadu_si256(q.assumingMemoryBound(to: __m256i.self))
    }
    let packed = _mm_loadu_si128(q.assumingMemoryBound(to: __m128i.self))
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0f))
  }

  /// Eight Int32 partial sums of one block's 32 products (exact).
  @inline(__always)
  private func blockProducts(_ w: __m256i, _ x: __m256i, signed: Bool) -> __m256i {
    let pairs: __m256i
    if signed {
      // maddubs wants an unsigned first operand: |w| · (x with w's sign). |w| ≤ 128 and |x| ≤ 127,
      // so a pair sum stays below Int16.max.
      pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    } else {
      pairs = _mm256_maddubs_epi16(w, x)
    }
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
  }

  /// Lane j = the sum of all lanes of p_j.
  @inline(__always)
  private func reduce8(
    _ p0: __m256i, _ p1: __m256i, _ p2: __m256i, _ p3: __m256i,
    _ p4: __m256i, _ p5: __m256i, _ p6: __m256i, _ p7: __m256i
  ) -> __m256i {
    let q0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3))
    let q4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(p4, p5), _mm256_hadd_epi32(p6, p7))
    // Add the 128-bit halves: [A | A] and [B | B], then take A's low half and B's high half.
    // (vperm2i128 and vpblendd are C macros Swift cannot import; vpermd and vpblendvb are functions.)
    let swap = _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3)
    let a = _mm256_add_epi32(q0123, _mm256_permutevar8x32_epi32(q0123, swap))
    let b = _mm256_add_epi32(q4567, _mm256_permutevar8x32_epi32(q4567, swap))
    return _mm256_blendv_epi8(a, b, _mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1))
  }

  /// One row against tokens t0..<t0+8 (lanes are tokens); the weight block is unpacked once.
  @inline(__always)
  private func tokenTile(
    row r: Int, _ a: QuantizedActivations, firstToken t0: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
    accumulate: Bool, signed: Bool
  ) {
    let nb = blocks
    let q = quantBase(row: r)
    let cb = chunkBytes
    let dw = scales + r * nb
    let mw = mins.map { $0 + r * nb }
    let ts = nb * 32
    let x = UnsafeRawPointer(a.bytes + t0 * ts)
    let dxT = a.scaleT + (t0 >> 3) * nb * 8
    let sT = a.sumT + (t0 >> 3) * nb * 8
    var acc = _mm256_setzero_ps()
    @inline(__always) func load(_ j: Int, _ b: Int) -> __m256i {
      _mm256_loadu_si256((x + j * ts + 32 * b).assumingMemoryBound(to: __m256i.self))
    }
    for b in 0..<nb {
      let w = weightBlock(q + cb * b, signed: signed)
      let v = reduce8(
        blockProducts(w, load(0, b), signed: signed), blockProducts(w, load(1, b), signed: signed),
        blockProducts(w, load(2, b), signed: signed), blockProducts(w, load(3, b), signed: signed),
        blockProducts(w, load(4, b), signed: signed), blockProducts(w, load(5, b), signed: signed),
        blockProducts(w, load(6, b), signed: signed), blockProducts(w, load(7, b), signed: signed))
      let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(dxT + 8 * b))
      acc = _mm256_add_ps(acc, _mm256_mul_ps(f, _mm256_set1_ps(dw[b])))
      if let mw {
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(mw[b]), _mm256_loadu_ps(sT + 8 * b)))
      }
    }
    for j in 0..<8 {
      let o = (t0 + j) * ldy + r
      y[o] = accumulate ? y[o] + acc[j] : acc[j]
    }
  }

  /// Rows 8g..<8g+8 against one token (lanes are rows), reading the group's chunks in order; rows
  /// past the end repeat the last row (so does the packing) and are not stored.
  @inline(__always)
  private func rowTile(
    group g: Int, _ a: QuantizedActivations, token t: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
    accumulate: Bool, kind: GGMLType
  ) {
    let nb = blocks
    let r0 = 8 * g
    let cb = chunkBytes
    let qb = quantBytes
    let signed = kind == .q8_0
    let base = UnsafeRawPointer(chunks) + g * nb * cb
    let x = UnsafeRawPointer(a.bytes + t * nb * 32)
    let dx = a.scale + t * nb
    let s = a.scaledSum + t * nb
    var acc = _mm256_setzero_ps()
    for b in 0..<nb {
      let c = base + b * cb
      let xv = _mm256_loadu_si256((x + 32 * b).assumingMemoryBound(to: __m256i.self))
      let v = reduce8(
        blockProducts(weightBlock(c, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + qb, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + 2 * qb, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + 3 * qb, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + 4 * qb, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + 5 * qb, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + 6 * qb, signed: signed), xv, signed: signed),
        blockProducts(weightBlock(c + 7 * qb, signed: signed), xv, signed: signed))
      // The halves convert exactly, so these are the same floats as `scales` / `mins`.
      let dw = _mm256_cvtph_ps(_mm_loadu_si128((c + 8 * qb).assumingMemoryBound(to: __m128i.self)))
      let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(dx[b]))
      acc = _mm256_add_ps(acc, _mm256_mul_ps(f, dw))
      switch kind {
      case .q4_1:
        let m = _mm256_cvtph_ps(_mm_loadu_si128((c + 8 * qb + 16).assumingMemoryBound(to: __m128i.self)))
        acc = _mm256_add_ps(acc, _mm256_mul_ps(m, _mm256_set1_ps(s[b])))
      case .q4_0:
        // −8·d is exact in float: the value `mins` holds.
        let m = _mm256_mul_ps(dw, _mm256_set1_ps(-8))
        acc = _mm256_add_ps(acc, _mm256_mul_ps(m, _mm256_set1_ps(s[b])))
      default: break
      }
    }
    let out = y + t * ldy + r0
    if r0 + 8 <= rows {
      _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), acc) : acc)
    } else {
      for i in 0..<(rows - r0) { out[i] = accumulate ? out[i] + acc[i] : acc[i] }
    }
  }
  #endif

  #if arch(x86_64) && !ALIGN_AVX2 && !ALIGN_PORTABLE_KERNELS
  /// Row r against tokens t0..<t0+count (count 1...4) with SSE2 (the x86-64 baseline): weights
  /// widened to Int16 once per block, pmaddwd per token, then the per-element recipe above.
  @inline(__always)
  func dotGroupPortable(
    row r: Int, _ a: QuantizedActivations, firstToken t0: Int, count g: Int, _ y: UnsafeMutablePointer<Float>,
    ldy: Int, accumulate: Bool
  ) {
    let nb = blocks
    let q = quantBase(row: r)
    let cb = chunkBytes
    let dw = scales + r * nb
    let mw = mins.map { $0 + r * nb }
    let stride = nb * 32  // Int16 values per token
    let x0 = UnsafeRawPointer(a.values + t0 * stride)
    let nibbles = quantBytes == 16
    let mask = _mm_set1_epi8(0x0f)
    let zero = _mm_setzero_si128()
    var acc = SIMD4<Float>()
    var dx = SIMD4<Float>(), sx = SIMD4<Float>()
    for b in 0..<nb {
      let w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i
      if nibbles {
        let packed = _mm_loadu_si128((q + cb * b).assumingMemoryBound(to: __m128i.self))
        let lo = _mm_and_si128(packed, mask)
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask)
        w0 = _mm_unpacklo_epi8(lo, zero)
        w1 = _mm_unpackhi_epi8(lo, zero)
        w2 = _mm_unpacklo_epi8(hi, zero)
        w3 = _mm_unpackhi_epi8(hi, zero)
      } else {
        let p = (q + cb * b).assumingMemoryBound(to: __m128i.self)
        let b0 = _mm_loadu_si128(p)
        let b1 = _mm_loadu_si128(p + 1)
        w0 = _mm_srai_epi16(_mm_unpacklo_epi8(b0, b0), 8)
        w1 = _mm_srai_epi16(_mm_unpackhi_epi8(b0, b0), 8)
        w2 = _mm_srai_epi16(_mm_unpacklo_epi8(b1, b1), 8)
        w3 = _mm_srai_epi16(_mm_unpackhi_epi8(b1, b1), 8)
      }
      @inline(__always) func part(_ j: Int) -> __m128i {
        let xv = (x0 + 2 * min(j, g - 1) * stride + 64 * b).assumingMemoryBound(to: __m128i.self)
        return _mm_add_epi32(
          _mm_add_epi32(_mm_madd_epi16(w0, _mm_loadu_si128(xv)), _mm_madd_epi16(w1, _mm_loadu_si128(xv + 1))),
          _mm_add_epi32(_mm_madd_epi16(w2, _mm_loadu_si128(xv + 2)), _mm_madd_epi16(w3, _mm_loadu_si128(xv + 3))))
      }
      // Transpose-add four lanes-of-4 into one vector of four block totals (token j in lane j).
      let p0 = part(0), p1 = part(1), p2 = part(2), p3 = part(3)
      let ab = _mm_add_epi32(_mm_unpacklo_epi32(p0, p1), _mm_unpackhi_epi32(p0, p1))
      let cd = _mm_add_epi32(_mm_unpacklo_epi32(p2, p3), _mm_unpackhi_epi32(p2, p3))
      let v = _mm_add_epi32(_mm_unpacklo_epi64(ab, cd), _mm_unpackhi_epi64(ab, cd))
      for j in 0..<4 {
        let t = t0 + min(j, g - 1)
        dx[j] = a.scale[t * nb + b]
        sx[j] = a.scaledSum[t * nb + b]
      }
      let f = _mm_cvtepi32_ps(v) * dx
      acc = acc + f * SIMD4(repeating: dw[b])
      if let mw { acc = acc + SIMD4(repeating: mw[b]) * sx }
    }
    for j in 0..<g {
      let o = (t0 + j) * ldy + r
      y[o] = accumulate ? y[o] + acc[j] : acc[j]
    }
  }
  #elseif !arch(x86_64) || ALIGN_PORTABLE_KERNELS
  /// Row r against tokens t0..<t0+count in portable Swift, with the per-element recipe above (CPUs
  /// other than x86-64, or any when built with ALIGN_PORTABLE_KERNELS).
  @inline(__always)
  func dotGroupPortable(
    row r: Int, _ a: QuantizedActivations, firstToken t0: Int, count g: Int, _ y: UnsafeMutablePointer<Float>,
    ldy: Int, accumulate: Bool
  ) {
    let nb = blocks
    let q = quantBase(row: r)
    let cb = chunkBytes
    let dw = scales + r * nb
    let mw = mins.map { $0 + r * nb }
    for t in t0..<(t0 + g) {
      let x = a.bytes + t * nb * 32
      var acc: Float = 0
      for b in 0..<nb {
        var s: Int32 = 0
        if quantBytes == 16 {
          for k in 0..<16 {
            let v = q.load(fromByteOffset: cb * b + k, as: UInt8.self)
            s += Int32(v & 0x0f) * Int32(x[32 * b + k]) + Int32(v >> 4) * Int32(x[32 * b + k + 16])
          }
        } else {
          for k in 0..<32 { s += Int32(q.load(fromByteOffset: cb * b + k, as: Int8.self)) * Int32(x[32 * b + k]) }
        }
        let f = Float(s) * a.scale[t * nb + b]
        acc = acc + f * dw[b]
        if let mw { acc = acc + mw[b] * a.scaledSum[t * nb + b] }
      }
      let o = t * ldy + r
      y[o] = accumulate ? y[o] + acc : acc
    }
  }
  #endif
}
