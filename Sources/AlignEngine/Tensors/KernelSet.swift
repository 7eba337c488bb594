import Foundation

import AlignKernelTypes

#if arch(x86_64)
import AlignKernelsAVX2
import _Builtin_intrinsics.intel.cpuid
#endif

/// The kernels the engine runs on — integer row products, attention, RMS norm, SwiGLU, float16 KV
/// cache conversions (and the compute roofs measured with them) — chosen when the process starts
/// from what the CPU can do. Every set gives the same bits (the
/// integer sums are exact and the float steps are the same IEEE operations in the same order), so
/// the choice changes speed, never results; `KernelDispatchTests` forces each set the CPU supports
/// and compares.
public enum KernelSet: String, Sendable, CaseIterable, Codable {
  /// AVX2 + FMA + F16C (x86-64 Haswell / Zen and later): the `AlignKernelsAVX2` module, the only code
  /// compiled for that target.
  case avx2
  /// SSE2, the x86-64 baseline every 64-bit x86 CPU has.
  case sse2
  /// Portable Swift (on arm64 the compiler turns its vectors into NEON).
  case portable

  /// The environment variable that forces a set (`avx2`, `sse2` or `portable`).
  public static let environmentVariable = "ALIGND_KERNELS"

  /// The sets this CPU can run, fastest first.
  public static let supported: [KernelSet] = {
    #if arch(x86_64)
    return CPUFeatures.current.hasAVX2Set ? [.avx2, .sse2, .portable] : [.sse2, .portable]
    #else
    return [.portable]
    #endif
  }()

  /// The fastest set this CPU runs.
  public static var detected: KernelSet { supported[0] }

  /// `ALIGND_KERNELS` when set (it must name a set this CPU supports), else the detected set.
  /// - Throws: `EngineError.invalidArgument` naming the value and the supported sets.
  public static func preferred(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelSet {
    guard let raw = environment[environmentVariable], !raw.isEmpty else { return detected }
    guard let set = KernelSet(rawValue: raw.lowercased()) else {
      throw EngineError.invalidArgument(
        "\(environmentVariable)=\(raw) is not a kernel set (one of: \(allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    try set.checkSupported()
    return set
  }

  /// Throws unless this CPU can run the set.
  public func checkSupported() throws {
    guard Self.supported.contains(self) else {
      throw EngineError.invalidArgument(
        "kernel set \(rawValue) needs CPU features this machine lacks (\(CPUFeatures.current.summary)); "
          + "supported here: \(Self.supported.map(\.rawValue).joined(separator: ", "))")
    }
  }

  /// `count` IEEE halves at `source` as floats (exact on every set).
  @inline(__always)
  func halvesToFloats(_ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<Float>, count: Int) {
    #if arch(x86_64)
    if self == .avx2 {
      AVX2Kernels.halvesToFloats(source, target, count: count)
      return
    }
    #endif
    convertHalves(source, target, count: count)
  }

  /// Attention of one token's query heads over their key/value head (FloatKernels.swift).
  @inline(__always)
  func attend(_ unit: AttentionOperand) {
    #if arch(x86_64)
    if self == .avx2 {
      AVX2Kernels.attend(unit)
      return
    }
    #endif
    attendUnit(unit)
  }

  /// `y = x / sqrt(mean(x²) + eps) * w` for each of `rows` rows (FloatKernels.swift).
  @inline(__always)
  func rmsNorm(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, dim: Int,
    eps: Float
  ) {
    #if arch(x86_64)
    if self == .avx2 {
      AVX2Kernels.rmsNormRows(x, w, y, rows: rows, dim: dim, eps: eps)
      return
    }
    #endif
    AlignEngine.rmsNorm(x, w, y, rows: rows, dim: dim, eps: eps)
  }

  /// `gate = silu(gate) · up` (FloatKernels.swift).
  @inline(__always)
  func swiGLU(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    #if arch(x86_64)
    if self == .avx2 {
      AVX2Kernels.swiGLUInPlace(gate, up, count: count)
      return
    }
    #endif
    AlignEngine.swiGLU(gate, up, count)
  }

  /// `count` floats rounded to IEEE halves, to nearest with ties to even (the same on every set).
  @inline(__always)
  func floatsToHalves(_ source: UnsafePointer<Float>, _ target: UnsafeMutablePointer<Float16>, count: Int) {
    #if arch(x86_64)
    if self == .avx2 {
      AVX2Kernels.floatsToHalves(source, target, count: count)
      return
    }
    #endif
    for i in 0..<count { target[i] = Float16(source[i]) }
  }
}

/// `count` IEEE halves at `source` as floats, with integer steps only, 8 at a time (no F16C needed,
/// exact): a half's exponent and mantissa shifted into a float's, times 2^112 (the difference of the
/// biases), is the value for normal and subnormal halves alike; infinities and NaNs keep an all-ones
/// exponent; the sign is copied. What FloatKernels.swift's `attendUnit` converts a float16 cache
/// with in this module (the AVX2 module's copy uses F16C; the bits are the same).
@inline(__always)
func convertHalves(_ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<Float>, count: Int) {
  let rescale = SIMD8<Float>(repeating: Float(sign: .plus, exponent: 112, significand: 1))
  var i = 0
  let rt = UnsafeMutableRawPointer(target)
  while i + 8 <= count {
    let h = SIMD8<UInt32>(truncatingIfNeeded: source.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self))
    let magnitude = h & 0x7fff
    let sign = (h & 0x8000) &<< 16
    let finite = unsafeBitCast(
      unsafeBitCast(magnitude &<< 13, to: SIMD8<Float>.self) * rescale, to: SIMD8<UInt32>.self)
    let special = (magnitude &<< 13) | 0x7f80_0000
    let bits = finite.replacing(with: special, where: magnitude .>= 0x7c00) | sign
    rt.storeBytes(of: unsafeBitCast(bits, to: SIMD8<Float>.self), toByteOffset: 4 * i, as: SIMD8<Float>.self)
    i += 8
  }
  let halves = source.assumingMemoryBound(to: Float16.self)
  while i < count {
    target[i] = Float(halves[i])
    i += 1
  }
}

/// The AVX-family features the CPUID instruction reports (x86-64).
public struct CPUIDFeatures: OptionSet, Sendable, Hashable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }
  /// AVX with OSXSAVE (the OS saves the registers).
  public static let avx = CPUIDFeatures(rawValue: 1)
  public static let avx2 = CPUIDFeatures(rawValue: 2)
  public static let fma = CPUIDFeatures(rawValue: 4)
  public static let f16c = CPUIDFeatures(rawValue: 8)
  /// What the AVX2 kernels need.
  public static let avx2Set: CPUIDFeatures = [.avx, .avx2, .fma, .f16c]

  /// The features in /proc/cpuinfo spelling.
  public var names: [String] {
    [(CPUIDFeatures.avx, "avx"), (.avx2, "avx2"), (.fma, "fma"), (.f16c, "f16c")].compactMap { contains($0.0) ? $0.1 : nil }
  }
}

/// What the CPU can do, as the CPU itself says (CPUID, on x86-64) and as the operating system says
/// (Linux: /proc/cpuinfo's flags, which the kernel clears for features it does not enable; macOS:
/// sysctl hw.optional.*). A kernel set needs both: an emulator (qemu-user) shows the host's
/// /proc/cpuinfo to a guest whose CPUID lacks AVX2, and a kernel booted without AVX support hides
/// flags CPUID still reports.
public struct CPUFeatures: Sendable, Equatable {
  /// The CPU's model name, when known.
  public var model: String
  /// Feature flags the OS reports, in /proc/cpuinfo spelling (avx2, fma, f16c, avx512f, …); empty
  /// when unknown.
  public var flags: Set<String>
  /// What CPUID reports; nil off x86-64.
  public var cpuid: CPUIDFeatures?

  public init(model: String, flags: Set<String>, cpuid: CPUIDFeatures? = nil) {
    self.model = model
    self.flags = flags
    self.cpuid = cpuid
  }

  /// AVX2, FMA and F16C: what the AVX2 kernels need, reported by CPUID (when read) and by the OS
  /// (when known).
  public var hasAVX2Set: Bool {
    if let cpuid, !cpuid.isSuperset(of: .avx2Set) { return false }
    if flags.isEmpty { return cpuid != nil }
    return flags.contains("avx2") && flags.contains("fma") && flags.contains("f16c")
  }

  /// "model; SIMD flags avx2 fma …" of the flags that matter here, and what CPUID says when it
  /// denies one the OS lists.
  public var summary: String {
    let reported = cpuid?.names ?? []
    var present: [String] = []
    for flag in ["sse2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "asimd"] {
      if flags.contains(flag) || (flags.isEmpty && reported.contains(flag)) { present.append(flag) }
    }
    var text = (model.isEmpty ? "unknown CPU" : model) + "; SIMD flags: "
    text += present.isEmpty ? "none listed" : present.joined(separator: " ")
    if cpuid != nil, !flags.isEmpty, ["avx2", "fma", "f16c"].contains(where: { flags.contains($0) && !reported.contains($0) }) {
      text += " (CPUID: " + (reported.isEmpty ? "none of avx avx2 fma f16c" : reported.joined(separator: " ")) + ")"
    }
    return text
  }

  /// This machine's CPU.
  public static let current: CPUFeatures = read()

  /// Parses /proc/cpuinfo text (the first processor's "model name" and "flags"/"Features" lines).
  public static func parse(cpuinfo: String, cpuid: CPUIDFeatures? = nil) -> CPUFeatures {
    var model = ""
    var flags = Set<String>()
    for line in cpuinfo.split(separator: "\n") {
      let parts = line.split(separator: ":", maxSplits: 1)
      guard parts.count == 2 else { continue }
      let key = parts[0].trimmingCharacters(in: .whitespaces)
      let value = parts[1].trimmingCharacters(in: .whitespaces)
      if model.isEmpty, key == "model name" { model = value }
      if flags.isEmpty, key == "flags" || key == "Features" { flags = Set(value.split(separator: " ").map(String.init)) }
    }
    return CPUFeatures(model: model, flags: flags, cpuid: cpuid)
  }

  private static func read() -> CPUFeatures {
    #if os(Linux)
    let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    return parse(cpuinfo: text, cpuid: readCPUID())
    #elseif os(macOS)
    func sysctlFlag(_ name: String) -> Bool {
      var value: Int32 = 0
      var size = MemoryLayout<Int32>.size
      return sysctlbyname(name, &value, &size, nil, 0) == 0 && value != 0
    }
    var flags = Set<String>()
    for (flag, name) in [
      ("avx2", "hw.optional.avx2_0"), ("fma", "hw.optional.fma"), ("f16c", "hw.optional.f16c"),
      ("avx512f", "hw.optional.avx512f"), ("sse2", "hw.optional.sse2"), ("asimd", "hw.optional.neon"),
    ] where sysctlFlag(name) {
      flags.insert(flag)
    }
    return CPUFeatures(model: "", flags: flags, cpuid: readCPUID())
    #else
    return CPUFeatures(model: "", flags: [], cpuid: readCPUID())
    #endif
  }

  /// The AVX-family features CPUID reports (leaf 1: AVX, FMA, F16C, OSXSAVE; leaf 7: AVX2); none
  /// without AVX and OSXSAVE.
  private static func readCPUID() -> CPUIDFeatures? {
    #if arch(x86_64)
    var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0, d: UInt32 = 0
    guard __get_cpuid(1, &a, &b, &c, &d) != 0 else { return [] }
    let leaf1 = c
    guard leaf1 & (1 << 27) != 0, leaf1 & (1 << 28) != 0 else { return [] }
    var features: CPUIDFeatures = .avx
    if leaf1 & (1 << 12) != 0 { features.insert(.fma) }
    if leaf1 & (1 << 29) != 0 { features.insert(.f16c) }
    var b7: UInt32 = 0
    a = 0; c = 0; d = 0
    if __get_cpuid_count(7, 0, &a, &b7, &c, &d) != 0, b7 & (1 << 5) != 0 { features.insert(.avx2) }
    return features
    #else
    return nil
    #endif
  }
}

/// Entry points for tests that compare kernel sets on inputs no model has (KernelDispatchTests).
@_spi(KernelTesting)
public enum KernelProbe {
  /// `y (tokens × rows)` = activations (tokens × cols) · weightsᵀ through the row-wise integer
  /// products of `kernels`, for weights given in their file layout (`type` Q4_0, Q4_1 or Q8_0);
  /// with `accumulate`, added to `y`'s values.
  public static func rowProducts(
    type: GGMLType, rows: Int, cols: Int, weights: [UInt8], activations: [Float], tokens: Int, kernels: KernelSet,
    accumulate: [Float]? = nil
  ) throws -> [Float] {
    guard [.q4_0, .q4_1, .q8_0].contains(type), cols % 32 == 0, rows > 0, tokens > 0,
      weights.count == rows * cols / 32 * type.blockBytes, activations.count >= tokens * cols
    else { throw EngineError.invalidArgument("rowProducts: shapes or type do not fit") }
    try kernels.checkSupported()
    var y = accumulate ?? [Float](repeating: 0, count: tokens * rows)
    guard y.count == tokens * rows else { throw EngineError.invalidArgument("rowProducts: accumulate has the wrong size") }
    let scratch = MatmulScratch(threads: 1, maxCols: cols, maxTokens: tokens, kernels: kernels)
    weights.withUnsafeBytes { raw in
      let w = WeightMatrix(
        name: "probe", type: type, rows: rows, cols: cols, data: raw.baseAddress!, rowBytes: cols / 32 * type.blockBytes
      ).withPackedLayout()
      activations.withUnsafeBufferPointer { x in
        y.withUnsafeMutableBufferPointer { out in
          matmul(
            w, x.baseAddress!, tokens: tokens, out.baseAddress!, accumulate: accumulate != nil, scratch: scratch,
            rowwiseTokens: tokens)
        }
      }
    }
    return y
  }

  /// IEEE halves (bit patterns) as floats, converted the way `kernels` converts a float16 KV cache.
  public static func halvesToFloats(_ bits: [UInt16], kernels: KernelSet) throws -> [Float] {
    try kernels.checkSupported()
    if bits.isEmpty { return [] }
    var out = [Float](repeating: 0, count: bits.count)
    bits.withUnsafeBytes { source in
      out.withUnsafeMutableBufferPointer { kernels.halvesToFloats(source.baseAddress!, $0.baseAddress!, count: bits.count) }
    }
    return out
  }
}
