#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

/// A zero-filled buffer with 64-byte alignment that lives as long as its owner.
///
/// Large buffers (KV caches, activation buffers, dense weight copies) are mapped from the kernel
/// rather than taken from the heap: their zero pages cost memory only once written, so a KV cache
/// sized for the worst case holds only what sequences used, and freeing one hands its memory back
/// to the system at once (the heap allocator would keep it, so a replaced model's buffers stayed
/// resident after a swap).
final class AlignedBuffer: @unchecked Sendable {
  // Safety: written only while the owner is being built or by the single thread driving a forward pass.
  let raw: UnsafeMutableRawPointer
  let byteCount: Int
  /// Bytes mapped for this buffer; 0 when it came from the heap.
  private let mappedBytes: Int

  /// Buffers of at least this many bytes are mapped (smaller ones share heap pages).
  static let mappingThreshold = 1 << 20

  init(byteCount: Int) {
    self.byteCount = byteCount
    let size = max(byteCount, 64)
    if size >= Self.mappingThreshold, let mapped = Self.map(size) {
      raw = mapped
      mappedBytes = size
    } else {
      raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
      raw.initializeMemory(as: UInt8.self, repeating: 0, count: size)
      mappedBytes = 0
    }
  }

  convenience init(floats: Int) { self.init(byteCount: floats * 4) }

  var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }

  deinit {
    if mappedBytes > 0 {
      munmap(raw, mappedBytes)
    } else {
      raw.deallocate()
    }
  }

  /// Private anonymous pages (zero-filled, page-aligned), or nil when the kernel refuses.
  private static func map(_ size: Int) -> UnsafeMutableRawPointer? {
    guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
      p != UnsafeMutableRawPointer(bitPattern: -1)
    else { return nil }
    return p
  }
}
