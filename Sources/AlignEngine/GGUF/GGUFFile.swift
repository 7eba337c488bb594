/// One metadata value of a GGUF file.
public enum GGUFValue: Sendable, Equatable {
  case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
  case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
  case array([GGUFValue])

  /// The value as an `Int` when it is an integer that fits.
  public var intValue: Int? {
    switch self {
    case .uint8(let v): return Int(v)
    case .int8(let v): return Int(v)
    case .uint16(let v): return Int(v)
    case .int16(let v): return Int(v)
    case .uint32(let v): return Int(v)
    case .int32(let v): return Int(v)
    case .uint64(let v): return Int(exactly: v)
    case .int64(let v): return Int(v)
    default: return nil
    }
  }

  /// The value as a `Double` when it is a number.
  public var doubleValue: Double? {
    switch self {
    case .float32(let v): return Double(v)
    case .float64(let v): return v
    default: return intValue.map(Double.init)
    }
  }

  /// The value when it is a string.
  public var stringValue: String? {
    if case .string(let s) = self { return s }
    return nil
  }

  /// The value when it is a bool.
  public var boolValue: Bool? {
    if case .bool(let b) = self { return b }
    return nil
  }

  /// The elements when the value is an array.
  public var arrayValue: [GGUFValue]? {
    if case .array(let a) = self { return a }
    return nil
  }
}

/// Description of one tensor stored in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
  /// Tensor name, e.g. `blk.0.attn_q.weight`.
  public let name: String
  /// Dimensions in ggml order: `shape[0]` is the innermost (contiguous) dimension, i.e. the row length.
  public let shape: [Int]
  /// Raw ggml type id as stored in the file.
  public let typeID: UInt32
  /// The element type, or nil when the engine does not know this type id.
  public let type: GGMLType?
  /// Absolute byte offset of the tensor data in the file.
  public let fileOffset: Int
  /// Size of the data in bytes, or nil for an unknown type.
  public let byteCount: Int?

  /// Total number of elements.
  public var elementCount: Int { shape.reduce(1, *) }
}

/// A GGUF (v2/v3) file: metadata, tensor descriptions, and memory-mapped tensor data.
///
/// Every read is bounds-checked; a malformed or truncated file throws `EngineError.malformedFile`
/// naming the file and the problem. Counts and lengths in the header are checked against the bytes
/// actually present, so a lying header cannot cause a giant allocation.
public final class GGUFFile: Sendable {
  /// Path of the file.
  public let path: String
  /// GGUF format version (2 or 3).
  public let version: Int
  /// All metadata key/value pairs.
  public let metadata: [String: GGUFValue]
  /// Metadata keys in file order.
  public let metadataKeys: [String]
  /// Tensor descriptions in file order.
  public let tensors: [GGUFTensorInfo]
  /// Data alignment (`general.alignment`, default 32).
  public let alignment: Int
  /// Absolute offset where the tensor data section starts.
  public let dataOffset: Int
  /// The mapping that tensor data pointers refer to.
  public let file: MappedFile
  private let tensorIndex: [String: Int]

  static let maxArrayNesting = 3
  static let maxDims = 4

  /// Opens and parses the GGUF file at `path` (memory-mapped, tensor data is not copied).
  /// - Throws: `EngineError.cannotOpen`, `.malformedFile` or `.unsupported` (version 1, big endian).
  public init(path: String) throws {
    let file = try MappedFile(path: path)
    self.file = file
    self.path = path
    var r = ByteReader(file: file)
    let magic = try r.read(UInt32.self, "magic")
    guard magic == 0x4655_4747 else {  // "GGUF" little endian
      if magic == 0x4747_5546 {
        throw EngineError.unsupported(path: path, reason: "big-endian GGUF")
      }
      throw EngineError.malformedFile(path: path, reason: "not a GGUF file (bad magic)")
    }
    let version = try r.read(UInt32.self, "version")
    guard version == 2 || version == 3 else {
      throw EngineError.unsupported(path: path, reason: "GGUF version \(version) (supported: 2, 3)")
    }
    self.version = Int(version)
    let tensorCount = try r.read(UInt64.self, "tensor count")
    let kvCount = try r.read(UInt64.self, "metadata count")
    // Each kv needs at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least 8+4+4+8.
    guard kvCount <= UInt64(r.remaining / 13) else {
      throw r.fail("metadata count \(kvCount) cannot fit in the file")
    }
    guard tensorCount <= UInt64(r.remaining / 24) else {
      throw r.fail("tensor count \(tensorCount) cannot fit in the file")
    }

    var metadata: [String: GGUFValue] = [:]
    var keys: [String] = []
    keys.reserveCapacity(Int(kvCount))
    for i in 0..<Int(kvCount) {
      let key = try r.readString("metadata key #\(i)", maxLength: 65_535)
      let type = try r.read(UInt32.self, "type of \(key)")
      let value = try Self.readValue(&r, type: type, key: key, depth: 0)
      if metadata[key] != nil { throw r.fail("duplicate metadata key \(key)") }
      metadata[key] = value
      keys.append(key)
    }
    self.metadata = metadata
    self.metadataKeys = keys

    var alignment = 32
    if let a = metadata["general.alignment"] {
      guard let v = a.intValue, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
        throw EngineError.malformedFile(path: path, reason: "general.alignment \(a) is not a power of two")
      }
      alignment = v
    }
    self.alignment = alignment

    struct RawInfo { var name: String; var shape: [Int]; var typeID: UInt32; var offset: UInt64 }
    var raw: [RawInfo] = []
    raw.reserveCapacity(Int(tensorCount))
    for i in 0..<Int(tensorCount) {
      let name = try r.readString("tensor name #\(i)", maxLength: 65_535)
      let nDims = try r.read(UInt32.self, "dimension count of \(name)")
      guard nDims >= 1, nDims <= UInt32(Self.maxDims) else {
        throw r.fail("tensor \(name) has \(nDims) dimensions (1...\(Self.maxDims) allowed)")
      }
      var shape: [Int] = []
      for _ in 0..<Int(nDims) {
        let d = try r.read(UInt64.self, "dimension of \(name)")
        guard d <= UInt64(Int32.max) else { throw r.fail("tensor \(name) dimension \(d) too large") }
        shape.append(Int(d))
      }
      let typeID = try r.read(UInt32.self, "type of \(name)")
      let offset = try r.read(UInt64.self, "offset of \(name)")
      raw.append(RawInfo(name: name, shape: shape, typeID: typeID, offset: offset))
    }
    let headerEnd = r.offset
    let dataOffset = (headerEnd + alignment - 1) / alignment * alignment
    self.dataOffset = dataOffset

    var infos: [GGUFTensorInfo] = []
    var index: [String: Int] = [:]
    infos.reserveCapacity(raw.count)
    for t in raw {
      if index[t.name] != nil {
        throw EngineError.malformedFile(path: path, reason: "duplicate tensor name \(t.name)")
      }
      guard t.offset % UInt64(alignment) == 0 else {
        throw EngineError.malformedFile(
          path: path, reason: "tensor \(t.name) offset \(t.offset) not aligned to \(alignment)")
      }
      guard t.offset <= UInt64(file.count) else {
        throw EngineError.malformedFile(path: path, reason: "tensor \(t.name) offset \(t.offset) beyond end of file")
      }
      let type = GGMLType(rawValue: t.typeID)
      var elements = 1
      for d in t.shape {
        let (m, o) = elements.multipliedReportingOverflow(by: d)
        guard !o else { throw EngineError.malformedFile(path: path, reason: "tensor \(t.name) is too large") }
        elements = m
      }
      var bytes: Int?
      if let type {
        guard let rowBytes = type.rowBytes(elements: t.shape[0]) else {
          throw EngineError.malformedFile(
            path: path, reason: "tensor \(t.name) row length \(t.shape[0]) is not a multiple of \(type)'s block size \(type.blockSize)")
        }
        let rows = t.shape[0] == 0 ? 0 : elements / t.shape[0]
        let (b, o) = rowBytes.multipliedReportingOverflow(by: rows)
        guard !o else { throw EngineError.malformedFile(path: path, reason: "tensor \(t.name) is too large") }
        let start = dataOffset + Int(t.offset)
        guard start <= file.count, b <= file.count - start else {
          throw EngineError.malformedFile(
            path: path, reason: "tensor \(t.name) data (\(b) bytes at \(start)) runs past end of file (\(file.count) bytes)")
        }
        bytes = b
      }
      index[t.name] = infos.count
      infos.append(GGUFTensorInfo(
        name: t.name, shape: t.shape, typeID: t.typeID, type: type,
        fileOffset: dataOffset + Int(t.offset), byteCount: bytes))
    }
    self.tensors = infos
    self.tensorIndex = index
  }

  private static func readValue(_ r: inout ByteReader, type: UInt32, key: String, depth: Int) throws -> GGUFValue {
    switch type {
    case 0: return .uint8(try r.read(UInt8.self, key))
    case 1: return .int8(try r.read(Int8.self, key))
    case 2: return .uint16(try r.read(UInt16.self, key))
    case 3: return .int16(try r.read(Int16.self, key))
    case 4: return .uint32(try r.read(UInt32.self, key))
    case 5: return .int32(try r.read(Int32.self, key))
    case 6: return .float32(try r.readFloat(key))
    case 7:
      let b = try r.read(UInt8.self, key)
      guard b <= 1 else { throw r.fail("bool \(key) has value \(b)") }
      return .bool(b == 1)
    case 8: return .string(try r.readString(key))
    case 9:
      guard depth < maxArrayNesting else { throw r.fail("arrays nested too deeply in \(key)") }
      let elemType = try r.read(UInt32.self, "array type of \(key)")
      let n = try r.read(UInt64.self, "array length of \(key)")
      // Every element takes at least one byte, so the count is bounded by the bytes left.
      guard n <= UInt64(r.remaining) else { throw r.fail("array \(key) length \(n) cannot fit in the file") }
      var out: [GGUFValue] = []
      out.reserveCapacity(Int(n))
      for _ in 0..<Int(n) {
        out.append(try readValue(&r, type: elemType, key: key, depth: depth + 1))
      }
      return .array(out)
    case 10: return .uint64(try r.read(UInt64.self, key))
    case 11: return .int64(try r.read(Int64.self, key))
    case 12: return .float64(try r.readDouble(key))
    default: throw r.fail("unknown value type \(type) for \(key)")
    }
  }

  // MARK: Convenience accessors

  /// The tensor named `name`, if present.
  public func tensor(named name: String) -> GGUFTensorInfo? {
    tensorIndex[name].map { tensors[$0] }
  }

  /// A string value.
  public func string(_ key: String) -> String? { metadata[key]?.stringValue }
  /// An integer value of any integer type.
  public func int(_ key: String) -> Int? { metadata[key]?.intValue }
  /// A numeric value as `Double`.
  public func double(_ key: String) -> Double? { metadata[key]?.doubleValue }
  /// A numeric value as `Float`.
  public func float(_ key: String) -> Float? { double(key).map(Float.init) }
  /// A bool value.
  public func bool(_ key: String) -> Bool? { metadata[key]?.boolValue }
  /// An array of strings (nil if the key is absent or any element is not a string).
  public func strings(_ key: String) -> [String]? {
    guard let a = metadata[key]?.arrayValue else { return nil }
    var out: [String] = []
    out.reserveCapacity(a.count)
    for v in a {
      guard let s = v.stringValue else { return nil }
      out.append(s)
    }
    return out
  }
  /// An array of numbers as `Float` (nil if absent or not all numeric).
  public func floats(_ key: String) -> [Float]? {
    guard let a = metadata[key]?.arrayValue else { return nil }
    var out: [Float] = []
    out.reserveCapacity(a.count)
    for v in a {
      guard let d = v.doubleValue else { return nil }
      out.append(Float(d))
    }
    return out
  }
  /// An array of integers as `Int32` (nil if absent, not all integers, or out of range).
  public func int32s(_ key: String) -> [Int32]? {
    guard let a = metadata[key]?.arrayValue else { return nil }
    var out: [Int32] = []
    out.reserveCapacity(a.count)
    for v in a {
      guard let i = v.intValue, let x = Int32(exactly: i) else { return nil }
      out.append(x)
    }
    return out
  }
  /// An array of integers as `Int` (nil if absent or not all integers).
  public func ints(_ key: String) -> [Int]? {
    guard let a = metadata[key]?.arrayValue else { return nil }
    var out: [Int] = []
    out.reserveCapacity(a.count)
    for v in a {
      guard let i = v.intValue else { return nil }
      out.append(i)
    }
    return out
  }

  /// The architecture name (`general.architecture`), e.g. `llama`, `qwen2`.
  public var architecture: String? { string("general.architecture") }

  /// A pointer to the data of `info` (valid while this file is alive).
  func data(of info: GGUFTensorInfo) throws -> UnsafeRawPointer {
    guard let n = info.byteCount else {
      throw EngineError.unsupported(path: path, reason: "tensor \(info.name) has unknown type id \(info.typeID)")
    }
    return try file.pointer(offset: info.fileOffset, length: n)
  }
}
