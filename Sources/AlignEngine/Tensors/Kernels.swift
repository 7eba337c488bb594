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

/// Work buffers for `matmul`, sized once for the largest matrix and batch.
final class MatmulScratch: @unchecked Sendable {
  // Safety: used only by the thread that drives a forward pass (and the workers it forks and joins).
  let threads: Int
  let tileRows: Int
  let maxCols: Int
  let maxTokens: Int
  /// (threads, tileRows, maxCols) dequantized weight tiles.
  let tiles: AlignedBuffer
  /// (maxTokens, maxCols) activations quantized to Q8 for integer dot products.
  let q8: QuantizedActivations
  /// Worker threads shared by all products of one engine.
  let pool: ForkJoinPool
  /// The kernels the integer products run on.
  let kernels: KernelSet

  init(threads: Int, maxCols: Int, maxTokens: Int, kernels: KernelSet, tileRows: Int = 64) {
    self.kernels = kernels
    pool = ForkJoinPool(threads: threads)
    q8 = QuantizedActivations(maxTokens: maxTokens, maxCols: maxCols)
    self.threads = threads
    self.tileRows = tileRows
    self.maxCols = maxCols
    self.maxTokens = maxTokens
    tiles = AlignedBuffer(floats: threads * tileRows * maxCols)
  }
}

/// Settings for how a matrix product is computed.
struct MatmulPolicy: Sendable {
  /// Use batch-invariant integer products with Q8 activations for packed (Q4_0/Q4_1/Q8_0) weights on
  /// the rows the caller marks as row-wise; when false every row goes through sgemm (exact float).
  var quantizedActivations: Bool = true
}

/// `y (T, W.rows) = x (T, W.cols) · Wᵀ` (or `y +=` when `accumulate`).
///
/// The first `rowwiseTokens` rows of `x` use integer dot products against Q8-quantized activations
/// when `w` has a packed layout (Q4_0/Q4_1/Q8_0) — llama.cpp's scheme, and computed identically
/// whatever the batch — and the remaining rows use sgemm: directly on F32 weights or dense copies,
/// otherwise on tiles of dequantized rows.
func matmul(
  _ w: WeightMatrix, _ x: UnsafePointer<Float>, tokens: Int, _ y: UnsafeMutablePointer<Float>,
  accumulate: Bool = false, scratch: MatmulScratch, policy: MatmulPolicy = MatmulPolicy(), rowwiseTokens: Int
) {
  let rows = w.rows
  let cols = w.cols
  let tr = (w.packed != nil && policy.quantizedActivations) ? max(0, min(rowwiseTokens, tokens)) : 0
  if tr > 0, let packed = w.packed {
    let a = scratch.q8
    let kernels = scratch.kernels
    a.quantize(x, tokens: tr, cols: cols, kernels: kernels)
    let groupCount = (rows + 7) / 8
    parallelFor(groupCount, grain: rowwiseGrain(groupCount, scratch), pool: scratch.pool) { _, groups in
      packed.dotRowGroups(groups, a, tokens: tr, y, ldy: rows, accumulate: accumulate, kernels: kernels)
    }
  }
  gemmRemainder(w, x, tokens: tokens, from: tr, y, accumulate: accumulate, scratch: scratch)
}

/// `y_i = x · W_iᵀ` for several weights that read the same input (a layer's q/k/v, gate/up), with
/// the same results as one `matmul` each: when every weight is packed, the activations are quantized
/// once and the row-wise products of all weights run as one parallel job, which halves the
/// fork-joins of a decode step.
func matmul(
  sharing x: UnsafePointer<Float>, _ products: [(w: WeightMatrix, y: UnsafeMutablePointer<Float>)], tokens: Int,
  scratch: MatmulScratch, policy: MatmulPolicy = MatmulPolicy(), rowwiseTokens: Int
) {
  let tr = policy.quantizedActivations ? max(0, min(rowwiseTokens, tokens)) : 0
  guard tr > 0, let cols = products.first?.w.cols,
    products.allSatisfy({ $0.w.packed != nil && $0.w.cols == cols })
  else {
    for p in products {
      matmul(p.w, x, tokens: tokens, p.y, scratch: scratch, policy: policy, rowwiseTokens: rowwiseTokens)
    }
    return
  }
  let a = scratch.q8
  let kernels = scratch.kernels
  a.quantize(x, tokens: tr, cols: cols, kernels: kernels)
  var starts = [0]
  for p in products { starts.append(starts[starts.count - 1] + (p.w.rows + 7) / 8) }
  let groupCount = starts[starts.count - 1]
  parallelFor(groupCount, grain: rowwiseGrain(groupCount, scratch), pool: scratch.pool) { _, groups in
    for (i, p) in products.enumerated() {
      let lo = max(groups.lowerBound, starts[i])
      let hi = min(groups.upperBound, starts[i + 1])
      if lo < hi {
        p.w.packed!.dotRowGroups(
          (lo - starts[i])..<(hi - starts[i]), a, tokens: tr, p.y, ldy: p.w.rows, accumulate: false, kernels: kernels)
      }
    }
  }
  for p in products {
    gemmRemainder(p.w, x, tokens: tokens, from: tr, p.y, accumulate: false, scratch: scratch)
  }
}

/// 8-row groups per chunk of a row-wise product: a few chunks per thread, so a thread the OS has
/// not scheduled yet costs little, but not so many that claiming them (contended atomics shared by
/// the cores) adds up: a decode step posts ~150 jobs.
@inline(__always)
private func rowwiseGrain(_ groups: Int, _ scratch: MatmulScratch) -> Int {
  max(4, groups / (4 * scratch.threads))
}

/// The sgemm part of `matmul`: tokens `tr..<tokens`.
private func gemmRemainder(
  _ w: WeightMatrix, _ x: UnsafePointer<Float>, tokens: Int, from tr: Int, _ y: UnsafeMutablePointer<Float>,
  accumulate: Bool, scratch: MatmulScratch
) {
  let rows = w.rows
  let cols = w.cols
  let tg = tokens - tr
  if tg <= 0 { return }
  let xg = x + tr * cols
  let yg = y + tr * rows
  let threads = scratch.threads
  if w.type == .f32 || w.dense != nil {
    let base = w.dense.map { UnsafePointer($0.floats) } ?? w.data.assumingMemoryBound(to: Float.self)
    parallelFor(rows, grain: max(16, rows / (4 * threads)), pool: scratch.pool) { _, range in
      if range.isEmpty { return }
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tg), Int32(range.count), Int32(cols), 1,
        xg, Int32(cols), base + range.lowerBound * cols, Int32(cols),
        accumulate ? 1 : 0, yg + range.lowerBound, Int32(rows))
    }
    return
  }
  // Dequantize tiles of rows, then sgemm. Each participant owns a tile buffer.
  let tileRows = scratch.tileRows
  let nTiles = (rows + tileRows - 1) / tileRows
  parallelFor(nTiles, grain: 1, pool: scratch.pool) { tid, tileRange in
    let tile = scratch.tiles.floats + tid * tileRows * scratch.maxCols
    for ti in tileRange {
      let r0 = ti * tileRows
      let nr = min(tileRows, rows - r0)
      for r in 0..<nr { w.dequantize(row: r0 + r, into: tile + r * cols) }
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tg), Int32(nr), Int32(cols), 1,
        xg, Int32(cols), tile, Int32(cols), accumulate ? 1 : 0, yg + r0, Int32(rows))
    }
  }
}
