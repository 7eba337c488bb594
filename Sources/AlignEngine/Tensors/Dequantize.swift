// Dequantization of ggml block formats. Layouts follow ggml's block_* structs (little endian):
//   Q4_0: f16 d, 16 B nibbles            x = (q - 8) * d       (low nibbles → elements 0..15, high → 16..31)
//   Q4_1: f16 d, f16 m, 16 B nibbles     x = q * d + m
//   Q8_0: f16 d, 32 × i8                 x = q * d
//   Q4_K: f16 d, f16 dmin, 12 B packed 6-bit scales/mins, 128 B nibbles (256 elements)
//   Q6_K: 128 B low 4 bits, 64 B high 2 bits, 16 × i8 scales, f16 d (256 elements)

@inline(__always)
func dequantizeBlockQ4_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
  let d = loadHalf(b)
  let qs = b + 2
  for j in 0..<16 {
    let v = qs.load(fromByteOffset: j, as: UInt8.self)
    y[j] = Float(Int(v & 0x0f) - 8) * d
    y[j + 16] = Float(Int(v >> 4) - 8) * d
  }
}

@inline(__always)
func dequantizeBlockQ4_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
  let d = loadHalf(b)
  let m = loadHalf(b, 2)
  let qs = b + 4
  for j in 0..<16 {
    let v = qs.load(fromByteOffset: j, as: UInt8.self)
    y[j] = Float(v & 0x0f) * d + m
    y[j + 16] = Float(v >> 4) * d + m
  }
}

@inline(__always)
func dequantizeBlockQ8_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
  let d = loadHalf(b)
  let qs = b + 2
  for j in 0..<32 {
    y[j] = Float(qs.load(fromByteOffset: j, as: Int8.self)) * d
  }
}

/// 6-bit scale and min number `j` (0..<8) of a Q4_K/Q5_K block's 12 packed bytes.
@inline(__always)
func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (UInt8, UInt8) {
  @inline(__always) func at(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
  if j < 4 {
    return (at(j) & 63, at(j + 4) & 63)
  }
  let sc = (at(j + 4) & 0x0f) | ((at(j - 4) >> 6) << 4)
  let m = (at(j + 4) >> 4) | ((at(j) >> 6) << 4)
  return (sc, m)
}

@inline(__always)
func dequantizeBlockQ4_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
  let d = loadHalf(b)
  let dmin = loadHalf(b, 2)
  let scales = b + 4
  var q = b + 16
  var out = y
  var isub = 0
  for _ in 0..<4 {
    let (sc1, m1) = scaleMinK4(isub, scales)
    let (sc2, m2) = scaleMinK4(isub + 1, scales)
    let d1 = d * Float(sc1), mm1 = dmin * Float(m1)
    let d2 = d * Float(sc2), mm2 = dmin * Float(m2)
    for l in 0..<32 {
      let v = q.load(fromByteOffset: l, as: UInt8.self)
      out[l] = d1 * Float(v & 0x0f) - mm1
      out[l + 32] = d2 * Float(v >> 4) - mm2
    }
    out += 64
    q += 32
    isub += 2
  }
}

@inline(__always)
func dequantizeBlockQ6_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
  let d = loadHalf(b, 208)
  var ql = b
  var qh = b + 128
  var sc = b + 192
  var out = y
  for _ in 0..<2 {
    for l in 0..<32 {
      let isc = l / 16
      let lo0 = ql.load(fromByteOffset: l, as: UInt8.self)
      let lo1 = ql.load(fromByteOffset: l + 32, as: UInt8.self)
      let h = qh.load(fromByteOffset: l, as: UInt8.self)
      let q1 = Int((lo0 & 0x0f) | ((h & 3) << 4)) - 32
      let q2 = Int((lo1 & 0x0f) | (((h >> 2) & 3) << 4)) - 32
      let q3 = Int((lo0 >> 4) | (((h >> 4) & 3) << 4)) - 32
      let q4 = Int((lo1 >> 4) | (((h >> 6) & 3) << 4)) - 32
      @inline(__always) func s(_ i: Int) -> Float { d * Float(sc.load(fromByteOffset: i, as: Int8.self)) }
      out[l] = s(isc) * Float(q1)
      out[l + 32] = s(isc + 2) * Float(q2)
      out[l + 64] = s(isc + 4) * Float(q3)
      out[l + 96] = s(isc + 6) * Float(q4)
    }
    out += 128
    ql += 64
    qh += 32
    sc += 8
  }
}

/// Dequantizes `count` elements of `type` starting at `src` into `dst` (count must be a whole
/// number of blocks; callers check this when they build a weight).
func dequantizeRow(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
  let nb = count / type.blockSize
  let bb = type.blockBytes
  switch type {
  case .f32:
    dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
  case .f16:
    for i in 0..<count { dst[i] = loadHalf(src, 2 * i) }
  case .bf16:
    for i in 0..<count {
      dst[i] = bf16ToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    }
  case .q4_0: for i in 0..<nb { dequantizeBlockQ4_0(src + i * bb, dst + 32 * i) }
  case .q4_1: for i in 0..<nb { dequantizeBlockQ4_1(src + i * bb, dst + 32 * i) }
  case .q8_0: for i in 0..<nb { dequantizeBlockQ8_0(src + i * bb, dst + 32 * i) }
  case .q4_K: for i in 0..<nb { dequantizeBlockQ4_K(src + i * bb, dst + 256 * i) }
  case .q6_K: for i in 0..<nb { dequantizeBlockQ6_K(src + i * bb, dst + 256 * i) }
  default:
    // Unsupported types are rejected when a weight is created; zero-fill keeps this total.
    dst.update(repeating: 0, count: count)
  }
}

/// Dequantizes raw ggml-encoded bytes to floats.
///
/// - Parameters:
///   - type: the encoding of `bytes`.
///   - bytes: whole blocks of `type`.
/// - Returns: the decoded values (`bytes.count / blockBytes * blockSize` of them).
/// - Throws: `EngineError.invalidArgument` for an unsupported type or a partial block.
public func dequantize(_ type: GGMLType, bytes: [UInt8]) throws -> [Float] {
  guard type.isSupportedWeight else { throw EngineError.invalidArgument("cannot dequantize \(type)") }
  guard bytes.count % type.blockBytes == 0 else {
    throw EngineError.invalidArgument("\(bytes.count) bytes is not a whole number of \(type) blocks")
  }
  let n = bytes.count / type.blockBytes * type.blockSize
  var out = [Float](repeating: 0, count: n)
  bytes.withUnsafeBytes { src in
    out.withUnsafeMutableBufferPointer { dst in
      if n > 0 { dequantizeRow(type, src.baseAddress!, dst.baseAddress!, n) }
    }
  }
  return out
}
