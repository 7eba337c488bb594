import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Writes POSIX ustar archives of regular files and folders, with GNU long-name entries for
/// paths that do not fit ustar's 100 + 155 bytes. `TarArchive.extract` reads what it writes;
/// so does any tar.
///
/// Used to package a Hugging Face folder or a reward head for upload. Not thread-safe: one
/// writer per archive.
public final class TarWriter {
  private let path: String
  private var fd: Int32
  private var written: Set<String> = []

  /// Creates the archive file at `path` (it must not exist yet).
  ///
  /// - Throws: `CheckpointRegistryError.io` if the file cannot be created.
  public init(path: String) throws(CheckpointRegistryError) {
    self.path = path
    self.fd = try RegistryFS.createFile(path)
  }

  deinit {
    if fd >= 0 { close(fd) }
  }

  /// Adds a folder entry.
  ///
  /// - Parameter name: a relative path of plain components ("a/b").
  public func addDirectory(_ name: String) throws(CheckpointRegistryError) {
    let name = try checked(name)
    try writeHeader(name: name + "/", size: 0, typeflag: UInt8(ascii: "5"), mode: 0o755)
  }

  /// Adds a regular file with the given contents.
  public func addFile(_ name: String, contents: Data) throws(CheckpointRegistryError) {
    let name = try checked(name)
    try writeHeader(name: name, size: UInt64(contents.count), typeflag: UInt8(ascii: "0"), mode: 0o644)
    try RegistryFS.writeAll(fd, contents, path: path)
    try writePadding(UInt64(contents.count))
  }

  /// Adds a regular file, copying the contents of the file at `sourcePath` (symbolic links are
  /// followed, so a Hugging Face cache snapshot archives as real files).
  public func addFile(_ name: String, fromFileAt sourcePath: String) throws(CheckpointRegistryError) {
    let name = try checked(name)
    let input = open(sourcePath, O_RDONLY | O_CLOEXEC)
    guard input >= 0 else { throw RegistryFS.error("open", sourcePath, errno) }
    defer { close(input) }
    var info = stat()
    guard fstat(input, &info) == 0 else { throw RegistryFS.error("stat", sourcePath, errno) }
    guard info.st_mode & S_IFMT == S_IFREG else {
      throw .io(operation: "archive", path: sourcePath, detail: "not a regular file")
    }
    let size = UInt64(info.st_size)
    try writeHeader(name: name, size: size, typeflag: UInt8(ascii: "0"), mode: 0o644)
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var remaining = size
    let output = (fd, path)
    while remaining > 0 {
      let want = Int(min(remaining, UInt64(buffer.count)))
      let result: Result<Int, CheckpointRegistryError> = buffer.withUnsafeMutableBytes { raw in
        let slice = UnsafeMutableRawBufferPointer(rebasing: raw[0..<want])
        do throws(CheckpointRegistryError) {
          let count = try RegistryFS.readFully(input, into: slice, path: sourcePath)
          try RegistryFS.writeAll(output.0, UnsafeRawBufferPointer(rebasing: slice[0..<count]), path: output.1)
          return .success(count)
        } catch { return .failure(error) }
      }
      let count = try result.get()
      guard count == want else {
        throw .io(operation: "archive", path: sourcePath, detail: "file shrank while it was read")
      }
      remaining -= UInt64(count)
    }
    try writePadding(size)
  }

  /// Writes the end-of-archive blocks, syncs and closes the file.
  public func finish() throws(CheckpointRegistryError) {
    guard fd >= 0 else { return }
    let zeros = [UInt8](repeating: 0, count: 2 * 512)
    try RegistryFS.withBytes(zeros) { (buffer) throws(CheckpointRegistryError) in
      try RegistryFS.writeAll(fd, buffer, path: path)
    }
    try RegistryFS.sync(fd, path: path)
    close(fd)
    fd = -1
  }

  /// Archives every regular file and folder under `directory` (sorted, relative paths), into a
  /// new tar file at `archivePath`. Entries other than files, folders and links to them are
  /// refused.
  public static func archive(directory: String, to archivePath: String) throws(CheckpointRegistryError) {
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
      guard stat(full, &info) == 0 else { throw RegistryFS.error("stat", full, errno) }
      switch info.st_mode & S_IFMT {
      case S_IFDIR: try writer.addDirectory(name)
      case S_IFREG: try writer.addFile(name, fromFileAt: full)
      default: throw .io(operation: "archive", path: full, detail: "not a regular file or folder")
      }
    }
    try writer.finish()
  }

  /// Normalizes and checks an entry name: relative, no "." / ".." / empty components, once only.
  private func checked(_ name: String) throws(CheckpointRegistryError) -> String {
    guard fd >= 0 else { throw .io(operation: "archive", path: path, detail: "archive is already finished") }
    let parts = name.split(separator: "/", omittingEmptySubsequences: false)
    guard !name.isEmpty, !name.hasPrefix("/"), !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
      throw .invalidArchive(entry: name, reason: "entry names must be relative paths of plain components")
    }
    guard written.insert(name).inserted else { throw .invalidArchive(entry: name, reason: "duplicate entry") }
    return name
  }

  private func writeHeader(name: String, size: UInt64, typeflag: UInt8, mode: Int) throws(CheckpointRegistryError) {
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
        try RegistryFS.withBytes(longName) { (buffer) throws(CheckpointRegistryError) in
          try RegistryFS.writeAll(fd, buffer, path: path)
        }
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

  private func writeBlock(_ block: [UInt8]) throws(CheckpointRegistryError) {
    try RegistryFS.withBytes(block) { (buffer) throws(CheckpointRegistryError) in
      try RegistryFS.writeAll(fd, buffer, path: path)
    }
  }

  private func writePadding(_ size: UInt64) throws(CheckpointRegistryError) {
    let padding = Int((512 - size % 512) % 512)
    guard padding > 0 else { return }
    try writeBlock([UInt8](repeating: 0, count: padding))
  }
}
