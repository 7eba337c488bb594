import Foundation

/// e^x for four lanes (Cephes-style polynomial after range reduction; relative error ≈ 2e-7 for
/// x in [-87, 88]; below gives ~0, above +inf). Used for softmax and SiLU, where libm's expf per
/// element cost ~10% of decode time.
@inline(__always)
func vexp(_ x: SIMD4<Float>) -> SIMD4<Float> {
  let magic = SIMD4<Float>(repeating: 12_582_912)  // 1.5 · 2^23: adding it rounds to an integer
  // Not `clamped`: its generic pointwiseMin/Max were not inlined (~4% of a prefill's instructions).
  let lo = SIMD4<Float>(repeating: -87.3), hi = SIMD4<Float>(repeating: 88.7)
  var xc = x.replacing(with: lo, where: x .< lo)
  xc = xc.replacing(with: hi, where: xc .> hi)
  let t = xc * 1.442_695_04 + magic
  let n = t - magic
  var r = xc - n * 0.693_359_375
  r = r - n * -2.121_944_4e-4
  var p = SIMD4<Float>(repeating: 1.987_569_15e-4)
  p = p * r + 1.398_199_95e-3
  p = p * r + 8.333_451_9e-3
  p = p * r + 4.166_579_59e-2
  p = p * r + 1.666_666_55e-1
  p = p * r + 5.000_000_12e-1
  p = p * r * r + r + 1
  // 2^n from the integer sitting in t's low mantissa bits.
  let ni = unsafeBitCast(t, to: SIMD4<UInt32>.self) &- 0x4B40_0000
  let scale = unsafeBitCast((ni &+ 127) &<< 23, to: SIMD4<Float>.self)
  // n = 128 (x near 88.7) overflows the exponent: split the scaling in two steps.
  let big = n .> 127
  let half = unsafeBitCast((ni &+ 126) &<< 23, to: SIMD4<Float>.self)
  return (p * scale).replacing(with: p * half * 2, where: big)
}

/// `x[i] = exp(x[i] - shift)` for i in 0..<n; returns the sum of the results.
@inline(__always)
func expShiftedInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
  var i = 0
  var acc = SIMD4<Float>()
  let s = SIMD4<Float>(repeating: shift)
  let raw = UnsafeMutableRawPointer(x)
  while i + 4 <= n {
    let v = vexp(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self) - s)
    raw.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD4<Float>.self)
    acc += v
    i += 4
  }
  var total = acc.sum()
  while i < n {
    var lane = SIMD4<Float>(repeating: 0)
    lane[0] = x[i] - shift
    let v = vexp(lane)[0]
    x[i] = v
    total += v
    i += 1
  }
  return total
}

/// `gate[i] = silu(gate[i]) · up[i]` (SwiGLU) for i in 0..<n.
@inline(__always)
func swiGLU(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
  var i = 0
  let g = UnsafeMutableRawPointer(gate)
  let u = UnsafeRawPointer(up)
  while i + 4 <= n {
    let x = g.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self)
    let v = x / (1 + vexp(-x)) * u.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self)
    g.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD4<Float>.self)
    i += 4
  }
  while i < n {
    let x = gate[i]
    gate[i] = x / (1 + exp(-x)) * up[i]
    i += 1
  }
}
