// Float kernels compiled twice: into AlignEngine (x86-64 baseline or the build's architecture) and,
// through a symlink of this very file, into AlignKernelsAVX2 (Haswell), whose copy the engine calls
// on AVX2 CPUs. One source, so both copies do the same IEEE operations in the same order and give
// the same bits; each module supplies `convertHalves` (F16C in AlignKernelsAVX2, integer steps in
// AlignEngine). Stdlib, libm and AlignKernelTypes only: nothing here may depend on either module's
// other code.

import AlignKernelTypes

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `y += a * x`.
@inline(__always)
func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
  var i = 0
  let rx = UnsafeRawPointer(x)
  let ry = UnsafeMutableRawPointer(y)
  let va = SIMD16<Float>(repeating: a)
  while i + 16 <= n {
    let v = ry.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
      + va * rx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
    ry.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD16<Float>.self)
    i += 16
  }
  while i < n {
    y[i] += a * x[i]
    i += 1
  }
}

/// Dot product of two float vectors (the same arithmetic whatever the call site).
@inline(__always)
func dotF32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
  var acc0 = SIMD16<Float>()
  var acc1 = SIMD16<Float>()
  var i = 0
  let ra = UnsafeRawPointer(a)
  let rb = UnsafeRawPointer(b)
  while i + 32 <= n {
    acc0 += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
      * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
    acc1 += ra.loadUnaligned(fromByteOffset: 4 * i + 64, as: SIMD16<Float>.self)
      * rb.loadUnaligned(fromByteOffset: 4 * i + 64, as: SIMD16<Float>.self)
    i += 32
  }
  var s = (acc0 + acc1).sum()
  while i < n {
    s += a[i] * b[i]
    i += 1
  }
  return s
}

/// RMS norm of each of `n` rows: `y = x / sqrt(mean(x²) + eps) * w`.
func rmsNorm(
  _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
  rows n: Int, dim: Int, eps: Float
) {
  for t in 0..<n {
    let xr = x + t * dim
    let yr = y + t * dim
    let ss = dotF32(xr, xr, dim)
    let scale = 1 / (ss / Float(dim) + eps).squareRoot()
    for i in 0..<dim { yr[i] = xr[i] * scale * w[i] }
  }
}

/// e^x for four lanes (Cephes-style polynomial after range reduction; relative error ≈ 2e-7 for
/// x in [-87, 88]; below gives ~0, above +inf). Used for softmax and SiLU, where libm's expf per
/// element cost ~10% of decode time.
@inline(__always)
func vexp(_ x: SIMD4<Float>) -> SIMD4<Float> {
  let magic = SIMD4<Float>(repeating: 12_582_912)  // 1.5 · 2^23: adding it rounds to an integer
  // Not `clamped`: its generic pointwiseMin/Max were not inlined (~4% of a prefill's instructions).
  let lo = SIMD4<Float>(repeating: -87.3), hi = SIMD4<Float>(repeating: 88.7)
  var xc = x.replacing(with: lo, where: x .< lo)
  xc = xc.replacing(with: hi, where: xc .> hi)
  let t = xc * 1.442_695_04 + magic
  let n = t - magic
  var r = xc - n * 0.693_359_375
  r = r - n * -2.121_944_4e-4
  var p = SIMD4<Float>(repeating: 1.987_569_15e-4)
  p = p * r + 1.398_199_95e-3
  p = p * r + 8.333_451_9e-3
  p = p * r + 4.166_579_59e-2
  p = p * r + 1.666_666_55e-1
  p = p * r + 5.000_000_12e-1
  p = p * r * r + r + 1
  // 2^n from the integer sitting in t's low mantissa bits.
  let ni = unsafeBitCast(t, to: SIMD4<UInt32>.self) &- 0x4B40_0000
  let scale = unsafeBitCast((ni &+ 127) &<< 23, to: SIMD4<Float>.self)
  // n = 128 (x near 88.7) overflows the exponent: split the scaling in two steps.
  let big = n .> 127
  let half = unsafeBitCast((ni &+ 126) &<< 23, to: SIMD4<Float>.self)
  return (p * scale).replacing(with: p * half * 2, where: big)
}

/// `x[i] = exp(x[i] - shift)` for i in 0..<n; returns the sum of the results.
@inline(__always)
func expShiftedInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
  var i = 0
  var acc = SIMD4<Float>()
  let s = SIMD4<Float>(repeating: shift)
  let raw = UnsafeMutableRawPointer(x)
  while i + 4 <= n {
    let v = vexp(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self) - s)
    raw.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD4<Float>.self)
    acc += v
    i += 4
  }
  var total = acc.sum()
  while i < n {
    var lane = SIMD4<Float>(repeating: 0)
    lane[0] = x[i] - shift
    let v = vexp(lane)[0]
    x[i] = v
    total += v
    i += 1
  }
  return total
}

/// `gate[i] = silu(gate[i]) · up[i]` (SwiGLU) for i in 0..<n.
@inline(__always)
func swiGLU(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
  var i = 0
  let g = UnsafeMutableRawPointer(gate)
  let u = UnsafeRawPointer(up)
  while i + 4 <= n {
    let x = g.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self)
    let v = x / (1 + vexp(-x)) * u.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self)
    g.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD4<Float>.self)
    i += 4
  }
  while i < n {
    let x = gate[i]
    gate[i] = x / (1 + exp(-x)) * up[i]
    i += 1
  }
}

/// Attention of one token's query heads that share a key/value head (`AttentionOperand`): scores
/// against every cached position, softmax, the weighted sum of values, in float whatever the cache
/// stores. A float16 cache is read in spans of `span` positions converted (exactly) into `rows`,
/// which stay in the L1 cache while every head of the group reads them; splitting changes no result
/// (scores are per position, and the value sums are carried across spans in `out`, an exact store
/// and load, in the same position order). Each head is computed exactly as on its own.
@inline(__always)
func attendUnit(_ u: AttentionOperand) {
  let n = u.positions
  let headDim = u.headDim
  let group = u.group
  let ctx = u.scoreStride
  let halves = u.halves
  let bl = u.blockList
  let bs = u.blockSize
  let kvDim = u.kvDim
  let elementBytes = halves ? 2 : 4
  let rows = u.rows
  let scoreRows = u.scores
  /// Calls `body(j, offset)` for positions j in `span` in order, `offset` being where position j's
  /// slice of this key/value head starts in the cache (in elements).
  @inline(__always) func eachPosition(_ span: Range<Int>, _ body: (_ j: Int, _ offset: Int) -> Void) {
    var j = span.lowerBound
    while j < span.upperBound {
      let base = Int(bl[j / bs]) * u.blockStride + u.headOffset
      let cnt = min(bs - j % bs, span.upperBound - j)
      for o in 0..<cnt { body(j + o, base + (j % bs + o) * kvDim) }
      j += cnt
    }
  }
  /// Calls `body(j, slice)` for positions j in `span` in order with position j's float slice in
  /// `cacheBase` (keys or values): the cache itself when it holds floats, else the converted rows.
  @inline(__always) func eachSlice(
    _ cacheBase: UnsafeRawPointer, _ span: Range<Int>, _ body: (_ j: Int, _ slice: UnsafePointer<Float>) -> Void
  ) {
    if halves {
      for j in span { body(j, rows + (j - span.lowerBound) * headDim) }
    } else {
      let floats = cacheBase.assumingMemoryBound(to: Float.self)
      eachPosition(span) { j, offset in body(j, floats + offset) }
    }
  }
  @inline(__always) func convert(_ cacheBase: UnsafeRawPointer, _ span: Range<Int>) {
    guard halves else { return }
    eachPosition(span) { j, offset in
      convertHalves(cacheBase + elementBytes * offset, rows + (j - span.lowerBound) * headDim, count: headDim)
    }
  }
  let spanLength = halves ? u.span : n
  // scores: each head's row of `ctx`, then the heads' 1/Σ, then their running maxima.
  let inverses = scoreRows + group * ctx
  let maxima = inverses + group
  for hi in 0..<group { maxima[hi] = -Float.infinity }
  var j0 = 0
  while j0 < n {
    let span = j0..<min(n, j0 + spanLength)
    convert(u.keys, span)
    for hi in 0..<group {
      let qv = u.query + hi * headDim
      let sc = scoreRows + hi * ctx
      var maxScore = maxima[hi]
      eachSlice(u.keys, span) { j, key in
        let s = dotF32(qv, key, headDim) * u.scale
        sc[j] = s
        if s > maxScore { maxScore = s }
      }
      maxima[hi] = maxScore
    }
    j0 = span.upperBound
  }
  // Applied in the value pass (p_j · inv), as for one head on its own.
  for hi in 0..<group { inverses[hi] = 1 / expShiftedInPlace(scoreRows + hi * ctx, n, shift: maxima[hi]) }
  j0 = 0
  while j0 < n {
    let span = j0..<min(n, j0 + spanLength)
    convert(u.values, span)
    for hi in 0..<group {
      let sc = scoreRows + hi * ctx
      let inv = inverses[hi]
      let out = u.out + hi * headDim
      // out = Σ_j (p_j · inv) · v_j, in position order, 64 dimensions at a time held in registers
      // (the same multiply-then-add per element as an axpy per position, without a load and store
      // of `out` for each one); other head sizes use the axpy loop.
      var d0 = 0
      while d0 + 64 <= headDim {
        let o = UnsafeMutableRawPointer(out + d0)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        if j0 > 0 {
          a0 = o.loadUnaligned(as: SIMD16<Float>.self)
          a1 = o.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self)
          a2 = o.loadUnaligned(fromByteOffset: 128, as: SIMD16<Float>.self)
          a3 = o.loadUnaligned(fromByteOffset: 192, as: SIMD16<Float>.self)
        }
        eachSlice(u.values, span) { j, value in
          let w = SIMD16<Float>(repeating: sc[j] * inv)
          let v = UnsafeRawPointer(value + d0)
          a0 = a0 + w * v.loadUnaligned(as: SIMD16<Float>.self)
          a1 = a1 + w * v.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self)
          a2 = a2 + w * v.loadUnaligned(fromByteOffset: 128, as: SIMD16<Float>.self)
          a3 = a3 + w * v.loadUnaligned(fromByteOffset: 192, as: SIMD16<Float>.self)
        }
        o.storeBytes(of: a0, as: SIMD16<Float>.self)
        o.storeBytes(of: a1, toByteOffset: 64, as: SIMD16<Float>.self)
        o.storeBytes(of: a2, toByteOffset: 128, as: SIMD16<Float>.self)
        o.storeBytes(of: a3, toByteOffset: 192, as: SIMD16<Float>.self)
        d0 += 64
      }
      if d0 < headDim {
        let rest = headDim - d0
        if j0 == 0 { (out + d0).update(repeating: 0, count: rest) }
        eachSlice(u.values, span) { j, value in axpy(sc[j] * inv, value + d0, out + d0, rest) }
      }
    }
    j0 = span.upperBound
  }
}
