import CBLAS

/// Runs `body(participant, range)` over `0..<count` in chunks of about `grain` items, in parallel on
/// `pool`. `participant` (0..<pool.threads) is used by one thread at a time, for per-thread scratch.
@inline(__always)
func parallelFor(
  _ count: Int, grain: Int, pool: ForkJoinPool, _ body: (_ participant: Int, _ range: Range<Int>) -> Void
) {
  if count <= 0 { return }
  let chunks = min(max(1, (count + grain - 1) / grain), ForkJoinPool.maxChunks)
  if chunks == 1 || pool.threads == 1 {
    body(0, 0..<count)
    return
  }
  pool.run(chunks: chunks) { participant, c in
    body(participant, (count * c / chunks)..<(count * (c + 1) / chunks))
  }
}

/// Dot product of two float vectors.
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

/// Per-block sums of activations (blocks of 32), used by Q4_0/Q4_1 dot products.
@inline(__always)
func blockSums(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
  for b in 0..<(n / 32) {
    let v0 = UnsafeRawPointer(x + 32 * b).loadUnaligned(as: SIMD16<Float>.self)
    let v1 = UnsafeRawPointer(x + 32 * b + 16).loadUnaligned(as: SIMD16<Float>.self)
    out[b] = (v0 + v1).sum()
  }
}

/// Half to float for finite values without branches (scales in quantized blocks are finite):
/// shifting the exponent/mantissa into float position and multiplying by 2^112 rebiases the exponent,
/// and is exact for normal and subnormal halves.
@inline(__always)
func finiteHalfToFloat(_ h: UInt16) -> Float {
  let magnitude = Float(bitPattern: UInt32(h & 0x7fff) << 13) * 0x1p112
  return Float(bitPattern: magnitude.bitPattern | (UInt32(h & 0x8000) << 16))
}

@inline(__always)
func loadFiniteHalf(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
  finiteHalfToFloat(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

/// Row of a Q4_1 weight dotted with float activations `x` (with per-block sums `xs`).
@inline(__always)
func dotQ4_1(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xs: UnsafePointer<Float>, _ nb: Int) -> Float {
  var acc = SIMD16<Float>()
  var mins: Float = 0
  let rx = UnsafeRawPointer(x)
  for b in 0..<nb {
    let blk = row + 20 * b
    let d = loadFiniteHalf(blk, 0)
    let m = loadFiniteHalf(blk, 2)
    let q = blk.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
    let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q & 0x0f))
    let hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q &>> 4))
    let x0 = rx.loadUnaligned(fromByteOffset: 128 * b, as: SIMD16<Float>.self)
    let x1 = rx.loadUnaligned(fromByteOffset: 128 * b + 64, as: SIMD16<Float>.self)
    acc += d * (lo * x0 + hi * x1)
    mins += m * xs[b]
  }
  return acc.sum() + mins
}

@inline(__always)
func dotQ4_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xs: UnsafePointer<Float>, _ nb: Int) -> Float {
  var acc = SIMD16<Float>()
  var offs: Float = 0
  let rx = UnsafeRawPointer(x)
  for b in 0..<nb {
    let blk = row + 18 * b
    let d = loadFiniteHalf(blk, 0)
    let q = blk.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
    let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q & 0x0f))
    let hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q &>> 4))
    let x0 = rx.loadUnaligned(fromByteOffset: 128 * b, as: SIMD16<Float>.self)
    let x1 = rx.loadUnaligned(fromByteOffset: 128 * b + 64, as: SIMD16<Float>.self)
    acc += d * (lo * x0 + hi * x1)
    offs += d * xs[b]
  }
  return acc.sum() - 8 * offs
}

@inline(__always)
func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ nb: Int) -> Float {
  var acc = SIMD16<Float>()
  let rx = UnsafeRawPointer(x)
  for b in 0..<nb {
    let blk = row + 34 * b
    let d = loadFiniteHalf(blk, 0)
    let q0 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: blk.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)))
    let q1 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: blk.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)))
    let x0 = rx.loadUnaligned(fromByteOffset: 128 * b, as: SIMD16<Float>.self)
    let x1 = rx.loadUnaligned(fromByteOffset: 128 * b + 64, as: SIMD16<Float>.self)
    acc += d * (q0 * x0 + q1 * x1)
  }
  return acc.sum()
}

/// Work buffers for `matmul`, sized once for the largest matrix and batch.
final class MatmulScratch: @unchecked Sendable {
  // Safety: used only by the thread that drives a forward pass (and the workers it forks and joins).
  let threads: Int
  let tileRows: Int
  let maxCols: Int
  let maxTokens: Int
  /// (threads, tileRows, maxCols) dequantized weight tiles.
  let tiles: AlignedBuffer
  /// (maxTokens, maxCols / 32) per-block activation sums.
  let sums: AlignedBuffer
  /// (maxTokens, maxCols) activations quantized to Q8 for integer dot products.
  let q8: QuantizedActivations
  /// Worker threads shared by all products of one engine.
  let pool: ForkJoinPool

  init(threads: Int, maxCols: Int, maxTokens: Int, tileRows: Int = 64) {
    pool = ForkJoinPool(threads: threads)
    q8 = QuantizedActivations(maxTokens: maxTokens, maxCols: maxCols)
    self.threads = threads
    self.tileRows = tileRows
    self.maxCols = maxCols
    self.maxTokens = maxTokens
    tiles = AlignedBuffer(floats: threads * tileRows * maxCols)
    sums = AlignedBuffer(floats: maxTokens * (maxCols / 32 + 1))
  }
}

/// Settings for how a matrix product is computed.
struct MatmulPolicy: Sendable {
  /// From this many activation rows on, quantized weights are dequantized in tiles and multiplied with sgemm.
  var gemmMinTokens: Int = 4
  /// Quantize activations to Q8 for Q4_0/Q4_1/Q8_0 dot products (llama.cpp's scheme); when false,
  /// the dot products use the float activations (exact, slower).
  var quantizedActivations: Bool = true
}

/// `y (T, W.rows) = x (T, W.cols) · Wᵀ` (or `y +=` when `accumulate`).
func matmul(
  _ w: WeightMatrix, _ x: UnsafePointer<Float>, tokens: Int, _ y: UnsafeMutablePointer<Float>,
  accumulate: Bool = false, scratch: MatmulScratch, policy: MatmulPolicy = MatmulPolicy()
) {
  let rows = w.rows
  let cols = w.cols
  let threads = scratch.threads
  if w.type == .f32 || (w.dense != nil && tokens >= policy.gemmMinTokens) {
    let base = w.dense.map { UnsafePointer($0.floats) } ?? w.data.assumingMemoryBound(to: Float.self)
    parallelFor(rows, grain: max(16, rows / (4 * threads)), pool: scratch.pool) { _, range in
      if range.isEmpty { return }
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(range.count), Int32(cols), 1,
        x, Int32(cols), base + range.lowerBound * cols, Int32(cols),
        accumulate ? 1 : 0, y + range.lowerBound, Int32(rows))
    }
    return
  }
  if tokens >= policy.gemmMinTokens || !(w.type == .q4_0 || w.type == .q4_1 || w.type == .q8_0) {
    // Dequantize tiles of rows, then sgemm. Each thread owns a tile buffer.
    let tileRows = scratch.tileRows
    let nTiles = (rows + tileRows - 1) / tileRows
    parallelFor(nTiles, grain: 1, pool: scratch.pool) { tid, tileRange in
      let tile = scratch.tiles.floats + tid * tileRows * scratch.maxCols
      for ti in tileRange {
        let r0 = ti * tileRows
        let nr = min(tileRows, rows - r0)
        for r in 0..<nr { w.dequantize(row: r0 + r, into: tile + r * cols) }
        if tokens == 1 {
          for r in 0..<nr {
            let v = dotF32(tile + r * cols, x, cols)
            y[r0 + r] = accumulate ? y[r0 + r] + v : v
          }
        } else {
          cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(nr), Int32(cols), 1,
            x, Int32(cols), tile, Int32(cols), accumulate ? 1 : 0, y + r0, Int32(rows))
        }
      }
    }
    return
  }
  // Few tokens, 32-element block types: direct dot products against the encoded rows.
  let nb = cols / 32
  if policy.quantizedActivations {
    let a = scratch.q8
    a.quantize(x, tokens: tokens, cols: cols)
    if let packed = w.packed {
      parallelFor(rows, grain: 32, pool: scratch.pool) { _, range in
        for r in range {
          for t in 0..<tokens {
            let v = packed.dot(row: r, a, token: t)
            let o = t * rows + r
            y[o] = accumulate ? y[o] + v : v
          }
        }
      }
      return
    }
    parallelFor(rows, grain: 32, pool: scratch.pool) { _, range in
      for r in range {
        let row = w.row(r)
        for t in 0..<tokens {
          let v: Float
          switch w.type {
          case .q4_1: v = dotQ4_1Q8(row, a, token: t, nb)
          case .q4_0: v = dotQ4_0Q8(row, a, token: t, nb)
          default: v = dotQ8_0Q8(row, a, token: t, nb)
          }
          let o = t * rows + r
          y[o] = accumulate ? y[o] + v : v
        }
      }
    }
    return
  }
  let sums = scratch.sums.floats
  if w.type != .q8_0 {
    for t in 0..<tokens { blockSums(x + t * cols, sums + t * nb, cols) }
  }
  parallelFor(rows, grain: 32, pool: scratch.pool) { _, range in
    for r in range {
      let row = w.row(r)
      for t in 0..<tokens {
        let xt = x + t * cols
        let v: Float
        switch w.type {
        case .q4_1: v = dotQ4_1(row, xt, sums + t * nb, nb)
        case .q4_0: v = dotQ4_0(row, xt, sums + t * nb, nb)
        default: v = dotQ8_0(row, xt, nb)
        }
        let o = t * rows + r
        y[o] = accumulate ? y[o] + v : v
      }
    }
  }
}
