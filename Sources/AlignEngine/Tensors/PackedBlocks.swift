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

