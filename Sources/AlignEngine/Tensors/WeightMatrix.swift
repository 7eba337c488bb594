/// A 2-D weight in ggml layout: `rows` output features, each a contiguous row of `cols` input
/// features encoded as `type`. Points into a memory mapping or an owned buffer that the model keeps alive.
struct WeightMatrix: @unchecked Sendable {
  // Safety: points to immutable memory owned by the model that holds this weight.
  let name: String
  let type: GGMLType
  /// Output features.
  let rows: Int
  /// Input features.
  let cols: Int
  let data: UnsafeRawPointer
  let rowBytes: Int
  /// Re-laid-out copy for fast dot products (Q4_0/Q4_1/Q8_0), made when the model is loaded.
  var packed: PackedBlocks?
  /// (rows, cols) float copy for sgemm on batches, made at load time when the model is small enough.
  var dense: AlignedBuffer?

  init(name: String, type: GGMLType, rows: Int, cols: Int, data: UnsafeRawPointer, rowBytes: Int) {
    self.name = name
    self.type = type
    self.rows = rows
    self.cols = cols
    self.data = data
    self.rowBytes = rowBytes
    packed = nil
    dense = nil
  }

  /// A copy that also holds a dequantized float copy of the matrix (for batched products).
  func withDenseCopy() -> WeightMatrix {
    if type == .f32 { return self }
    var w = self
    let buf = AlignedBuffer(floats: rows * cols)
    for r in 0..<rows { dequantize(row: r, into: buf.floats + r * cols) }
    w.dense = buf
    return w
  }

  /// A copy with a packed layout for fast dot products when the type has one.
  func withPackedLayout() -> WeightMatrix {
    var w = self
    w.packed = PackedBlocks(self)
    return w
  }

  @inline(__always) func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }

  /// Dequantizes row `r` into `dst` (`cols` floats).
  @inline(__always) func dequantize(row r: Int, into dst: UnsafeMutablePointer<Float>) {
    if let packed {
      packed.dequantize(row: r, into: dst)
    } else {
      dequantizeRow(type, row(r), dst, cols)
    }
  }
}

/// A heap buffer with 64-byte alignment that lives as long as its owner.
final class AlignedBuffer: @unchecked Sendable {
  // Safety: written only while the owner is being built or by the single thread driving a forward pass.
  let raw: UnsafeMutableRawPointer
  let byteCount: Int

  init(byteCount: Int) {
    self.byteCount = byteCount
    raw = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 64))
  }

  convenience init(floats: Int) { self.init(byteCount: floats * 4) }

  var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }

  deinit { raw.deallocate() }
}
