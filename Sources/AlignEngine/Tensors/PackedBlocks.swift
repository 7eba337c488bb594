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
  /// (rows, blocks) block minimums: Q4_1's m, Q4_0's −8·d (its values are (q − 8)·d); nil for Q8_0.
  let mins: UnsafeMutablePointer<Float>?
  /// (rows / 8 rounded up, blocks, 8) `scales` of each group of 8 rows side by side (8-row tiles).
  let groupScales: UnsafeMutablePointer<Float>
  /// (rows / 8 rounded up, blocks, 8) `mins` likewise, nil for Q8_0.
  let groupMins: UnsafeMutablePointer<Float>?

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
    mins = w.type == .q8_0 ? nil : .allocate(capacity: max(n, 1))
    let grouped = (rows + 7) / 8 * 8 * blocks
    groupScales = .allocate(capacity: max(grouped, 1))
    groupScales.initialize(repeating: 0, count: max(grouped, 1))
    groupMins = w.type == .q8_0 ? nil : .allocate(capacity: max(grouped, 1))
    groupMins?.initialize(repeating: 0, count: max(grouped, 1))
    let bb = w.type.blockBytes
    for r in 0..<rows {
      let src = w.row(r)
      for b in 0..<blocks {
        let blk = src + b * bb
        let i = r * blocks + b
        let d = halfToFloat(blk.loadUnaligned(as: UInt16.self))
        scales[i] = d
        let g = ((r / 8) * blocks + b) * 8 + r % 8
        groupScales[g] = d
        if let mins, let groupMins {
          let m = w.type == .q4_1 ? halfToFloat(blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) : -8 * d
          mins[i] = m
          groupMins[g] = m
        }
        (quants + i * quantBytes).copyMemory(from: blk + qOffset, byteCount: quantBytes)
      }
    }
  }

  deinit {
    quants.deallocate()
    scales.deallocate()
    mins?.deallocate()
    groupScales.deallocate()
    groupMins?.deallocate()
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
