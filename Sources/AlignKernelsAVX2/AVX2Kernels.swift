// The engine's AVX2 kernels, in a module of their own: this module alone is compiled for Haswell
// (AVX2, FMA, F16C; Package.swift), so the rest of the engine stays x86-64 baseline code and one
// binary runs on every x86-64 CPU. AlignEngine calls these entry points only after checking that
// the CPU has AVX2, FMA and F16C (KernelSet.swift).
//
// The entry points take pointers, integers and the operand structs of AlignKernelTypes (a baseline
// module, so nothing the engine calls on every CPU is compiled here): SIMD vectors would be passed in
// registers whose width depends on the target features of each side.
import AlignKernelTypes

#if arch(x86_64)
import _Builtin_intrinsics.intel

public enum AVX2Kernels {
  /// `y[t * ldy + r] (+)= row r · token t` for the rows of 8-row groups `groups` and tokens
  /// 0..<tokens, by the per-element recipe of AlignEngine's RowwiseQ8.swift (the same bits as its
  /// SSE2 and portable kernels): 1 row × 8 tokens tiles while 8 tokens remain, 8 rows × up to 4
  /// tokens after.
  @inline(never)
  public static func dotRowGroups(
    _ w: AVX2PackedRows, _ groups: Range<Int>, _ a: AVX2Activations, tokens: Int, _ y: UnsafeMutablePointer<Float>,
    ldy: Int, accumulate: Bool
  ) {
    switch w.kind {
    case 0: dotRowGroups(w, groups, a, tokens: tokens, y, ldy: ldy, accumulate: accumulate, kind: 0)
    case 1: dotRowGroups(w, groups, a, tokens: tokens, y, ldy: ldy, accumulate: accumulate, kind: 1)
    default: dotRowGroups(w, groups, a, tokens: tokens, y, ldy: ldy, accumulate: accumulate, kind: 2)
    }
  }

  @inline(__always)
  private static func dotRowGroups(
    _ w: AVX2PackedRows, _ groups: Range<Int>, _ a: AVX2Activations, tokens: Int, _ y: UnsafeMutablePointer<Float>,
    ldy: Int, accumulate: Bool, kind: Int
  ) {
    let full = tokens / 8 * 8
    for g in groups {
      for r in (8 * g)..<min(8 * g + 8, w.rows) {
        var t = 0
        while t < full {
          tokenTile(w, row: r, a, firstToken: t, y, ldy: ldy, accumulate: accumulate, signed: kind == 0)
          t += 8
        }
      }
      var t = full
      while t < tokens {
        let n = min(4, tokens - t)
        rowTile(w, group: g, a, tokens: t, count: n, y, ldy: ldy, accumulate: accumulate, kind: kind)
        t += n
      }
    }
  }

  /// The 32 weights of the block at `q` as bytes for `maddubs`: unsigned 0...15 for Q4, signed for Q8_0.
  @inline(__always)
  private static func weightBlock(_ q: UnsafeRawPointer, signed: Bool) -> __m256i {
    if signed {
      return _mm256_loadu_si256(q.assumingMemoryBound(to: __m256i.self))
    }
    let packed = _mm_loadu_si128(q.assumingMemoryBound(to: __m128i.self))
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0f))
  }

  /// Eight Int32 partial sums of one block's 32 products (exact).
  @inline(__always)
  private static func blockProducts(_ w: __m256i, _ x: __m256i, signed: Bool) -> __m256i {
    let pairs: __m256i
    if signed {
      // maddubs wants an unsigned first operand: |w| · (x with w's sign). |w| ≤ 128 and |x| ≤ 127,
      // so a pair sum stays below Int16.max.
      pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    } else {
      pairs = _mm256_maddubs_epi16(w, x)
    }
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
  }

  /// Lane j = the sum of all lanes of p_j.
  @inline(__always)
  private static func reduce8(
    _ p0: __m256i, _ p1: __m256i, _ p2: __m256i, _ p3: __m256i,
    _ p4: __m256i, _ p5: __m256i, _ p6: __m256i, _ p7: __m256i
  ) -> __m256i {
    let q0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3))
    let q4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(p4, p5), _mm256_hadd_epi32(p6, p7))
    // Add the 128-bit halves: [A | A] and [B | B], then take A's low half and B's high half.
    // (vperm2i128 and vpblendd are C macros Swift cannot import; vpermd and vpblendvb are functions.)
    let swap = _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3)
    let a = _mm256_add_epi32(q0123, _mm256_permutevar8x32_epi32(q0123, swap))
    let b = _mm256_add_epi32(q4567, _mm256_permutevar8x32_epi32(q4567, swap))
    return _mm256_blendv_epi8(a, b, _mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1))
  }

  /// One row against tokens t0..<t0+8 (lanes are tokens); the weight block is unpacked once.
  @inline(__always)
  private static func tokenTile(
    _ w: AVX2PackedRows, row r: Int, _ a: AVX2Activations, firstToken t0: Int, _ y: UnsafeMutablePointer<Float>,
    ldy: Int, accumulate: Bool, signed: Bool
  ) {
    let nb = w.blocks
    let q = w.chunks + (r >> 3) * nb * w.chunkBytes + (r & 7) * w.quantBytes
    let cb = w.chunkBytes
    let dw = w.scales + r * nb
    let mw: UnsafePointer<Float>?
    if let m = w.mins { mw = m + r * nb } else { mw = nil }
    let ts = nb * 32
    let x = UnsafeRawPointer(a.bytes + t0 * ts)
    let dxT = a.scaleT + (t0 >> 3) * nb * 8
    let sT = a.sumT + (t0 >> 3) * nb * 8
    var acc = _mm256_setzero_ps()
    @inline(__always) func load(_ j: Int, _ b: Int) -> __m256i {
      _mm256_loadu_si256((x + j * ts + 32 * b).assumingMemoryBound(to: __m256i.self))
    }
    for b in 0..<nb {
      let wb = weightBlock(q + cb * b, signed: signed)
      let v = reduce8(
        blockProducts(wb, load(0, b), signed: signed), blockProducts(wb, load(1, b), signed: signed),
        blockProducts(wb, load(2, b), signed: signed), blockProducts(wb, load(3, b), signed: signed),
        blockProducts(wb, load(4, b), signed: signed), blockProducts(wb, load(5, b), signed: signed),
        blockProducts(wb, load(6, b), signed: signed), blockProducts(wb, load(7, b), signed: signed))
      let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(dxT + 8 * b))
      acc = _mm256_add_ps(acc, _mm256_mul_ps(f, _mm256_set1_ps(dw[b])))
      if let mw {
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(mw[b]), _mm256_loadu_ps(sT + 8 * b)))
      }
    }
    for j in 0..<8 {
      let o = (t0 + j) * ldy + r
      y[o] = accumulate ? y[o] + acc[j] : acc[j]
    }
  }

  /// Rows 8g..<8g+8 against `count` ≤ 4 tokens from `t0` (lanes are rows), reading the group's
  /// chunks in order and unpacking each weight block once for all the tokens; rows past the end
  /// repeat the last row (so does the packing) and are not stored. Each (row, token) sum sees the
  /// same float operations in the same order as with one token at a time.
  @inline(__always)
  private static func rowTile(
    _ w: AVX2PackedRows, group g: Int, _ a: AVX2Activations, tokens t0: Int, count: Int,
    _ y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool, kind: Int
  ) {
    let nb = w.blocks
    let r0 = 8 * g
    let cb = w.chunkBytes
    let qb = w.quantBytes
    let signed = kind == 0
    let base = w.chunks + g * nb * cb
    let ts = nb * 32
    let x = UnsafeRawPointer(a.bytes + t0 * ts)
    let dx = a.scale + t0 * nb
    let s = a.scaledSum + t0 * nb
    var acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0
    for b in 0..<nb {
      let c = base + b * cb
      let w0 = weightBlock(c, signed: signed), w1 = weightBlock(c + qb, signed: signed)
      let w2 = weightBlock(c + 2 * qb, signed: signed), w3 = weightBlock(c + 3 * qb, signed: signed)
      let w4 = weightBlock(c + 4 * qb, signed: signed), w5 = weightBlock(c + 5 * qb, signed: signed)
      let w6 = weightBlock(c + 6 * qb, signed: signed), w7 = weightBlock(c + 7 * qb, signed: signed)
      // The halves convert exactly, so these are the same floats as `scales` / `mins`.
      let dw = _mm256_cvtph_ps(_mm_loadu_si128((c + 8 * qb).assumingMemoryBound(to: __m128i.self)))
      let m: __m256
      switch kind {
      case 2: m = _mm256_cvtph_ps(_mm_loadu_si128((c + 8 * qb + 16).assumingMemoryBound(to: __m128i.self)))
      // −8·d is exact in float: the value `mins` holds.
      case 1: m = _mm256_mul_ps(dw, _mm256_set1_ps(-8))
      default: m = _mm256_setzero_ps()
      }
      @inline(__always) func step(_ j: Int, _ acc: inout __m256) {
        let xv = _mm256_loadu_si256((x + j * ts + 32 * b).assumingMemoryBound(to: __m256i.self))
        let v = reduce8(
          blockProducts(w0, xv, signed: signed), blockProducts(w1, xv, signed: signed),
          blockProducts(w2, xv, signed: signed), blockProducts(w3, xv, signed: signed),
          blockProducts(w4, xv, signed: signed), blockProducts(w5, xv, signed: signed),
          blockProducts(w6, xv, signed: signed), blockProducts(w7, xv, signed: signed))
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(dx[j * nb + b]))
        acc = _mm256_add_ps(acc, _mm256_mul_ps(f, dw))
        if kind != 0 { acc = _mm256_add_ps(acc, _mm256_mul_ps(m, _mm256_set1_ps(s[j * nb + b]))) }
      }
      step(0, &acc0)
      if count > 1 { step(1, &acc1) }
      if count > 2 { step(2, &acc2) }
      if count > 3 { step(3, &acc3) }
    }
    @inline(__always) func store(_ j: Int, _ acc: __m256) {
      let out = y + (t0 + j) * ldy + r0
      if r0 + 8 <= w.rows {
        _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), acc) : acc)
      } else {
        for i in 0..<(w.rows - r0) { out[i] = accumulate ? out[i] + acc[i] : acc[i] }
      }
    }
    store(0, acc0)
    if count > 1 { store(1, acc1) }
    if count > 2 { store(2, acc2) }
    if count > 3 { store(3, acc3) }
  }

  /// `count` IEEE halves at `source` as floats (exact), with F16C.
  @inline(never)
  public static func halvesToFloats(_ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<Float>, count: Int) {
    convertHalves(source, target, count: count)
  }

  /// FloatKernels.swift's `attendUnit`, compiled for AVX2.
  @inline(never)
  public static func attend(_ unit: AttentionOperand) {
    attendUnit(unit)
  }

  /// FloatKernels.swift's `rmsNorm`, compiled for AVX2.
  @inline(never)
  public static func rmsNormRows(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, dim: Int,
    eps: Float
  ) {
    rmsNorm(x, w, y, rows: rows, dim: dim, eps: eps)
  }

  /// FloatKernels.swift's `swiGLU`, compiled for AVX2.
  @inline(never)
  public static func swiGLUInPlace(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    swiGLU(gate, up, count)
  }

  /// `count` floats rounded to IEEE halves (to nearest, ties to even), with F16C.
  @inline(never)
  public static func floatsToHalves(_ source: UnsafePointer<Float>, _ target: UnsafeMutablePointer<Float16>, count: Int) {
    var i = 0
    let rs = UnsafeRawPointer(source)
    let rt = UnsafeMutableRawPointer(target)
    while i + 8 <= count {
      rt.storeBytes(
        of: SIMD8<Float16>(rs.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)), toByteOffset: 2 * i,
        as: SIMD8<Float16>.self)
      i += 8
    }
    while i < count {
      target[i] = Float16(source[i])
      i += 1
    }
  }

  /// Ten independent 8-wide FMA chains run `iterations` times (the float peak of MachineRoofs; FMA
  /// latency 4–5 cycles × 2 ports); returns their sum so nothing is folded away.
  @inline(never)
  public static func fmaChains(_ iterations: Int, seed: Float) -> Float {
    let m = _mm256_set1_ps(0.999_999), k = _mm256_set1_ps(1e-7)
    func start(_ k: Float) -> __m256 { _mm256_set1_ps(seed + k) }
    var a0 = start(0), a1 = start(1), a2 = start(2), a3 = start(3), a4 = start(4)
    var a5 = start(5), a6 = start(6), a7 = start(7), a8 = start(8), a9 = start(9)
    for _ in 0..<iterations {
      a0 = _mm256_fmadd_ps(a0, m, k); a1 = _mm256_fmadd_ps(a1, m, k)
      a2 = _mm256_fmadd_ps(a2, m, k); a3 = _mm256_fmadd_ps(a3, m, k)
      a4 = _mm256_fmadd_ps(a4, m, k); a5 = _mm256_fmadd_ps(a5, m, k)
      a6 = _mm256_fmadd_ps(a6, m, k); a7 = _mm256_fmadd_ps(a7, m, k)
      a8 = _mm256_fmadd_ps(a8, m, k); a9 = _mm256_fmadd_ps(a9, m, k)
    }
    // Sums written out: no arrays or other generic code here, whose specializations the linker could
    // share with baseline modules.
    let s = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
      _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)), _mm256_add_ps(a8, a9)))
    var total: Float = 0
    for j in 0..<8 { total += s[j] }
    return total
  }

  /// Ten independent chains of the engine's block product: `vpmaddubsw` (32 u8×i8 products into 16
  /// pairs), `vpmaddwd` with ones (into 8 Int32), `vpaddd` into the accumulator. The activations are
  /// loaded from a 512-byte table that stays in L1, as the kernels load them, so nothing is hoisted.
  @inline(never)
  public static func maddChains(_ iterations: Int, seed: Int8) -> Float {
    let ones = _mm256_set1_epi16(1)
    let w = _mm256_set1_epi8(CChar(truncatingIfNeeded: 3 &+ seed))
    let table = UnsafeMutablePointer<Int8>.allocate(capacity: 16 * 32)
    defer { table.deallocate() }
    for i in 0..<(16 * 32) { table[i] = Int8(truncatingIfNeeded: i &* 7 &+ Int(seed)) }
    let x = UnsafeRawPointer(table)
    @inline(__always) func step(_ c: __m256i, _ slot: Int) -> __m256i {
      let v = _mm256_loadu_si256((x + 32 * (slot & 15)).assumingMemoryBound(to: __m256i.self))
      return _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), ones))
    }
    var c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0
    var c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0
    for i in 0..<iterations {
      c0 = step(c0, i); c1 = step(c1, i &+ 1); c2 = step(c2, i &+ 2); c3 = step(c3, i &+ 3)
      c4 = step(c4, i &+ 4); c5 = step(c5, i &+ 5); c6 = step(c6, i &+ 6); c7 = step(c7, i &+ 7)
      c8 = step(c8, i &+ 8); c9 = step(c9, i &+ 9)
    }
    let s = _mm256_add_epi32(
      _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
      _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)), _mm256_add_epi32(c8, c9)))
    return Float(unsafeBitCast(s, to: SIMD8<Int32>.self).wrappedSum())
  }
}

/// `count` IEEE halves at `source` as floats (exact), with F16C: what FloatKernels.swift's
/// `attendUnit` converts a float16 cache with in this module.
@inline(__always)
func convertHalves(_ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<Float>, count: Int) {
  var i = 0
  while i + 8 <= count {
    _mm256_storeu_ps(target + i, _mm256_cvtph_ps(_mm_loadu_si128((source + 2 * i).assumingMemoryBound(to: __m128i.self))))
    i += 8
  }
  let halves = source.assumingMemoryBound(to: Float16.self)
  while i < count {
    target[i] = Float(halves[i])
    i += 1
  }
}
#else
/// Only the x86-64 build converts with F16C; elsewhere this module's copy of FloatKernels.swift is
/// unused, and this keeps it compiling.
@inline(__always)
func convertHalves(_ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<Float>, count: Int) {
  let halves = source.assumingMemoryBound(to: Float16.self)
  for i in 0..<count { target[i] = Float(halves[i]) }
}
#endif
