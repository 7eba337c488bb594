import Foundation

/// Description of one tensor in a safetensors file.
public struct SafeTensorInfo: Sendable, Equatable {
  /// Tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`.
  public let name: String
  /// Data type as written in the header (`F32`, `F16`, `BF16`, …).
  public let dtype: String
  /// Shape in row-major order (last dimension contiguous).
  public let shape: [Int]
  /// Absolute byte offset of the data in the file.
  public let fileOffset: Int
  /// Size of the data in bytes.
  public let byteCount: Int

  /// The matching ggml element type for the dtypes the engine reads (F32, F16, BF16).
  public var elementType: GGMLType? {
    switch dtype {
    case "F32": return .f32
    case "F16": return .f16
    case "BF16": return .bf16
    default: return nil
    }
  }
}

/// A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header, data.
public final class SafeTensorsFile: Sendable {
  /// Path of the file.
  public let path: String
  /// Tensors by name.
  public let tensors: [String: SafeTensorInfo]
  /// The free-form `__metadata__` string map of the header.
  public let metadata: [String: String]
  /// The mapping tensor data points into.
  public let file: MappedFile

  static let maxHeaderBytes = 100_000_000

  /// Opens and validates the safetensors file at `path`.
  /// - Throws: `EngineError.cannotOpen` or `.malformedFile` (bad header length, bad JSON, offsets out of range,
  ///   byte size not matching shape × dtype, overlapping tensors).
  public init(path: String) throws {
    let file = try MappedFile(path: path)
    self.file = file
    self.path = path
    func bad(_ reason: String) -> EngineError { .malformedFile(path: path, reason: reason) }
    guard file.count >= 8 else { throw bad("file too short for a safetensors header (\(file.count) bytes)") }
    let lenPtr = try file.pointer(offset: 0, length: 8)
    let headerLen = UInt64(littleEndian: lenPtr.loadUnaligned(as: UInt64.self))
    guard headerLen >= 2, headerLen <= UInt64(Self.maxHeaderBytes), headerLen <= UInt64(file.count - 8) else {
      throw bad("header length \(headerLen) is invalid for a file of \(file.count) bytes")
    }
    let hp = try file.pointer(offset: 8, length: Int(headerLen))
    let data = Data(bytes: hp, count: Int(headerLen))
    let json: Any
    do {
      json = try JSONSerialization.jsonObject(with: data)
    } catch {
      throw bad("header is not valid JSON")
    }
    guard let dict = json as? [String: Any] else { throw bad("header is not a JSON object") }
    let dataStart = 8 + Int(headerLen)
    let dataSize = file.count - dataStart
    var tensors: [String: SafeTensorInfo] = [:]
    var metadata: [String: String] = [:]
    var ranges: [(Int, Int, String)] = []
    for (name, value) in dict {
      if name == "__metadata__" {
        guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
        for (k, v) in m {
          guard let s = v as? String else { throw bad("__metadata__.\(k) is not a string") }
          metadata[k] = s
        }
        continue
      }
      guard let t = value as? [String: Any], let dtype = t["dtype"] as? String,
        let shapeAny = t["shape"] as? [Any], let offsAny = t["data_offsets"] as? [Any], offsAny.count == 2
      else { throw bad("entry \(name) lacks dtype, shape or data_offsets") }
      var shape: [Int] = []
      var elements = 1
      for d in shapeAny {
        guard let n = d as? Int, n >= 0, n <= Int(Int32.max)
        else { throw bad("tensor \(name) has an invalid dimension") }
        shape.append(n)
        let (m, o) = elements.multipliedReportingOverflow(by: n)
        guard !o else { throw bad("tensor \(name) is too large") }
        elements = m
      }
      guard let b0 = offsAny[0] as? Int, let b1 = offsAny[1] as? Int,
        b0 >= 0, b1 >= b0, b1 <= dataSize
      else { throw bad("tensor \(name) data_offsets are outside the data section (\(dataSize) bytes)") }
      let width: Int
      switch dtype {
      case "F64", "I64", "U64": width = 8
      case "F32", "I32", "U32": width = 4
      case "F16", "BF16", "I16", "U16": width = 2
      case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": width = 1
      default: throw bad("tensor \(name) has unknown dtype \(dtype)")
      }
      let (bytes, o) = elements.multipliedReportingOverflow(by: width)
      guard !o, bytes == Int(b1 - b0) else {
        // `elements * width` may overflow here (that is what `o` reports): never recompute it.
        let needed = o ? "more than \(Int.max)" : String(bytes)
        throw bad("tensor \(name) holds \(b1 - b0) bytes but shape \(shape) of \(dtype) needs \(needed)")
      }
      tensors[name] = SafeTensorInfo(
        name: name, dtype: dtype, shape: shape, fileOffset: dataStart + Int(b0), byteCount: bytes)
      ranges.append((Int(b0), Int(b1), name))
    }
    ranges.sort { $0.0 < $1.0 }
    for i in ranges.indices.dropFirst() where ranges[i].0 < ranges[i - 1].1 {
      throw bad("tensors \(ranges[i - 1].2) and \(ranges[i].2) overlap")
    }
    self.tensors = tensors
    self.metadata = metadata
  }

  /// A pointer to the data of `info` (valid while this file is alive).
  func data(of info: SafeTensorInfo) throws -> UnsafeRawPointer {
    try file.pointer(offset: info.fileOffset, length: info.byteCount)
  }
}

/// The tensors of a Hugging Face checkpoint folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
public final class SafeTensorsCheckpoint: Sendable {
  /// The folder.
  public let directory: String
  /// Open shard files.
  public let files: [SafeTensorsFile]
  private let index: [String: Int]

  /// Opens the checkpoint in `directory`.
  /// - Throws: `EngineError.cannotOpen` when neither file exists, `.malformedFile` for a bad index or shard.
  public init(directory: String) throws {
    self.directory = directory
    let fm = FileManager.default
    let indexPath = directory + "/model.safetensors.index.json"
    let singlePath = directory + "/model.safetensors"
    var files: [SafeTensorsFile] = []
    var index: [String: Int] = [:]
    if fm.fileExists(atPath: indexPath) {
      guard let data = fm.contents(atPath: indexPath),
        let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
        let map = obj["weight_map"] as? [String: Any]
      else { throw EngineError.malformedFile(path: indexPath, reason: "no weight_map object") }
      var shardIndex: [String: Int] = [:]
      for (tensor, shardAny) in map.sorted(by: { $0.key < $1.key }) {
        guard let shard = shardAny as? String, !shard.contains("/"), !shard.isEmpty else {
          throw EngineError.malformedFile(path: indexPath, reason: "bad shard name for \(tensor)")
        }
        if shardIndex[shard] == nil {
          shardIndex[shard] = files.count
          files.append(try SafeTensorsFile(path: directory + "/" + shard))
        }
        let fi = shardIndex[shard]!
        guard files[fi].tensors[tensor] != nil else {
          throw EngineError.malformedFile(path: indexPath, reason: "tensor \(tensor) is not in shard \(shard)")
        }
        index[tensor] = fi
      }
    } else if fm.fileExists(atPath: singlePath) {
      let f = try SafeTensorsFile(path: singlePath)
      files = [f]
      for name in f.tensors.keys { index[name] = 0 }
    } else {
      throw EngineError.cannotOpen(path: directory, reason: "no model.safetensors or model.safetensors.index.json")
    }
    self.files = files
    self.index = index
  }

  /// All tensor names.
  public var tensorNames: [String] { Array(index.keys) }

  /// The tensor named `name` and the file that holds it.
  public func tensor(named name: String) -> (SafeTensorsFile, SafeTensorInfo)? {
    guard let i = index[name], let t = files[i].tensors[name] else { return nil }
    return (files[i], t)
  }
}
