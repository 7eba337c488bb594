#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. The mapping lives as long as this object.
///
/// Weights point straight into the mapping, so a model keeps its `MappedFile`s alive.
public final class MappedFile: @unchecked Sendable {
  // Safety: the mapping is read-only and never changes after init; unmapped only in deinit.
  /// The file's path, used in error messages.
  public let path: String
  /// Size of the file in bytes.
  public let count: Int
  /// First byte of the mapping (nil for an empty file).
  let base: UnsafeRawPointer?

  /// Maps the file at `path` read-only.
  /// - Throws: `EngineError.cannotOpen` when the file cannot be opened, stat'ed or mapped.
  public init(path: String) throws {
    self.path = path
    let fd = open(path, O_RDONLY)
    if fd < 0 { throw EngineError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var st = stat()
    if fstat(fd, &st) != 0 {
      throw EngineError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
    }
    if (st.st_mode & S_IFMT) != S_IFREG {
      throw EngineError.cannotOpen(path: path, reason: "not a regular file")
    }
    count = Int(st.st_size)
    if count == 0 {
      base = nil
      return
    }
    let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
    if p == MAP_FAILED || p == nil {
      throw EngineError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
    }
    base = UnsafeRawPointer(p!)
  }

  deinit {
    if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
  }

  /// A bounds-checked pointer to `length` bytes at `offset`.
  func pointer(offset: Int, length: Int) throws -> UnsafeRawPointer {
    guard offset >= 0, length >= 0, offset <= count, length <= count - offset, let base else {
      throw EngineError.malformedFile(
        path: path, reason: "byte range \(offset)..<\(offset &+ length) outside file of \(count) bytes")
    }
    return base + offset
  }
}

/// A cursor over a byte range that throws instead of reading past the end.
struct ByteReader {
  let base: UnsafeRawPointer?
  let count: Int
  let path: String
  var offset: Int = 0

  init(file: MappedFile) {
    base = file.base
    count = file.count
    path = file.path
  }

  var remaining: Int { count - offset }

  func fail(_ reason: String) -> EngineError {
    .malformedFile(path: path, reason: "\(reason) (at byte \(offset))")
  }

  mutating func need(_ n: Int, _ what: String) throws {
    guard n >= 0, n <= remaining else {
      throw fail("truncated while reading \(what): need \(n) bytes, \(remaining) left")
    }
  }

  mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
    let size = MemoryLayout<T>.size
    try need(size, what)
    let v = base!.loadUnaligned(fromByteOffset: offset, as: T.self)
    offset += size
    return T(littleEndian: v)
  }

  mutating func readFloat(_ what: String) throws -> Float {
    Float(bitPattern: try read(UInt32.self, what))
  }

  mutating func readDouble(_ what: String) throws -> Double {
    Double(bitPattern: try read(UInt64.self, what))
  }

  /// Reads a GGUF string: u64 length then UTF-8 bytes (invalid UTF-8 is repaired, not fatal).
  mutating func readString(_ what: String, maxLength: Int = 1 << 26) throws -> String {
    let n = try read(UInt64.self, "\(what) length")
    guard n <= UInt64(maxLength) else { throw fail("\(what) length \(n) exceeds limit \(maxLength)") }
    let len = Int(n)
    try need(len, what)
    if len == 0 { return "" }
    let buf = UnsafeRawBufferPointer(start: base! + offset, count: len)
    offset += len
    return String(decoding: buf, as: UTF8.self)
  }
}
