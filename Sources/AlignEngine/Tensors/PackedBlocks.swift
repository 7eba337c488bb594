#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// A Q4_0 / Q4_1 / Q8_0 weight re-laid out for fast dot products.
///
/// Rows are taken in groups of 8 (the last group repeats the last row). For each group and each
/// 32-weight block, one contiguous chunk holds the 8 rows' packed quants, then their 8 block scales
/// as halves, then (Q4_1) their 8 minimums as halves:
///
///     chunk(g, b) = q[8g][b] q[8g+1][b] … q[8g+7][b] | d × 8 (f16) | m × 8 (f16, Q4_1 only)
///
/// so a batch-1 product of an 8-row group reads one sequential stream of exactly the file's bytes
/// per weight (20 for Q4_1, 18 for Q4_0, 34 for Q8_0): decoding one token is bound by how fast the
/// weights stream from memory. Row-major float copies of the scales (and minimums: Q4_1's m, Q4_0's
/// −8·d) serve the kernels that reuse one weight block across many tokens.
final class PackedBlocks: @unchecked Sendable {
  // Safety: immutable after init.
  let type: GGMLType
  let rows: Int
  /// Blocks per row.
  let blocks: Int
  /// Bytes of quants per row and block: 16 (4-bit) or 32 (8-bit).
  let quantBytes: Int
  /// Bytes of one (group, block) chunk.
  let chunkBytes: Int
  /// (rows / 8 rounded up, blocks) chunks as described above, 64-byte aligned.
  let chunks: UnsafeMutableRawPointer
  /// (rows, blocks) block scales.
  let scales: UnsafeMutablePointer<Float>
  /// (rows, blocks) block minimums: Q4_1's m, Q4_0's −8·d (its values are (q − 8)·d); nil for Q8_0.
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
    chunkBytes = 8 * quantBytes + (w.type == .q4_1 ? 32 : 16)
    let n = rows * blocks
    let groups = (rows + 7) / 8
    let chunkTotal = max(groups * blocks * chunkBytes, 64)
    chunks = UnsafeMutableRawPointer.allocate(byteCount: chunkTotal, alignment: 64)
    chunks.initializeMemory(as: UInt8.self, repeating: 0, count: chunkTotal)
    scales = .allocate(capacity: max(n, 1))
    mins = w.type == .q8_0 ? nil : .allocate(capacity: max(n, 1))
    let bb = w.type.blockBytes
    for g in 0..<groups {
      for j in 0..<8 {
        let r = min(8 * g + j, rows - 1)  // the last group repeats the last row
        let src = w.row(r)
        for b in 0..<blocks {
          let blk = src + b * bb
          let c = chunks + (g * blocks + b) * chunkBytes
          (c + j * quantBytes).copyMemory(from: blk + qOffset, byteCount: quantBytes)
          (c + 8 * quantBytes + 2 * j).copyMemory(from: blk, byteCount: 2)
          if w.type == .q4_1 { (c + 8 * quantBytes + 16 + 2 * j).copyMemory(from: blk + 2, byteCount: 2) }
          if r == 8 * g + j {
            let d = halfToFloat(blk.loadUnaligned(as: UInt16.self))
            scales[r * blocks + b] = d
            if let mins {
              mins[r * blocks + b] =
                w.type == .q4_1 ? halfToFloat(blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) : -8 * d
            }
          }
        }
      }
    }
  }

  deinit {
    chunks.deallocate()
    scales.deallocate()
    mins?.deallocate()
  }

  /// The quants of row `r`, block 0; block b is `chunkBytes · b` further on.
  @inline(__always)
  func quantBase(row r: Int) -> UnsafeRawPointer {
    UnsafeRawPointer(chunks + (r >> 3) * blocks * chunkBytes + (r & 7) * quantBytes)
  }

  /// Dequantizes row `r` into `y` (cols floats).
  @inline(__always)
  func dequantize(row r: Int, into y: UnsafeMutablePointer<Float>) {
    let nb = blocks
    let q = quantBase(row: r)
    let cb = chunkBytes
    for b in 0..<nb {
      let i = r * nb + b
      let d = scales[i]
      let out = y + 32 * b
      switch type {
      case .q4_1:
        let m = mins![i]
        for j in 0..<16 {
          let v = q.load(fromByteOffset: b * cb + j, as: UInt8.self)
          out[j] = Float(v & 0x0f) * d + m
          out[j + 16] = Float(v >> 4) * d + m
        }
      case .q4_0:
        for j in 0..<16 {
          let v = q.load(fromByteOffset: b * cb + j, as: UInt8.self)
          out[j] = Float(Int32(v & 0x0f) - 8) * d
          out[j + 16] = Float(Int32(v >> 4) - 8) * d
        }
      default:
        for j in 0..<32 { out[j] = Float(q.load(fromByteOffset: b * cb + j, as: Int8.self)) * d }
      }
    }
  }
}
