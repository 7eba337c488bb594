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

/// Float to IEEE half bits, round to nearest even (overflow gives infinity).
@inline(__always)
func floatToHalf(_ f: Float) -> UInt16 {
  let bits = f.bitPattern
  let sign = UInt16((bits >> 16) & 0x8000)
  let exp = Int((bits >> 23) & 0xff)
  var mant = bits & 0x7f_ffff
  if exp == 255 { return sign | 0x7c00 | (mant != 0 ? 0x200 : 0) }
  var e = exp - 127 + 15
  if e >= 31 { return sign | 0x7c00 }
  if e <= 0 {
    if e < -10 { return sign }
    mant |= 0x80_0000
    let shift = UInt32(14 - e)
    var h = mant >> shift
    let rem = mant & ((1 << shift) - 1)
    let half = UInt32(1) << (shift - 1)
    if rem > half || (rem == half && (h & 1) == 1) { h += 1 }
    return sign | UInt16(h)
  }
  var h = mant >> 13
  let rem = mant & 0x1fff
  if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) {
    h += 1
    if h == 0x400 {
      h = 0
      e += 1
      if e >= 31 { return sign | 0x7c00 }
    }
  }
  return sign | UInt16(e << 10) | UInt16(h)
}

/// bfloat16 bits to Float (exact).
@inline(__always)
func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

/// Loads a little-endian half at a byte offset and converts it.
@inline(__always)
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int = 0) -> Float {
  halfToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}
