import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Bounds on what one archive may extract to.
public struct TarExtractionLimits: Sendable, Hashable {
  /// Largest total size of the regular files.
  public var maxTotalBytes: UInt64
  /// Most entries (files and folders).
  public var maxEntries: Int
  /// Longest entry path, in UTF-8 bytes.
  public var maxPathBytes: Int = 4096
  /// Largest GNU long-name or pax extended-header entry.
  public var maxMetadataBytes: Int = 1 << 20

  /// Creates bounds.
  public init(maxTotalBytes: UInt64, maxEntries: Int) {
    self.maxTotalBytes = maxTotalBytes
    self.maxEntries = maxEntries
  }
}

/// What an extraction produced.
public struct TarExtraction: Sendable, Hashable {
  /// Regular files written, by normalized relative path.
  public var files: [String]
  /// Folders created (explicitly or as parents), by normalized relative path.
  public var directories: [String]
  /// Bytes written to the regular files.
  public var totalBytes: UInt64
}

/// Safe extraction of tar archives (POSIX ustar, with GNU long names and pax extended headers).
///
/// Only regular files and folders are accepted: links, devices, FIFOs and sparse or multi-volume
/// entries are refused, as are absolute paths, ".." components and duplicate entries. Files
/// are created with O_EXCL | O_NOFOLLOW in a folder that holds nothing else, so no entry can
/// write outside it. Tar modes, owners and times are ignored (files 0644, folders 0755).
public enum TarArchive {
  /// Extracts the archive at `archivePath` into the existing, empty folder `destination`, and
  /// syncs every file and folder written.
  ///
  /// - Parameters:
  ///   - archivePath: the tar file.
  ///   - destination: an empty folder; on failure it may hold part of the archive (the caller
  ///     removes it).
  ///   - limits: bounds on total size and entry count.
  /// - Returns: the files and folders written.
  /// - Throws: `CheckpointRegistryError.invalidArchive` for a malformed or refused entry,
  ///   `.archiveTooLarge` past a limit, `.io` or `.diskFull` for file-system failures.
  public static func extract(archiveAt archivePath: String, into destination: String, limits: TarExtractionLimits)
    throws(CheckpointRegistryError) -> TarExtraction
  {
    let fd = try RegistryFS.openForReading(archivePath)
    defer { close(fd) }
    var extractor = TarExtractor(fd: fd, archivePath: archivePath, destination: destination, limits: limits)
    return try extractor.run()
  }
}

/// One parsed 512-byte header block.
struct TarHeader {
  /// Path bytes (ustar prefix joined with the name).
  var path: [UInt8]
  var size: UInt64
  var typeflag: UInt8
}

extension TarHeader {
  static let blockSize = 512

  /// Parses a header block; returns nil for an all-zero block (end of archive).
  static func parse(_ block: [UInt8]) throws(CheckpointRegistryError) -> TarHeader? {
    precondition(block.count == blockSize)
    if block.allSatisfy({ $0 == 0 }) { return nil }
    guard block[257..<262].elementsEqual(Array("ustar".utf8)) else {
      throw .invalidArchive(entry: nil, reason: "not a ustar or GNU tar archive (no \"ustar\" magic in a header)")
    }
    let stored = try number(block[148..<156], field: "checksum")
    var unsigned: Int64 = 0
    var signed: Int64 = 0
    for (index, byte) in block.enumerated() {
      let value = (148..<156).contains(index) ? 0x20 : byte
      unsigned += Int64(value)
      signed += Int64(Int8(bitPattern: value))
    }
    guard stored == UInt64(unsigned) || Int64(bitPattern: stored) == signed else {
      throw .invalidArchive(entry: nil, reason: "header checksum mismatch (stored \(stored), computed \(unsigned))")
    }
    var path = cString(block[0..<100])
    // POSIX ustar ("ustar\0") has a prefix field; GNU ("ustar  \0") uses those bytes otherwise.
    if block[262] == 0 {
      let prefix = cString(block[345..<500])
      if !prefix.isEmpty { path = prefix + [UInt8(ascii: "/")] + path }
    }
    let size = try number(block[124..<136], field: "size")
    return TarHeader(path: path, size: size, typeflag: block[156])
  }

  /// Bytes up to the first NUL.
  static func cString(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
    Array(bytes.prefix { $0 != 0 })
  }

  /// An octal field (space or NUL terminated, leading spaces allowed) or a GNU base-256 one.
  static func number(_ bytes: ArraySlice<UInt8>, field: String) throws(CheckpointRegistryError) -> UInt64 {
    guard let first = bytes.first else { return 0 }
    if first & 0x80 != 0 {
      guard first == 0x80 else {
        throw .invalidArchive(entry: nil, reason: "header field \(field) is negative or too large")
      }
      var value: UInt64 = 0
      for byte in bytes.dropFirst() {
        guard value >> 56 == 0 else {
          throw .invalidArchive(entry: nil, reason: "header field \(field) is too large")
        }
        value = value << 8 | UInt64(byte)
      }
      return value
    }
    var value: UInt64 = 0
    var digits = bytes.drop { $0 == UInt8(ascii: " ") }[...]
    while let byte = digits.first, byte != 0, byte != UInt8(ascii: " ") {
      guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "7") else {
        throw .invalidArchive(entry: nil, reason: "header field \(field) is not an octal number")
      }
      value = value << 3 | UInt64(byte - UInt8(ascii: "0"))
      digits = digits.dropFirst()
    }
    return value
  }
}

/// The extraction state machine: reads headers, applies GNU/pax overrides, checks each entry and
/// writes it.
struct TarExtractor {
  let fd: Int32
  let archivePath: String
  let destination: String
  let limits: TarExtractionLimits

  /// Every path seen so far, and whether it is a folder. Explicit entries are also in `explicit`.
  var kinds: [String: Bool] = [:]
  var explicit: Set<String> = []
  var files: [String] = []
  var directories: [String] = []
  var totalBytes: UInt64 = 0
  var entries = 0
  /// Overrides for the next entry from a GNU 'L' entry or a pax 'x' header.
  var nextPath: [UInt8]?
  var nextSize: UInt64?
  var copyBuffer = [UInt8](repeating: 0, count: 1 << 20)

  init(fd: Int32, archivePath: String, destination: String, limits: TarExtractionLimits) {
    self.fd = fd
    self.archivePath = archivePath
    self.destination = destination
    self.limits = limits
  }

  mutating func run() throws(CheckpointRegistryError) -> TarExtraction {
    var sawHeader = false
    while let header = try readHeader(allowEOF: true) {
      sawHeader = true
      try handle(header)
    }
    guard sawHeader else { throw .invalidArchive(entry: nil, reason: "archive is empty") }
    guard nextPath == nil && nextSize == nil else {
      throw .invalidArchive(entry: nil, reason: "archive ends after a long-name or pax header")
    }
    // Folders deepest first, so each fsync covers the entries just made durable below it.
    for directory in directories.sorted(by: { $0.count > $1.count }) {
      try RegistryFS.syncDirectory(destination + "/" + directory)
    }
    try RegistryFS.syncDirectory(destination)
    return TarExtraction(files: files, directories: directories, totalBytes: totalBytes)
  }

  /// Reads the next header; nil at the end-of-archive block, or at a clean end of file if
  /// `allowEOF` (archives without the two zero blocks are common enough to accept).
  mutating func readHeader(allowEOF: Bool) throws(CheckpointRegistryError) -> TarHeader? {
    var block = [UInt8](repeating: 0, count: TarHeader.blockSize)
    let count = try RegistryFS.withMutableBytes(&block) { (buffer) throws(CheckpointRegistryError) -> Int in
      try RegistryFS.readFully(fd, into: buffer, path: archivePath)
    }
    if count == 0 && allowEOF { return nil }
    guard count == TarHeader.blockSize else {
      throw .invalidArchive(entry: nil, reason: "archive is truncated inside a header block")
    }
    return try TarHeader.parse(block)
  }

  mutating func handle(_ raw: TarHeader) throws(CheckpointRegistryError) {
    let rawName = String(decoding: raw.path, as: UTF8.self)
    switch raw.typeflag {
    case UInt8(ascii: "L"):  // GNU long name for the next entry
      var name = try readMetadata(size: raw.size, entry: rawName)
      if let nul = name.firstIndex(of: 0) { name = Array(name[..<nul]) }
      nextPath = name
      return
    case UInt8(ascii: "K"):  // GNU long link target: only links use it, and they are refused
      _ = try readMetadata(size: raw.size, entry: rawName)
      return
    case UInt8(ascii: "x"):  // pax extended header for the next entry
      let records = try parsePax(try readMetadata(size: raw.size, entry: rawName), entry: rawName)
      if let path = records["path"] { nextPath = path }
      if let size = records["size"] {
        guard let value = UInt64(String(decoding: size, as: UTF8.self)) else {
          throw .invalidArchive(entry: rawName, reason: "pax size is not a number")
        }
        nextSize = value
      }
      return
    case UInt8(ascii: "g"):  // pax global header: nothing in it changes how we extract
      _ = try parsePax(try readMetadata(size: raw.size, entry: rawName), entry: rawName)
      return
    default:
      break
    }

    let pathBytes = nextPath ?? raw.path
    let size = nextSize ?? raw.size
    nextPath = nil
    nextSize = nil
    guard let name = String(validating: pathBytes, as: UTF8.self) else {
      throw .invalidArchive(entry: String(decoding: pathBytes, as: UTF8.self), reason: "path is not valid UTF-8")
    }
    entries += 1
    guard entries <= limits.maxEntries else {
      throw .archiveTooLarge(reason: "more than \(limits.maxEntries) entries")
    }

    switch raw.typeflag {
    case UInt8(ascii: "0"), 0, UInt8(ascii: "7"):
      try extractFile(name: name, size: size)
    case UInt8(ascii: "5"):
      try extractDirectory(name: name)
      try skip(size)
    case UInt8(ascii: "1"):
      throw .invalidArchive(entry: name, reason: "hard links are not allowed")
    case UInt8(ascii: "2"):
      throw .invalidArchive(entry: name, reason: "symbolic links are not allowed")
    case UInt8(ascii: "3"), UInt8(ascii: "4"):
      throw .invalidArchive(entry: name, reason: "device files are not allowed")
    case UInt8(ascii: "6"):
      throw .invalidArchive(entry: name, reason: "FIFOs are not allowed")
    default:
      let flag =
        raw.typeflag >= 0x20 && raw.typeflag < 0x7f ? "'\(Character(Unicode.Scalar(raw.typeflag)))'" : "\(raw.typeflag)"
      throw .invalidArchive(entry: name, reason: "entry type \(flag) is not supported (only regular files and folders)")
    }
  }

  /// Splits a path into components, refusing absolute paths, "..", and overlong names.
  /// Returns [] for the archive root ("." or "./").
  func components(_ name: String) throws(CheckpointRegistryError) -> [Substring] {
    guard !name.isEmpty else { throw .invalidArchive(entry: name, reason: "empty path") }
    guard name.utf8.count <= limits.maxPathBytes else {
      throw .invalidArchive(entry: name, reason: "path is longer than \(limits.maxPathBytes) bytes")
    }
    guard !name.hasPrefix("/") else { throw .invalidArchive(entry: name, reason: "absolute paths are not allowed") }
    let parts = name.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
    for part in parts {
      guard part != ".." else { throw .invalidArchive(entry: name, reason: "\"..\" components are not allowed") }
      guard part.utf8.count <= 255 else {
        throw .invalidArchive(entry: name, reason: "a path component is longer than 255 bytes")
      }
    }
    return parts
  }

  /// Creates the parent folders of `parts` (all but the last), checking that none is a file.
  mutating func makeParents(_ parts: [Substring], entry: String) throws(CheckpointRegistryError) {
    var path = ""
    for part in parts.dropLast() {
      path = path.isEmpty ? String(part) : path + "/" + part
      switch kinds[path] {
      case true: continue
      case false: throw .invalidArchive(entry: entry, reason: "its parent \(path) is a file")
      case nil:
        try RegistryFS.makeDirectory(destination + "/" + path)
        kinds[path] = true
        directories.append(path)
      }
    }
  }

  mutating func extractDirectory(name: String) throws(CheckpointRegistryError) {
    let parts = try components(name)
    guard !parts.isEmpty else { return }  // the archive root
    let path = parts.joined(separator: "/")
    guard !explicit.contains(path) else { throw .invalidArchive(entry: name, reason: "duplicate entry") }
    try makeParents(parts, entry: name)
    switch kinds[path] {
    case false: throw .invalidArchive(entry: name, reason: "duplicate entry (a file has this path)")
    case true: break  // created earlier as a parent
    case nil:
      try RegistryFS.makeDirectory(destination + "/" + path)
      kinds[path] = true
      directories.append(path)
    }
    explicit.insert(path)
  }

  mutating func extractFile(name: String, size: UInt64) throws(CheckpointRegistryError) {
    let parts = try components(name)
    guard !parts.isEmpty else { throw .invalidArchive(entry: name, reason: "a file cannot be the archive root") }
    let path = parts.joined(separator: "/")
    guard kinds[path] == nil else { throw .invalidArchive(entry: name, reason: "duplicate entry") }
    // totalBytes never exceeds the limit, so the subtraction cannot wrap.
    guard size <= limits.maxTotalBytes - totalBytes else {
      throw .archiveTooLarge(reason: "files add up to more than \(limits.maxTotalBytes) bytes (at \(name))")
    }
    try makeParents(parts, entry: name)
    kinds[path] = false
    explicit.insert(path)
    let target = destination + "/" + path
    let out = try RegistryFS.createFile(target)
    defer { close(out) }
    try copy(size, to: out, path: target, entry: name)
    try RegistryFS.sync(out, path: target)
    totalBytes += size
    files.append(path)
  }

  /// Copies `size` bytes of entry data to `out`, then skips the block padding.
  mutating func copy(_ size: UInt64, to out: Int32, path: String, entry: String) throws(CheckpointRegistryError) {
    var remaining = size
    while remaining > 0 {
      let want = Int(min(remaining, UInt64(copyBuffer.count)))
      let (fd, archivePath) = (self.fd, self.archivePath)
      let result: Result<Int, CheckpointRegistryError> = copyBuffer.withUnsafeMutableBytes { buffer in
        let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want])
        do throws(CheckpointRegistryError) {
          let count = try RegistryFS.readFully(fd, into: slice, path: archivePath)
          try RegistryFS.writeAll(out, UnsafeRawBufferPointer(rebasing: slice[0..<count]), path: path)
          return .success(count)
        } catch { return .failure(error) }
      }
      let count = try result.get()
      guard count == want else { throw .invalidArchive(entry: entry, reason: "archive is truncated inside this file") }
      remaining -= UInt64(count)
    }
    try skip(padding(size))
  }

  func padding(_ size: UInt64) -> UInt64 {
    (UInt64(TarHeader.blockSize) - size % UInt64(TarHeader.blockSize)) % UInt64(TarHeader.blockSize)
  }

  /// Skips `count` bytes of the archive.
  mutating func skip(_ count: UInt64) throws(CheckpointRegistryError) {
    guard count > 0 else { return }
    var remaining = count
    while remaining > 0 {
      let want = Int(min(remaining, UInt64(copyBuffer.count)))
      let (fd, archivePath) = (self.fd, self.archivePath)
      let result: Result<Int, CheckpointRegistryError> = copyBuffer.withUnsafeMutableBytes { buffer in
        do throws(CheckpointRegistryError) {
          return .success(
            try RegistryFS.readFully(
              fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), path: archivePath))
        } catch { return .failure(error) }
      }
      let read = try result.get()
      guard read == want else { throw .invalidArchive(entry: nil, reason: "archive is truncated") }
      remaining -= UInt64(read)
    }
  }

  /// Reads the data of a GNU long-name or pax entry (bounded) and its padding.
  mutating func readMetadata(size: UInt64, entry: String) throws(CheckpointRegistryError) -> [UInt8] {
    guard size <= UInt64(limits.maxMetadataBytes) else {
      throw .invalidArchive(entry: entry, reason: "extended header is larger than \(limits.maxMetadataBytes) bytes")
    }
    var data = [UInt8](repeating: 0, count: Int(size))
    let (fd, archivePath) = (self.fd, self.archivePath)
    let count = try RegistryFS.withMutableBytes(&data) { (buffer) throws(CheckpointRegistryError) -> Int in
      try RegistryFS.readFully(fd, into: buffer, path: archivePath)
    }
    guard count == Int(size) else {
      throw .invalidArchive(entry: entry, reason: "archive is truncated inside an extended header")
    }
    try skip(padding(size))
    return data
  }

  /// Parses pax records ("<length> <key>=<value>\n").
  func parsePax(_ data: [UInt8], entry: String) throws(CheckpointRegistryError) -> [String: [UInt8]] {
    var records: [String: [UInt8]] = [:]
    var rest = data[...]
    while !rest.isEmpty {
      guard let space = rest.firstIndex(of: UInt8(ascii: " ")),
        let length = Int(String(decoding: rest[rest.startIndex..<space], as: UTF8.self)),
        length > space - rest.startIndex + 1, length <= rest.count,
        rest[rest.startIndex + length - 1] == UInt8(ascii: "\n")
      else { throw .invalidArchive(entry: entry, reason: "malformed pax extended header") }
      let record = rest[(space + 1)..<(rest.startIndex + length - 1)]
      guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else {
        throw .invalidArchive(entry: entry, reason: "malformed pax record (no '=')")
      }
      records[String(decoding: record[record.startIndex..<equals], as: UTF8.self)] = Array(record[(equals + 1)...])
      rest = rest[(rest.startIndex + length)...]
    }
    return records
  }
}
