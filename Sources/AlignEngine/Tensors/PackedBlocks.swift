#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// A Q4_0 / Q4_1 / Q8_0 weight re-laid out for fast dot products: the packed quants of each row
/// contiguous, and the block scales (and Q4_1 minimums) converted once from half to float.
///
/// Converting two halves per 32-weight block inside the dot-product loop cost about 30% of decode
/// time without F16C; this layout reads 24 bytes per Q4_1 block instead of 20, which only matters
/// once decoding is bandwidth-bound.
final class PackedBlocks: @unchecked Sendable {
  // Safety: immutable after init.
  let type: GGMLType
  let rows: Int
  /// Blocks per row.
  let blocks: Int
  /// Bytes of quants per block: 16 (4-bit) or 32 (8-bit).
  let quantBytes: Int
  /// (rows, blocks, quantBytes)
  let quants: UnsafeMutableRawPointer
  /// (rows, blocks) block scales.
  let scales: UnsafeMutablePointer<Float>
  /// (rows, blocks) block minimums (Q4_1), else nil.
  let mins: UnsafeMutablePointer<Float>?

  /// Packs `w`, or returns nil for other types.
  init?(_ w: WeightMatrix) {
    let qOffset: Int
    switch w.type {
    case .q4_0: (quantBytes, qOffset) = (16, 2)
    case .q4_1: (quantBytes, qOffset) = (16, 4)
    case .q8_0: (quantBytes, qOffset) = (32, 2)
    default: return nil
    }
    type = w.type
    rows = w.rows
    blocks = w.cols / 32
    let n = rows * blocks
    quants = UnsafeMutableRawPointer.allocate(byteCount: max(n * quantBytes, 64), alignment: 64)
    scales = .allocate(capacity: max(n, 1))
    mins = w.type == .q4_1 ? .allocate(capacity: max(n, 1)) : nil
    let bb = w.type.blockBytes
    for r in 0..<rows {
      let src = w.row(r)
      for b in 0..<blocks {
        let blk = src + b * bb
        let i = r * blocks + b
        scales[i] = halfToFloat(blk.loadUnaligned(as: UInt16.self))
        mins?[i] = halfToFloat(blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        (quants + i * quantBytes).copyMemory(from: blk + qOffset, byteCount: quantBytes)
      }
    }
  }

  deinit {
    quants.deallocate()
    scales.deallocate()
    mins?.deallocate()
  }

  /// Dot product of row `r` with token `t` of the quantized activations.
  @inline(__always)
  func dot(row r: Int, _ a: QuantizedActivations, token t: Int) -> Float {
    let nb = blocks
    let q = UnsafeRawPointer(quants + r * nb * quantBytes)
    let d = scales + r * nb
    let x = UnsafeRawPointer(a.values + t * nb * 32)
    let xd = a.scale + t * nb
    let xs = a.scaledSum + t * nb
    switch type {
    case .q4_1:
      let m = mins! + r * nb
      return packedNibbleDot(q, d, x, xd, nb) + shortDot(m, xs, nb)
    case .q4_0:
      return packedNibbleDot(q, d, x, xd, nb) - 8 * shortDot(d, xs, nb)
    default:
      return packedByteDot(q, d, x, xd, nb)
    }
  }

  /// Dequantizes row `r` into `y` (cols floats).
  @inline(__always)
  func dequantize(row r: Int, into y: UnsafeMutablePointer<Float>) {
    let nb = blocks
    let q = quants + r * nb * quantBytes
    for b in 0..<nb {
      let i = r * nb + b
      let d = scales[i]
      let out = y + 32 * b
      switch type {
      case .q4_1:
        let m = mins![i]
        for j in 0..<16 {
          let v = q.load(fromByteOffset: b * 16 + j, as: UInt8.self)
          out[j] = Float(v & 0x0f) * d + m
          out[j + 16] = Float(v >> 4) * d + m
        }
      case .q4_0:
        for j in 0..<16 {
          let v = q.load(fromByteOffset: b * 16 + j, as: UInt8.self)
          out[j] = Float(Int32(v & 0x0f) - 8) * d
          out[j + 16] = Float(Int32(v >> 4) - 8) * d
        }
      default:
        for j in 0..<32 { out[j] = Float(q.load(fromByteOffset: b * 32 + j, as: Int8.self)) * d }
      }
    }
  }
}

/// Dot product of two short float vectors with independent partial sums (no serial add chain).
@inline(__always)
func shortDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
  var acc0 = SIMD4<Float>()
  var acc1 = SIMD4<Float>()
  let ra = UnsafeRawPointer(a)
  let rb = UnsafeRawPointer(b)
  var i = 0
  while i + 8 <= n {
    acc0 += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self)
      * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self)
    acc1 += ra.loadUnaligned(fromByteOffset: 4 * i + 16, as: SIMD4<Float>.self)
      * rb.loadUnaligned(fromByteOffset: 4 * i + 16, as: SIMD4<Float>.self)
    i += 8
  }
  var s = (acc0 + acc1).sum()
  while i < n {
    s += a[i] * b[i]
    i += 1
  }
  return s
}

#if arch(x86_64)
/// Σ_b d[b]·xd[b]·Σ_j q[b][j]·x[b][j] for 4-bit quants (16 bytes per block).
@inline(__always)
func packedNibbleDot(
  _ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ x: UnsafeRawPointer, _ xd: UnsafePointer<Float>, _ nb: Int
) -> Float {
  var acc0 = _mm_setzero_ps()
  var acc1 = _mm_setzero_ps()
  var b = 0
  while b + 2 <= nb {
    let s0 = nibbleBlockDot(q + 16 * b, x + 64 * b)
    let s1 = nibbleBlockDot(q + 16 * b + 16, x + 64 * b + 64)
    acc0 = _mm_add_ps(acc0, _mm_mul_ps(_mm_cvtepi32_ps(s0), _mm_set1_ps(d[b] * xd[b])))
    acc1 = _mm_add_ps(acc1, _mm_mul_ps(_mm_cvtepi32_ps(s1), _mm_set1_ps(d[b + 1] * xd[b + 1])))
    b += 2
  }
  if b < nb {
    let s0 = nibbleBlockDot(q + 16 * b, x + 64 * b)
    acc0 = _mm_add_ps(acc0, _mm_mul_ps(_mm_cvtepi32_ps(s0), _mm_set1_ps(d[b] * xd[b])))
  }
  return hsum(_mm_add_ps(acc0, acc1))
}

/// Σ_b d[b]·xd[b]·Σ_j q[b][j]·x[b][j] for 8-bit quants (32 bytes per block).
@inline(__always)
func packedByteDot(
  _ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ x: UnsafeRawPointer, _ xd: UnsafePointer<Float>, _ nb: Int
) -> Float {
  var acc0 = _mm_setzero_ps()
  var acc1 = _mm_setzero_ps()
  @inline(__always) func block(_ b: Int) -> __m128 {
    let w = (q + 32 * b).assumingMemoryBound(to: __m128i.self)
    let w0 = _mm_loadu_si128(w)
    let w1 = _mm_loadu_si128(w + 1)
    let xv = (x + 64 * b).assumingMemoryBound(to: __m128i.self)
    // Sign-extend bytes to Int16 (interleave each byte with itself, shift right arithmetically).
    let p0 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(w0, w0), 8), _mm_loadu_si128(xv))
    let p1 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(w0, w0), 8), _mm_loadu_si128(xv + 1))
    let p2 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(w1, w1), 8), _mm_loadu_si128(xv + 2))
    let p3 = _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(w1, w1), 8), _mm_loadu_si128(xv + 3))
    let s = _mm_add_epi32(_mm_add_epi32(p0, p1), _mm_add_epi32(p2, p3))
    return _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(d[b] * xd[b]))
  }
  var b = 0
  while b + 2 <= nb {
    acc0 = _mm_add_ps(acc0, block(b))
    acc1 = _mm_add_ps(acc1, block(b + 1))
    b += 2
  }
  if b < nb { acc0 = _mm_add_ps(acc0, block(b)) }
  return hsum(_mm_add_ps(acc0, acc1))
}
#else
@inline(__always)
func packedNibbleDot(
  _ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ x: UnsafeRawPointer, _ xd: UnsafePointer<Float>, _ nb: Int
) -> Float {
  let xi = x.assumingMemoryBound(to: Int16.self)
  var total: Float = 0
  for b in 0..<nb {
    var s: Int32 = 0
    for j in 0..<16 {
      let v = q.load(fromByteOffset: 16 * b + j, as: UInt8.self)
      s += Int32(v & 0x0f) * Int32(xi[32 * b + j]) + Int32(v >> 4) * Int32(xi[32 * b + j + 16])
    }
    total += d[b] * xd[b] * Float(s)
  }
  return total
}

@inline(__always)
func packedByteDot(
  _ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ x: UnsafeRawPointer, _ xd: UnsafePointer<Float>, _ nb: Int
) -> Float {
  let xi = x.assumingMemoryBound(to: Int16.self)
  var total: Float = 0
  for b in 0..<nb {
    var s: Int32 = 0
    for j in 0..<32 { s += Int32(q.load(fromByteOffset: 32 * b + j, as: Int8.self)) * Int32(xi[32 * b + j]) }
    total += d[b] * xd[b] * Float(s)
  }
  return total
}
#endif
