#if arch(x86_64)
import AlignKernelTypes
import AlignKernelsAVX2
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
  /// 0..<tokens of `a`, on `kernels` (the AVX2 kernels live in the AlignKernelsAVX2 module, the
  /// only code compiled for that target).
  @inline(__always)
  func dotRowGroups(
    _ groups: Range<Int>, _ a: QuantizedActivations, tokens: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
    accumulate: Bool, kernels: KernelSet
  ) {
    #if arch(x86_64)
    if kernels == .avx2 {
      AVX2Kernels.dotRowGroups(avx2Rows, groups, a.avx2Operand, tokens: tokens, y, ldy: ldy, accumulate: accumulate)
      return
    }
    #endif
    for g in groups {
      for r in (8 * g)..<min(8 * g + 8, rows) {
        var t = 0
        while t < tokens {
          let n = min(4, tokens - t)
          #if arch(x86_64)
          if kernels == .sse2 {
            dotGroupSSE2(row: r, a, firstToken: t, count: n, y, ldy: ldy, accumulate: accumulate)
            t += n
            continue
          }
          #endif
          dotGroupPortable(row: r, a, firstToken: t, count: n, y, ldy: ldy, accumulate: accumulate)
          t += n
        }
      }
    }
  }

  #if arch(x86_64)
  /// Row r against tokens t0..<t0+count (count 1...4) with SSE2 (the x86-64 baseline): weights
  /// widened to Int16 once per block, pmaddwd per token, then the per-element recipe above. Reads
  /// `a.values`, which `quantize` fills for this set only.
  @inline(__always)
  func dotGroupSSE2(
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
  #endif

  /// Row r against tokens t0..<t0+count in portable Swift, with the per-element recipe above (CPUs
  /// other than x86-64, or any when this set is forced).
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
}

#if arch(x86_64)
extension PackedBlocks {
  /// This matrix as the AVX2 kernels read it.
  var avx2Rows: AVX2PackedRows {
    AVX2PackedRows(
      kind: type == .q8_0 ? 0 : type == .q4_0 ? 1 : 2, rows: rows, blocks: blocks, quantBytes: quantBytes,
      chunkBytes: chunkBytes, chunks: UnsafeRawPointer(chunks), scales: UnsafePointer(scales),
      mins: mins.map { UnsafePointer($0) })
  }
}

extension QuantizedActivations {
  /// These activations as the AVX2 kernels read them.
  var avx2Operand: AVX2Activations {
    AVX2Activations(
      bytes: UnsafePointer(bytes), scale: UnsafePointer(scale), scaledSum: UnsafePointer(scaledSum),
      scaleT: UnsafePointer(scaleT), sumT: UnsafePointer(sumT))
  }
}
#endif
