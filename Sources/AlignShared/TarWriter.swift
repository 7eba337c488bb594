import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Writes POSIX ustar archives of regular files and folders, with GNU long-name entries for
/// paths that do not fit ustar's 100 + 155 bytes. The checkpoint registry's tar reader reads
/// what it writes; so does any tar.
///
/// Used to package a Hugging Face folder or a reward head for upload (alignctl), and by the
/// registry's tests. Not thread-safe: one writer per archive.
public final class TarWriter {
  private let path: String
  private var handle: FileHandle?
  private var written: Set<String> = []

  /// Creates the archive file at `path` (it must not exist yet).
  ///
  /// - Throws: ``TarWriterError/io(operation:path:detail:)`` if the file cannot be created.
  public init(path: String) throws(TarWriterError) {
    self.path = path
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw Self.error("create", path, errno) }
    self.handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
  }

  private static func error(_ operation: String, _ path: String, _ code: Int32) -> TarWriterError {
    .io(operation: operation, path: path, detail: String(cString: strerror(code)))
  }

  /// Adds a folder entry.
  ///
  /// - Parameter name: a relative path of plain components ("a/b").
  public func addDirectory(_ name: String) throws(TarWriterError) {
    let name = try checked(name)
    try writeHeader(name: name + "/", size: 0, typeflag: UInt8(ascii: "5"), mode: 0o755)
  }

  /// Adds a regular file with the given contents.
  public func addFile(_ name: String, contents: Data) throws(TarWriterError) {
    let name = try checked(name)
    try writeHeader(name: name, size: UInt64(contents.count), typeflag: UInt8(ascii: "0"), mode: 0o644)
    try write(contents)
    try writePadding(UInt64(contents.count))
  }

  /// Adds a regular file, copying the contents of the file at `sourcePath` (symbolic links are
  /// followed, so a Hugging Face cache snapshot archives as real files).
  public func addFile(_ name: String, fromFileAt sourcePath: String) throws(TarWriterError) {
    let name = try checked(name)
    var info = stat()
    guard stat(sourcePath, &info) == 0 else { throw Self.error("stat", sourcePath, errno) }
    guard info.st_mode & S_IFMT == S_IFREG else {
      throw .io(operation: "archive", path: sourcePath, detail: "not a regular file")
    }
    guard let input = FileHandle(forReadingAtPath: sourcePath) else { throw Self.error("open", sourcePath, errno) }
    defer { try? input.close() }
    let size = UInt64(info.st_size)
    try writeHeader(name: name, size: size, typeflag: UInt8(ascii: "0"), mode: 0o644)
    var remaining = size
    while remaining > 0 {
      let chunk: Data
      do {
        chunk = try input.read(upToCount: Int(min(remaining, 1 << 20))) ?? Data()
      } catch {
        throw .io(operation: "read", path: sourcePath, detail: "\(error)")
      }
      guard !chunk.isEmpty else {
        throw .io(operation: "archive", path: sourcePath, detail: "file shrank while it was read")
      }
      try write(chunk)
      remaining -= UInt64(chunk.count)
    }
    try writePadding(size)
  }

  /// Writes the end-of-archive blocks, syncs and closes the file.
  public func finish() throws(TarWriterError) {
    guard let handle else { return }
    try write(Data(count: 2 * 512))
    do {
      try handle.synchronize()
      try handle.close()
    } catch {
      throw .io(operation: "sync", path: path, detail: "\(error)")
    }
    self.handle = nil
  }

  private func write(_ data: Data) throws(TarWriterError) {
    guard let handle else { throw .io(operation: "archive", path: path, detail: "archive is already finished") }
    do {
      try handle.write(contentsOf: data)
    } catch {
      throw .io(operation: "write", path: path, detail: "\(error)")
    }
  }

  /// Archives every regular file and folder under `directory` (sorted, relative paths), into a
  /// new tar file at `archivePath`. Entries other than files, folders and links to them are
  /// refused.
  public static func archive(directory: String, to archivePath: String) throws(TarWriterError) {
    let writer = try TarWriter(path: archivePath)
    let names: [String]
    do {
      names = try FileManager.default.subpathsOfDirectory(atPath: directory).sorted()
    } catch {
      throw .io(operation: "list folder", path: directory, detail: "\(error)")
    }
    for name in names {
      let full = directory + "/" + name
      var info = stat()
      guard stat(full, &info) == 0 else { throw Self.error("stat", full, errno) }
      switch info.st_mode & S_IFMT {
      case S_IFDIR: try writer.addDirectory(name)
      case S_IFREG: try writer.addFile(name, fromFileAt: full)
      default: throw .io(operation: "archive", path: full, detail: "not a regular file or folder")
      }
    }
    try writer.finish()
  }

  /// Normalizes and checks an entry name: relative, no "." / ".." / empty components, once only.
  private func checked(_ name: String) throws(TarWriterError) -> String {
    guard handle != nil else { throw .io(operation: "archive", path: path, detail: "archive is already finished") }
    let parts = name.split(separator: "/", omittingEmptySubsequences: false)
    guard !name.isEmpty, !name.hasPrefix("/"), !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
      throw .invalidEntry(name: name, reason: "entry names must be relative paths of plain components")
    }
    guard written.insert(name).inserted else { throw .invalidEntry(name: name, reason: "duplicate entry") }
    return name
  }

  private func writeHeader(name: String, size: UInt64, typeflag: UInt8, mode: Int) throws(TarWriterError) {
    let bytes = Array(name.utf8)
    var nameField = bytes
    var prefixField: [UInt8] = []
    if bytes.count > 100 {
      // ustar splits at a '/' into prefix (<= 155) and name (<= 100); otherwise a GNU long name.
      if let split = bytes.indices.last(where: {
        bytes[$0] == UInt8(ascii: "/") && $0 <= 155 && bytes.count - $0 - 1 <= 100 && $0 > 0
      }),
        bytes.count - split - 1 > 0
      {
        prefixField = Array(bytes[..<split])
        nameField = Array(bytes[(split + 1)...])
      } else {
        let longName = bytes + [0]
        try writeBlock(
          Self.header(
            name: Array("././@LongLink".utf8), prefix: [], size: UInt64(longName.count), typeflag: UInt8(ascii: "L"),
            mode: 0o644))
        try write(Data(longName))
        try writePadding(UInt64(longName.count))
        nameField = Array(bytes.prefix(100))
      }
    }
    try writeBlock(Self.header(name: nameField, prefix: prefixField, size: size, typeflag: typeflag, mode: mode))
  }

  /// One ustar header block.
  static func header(name: [UInt8], prefix: [UInt8], size: UInt64, typeflag: UInt8, mode: Int) -> [UInt8] {
    var block = [UInt8](repeating: 0, count: 512)
    func put(_ bytes: [UInt8], at offset: Int, max: Int) {
      for (index, byte) in bytes.prefix(max).enumerated() { block[offset + index] = byte }
    }
    func octal(_ value: UInt64, at offset: Int, width: Int) {
      let digits = String(value, radix: 8)
      let padded = String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
      put(Array(padded.utf8), at: offset, max: width - 1)
    }
    put(name, at: 0, max: 100)
    octal(UInt64(mode), at: 100, width: 8)
    octal(0, at: 108, width: 8)
    octal(0, at: 116, width: 8)
    if size < 0o77777777777 {
      octal(size, at: 124, width: 12)
    } else {  // GNU base-256 for sizes of 8 GiB and more
      block[124] = 0x80
      for index in 0..<8 { block[135 - index] = UInt8(truncatingIfNeeded: size >> (8 * UInt64(index))) }
    }
    octal(0, at: 136, width: 12)
    block[156] = typeflag
    put(Array("ustar".utf8) + [0], at: 257, max: 6)
    put(Array("00".utf8), at: 263, max: 2)
    put(prefix, at: 345, max: 155)
    for index in 148..<156 { block[index] = UInt8(ascii: " ") }
    let sum = block.reduce(0) { $0 + Int($1) }
    let digits = String(sum, radix: 8)
    put(
      Array((String(repeating: "0", count: max(0, 6 - digits.count)) + digits).utf8) + [0, UInt8(ascii: " ")], at: 148,
      max: 8)
    return block
  }

  private func writeBlock(_ block: [UInt8]) throws(TarWriterError) {
    try write(Data(block))
  }

  private func writePadding(_ size: UInt64) throws(TarWriterError) {
    let padding = Int((512 - size % 512) % 512)
    guard padding > 0 else { return }
    try writeBlock([UInt8](repeating: 0, count: padding))
  }
}

/// Why an archive could not be written.
public enum TarWriterError: Error, Sendable, Equatable, CustomStringConvertible {
  /// A file could not be created, read or written.
  case io(operation: String, path: String, detail: String)
  /// An entry name that is not a relative path of plain components, or one added twice.
  case invalidEntry(name: String, reason: String)

  public var description: String {
    switch self {
    case .io(let operation, let path, let detail): return "cannot \(operation) \(path): \(detail)"
    case .invalidEntry(let name, let reason): return "tar entry \(name): \(reason)"
    }
  }
}
