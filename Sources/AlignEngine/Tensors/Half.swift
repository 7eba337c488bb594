/// IEEE half (binary16) bits to Float, exact (subnormals, infinities and NaN included).
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
  let sign = UInt32(h & 0x8000) << 16
  let exp = UInt32(h >> 10) & 0x1f
  let mant = UInt32(h & 0x3ff)
  if exp == 0 {
    // Zero or subnormal: mant * 2^-24.
    let v = Float(mant) * (1.0 / 16_777_216.0)
    return sign != 0 ? -v : v
  }
  if exp == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13)) }
  return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
}

/// bfloat16 bits to Float (exact).
@inline(__always)
func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

/// Loads a little-endian half at a byte offset and converts it.
@inline(__always)
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int = 0) -> Float {
  halfToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}
